from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml

from driftline import notify
from driftline.errors import SpecError
from driftline.expressions import fn, parse, same, to_json
from driftline.models import inspect_model
from driftline.spec import (
    PipelineBuilder,
    load_baseline_values,
    load_spec,
    spec_from_canonical,
    spec_from_dict,
)

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fraud"


def _example() -> dict[str, Any]:
    data = yaml.safe_load((EXAMPLE / "pipeline.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_example_spec_loads() -> None:
    spec = load_spec(EXAMPLE / "pipeline.yaml")
    assert spec.name == "fraud"
    assert spec.champion.name == "ccfraud" and [m.name for m in spec.shadows] == ["fraud_base"]
    assert spec.champion.sha256 == inspect_model(EXAMPLE / "models" / "ccfraud.onnx").sha256
    assert set(spec.validations) == {"no_high_fraud", "no_model_drift"}
    alert = spec.alerts["high_fraud_5m"]
    assert (alert.condition.aggregate, alert.condition.threshold, alert.condition.width_ms) == (
        "count",
        10.0,
        300_000,
    )
    assert alert.notify == ("email:ops@example.com", "slack:fraud-alerts")
    assay = spec.assays["score_drift"]
    assert (assay.window_width_ms, assay.window_interval_ms, assay.metric) == (
        300_000,
        60_000,
        "psi",
    )
    values = load_baseline_values(assay, EXAMPLE)
    assert values is not None and values.shape == (2000,)
    assert spec.version.startswith("sha256:") and len(spec.version) == 71


def test_canonical_json_is_sorted_portable_and_round_trips(tmp_path: Path) -> None:
    spec = load_spec(EXAMPLE / "pipeline.yaml")
    raw = spec.canonical_json()
    assert raw == orjson.dumps(orjson.loads(raw), option=orjson.OPT_SORT_KEYS)
    assert b"models/ccfraud.onnx" not in raw and str(EXAMPLE).encode() not in raw
    # the same spec from another directory has the same version
    copy_dir = tmp_path / "elsewhere"
    shutil.copytree(EXAMPLE, copy_dir, ignore=shutil.ignore_patterns("__pycache__"))
    assert load_spec(copy_dir / "pipeline.yaml").version == spec.version
    # workers rebuild it from the control topic and get the same version
    by_hash = {m.sha256: m.path for m in spec.models}
    rebuilt = spec_from_canonical(orjson.loads(raw), resolve_model=lambda h: by_hash[h])
    assert rebuilt.version == spec.version
    assert rebuilt.champion.info is not None
    assert same(rebuilt.validations["no_model_drift"], spec.validations["no_model_drift"])
    assert spec_from_canonical(orjson.loads(raw)).version == spec.version


def test_any_change_changes_the_version() -> None:
    base = spec_from_dict(_example(), EXAMPLE).version
    changed = _example()
    changed["validations"]["no_high_fraud"] = "ccfraud.outputs[0][0] < 0.9"
    assert spec_from_dict(changed, EXAMPLE).version != base
    changed = _example()
    changed["assays"]["score_drift"]["baseline"] = {"values": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}
    assert spec_from_dict(changed, EXAMPLE).version != base


def test_assay_scan_defaults_and_canonical_form() -> None:
    plain = spec_from_dict(_example(), EXAMPLE)
    assert plain.assays["score_drift"].scan is None
    assert b'"scan"' not in plain.canonical_json()  # specs without a scan keep their versions
    data = _example()
    data["assays"]["score_drift"]["scan"] = True
    spec = spec_from_dict(data, EXAMPLE)
    assert spec.assays["score_drift"].scan == {
        "test": "mean",
        "alpha": 0.003,
        "scales": [1, 2, 4, 8],
    }
    assert spec.version != plain.version
    rebuilt = spec_from_canonical(orjson.loads(spec.canonical_json()))
    assert rebuilt.version == spec.version
    data["assays"]["score_drift"]["scan"] = {"test": "ks", "scales": [1, 3]}
    assert spec_from_dict(data, EXAMPLE).assays["score_drift"].scan == {
        "test": "ks",
        "alpha": 0.003,
        "scales": [1, 3],
    }


def test_builder_and_yaml_compile_to_the_same_canonical_json() -> None:
    ccfraud = inspect_model(EXAMPLE / "models" / "ccfraud.onnx", "ccfraud")
    base = inspect_model(EXAMPLE / "models" / "fraud_base.onnx", "fraud_base")
    built = (
        PipelineBuilder("fraud", base_dir=EXAMPLE)
        .add_model_step(ccfraud)
        .add_shadow_deploy(ccfraud, [base])
        .add_validation("no_high_fraud", ccfraud.outputs[0][0] < 0.95)
        .add_validation(
            "no_model_drift", fn.abs(ccfraud.outputs[0][0] - base.outputs[0][0]) <= 0.05
        )
        .add_alert(
            "high_fraud_5m",
            fn.count(ccfraud.outputs[0][0] > 0.95, "5m", "1s") > 10,
            [notify.Email(to="ops@example.com"), notify.Slack(channel="fraud-alerts")],
            severity="critical",
        )
        .add_assay(
            "score_drift",
            ccfraud.outputs[0][0],
            baseline={"file": "data/baseline.csv", "column": "score"},
            window={"width": "5m", "interval": "1m"},
            metric="psi",
            bins={"mode": "quantile", "count": 5, "outliers": "explicit"},
            thresholds={"warning": 0.1, "alert": 0.25},
        )
        .add_performance(
            "quality",
            "binary",
            ccfraud.outputs[0][0],
            window={"width": "1m"},
            threshold=0.5,
            horizon="1h",
            estimate="cbpe",
            reference={"file": "data/reference.csv", "score": "score", "label": "label"},
            alerts={
                "accuracy_drop": {
                    "when": "accuracy < 0.95",
                    "min_labeled": 200,
                    "notify": [str(notify.Email(to="ops@example.com"))],
                }
            },
        )
        .build()
    )
    from_yaml = load_spec(EXAMPLE / "pipeline.yaml")
    assert built.canonical_json() == from_yaml.canonical_json()
    assert built.version == from_yaml.version


# -- every validation error names its field ------------------------------------------------------


def _set(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(_example())
    node: Any = data
    keys = path.split("/")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    last = keys[-1]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


_DELETE = object()

CASES: list[tuple[str, str, Any, str, str]] = [
    # (description, path to change, new value, field named, words in the message)
    ("bad pipeline name", "name", "fraud.v2", "name", "fraud.v2"),
    ("unknown top-level key", "colour", "red", "colour", "unknown field"),
    (
        "unknown model",
        "validations/no_high_fraud",
        "ccfraudd.outputs[0][0] < 0.95",
        "validations.no_high_fraud",
        "unknown model 'ccfraudd'",
    ),
    (
        "aggregate in validation",
        "validations/no_high_fraud",
        'count(ccfraud.outputs[0][0] > 0.95, "5m", "1s") > 1',
        "validations.no_high_fraud",
        "aggregates",
    ),
    (
        "parse error",
        "validations/no_high_fraud",
        "ccfraud.outputs[0][0] <",
        "validations.no_high_fraud",
        "column",
    ),
    (
        "output index out of range",
        "validations/no_high_fraud",
        "ccfraud.outputs[1][0] < 0.95",
        "validations.no_high_fraud",
        "index 1 out of range",
    ),
    (
        "column out of range",
        "validations/no_high_fraud",
        "ccfraud.outputs[0][3] < 0.95",
        "validations.no_high_fraud",
        "column 3 out of range",
    ),
    (
        "input column out of range",
        "validations/no_high_fraud",
        "ccfraud.inputs[0][29] < 0.95",
        "validations.no_high_fraud",
        "column 29",
    ),
    (
        "unknown output name",
        "validations/no_high_fraud",
        'ccfraud.outputs["score"][0] < 0.95',
        "validations.no_high_fraud",
        "'score'",
    ),
    (
        "window in words",
        "alerts/high_fraud_5m/when",
        'count(ccfraud.outputs[0][0] > 0.95, "5 minutes", "1s") > 10',
        "alerts.high_fraud_5m.when",
        "'5 minutes'",
    ),
    (
        "width below interval",
        "alerts/high_fraud_5m/when",
        'count(ccfraud.outputs[0][0] > 0.95, "1s", "5m") > 10',
        "alerts.high_fraud_5m.when",
        "multiple",
    ),
    (
        "alert without aggregate",
        "alerts/high_fraud_5m/when",
        "ccfraud.outputs[0][0] > 0.95",
        "alerts.high_fraud_5m.when",
        "aggregate",
    ),
    (
        "bad notify target",
        "alerts/high_fraud_5m/notify",
        ["pager:ops"],
        "alerts.high_fraud_5m.notify[0]",
        "pager:ops",
    ),
    (
        "bad email",
        "alerts/high_fraud_5m/notify",
        ["email:ops"],
        "alerts.high_fraud_5m.notify[0]",
        "email",
    ),
    (
        "bad severity",
        "alerts/high_fraud_5m/severity",
        "loud",
        "alerts.high_fraud_5m.severity",
        "'loud'",
    ),
    (
        "bad for",
        "alerts/high_fraud_5m/for",
        "ten seconds",
        "alerts.high_fraud_5m.for",
        "'ten seconds'",
    ),
    (
        "assay window in words",
        "assays/score_drift/window",
        {"width": "5 minutes", "interval": "1m"},
        "assays.score_drift.window.width",
        "'5 minutes'",
    ),
    (
        "assay width below interval",
        "assays/score_drift/window",
        {"width": "1m", "interval": "5m"},
        "assays.score_drift.window",
        "multiple",
    ),
    (
        "assay width not a multiple",
        "assays/score_drift/window",
        {"width": "90s", "interval": "1m"},
        "assays.score_drift.window",
        "multiple",
    ),
    (
        "scan test unknown",
        "assays/score_drift/scan",
        {"test": "psi"},
        "assays.score_drift.scan.test",
        "'psi'",
    ),
    (
        "scan alpha of one",
        "assays/score_drift/scan",
        {"alpha": 1},
        "assays.score_drift.scan.alpha",
        "between 0 and 1",
    ),
    (
        "scan scales not increasing",
        "assays/score_drift/scan",
        {"scales": [1, 4, 2]},
        "assays.score_drift.scan.scales",
        "strictly increasing",
    ),
    (
        "scan unknown key",
        "assays/score_drift/scan",
        {"window": 2},
        "assays.score_drift.scan.window",
        "unknown field",
    ),
    (
        "warning above alert",
        "assays/score_drift/thresholds",
        {"warning": 0.3, "alert": 0.25},
        "assays.score_drift.thresholds",
        "warning",
    ),
    (
        "warning equal alert",
        "assays/score_drift/thresholds",
        {"warning": 0.25, "alert": 0.25},
        "assays.score_drift.thresholds",
        "warning",
    ),
    (
        "auto out of range",
        "assays/score_drift/thresholds",
        {"auto": 1.5},
        "assays.score_drift.thresholds",
        "auto",
    ),
    ("unknown metric", "assays/score_drift/metric", "psy", "assays.score_drift.metric", "'psy'"),
    (
        "bad bin mode",
        "assays/score_drift/bins",
        {"mode": "fancy"},
        "assays.score_drift.bins.mode",
        "'fancy'",
    ),
    (
        "provided without edges",
        "assays/score_drift/bins",
        {"mode": "provided"},
        "assays.score_drift.bins.edges",
        "edges",
    ),
    (
        "missing baseline file",
        "assays/score_drift/baseline",
        {"file": "data/missing.csv", "column": "score"},
        "assays.score_drift.baseline.file",
        "missing.csv",
    ),
    (
        "missing baseline column",
        "assays/score_drift/baseline",
        {"file": "data/baseline.csv", "column": "scor"},
        "assays.score_drift.baseline.column",
        "'scor'",
    ),
    (
        "two baseline kinds",
        "assays/score_drift/baseline",
        {"values": [1.0], "from": 1, "to": 2},
        "assays.score_drift.baseline",
        "exactly one",
    ),
    (
        "history backwards",
        "assays/score_drift/baseline",
        {"from": "2024-05-02T00:00:00Z", "to": "2024-05-01T00:00:00Z"},
        "assays.score_drift.baseline.to",
        "after",
    ),
    (
        "aggregate iopath",
        "assays/score_drift/iopath",
        'mean(ccfraud.outputs[0][0], "1m", "1m")',
        "assays.score_drift.iopath",
        "aggregates",
    ),
    ("two champions", "models/1/shadow", False, "models", "exactly one"),
    ("no champion", "models/0/shadow", True, "models", "exactly one"),
    ("model not onnx", "models/1/path", "data/baseline.csv", "models[1].path", "not an ONNX model"),
    ("model missing", "models/1/path", "models/nope.onnx", "models[1].path", "does not exist"),
    ("duplicate model", "models/1/name", "ccfraud", "models[1].name", "duplicate"),
    ("model name with dash", "models/1/name", "fraud-base", "models[1].name", "identifier"),
    (
        "duplicate check name across sections",
        "alerts/no_high_fraud",
        {"when": 'count(ccfraud.outputs[0][0] > 0.95, "5m", "1s") > 10'},
        "alerts.no_high_fraud",
        "duplicate",
    ),
    ("bad option", "options", {"partitions": 0}, "options.partitions", "≥ 1"),
    ("bad lateness", "options", {"lateness": "5 sec"}, "options.lateness", "'5 sec'"),
    ("unknown option", "options", {"partition": 3}, "options.partition", "unknown field"),
    (
        "missing when",
        "alerts/high_fraud_5m",
        {"notify": ["email:ops@example.com"]},
        "alerts.high_fraud_5m.when",
        "missing",
    ),
]


@pytest.mark.parametrize(
    ("change", "value", "field", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_validation_errors_name_the_field(change: str, value: Any, field: str, words: str) -> None:
    data = _set(change, value)
    with pytest.raises(SpecError) as info:
        spec_from_dict(data, EXAMPLE)
    assert info.value.field == field, str(info.value)
    assert str(info.value).startswith(f"{field}: ")
    assert words in str(info.value)


def test_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    text = (
        (EXAMPLE / "pipeline.yaml")
        .read_text()
        .replace(
            "  no_model_drift:", "  no_high_fraud: ccfraud.outputs[0][0] < 0.5\n  no_model_drift:"
        )
    )
    (tmp_path / "pipeline.yaml").write_text(text)
    for sub in ("models", "data"):
        shutil.copytree(EXAMPLE / sub, tmp_path / sub)
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "pipeline.yaml")
    assert info.value.field == "validations.no_high_fraud"
    assert "duplicate" in str(info.value)


def test_builder_refuses_duplicates_and_second_champion() -> None:
    ccfraud = inspect_model(EXAMPLE / "models" / "ccfraud.onnx", "ccfraud")
    base = inspect_model(EXAMPLE / "models" / "fraud_base.onnx", "fraud_base")
    builder = PipelineBuilder("fraud").add_model_step(ccfraud)
    builder.add_validation("v", ccfraud.outputs[0][0] < 1)
    with pytest.raises(SpecError) as info:
        builder.add_validation("v", ccfraud.outputs[0][0] < 2)
    assert info.value.field == "validations.v"
    with pytest.raises(SpecError, match="champion"):
        builder.add_model_step(base)


def test_baselines_from_json_parquet_and_values(tmp_path: Path) -> None:
    values = np.linspace(0, 1, 50)
    (tmp_path / "b.json").write_bytes(orjson.dumps({"score": values.tolist()}))
    import pandas as pd

    pd.DataFrame({"score": values}).to_parquet(tmp_path / "b.parquet")
    for baseline in (
        {"file": "b.json", "column": "score"},
        {"file": "b.parquet", "column": "score"},
        {"values": values.tolist()},
    ):
        data = _set("assays/score_drift/baseline", baseline)
        data.pop("performance", None)  # its reference file is not in tmp_path
        data["models"] = [
            {
                "name": m["name"],
                "path": str(EXAMPLE / m["path"]),
                **({"shadow": True} if m.get("shadow") else {}),
            }
            for m in data["models"]
        ]
        spec = spec_from_dict(data, tmp_path)
        loaded = load_baseline_values(spec.assays["score_drift"], tmp_path)
        assert loaded is not None
        np.testing.assert_allclose(loaded, values)
    history = spec_from_dict(
        _set("assays/score_drift/baseline", {"from": "2024-05-01T00:00:00Z", "to": 1714608000000}),
        EXAMPLE,
    )
    assay = history.assays["score_drift"]
    assert assay.baseline == {"from": 1714521600000, "to": 1714608000000}
    assert load_baseline_values(assay, EXAMPLE) is None


def test_tensor_names_travel_in_the_canonical_spec() -> None:
    from driftline.expressions import evaluate
    from driftline.spec import load_spec, spec_from_canonical

    spec = load_spec(Path(__file__).resolve().parents[2] / "examples/fraud/pipeline.yaml")
    canonical = spec.to_canonical()
    assert canonical["models"]["ccfraud"]["outputs"] == ["probability"]
    # Rebuilt where no model file exists (as the monitor does): names still resolve.
    rebuilt = spec_from_canonical(canonical)
    assert rebuilt.champion.info is None
    assert rebuilt.tensor_names()[("ccfraud", "outputs")] == ["probability"]
    assert rebuilt.version == spec.version
    expr = parse('ccfraud.outputs["probability"][0] > 0.5')
    tensors = {("ccfraud", "outputs"): [np.array([[0.2], [0.9]])]}
    assert evaluate(expr, tensors, rebuilt.tensor_names()).tolist() == [False, True]


def test_a_tensor_name_the_model_lacks_is_refused_even_without_the_file() -> None:
    from driftline.spec import load_spec, spec_from_canonical

    spec = load_spec(Path(__file__).resolve().parents[2] / "examples/fraud/pipeline.yaml")
    canonical = spec.to_canonical()
    canonical["validations"]["bad"] = to_json(parse('ccfraud.outputs["score"][0] < 1'))
    with pytest.raises(SpecError, match=r"validations\.bad.*no output named 'score'"):
        spec_from_canonical(canonical)


def test_a_spec_too_large_for_one_control_message_is_refused_with_its_size() -> None:
    doc = {
        "name": "huge",
        "models": [{"name": "ccfraud", "path": str(EXAMPLE / "models" / "ccfraud.onnx")}],
        "validations": {f"v{i}": f"ccfraud.outputs[0][0] < {i}.5" for i in range(20_000)},
    }
    with pytest.raises(SpecError, match="over the control topic's limit") as info:
        spec_from_dict(doc)
    assert info.value.field == "spec"


def test_alert_may_notify_stdout_and_targets_are_canonical() -> None:
    data = _set(
        "alerts/high_fraud_5m/notify", ["stdout", "email:ops@example.com", "stdout", "webhook:pd"]
    )
    spec = spec_from_dict(data, EXAMPLE)
    assert spec.alerts["high_fraud_5m"].notify == ("email:ops@example.com", "stdout", "webhook:pd")
    assert spec.to_canonical()["alerts"]["high_fraud_5m"]["notify"] == [
        "email:ops@example.com",
        "stdout",
        "webhook:pd",
    ]


@pytest.mark.parametrize("target", ["email:a@x.example,b@y.example", "email:a@x.example b@y.z"])
def test_alert_refuses_address_lists(target: str) -> None:
    data = _set("alerts/high_fraud_5m/notify", ["stdout", target])
    with pytest.raises(SpecError) as info:
        spec_from_dict(data, EXAMPLE)
    assert info.value.field == "alerts.high_fraud_5m.notify[1]"
    assert "one address" in str(info.value)


# -- hostile specs ----------------------------------------------------------------------------


def _anchor_bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_anchor_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    text = _anchor_bomb(9)
    assert len(text.encode()) < 520  # 9**10 strings once expanded
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match="expands to more than 2,000,000 nodes") as info:
        load_spec(path)
    assert info.value.field == str(path)
    assert "aliases" in str(info.value)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a: &a [*a]\n", "refers to itself"),
        ("a: &a {b: *a}\n", "refers to itself"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ],
)
def test_self_referencing_or_deep_yaml_is_a_spec_error(
    tmp_path: Path, text: str, words: str
) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=words):
        load_spec(path)


def test_shared_anchors_within_the_limit_still_load(tmp_path: Path) -> None:
    text = (EXAMPLE / "pipeline.yaml").read_text()
    text = text.replace("models/", f"{EXAMPLE}/models/").replace("data/", f"{EXAMPLE}/data/")
    text = text.replace(
        "  no_high_fraud: ccfraud.outputs[0][0] < 0.95",
        '  no_high_fraud: &check "ccfraud.outputs[0][0] < 0.95"\n  same_again: *check',
    )
    path = tmp_path / "anchors.yaml"
    path.write_text(text)
    spec = load_spec(path)
    assert same(spec.validations["same_again"], spec.validations["no_high_fraud"])


def test_spec_over_the_size_cap_names_the_fix(tmp_path: Path) -> None:
    from driftline.spec import MAX_SPEC_BYTES

    path = tmp_path / "big.yaml"
    path.write_bytes(b"name: fraud\n" + b"#" * MAX_SPEC_BYTES)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert f"more than the {MAX_SPEC_BYTES:,} accepted" in str(info.value)
    assert "baseline: {file:" in str(info.value)


def test_spec_must_be_utf8_and_the_error_names_file_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: fraud\n# café\n".encode("latin-1"))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.field == str(path)
    assert "not UTF-8: byte 0xe9 at offset 17 (line 2)" in str(info.value)
    assert "save the file as UTF-8" in str(info.value)


@pytest.mark.parametrize(
    ("change", "value", "field"),
    [
        ("options", {"lateness": "999999999999d"}, "options.lateness"),
        ("assays/score_drift/window", {"width": "999999999999d", "interval": "1m"},
         "assays.score_drift.window.width"),
        ("alerts/high_fraud_5m/for", "3651d", "alerts.high_fraud_5m.for"),
        ("alerts/high_fraud_5m/when", 'count(ccfraud.outputs[0][0] > 0.95, "99999999d", "1s") > 1',
         "alerts.high_fraud_5m.when"),
    ],
)  # fmt: skip
def test_huge_durations_are_refused_with_a_message(change: str, value: Any, field: str) -> None:
    with pytest.raises(SpecError) as info:
        spec_from_dict(_set(change, value), EXAMPLE)
    assert info.value.field == field
    assert "longest duration accepted, 3650d" in str(info.value)


def test_longest_duration_is_accepted() -> None:
    spec = spec_from_dict(_set("options", {"lateness": "3650d"}), EXAMPLE)
    assert spec.options.lateness_ms == 3650 * 86_400_000


@pytest.mark.parametrize("name", ["notifications", "assays", "pipelines", "models", "performance",
                                  "Notifications"])  # fmt: skip
def test_pipeline_names_of_driftline_topics_are_reserved(name: str) -> None:
    data = _set("name", name)
    with pytest.raises(SpecError) as info:
        spec_from_dict(data, EXAMPLE)
    assert info.value.field == "name"
    assert "reserved" in str(info.value) and "Choose another name" in str(info.value)


def test_every_system_topic_driftline_creates_is_reserved() -> None:
    """Any ``.topic("<literal>", ...)`` call in the package names a reserved first part."""
    import ast

    from driftline.config import SYSTEM_TOPICS

    root = Path(__file__).resolve().parents[2] / "driftline"
    found: set[str] = set()
    for file in root.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "topic"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.add(node.args[0].value)
    assert {"notifications", "assays", "pipelines", "models"} <= found
    assert found <= set(SYSTEM_TOPICS), found - set(SYSTEM_TOPICS)
