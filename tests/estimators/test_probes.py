import numpy as np
import pytest
import torch

from curvlens.estimators import probe_vectors


def test_rademacher_entries_and_shape():
    V = probe_vectors(50, 7, kind="rademacher", dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    assert V.shape == (50, 7) and V.dtype == torch.float32
    assert set(V.unique().tolist()) == {-1.0, 1.0}


def test_second_moment_is_identity():
    V = probe_vectors(6, 20000, kind="gaussian", generator=torch.Generator().manual_seed(1))
    M = (V @ V.T / V.shape[1]).numpy()
    assert np.abs(M - np.eye(6)).max() < 0.05
    R = probe_vectors(6, 20000, generator=torch.Generator().manual_seed(1))
    assert np.abs((R @ R.T / R.shape[1]).numpy() - np.eye(6)).max() < 0.05


def test_reproducible_and_global_rng_untouched():
    state, np_state = torch.get_rng_state(), np.random.get_state()
    a = probe_vectors(10, 3, kind="gaussian", generator=torch.Generator().manual_seed(5))
    b = probe_vectors(10, 3, kind="gaussian", generator=torch.Generator().manual_seed(5))
    c = probe_vectors(10, 3, kind="gaussian", generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(state, torch.get_rng_state())
    assert np.array_equal(np_state[1], np.random.get_state()[1])


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(dim=0, k=2), ValueError, r"dim: expected a positive int, got 0"),
        (dict(dim=3, k=-1), ValueError, r"k: expected a non-negative int"),
        (dict(dim=3, k=2, kind="uniform"), ValueError, r"kind: expected one of .*got 'uniform'"),
        (dict(dim=3, k=2, dtype=torch.int64), ValueError, r"dtype: expected a floating"),
        (dict(dim=3, k=2, generator=0), TypeError, r"generator: expected a torch.Generator, got int"),
    ],
)
def test_bad_inputs(kwargs, exc, match):
    kwargs.setdefault("generator", torch.Generator())
    with pytest.raises(exc, match=match):
        probe_vectors(**kwargs)
