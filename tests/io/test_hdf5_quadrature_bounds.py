"""HDF5 round trip of the quadrature-bound fields (DensityResult schema 2, SaddleResult schema 2),
and files written before them (schema 1) still load."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from curvlens.diagnostics import saddle_from
from curvlens.diagnostics.saddle import SaddleResult
from curvlens.estimators.density import DensityResult, spectral_density
from curvlens.io.hdf5 import load_result, results_equal, save_result

from ..linalg._spectra import hessian_like_spectrum, with_spectrum


@pytest.fixture(scope="module")
def density():
    """Deflated SLQ (pilot dropped) on a spectrum with a bulk straddling zero."""
    ev = np.concatenate([hessian_like_spectrum(80), [3.0, 5.0]])
    res = spectral_density(with_spectrum(ev, seed=1), num_probes=5, num_steps=12, generator=4)
    assert "deflated" in res.info.status and (res.node_kind.numpy() == 0).any() and (res.node_kind.numpy() == 1).any()
    return res


def _as_schema_1(path, drop: tuple[str, ...]) -> None:
    """Rewrite a saved result as its schema-1 writer did: without the ``drop`` fields."""
    with h5py.File(path, "r+") as f:
        g = f["result"]
        fields = [[k, t] for k, t in json.loads(g.attrs["curvlens-fields"]) if k not in drop]
        g.attrs["curvlens-fields"] = json.dumps(fields)
        g.attrs["curvlens-schema"] = 1
        for name in drop:
            if name in g:
                del g[name]
            if name in g.attrs:
                del g.attrs[name]


def test_density_and_saddle_roundtrip_with_bounds(tmp_path, density):
    back = load_result(save_result(density, tmp_path / "d.h5"))
    assert type(back) is DensityResult and results_equal(back, density, explain=True) is None
    assert back.node_kind.dtype == density.node_kind.dtype and bool((back.node_kind == density.node_kind).all())
    assert back.fraction_below_bounds(0.0) == density.fraction_below_bounds(0.0)
    sad = saddle_from(density)
    assert sad.fraction_negative_bounds is not None and sad.fraction_negative_resolved is not None
    sback = load_result(save_result(sad, tmp_path / "s.h5"))
    assert type(sback) is SaddleResult and results_equal(sback, sad, explain=True) is None
    assert sback.fraction_negative_bounds == sad.fraction_negative_bounds
    assert sback.fraction_negative_resolved is sad.fraction_negative_resolved


def test_schema_1_density_recovers_node_kind(tmp_path, density):
    path = save_result(density, tmp_path / "old.h5")
    _as_schema_1(path, ("node_kind",))
    with h5py.File(path, "r") as f:
        assert "node_kind" not in f["result"] and f["result"].attrs["curvlens-schema"] == 1
    back = load_result(path)
    assert bool((back.node_kind == density.node_kind).all())
    assert back.fraction_below_bounds(0.0) == density.fraction_below_bounds(0.0)


def test_schema_1_kpm_density_and_saddle_load_with_none(tmp_path, density):
    kpm = spectral_density(with_spectrum(hessian_like_spectrum(40)), num_probes=2, num_steps=8, method="kpm",
                           generator=0)
    path = save_result(kpm, tmp_path / "kpm.h5")
    _as_schema_1(path, ("node_kind",))
    assert load_result(path).node_kind is None
    sad = saddle_from(density)
    path = save_result(sad, tmp_path / "saddle.h5")
    _as_schema_1(path, ("fraction_negative_bounds", "fraction_negative_resolved"))
    back = load_result(path)
    assert back.fraction_negative_bounds is None and back.fraction_negative_resolved is None
    assert back.fraction_negative == sad.fraction_negative and back.verdict == sad.verdict
