"""The explicit-inverse path (inverse="cholesky") and the Cholesky-factor path (inverse="triangular")
against the eigendecomposition path, float64."""

import pytest
import torch
from torch import nn

from curvlens.optim.kfac import KFAC, KFACPreconditioner
from curvlens.optim.kfac import explicit
from curvlens.optim.kfac.explicit import damped_inverse, inverse_solve, kron_inverses
from curvlens.optim.kfac.inverse import eigh_factor, kron_solve


def _psd(n, rank, g, scale=1.0):
    m = torch.randn(n, rank, generator=g, dtype=torch.float64)
    return scale * (m @ m.T) / rank


@pytest.mark.parametrize("triangular", [False, True])
@pytest.mark.parametrize("lam", [1e-6, 1e-3, 1.0])
def test_inverse_solve_matches_eigh_kron_solve(lam, triangular, monkeypatch):
    monkeypatch.setattr(explicit, "TRIANGULAR_MIN_DIM", 1)  # Cholesky factors for every factor
    g = torch.Generator().manual_seed(0)
    A, G = _psd(7, 3, g, 10.0), _psd(4, 6, g)  # A rank-deficient, traces far apart (pi != 1)
    V = torch.randn(4, 7, generator=g, dtype=torch.float64)
    inverses = kron_inverses(A, G, lam, triangular)
    assert all((i.lower is not None) == triangular and (i.inv is None) == triangular for i in inverses)
    got = inverse_solve(*inverses, V)
    ref = kron_solve(eigh_factor(G), eigh_factor(A), V, lam)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("triangular", [False, True])
def test_inverse_solve_with_a_diagonal_input_factor(triangular, monkeypatch):
    monkeypatch.setattr(explicit, "TRIANGULAR_MIN_DIM", 1)
    g = torch.Generator().manual_seed(1)
    A, G = torch.tensor([3.0, 0.0, 1.5], dtype=torch.float64), _psd(2, 3, g)
    V = torch.randn(2, 3, generator=g, dtype=torch.float64)
    got = inverse_solve(*kron_inverses(A, G, 1e-2, triangular), V)
    torch.testing.assert_close(got, kron_solve(eigh_factor(G), eigh_factor(A), V, 1e-2), rtol=1e-10, atol=1e-12)


def test_failed_cholesky_falls_back_to_the_clipped_eigendecomposition():
    f = torch.tensor([[2.0, 0.0], [0.0, -1.0]], dtype=torch.float64)  # not PSD: Cholesky of f + 0.5 I fails
    for triangular in (False, True):
        inv = damped_inverse(f, 0.5, triangular)
        assert inv.fallback and inv.lower is None
        torch.testing.assert_close(inv.inv, torch.diag(torch.tensor([0.4, 2.0], dtype=torch.float64)))
        assert not damped_inverse(torch.eye(2, dtype=torch.float64), 0.5, triangular).fallback


def _model():
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(48, 3),
                         nn.Tanh(), nn.Linear(3, 3))


@pytest.mark.parametrize("other", ["cholesky", "triangular"])
def test_preconditioner_paths_agree_over_steps_and_damping_changes(other, monkeypatch):
    monkeypatch.setattr(explicit, "TRIANGULAR_MIN_DIM", 1)  # the small factors too: solves with Cholesky factors
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        base = _model()
        runs = {}
        for kind in ("eigh", other):
            model = _model()
            model.load_state_dict(base.state_dict())
            pre = KFACPreconditioner(model, loss_fn=nn.CrossEntropyLoss(), update_every=1, inverse_every=2,
                                     inverse=kind, generator=0)
            g, out = torch.Generator().manual_seed(3), []
            for damping in (1e-2, 1e-2, 0.3, 1e-4, 1e-4):
                pre.damping = damping
                x, y = torch.randn(6, 1, 4, 4, generator=g), torch.randint(0, 3, (6,), generator=g)
                model.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
                info = pre.step()
                out.append((info.kl_scale, [p.grad.clone() for p in model.parameters()]))
            runs[kind] = out
        for (ke, ge), (kc, gc) in zip(runs["eigh"], runs[other]):
            assert abs(ke - kc) <= 1e-10 * ke
            for a, b in zip(ge, gc):
                torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-13)
    finally:
        torch.set_default_dtype(before)


@pytest.mark.parametrize("other", ["cholesky", "triangular"])
def test_embedding_block_paths_agree(other, monkeypatch):
    monkeypatch.setattr(explicit, "TRIANGULAR_MIN_DIM", 1)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        grads = {}
        for kind in ("eigh", other):
            torch.manual_seed(1)
            model = nn.Sequential(nn.Embedding(5, 3), nn.Flatten(), nn.Linear(6, 4))
            opt = KFAC(model, nn.CrossEntropyLoss(), lr=0.1, update_every=1, inverse_every=1, inverse=kind,
                       generator=0)
            g = torch.Generator().manual_seed(2)
            for _ in range(3):
                opt.step((torch.randint(0, 5, (8, 2), generator=g), torch.randint(0, 4, (8,), generator=g)))
            grads[kind] = [p.detach().clone() for p in model.parameters()]
        for a, b in zip(grads["eigh"], grads[other]):
            torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-13)
    finally:
        torch.set_default_dtype(before)


def test_bad_inverse_is_one_clear_line():
    with pytest.raises(ValueError, match=r"^inverse: expected one of 'cholesky', 'eigh', 'triangular', got 'lu'; "):
        KFACPreconditioner(nn.Linear(2, 2), loss_fn=nn.MSELoss(), inverse="lu")


def test_triangular_keeps_cholesky_factors_of_large_factors_only():
    g = torch.Generator().manual_seed(4)
    n = explicit.TRIANGULAR_MIN_DIM
    small, large = _psd(n - 1, n, g), _psd(n, n + 3, g)
    assert damped_inverse(small, 1e-2, True).lower is None
    got = damped_inverse(large, 1e-2, True)
    assert got.inv is None and not got.fallback
    v = torch.randn(n, 3, generator=g, dtype=torch.float64)
    ref = torch.linalg.solve(large + 1e-2 * torch.eye(n, dtype=torch.float64), v)
    torch.testing.assert_close(explicit._solve_left(got.lower, v), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("triangular", [False, True])
def test_non_finite_factor_falls_back_to_a_finite_diagonal_inverse(triangular):
    f = torch.tensor([[1.0, float("nan")], [float("nan"), 2.0]], dtype=torch.float64)
    inv = damped_inverse(f, 1.0, triangular)
    assert inv.fallback and inv.lower is None and bool(torch.isfinite(inv.inv).all())
