"""Every Python package in the source tree is listed in pyproject.toml, so a non-editable install ships it."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11; the CI interpreter has it

ROOT = Path(__file__).resolve().parents[1]


def _declared():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = config["tool"]["setuptools"]
    renamed = {v: k for k, v in setuptools.get("package-dir", {}).items()}
    return set(setuptools["packages"]), renamed


def test_every_package_is_declared():
    declared, renamed = _declared()
    found = set()
    for top in ("curvlens", "cli"):
        for init in (ROOT / top).rglob("__init__.py"):
            parts = list(init.parent.relative_to(ROOT).parts)
            parts[0] = renamed.get(parts[0], parts[0])
            found.add(".".join(parts))
    missing = sorted(found - declared)
    assert not missing, f"packages missing from [tool.setuptools] packages in pyproject.toml: {missing}"
    assert not sorted(declared - found), "pyproject.toml declares packages that do not exist"
