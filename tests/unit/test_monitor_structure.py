"""The monitor's layout holds: faust in one module, imports pointing down, modules small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PKG = Path(__file__).resolve().parents[2] / "driftline"
MONITOR_MODULES = [
    "streams/monitor.py",
    "streams/_engine.py",
    "streams/_faust_app.py",
    "streams/_build.py",
    "streams/_batch.py",
    "streams/_decode.py",
    "streams/_final.py",
    "streams/windows.py",
    "streams/state.py",
    "streams/memstate.py",
    "streams/samples.py",
    "streams/assay_lifecycle.py",
    "streams/replay.py",
    "streams/_monitor_cli.py",
]


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_faust_is_imported_by_one_module_only() -> None:
    users = sorted(
        str(p.relative_to(PKG))
        for p in PKG.rglob("*.py")
        if any(m == "faust" or m.startswith(("faust.", "aiokafka")) for m in _imports(p))
    )
    assert users == ["streams/_faust_app.py"]


@pytest.mark.parametrize("low", ["compile.py", "kafka", "detectors", "events.py", "config.py"])
def test_lower_layers_never_import_upper_ones(low: str) -> None:
    paths = [PKG / low] if low.endswith(".py") else sorted((PKG / low).rglob("*.py"))
    for path in paths:
        up = {
            m
            for m in _imports(path)
            if m.startswith(("driftline.streams", "driftline.alerts", "driftline.cli"))
            or m == "driftline.sdk"
            # the compile step reads specs (it sits beside spec, above everything below)
            or (m == "driftline.spec" and low != "compile.py")
        }
        assert not up, f"{path.relative_to(PKG)} imports {sorted(up)}"


def test_no_monitor_module_is_over_700_lines() -> None:
    sizes = {m: len((PKG / m).read_text(encoding="utf-8").splitlines()) for m in MONITOR_MODULES}
    assert {m: n for m, n in sizes.items() if n > 700} == {}


def test_the_monitor_never_imports_its_faust_module() -> None:
    for m in MONITOR_MODULES:
        if m != "streams/_faust_app.py" and m != "streams/_monitor_cli.py":
            assert "driftline.streams._faust_app" not in _imports(PKG / m), m
