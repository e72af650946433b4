"""Every registered result kind round-trips through HDF5 (built by running the real functions)."""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import pkgutil
import typing

import numpy as np
import pytest
import torch

from curvlens.io.hdf5 import load_result, results_equal, save_result
from curvlens.operators import Block, DenseOperator
from curvlens.results import RESULT_KINDS, RunInfo

# import every module that may register a result kind (they register on import)
for _pkg in ("curvlens.linalg", "curvlens.estimators", "curvlens.diagnostics", "curvlens.recommend",
             "curvlens.optim", "curvlens.hooks", "curvlens.operators"):
    _mod = importlib.import_module(_pkg)
    for _info in pkgutil.iter_modules(_mod.__path__):
        importlib.import_module(f"{_pkg}.{_info.name}")

_KINDS = sorted(k for k in RESULT_KINDS if not k.startswith("_test"))


def _op() -> DenseOperator:
    """Indefinite 6 x 6 matrix with known spectrum and two blocks."""
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    A = Q @ np.diag([-1.5, 0.25, 0.5, 1.0, 2.0, 4.0]) @ Q.T
    blocks = (Block("layer1", 0, 4, ("w1",)), Block("layer2", 4, 6, ("w2",)))
    return DenseOperator(torch.from_numpy((A + A.T) / 2), blocks=blocks)


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def _find(name: str):
    """A public function by name, wherever the owning package exposes it."""
    for pkg in ("curvlens.linalg", "curvlens.estimators", "curvlens.diagnostics", "curvlens.recommend"):
        mod = importlib.import_module(pkg)
        if hasattr(mod, name):
            return getattr(mod, name)
        for info in pkgutil.iter_modules(mod.__path__):
            sub = importlib.import_module(f"{pkg}.{info.name}")
            if hasattr(sub, name) and callable(getattr(sub, name)):
                return getattr(sub, name)
    raise LookupError(name)


def _recommendation():
    """A memory budget that fits some optimizers (1.2e7 params x 4 bytes x 3-9 copies) but not all."""
    summary = {"lambda_max": 50.0, "lambda_min": -0.5, "condition_number": None, "negative_mass": 0.1,
               "num_params": 12_000_000, "trace": 12.0, "lr": 0.1, "momentum": 0.9}
    context = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "batch_size": 32, "memory_bytes": 250_000_000}
    rec = _find("recommend")(summary, context)
    assert rec.candidates and rec.rejected, "adjust the memory budget so that both lists are non-empty"
    return rec


def _unconverged_power():
    with pytest.warns(UserWarning, match="increase max_matvecs"):
        res = _find("power_iteration")(_op(), 1, max_matvecs=3, generator=_gen())
    assert not res.info.converged
    return res


def _series():
    import tempfile

    from curvlens.io.series import SeriesWriter, load_series

    path = os.path.join(tempfile.mkdtemp(), "run.h5")
    w = SeriesWriter(path)
    for t in range(1, 4):
        w.append(10 * t, {"lambda_max": 1.5 * t, "threshold": 4.0, "trace": 3.0 * t, "trace_stderr": math.nan},
                 [("edge_of_stability", "step 30: ratio 1.1")] if t == 3 else [])
    return load_series(path)


