"""The options a spec gives the worker for large tensors: record_inputs and the size bound."""

from __future__ import annotations

import pytest

from driftline.errors import SpecError
from driftline.spec import MAX_MESSAGE_BYTES, spec_from_canonical, spec_from_dict

pytestmark = pytest.mark.unit

MODEL = {"name": "m", "sha256": "0" * 64, "inputs": ["x"], "outputs": ["y"]}


def _spec(**options: object) -> dict[str, object]:
    return {"name": "p", "models": [MODEL], "options": options}


def test_record_inputs_defaults_to_true_and_leaves_existing_versions_alone() -> None:
    plain = spec_from_dict(_spec())
    same = spec_from_dict(_spec(record_inputs=True))
    lean = spec_from_dict(_spec(record_inputs=False))
    assert plain.options.record_inputs and not lean.options.record_inputs
    assert plain.version == same.version != lean.version
    assert "record_inputs" not in plain.to_canonical()["options"]
    back = spec_from_canonical(lean.to_canonical())
    assert back.options.record_inputs is False and back.version == lean.version


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"record_inputs": "no"}, "options.record_inputs"),
        ({"max_message_bytes": MAX_MESSAGE_BYTES + 1}, "over 52428800"),
        ({"max_message_bytes": 10}, "≥ 1024"),
    ],
)
def test_bad_options_are_refused_naming_the_field(options: dict[str, object], words: str) -> None:
    with pytest.raises(SpecError, match=words):
        spec_from_dict(_spec(**options))


def test_without_recorded_inputs_an_assay_or_alert_over_inputs_is_refused() -> None:
    assay = {
        "iopath": "m.inputs[0][1]",
        "baseline": {"values": [0.0, 1.0, 2.0, 3.0]},
        "window": {"width": "1m", "interval": "1m"},
    }
    doc = _spec(record_inputs=False)
    with pytest.raises(SpecError, match=r"assays.a.iopath reads m.inputs\[0\]\[1\]") as info:
        spec_from_dict({**doc, "assays": {"a": assay}})
    assert info.value.field == "options.record_inputs"
    alert = {"when": 'count(m.inputs[0][0] > 1, "1m", "1m") > 3', "notify": ["stdout"]}
    with pytest.raises(SpecError, match=r"alerts\.hot\.when reads"):
        spec_from_dict({**doc, "alerts": {"hot": alert}})
    # Outputs only, or validations (run by the worker on the request itself), are fine.
    fine = spec_from_dict(
        {
            **doc,
            "validations": {"v": "m.inputs[0][0] < 5"},
            "assays": {"a": {**assay, "iopath": "m.outputs[0][0]"}},
        }
    )
    assert not fine.options.record_inputs
