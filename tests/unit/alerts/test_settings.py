"""BridgeSettings from the environment and ``_FILE`` files; errors never echo secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from driftline.alerts.bridge import load_bridge_settings, parse_channels
from driftline.alerts.channels import parse_smtp_url
from driftline.alerts.redact import secret_values
from driftline.config import BridgeSettings
from driftline.errors import ConfigError

pytestmark = pytest.mark.unit


def test_env_and_file_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    hooks = tmp_path / "hooks.json"
    hooks.write_text(json.dumps({"pager": {"url": "https://x/h?k=tok", "secret": "sig"}}))
    monkeypatch.setenv("DRIFTLINE_SMTP_URL", "smtp://u:pw@mail:587?starttls=true")
    monkeypatch.setenv("DRIFTLINE_SLACK_WEBHOOKS", '{"ops": "https://hooks.slack.com/T/B/x"}')
    monkeypatch.setenv("DRIFTLINE_WEBHOOKS_FILE", str(hooks))
    monkeypatch.setenv("DRIFTLINE_BRIDGE_RATE_LIMITS", '{"slack": 2}')
    s = load_bridge_settings()
    assert s.webhooks["pager"]["secret"].get_secret_value() == "sig"
    assert s.bridge_rate_limits == {"slack": 2.0, "webhook": 10.0, "email": 10.0}
    assert "pw" not in repr(s) and "hooks.slack.com" not in repr(s)
    assert sorted(secret_values(s)) == sorted(
        ["smtp://u:pw@mail:587?starttls=true", "https://hooks.slack.com/T/B/x",
         "https://x/h?k=tok", "sig"]
    )  # fmt: skip
    smtp = parse_smtp_url(s.smtp_url)  # type: ignore[arg-type]
    assert (smtp.host, smtp.port, smtp.starttls) == ("mail", 587, True)


def test_variable_and_file_together_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    f = tmp_path / "url"
    f.write_text("smtp://a:b@c")
    monkeypatch.setenv("DRIFTLINE_SMTP_URL", "smtp://a:b@c")
    monkeypatch.setenv("DRIFTLINE_SMTP_URL_FILE", str(f))
    with pytest.raises(ConfigError, match="SMTP_URL_FILE are set"):
        load_bridge_settings()


def test_invalid_webhook_config_does_not_echo_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_WEBHOOKS", '{"pager": {"url": "https://x/very-secret-url"}}')
    with pytest.raises(ConfigError) as info:
        load_bridge_settings()
    assert "lacks secret" in str(info.value)
    assert "very-secret-url" not in str(info.value)


def test_rate_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive rate"):
        BridgeSettings(bridge_rate_limits={"slack": 0})


def test_smtp_url_errors_never_contain_the_url() -> None:
    from pydantic import SecretStr

    with pytest.raises(ConfigError) as info:
        parse_smtp_url(SecretStr("smtp://u:topsecret@host:notaport"))
    assert "topsecret" not in str(info.value) and "port" in str(info.value)


def test_channels_option() -> None:
    assert parse_channels(None) == ("email", "slack", "webhook", "stdout")
    assert parse_channels("webhook,slack,webhook") == ("webhook", "slack")
    with pytest.raises(ConfigError, match="'pager'"):
        parse_channels("pager")