BUILDERS = {
    "curvature_series": _series,
    "run_info": lambda: RunInfo(seed=2**64 - 5, matvecs=3, wall_time=0.25, converged=False, status="increase k"),
    "lanczos": lambda: _find("lanczos")(_op(), 4, generator=_gen()),
    "eigen": lambda: _find("top_eigenpairs")(_op(), 2, generator=_gen()),
    "eigen/bottom": lambda: _find("bottom_eigenpairs")(_op(), 1, generator=_gen()),
    "eigen/power": lambda: _unconverged_power(),
    "extreme_eigenvalues": lambda: _find("extreme_eigenvalues")(_op(), generator=_gen()),
    "trace_estimate": lambda: _find("hutchinson_trace")(_op(), 8, per_block=True, generator=_gen()),
    "diagonal_estimate": lambda: _find("hutchinson_diagonal")(_op(), 8, generator=_gen()),
    "norm_estimate": lambda: _find("frobenius_norm")(_op(), 8, generator=_gen()),
    "spectral_density": lambda: _find("spectral_density")(_op(), num_probes=2, num_steps=4, generator=_gen()),
    "spectral_density/kpm": lambda: _find("spectral_density")(_op(), num_probes=2, num_steps=4, method="kpm",
                                                              generator=_gen()),
    "recommendation": _recommendation,
    "recommendation_candidate": lambda: _recommendation().candidates[0],
    "recommendation_rejected": lambda: _recommendation().rejected[0],
    "analysis": lambda: _find("analyze")(_op(), generator=_gen()),
}


def _synthesize(cls: type, depth: int = 0):
    """A best-effort instance built from a result class's type hints (for kinds without a builder)."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.init:
            values[f.name] = _value_for(hints.get(f.name, float), depth)
    return cls(**values)


def _value_for(tp, depth: int):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        non_none = [a for a in args if a is not type(None)]
        return _value_for(non_none[0], depth) if non_none else None
    if tp is torch.Tensor:
        return torch.tensor([1.5, math.nan, -2.0], dtype=torch.float64)
    if tp is np.ndarray:
        return np.array([0.5, 2.0])
    if tp in (float, int, bool, str):
        return {float: 0.75, int: 3, bool: True, str: "s"}[tp]
    if origin in (tuple, list):
        item = _value_for(args[0], depth + 1) if args and args[0] is not Ellipsis else 1.0
        return origin([item, item])
    if tp is dict or origin is dict:
        return {"a": 1.0, "b": None}
    if dataclasses.is_dataclass(tp) and depth < 3:
        return _synthesize(tp, depth + 1)
    return None


@pytest.mark.parametrize("kind", _KINDS + ["spectral_density/kpm", "eigen/bottom", "eigen/power"])
def test_every_registered_kind_roundtrips(tmp_path, kind):
    cls = RESULT_KINDS[kind.split("/")[0]][0]
    build = BUILDERS.get(kind)
    if build is not None:
        result = build()
    else:
        try:
            result = _synthesize(cls)
        except Exception as e:  # noqa: BLE001 - report which builder to add
            raise AssertionError(f"no builder for result kind {kind!r}: add one to BUILDERS in {__file__} "
                                 f"({type(e).__name__}: {e})") from e
    assert type(result) is cls
    back = load_result(save_result(result, tmp_path / f"{kind.replace('/', '_')}.h5"))
    assert type(back) is cls
    assert results_equal(back, result, explain=True) is None
    assert back.info == result.info if hasattr(result, "info") else back == result


def test_the_known_kinds_are_covered():
    """The kinds promised by the design exist and have a builder that runs real code."""
    expected = {"run_info", "lanczos", "eigen", "trace_estimate", "diagonal_estimate", "spectral_density"}
    assert expected <= set(_KINDS)
    assert expected <= set(BUILDERS)


def test_load_in_fresh_process_imports_the_module_that_registers_the_kind(tmp_path):
    """A reader that only imports curvlens.io still gets the right class back."""
    import subprocess
    import sys

    path = save_result(BUILDERS["trace_estimate"](), tmp_path / "trace.h5")
    code = ("import sys; from curvlens.io import load_result; from curvlens.results import RESULT_KINDS; "
            "RESULT_KINDS.pop('trace_estimate', None); "  # as if nothing had imported the estimators yet
            "[sys.modules.pop(m) for m in list(sys.modules) if m.startswith('curvlens.estimators')]; "
            "r = load_result(sys.argv[1]); "
            "assert 'curvlens.estimators.trace' in sys.modules; print(type(r).__module__, type(r).__name__)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["curvlens.estimators.trace", "TraceResult"]
