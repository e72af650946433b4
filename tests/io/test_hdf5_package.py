"""curvlens.io exports its names lazily: importing the package does not import h5py."""

from __future__ import annotations

import subprocess
import sys

import pytest

import curvlens.io


@pytest.mark.parametrize("name", curvlens.io.__all__)
def test_every_exported_name_resolves(name):
    value = getattr(curvlens.io, name)
    assert value is getattr(sys.modules[curvlens.io._EXPORTS[name]], name)
    assert name in dir(curvlens.io)


def test_unknown_name():
    with pytest.raises(AttributeError, match="module 'curvlens.io' has no attribute 'save_reslt'"):
        curvlens.io.save_reslt  # noqa: B018


def test_import_is_light():
    code = "import sys, curvlens.io; print('h5py' in sys.modules, 'curvlens.io.hdf5' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("name", ["load_checkpoint", "load_data", "resolve_loss", "LOSSES", "import_object"])
def test_loading_is_not_exported_here(name):
    """Problem loading lives in curvlens.problem; curvlens.io is result storage only."""
    assert name not in curvlens.io.__all__
    with pytest.raises(AttributeError, match=f"module 'curvlens.io' has no attribute '{name}'"):
        getattr(curvlens.io, name)
