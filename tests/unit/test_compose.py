"""docker-compose.yml cannot run here; check that what it says agrees with the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

import driftline.config as config
from driftline.services import kafka_version

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _settings_env_names() -> set[str]:
    names: set[str] = set()
    for obj in vars(config).values():
        if isinstance(obj, type) and issubclass(obj, BaseSettings) and obj is not BaseSettings:
            prefix = obj.model_config.get("env_prefix", "")
            names.update(f"{prefix}{field}".upper() for field in obj.model_fields)
    return names


def test_every_dependency_names_a_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on", [])
        for dep in deps if isinstance(deps, list) else deps.keys():
            assert dep in services, f"{name} depends on unknown service {dep}"


def test_driftline_roles_are_cli_commands_built_from_the_dockerfile(
    compose: dict[str, Any],
) -> None:
    from driftline.cli import app

    commands = {
        c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands
    }
    assert (ROOT / "Dockerfile").is_file()
    for role in ("worker", "monitor", "bridge"):
        svc = compose["services"][role]
        assert svc["build"] == "."
        assert svc["command"][0] == role
        assert role in commands, f"compose runs `driftline {role}`, which the CLI lacks"


def test_environment_names_are_real_settings(compose: dict[str, Any]) -> None:
    known = _settings_env_names()
    for name, svc in compose["services"].items():
        for var in svc.get("environment") or {}:
            if var.startswith("DRIFTLINE_"):
                assert var in known, f"{name}: {var} is not a driftline setting"


def test_addresses_agree_with_the_kafka_and_redis_services(compose: dict[str, Any]) -> None:
    env = compose["services"]["worker"]["environment"]
    host, port = env["DRIFTLINE_BOOTSTRAP_SERVERS"].split(":")
    kafka = compose["services"][host]["environment"]
    assert f"PLAINTEXT://{host}:{port}" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    assert f"PLAINTEXT://:{port}" in kafka["KAFKA_LISTENERS"]
    assert kafka["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == 1
    assert kafka["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 1
    redis_host = re.match(r"redis://([^:/]+)", env["DRIFTLINE_REDIS_URL"])
    assert redis_host is not None and redis_host.group(1) in compose["services"]


def test_published_kafka_ports_advertise_an_address_the_host_reaches(
    compose: dict[str, Any],
) -> None:
    kafka = compose["services"]["kafka"]
    advertised = {
        int(addr.rsplit(":", 1)[1]): addr.split("://", 1)[1].rsplit(":", 1)[0]
        for addr in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }
    published = [int(str(p).split(":")[-1]) for p in kafka.get("ports", [])]
    assert published, "the host cannot reach Kafka"
    for port in published:
        # A client follows the advertised address of the listener it reached.
        assert advertised.get(port) == "localhost", (port, advertised)
    comment = (ROOT / "docker-compose.yml").read_text().split("services:")[0]
    for port in re.findall(r"localhost:(\d+)", comment):
        assert int(port) in published, f"the header names localhost:{port}, not published"


def test_kafka_image_matches_the_pinned_release(compose: dict[str, Any]) -> None:
    image = compose["services"]["kafka"]["image"]
    assert image == f"apache/kafka:{kafka_version()}"


def test_prometheus_scrapes_every_role_on_its_metrics_port(compose: dict[str, Any]) -> None:
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {
        t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    for role in ("worker", "monitor", "bridge"):
        cmd = compose["services"][role]["command"]
        port = cmd[cmd.index("--metrics-port") + 1]
        assert f"{role}:{port}" in targets


def test_dashboard_queries_only_metrics_the_code_exports() -> None:
    import json

    dash = json.loads((ROOT / "deploy/grafana/dashboards/driftline.json").read_text())
    source = "\n".join(p.read_text() for p in (ROOT / "driftline").rglob("*.py"))
    names = {
        re.sub(r"_(total|bucket|sum|count)$", "", m)
        for panel in dash["panels"]
        for target in panel["targets"]
        for m in re.findall(r"driftline_[a-z_]+", target["expr"])
    }
    assert names
    missing = sorted(n for n in names if f'"{n}"' not in source)
    assert not missing, f"dashboard queries metrics no code defines: {missing}"
