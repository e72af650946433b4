"""Diagonal of a curvature operator: exact (D products), Hutchinson, and XDiag-style deflated.

Which to use: :func:`exact_diagonal` whenever ``D`` products are affordable (small models,
a single layer via ``op.block(name)``); :func:`xdiag` when the spectrum decays (it removes
the dominant low-rank part exactly); :func:`hutchinson_diagonal` for diagonal-dominant
matrices, where deflation has little to remove.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from curvlens._rng import resolve_generator
from curvlens.estimators._common import (
    call_back,
    check_chunk,
    check_int,
    check_operator,
    mean_stderr,
)
from curvlens.estimators._probes import check_probe_kind, probe_vectors
from curvlens.estimators.xtrace import XSketch
from curvlens.results import RunInfo, RunTimer, register_result

if TYPE_CHECKING:
    from curvlens.operators.base import CurvatureOperator


@register_result("diagonal_estimate")
@dataclass(frozen=True)
class DiagonalResult:
    """An estimate of ``diag(A)``.

    Attributes:
        estimate: (D,) float64 tensor.
        stderr: (D,) float64 tensor of per-entry standard errors, or None when exact.
        num_matvecs: operator products spent.
        num_probes: random probes behind ``stderr`` (0 when exact).
        probe: ``"rademacher"``, ``"gaussian"`` or ``"none"`` (exact).
        method: ``"exact"``, ``"hutchinson"`` or ``"xdiag"``.
        info: run metadata.
    """

    estimate: torch.Tensor
    stderr: torch.Tensor | None
    num_matvecs: int
    num_probes: int
    probe: str
    method: str
    info: RunInfo


def exact_diagonal(
    op, *, chunk_size: int = 64, callback: Callable[[int, int], None] | None = None
) -> DiagonalResult:
    """The exact diagonal ``A_ii = e_i^T A e_i`` from ``D`` products with identity columns.

    Args:
        op: a :class:`~curvlens.operators.base.CurvatureOperator` (small ``D``: costs ``D``
            products; for one layer use ``exact_diagonal(op.block(name))``).
        chunk_size: identity columns per ``op.matmat`` call.
        callback: ``callback(matvecs_done, D)`` after each chunk.

    Example:
        >>> import torch, curvlens
        >>> A = torch.tensor([[2.0, 1.0], [1.0, -3.0]], dtype=torch.float64)
        >>> exact_diagonal(curvlens.DenseOperator(A)).estimate
        tensor([ 2., -3.], dtype=torch.float64)
    """
    op = check_operator(op)
    chunk = check_chunk(chunk_size)
    timer = RunTimer(op)
    out = torch.empty(op.dim, dtype=torch.float64, device=op.device)
    for i in range(0, op.dim, chunk):
        j = min(i + chunk, op.dim)
        E = torch.zeros(op.dim, j - i, dtype=op.dtype, device=op.device)
        idx = torch.arange(j - i, device=op.device)
        E[i + idx, idx] = 1
        out[i:j] = op.matmat(E)[i + idx, idx].double()
        call_back(callback, j, op.dim)
    return DiagonalResult(
        estimate=out, stderr=None, num_matvecs=timer.matvecs, num_probes=0, probe="none", method="exact",
        info=timer.info(True, f"exact diagonal from {timer.matvecs} products"),
    )


def _from_rows(rows: torch.Tensor, *, timer: RunTimer, probe: str, method: str) -> DiagonalResult:
    est, se = mean_stderr(rows, dim=1)
    return DiagonalResult(
        estimate=est, stderr=se, num_matvecs=timer.matvecs, num_probes=int(rows.shape[1]), probe=probe,
        method=method,
        info=timer.info(True, f"{method}: fixed budget of {timer.matvecs} matvecs, mean stderr {float(se.mean()):.3g}"),
    )


def hutchinson_diagonal(
    op: CurvatureOperator,
    num_matvecs: int = 100,
    *,
    probe: str = "rademacher",
    chunk_size: int = 64,
    generator: torch.Generator | int | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> DiagonalResult:
    """Hutchinson-type diagonal estimator ``diag(A) ~ (1/m) sum_i v_i * (A v_i)``.

    Reference: C. Bekas, E. Kokiopoulou, Y. Saad, "An estimator for the diagonal of a
    matrix", Appl. Numer. Math. 57 (2007). We use the unbiased form (no division by
    ``v * v``; identical for Rademacher probes). Entry ``j`` has variance
    ``sum_{l != j} A_jl^2 / m`` with Rademacher probes: exact for diagonal matrices.

    Args:
        op: a :class:`~curvlens.operators.base.CurvatureOperator`.
        num_matvecs: products (= probes), at least 2.
        probe: ``"rademacher"`` (default) or ``"gaussian"``.
        chunk_size: probes per ``op.matmat`` call.
        generator: ``torch.Generator``, int seed or None (fresh seed, recorded in ``info``).
        callback: ``callback(matvecs_done, num_matvecs)`` after each chunk.

    Example:
        >>> import torch, curvlens
        >>> op = curvlens.DenseOperator(torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)))
        >>> hutchinson_diagonal(op, 4, generator=0).estimate
        tensor([1., 2., 3.], dtype=torch.float64)
    """
    op = check_operator(op)
    m = check_int(num_matvecs, "num_matvecs", 2, "hutchinson_diagonal needs at least 2 products")
    probe = check_probe_kind(probe)
    chunk = check_chunk(chunk_size)
    gen = resolve_generator(generator)
    timer = RunTimer(op, gen)
    parts = []
    for i in range(0, m, chunk):
        V = probe_vectors(op.dim, min(chunk, m - i), kind=probe, dtype=op.dtype, device=op.device, generator=gen)
        parts.append((V * op.matmat(V)).double())
        call_back(callback, timer.matvecs, m)
    return _from_rows(torch.cat(parts, 1), timer=timer, probe=probe, method="hutchinson")


def xdiag(
    op: CurvatureOperator,
    num_matvecs: int = 100,
    *,
    probe: str = "rademacher",
    chunk_size: int = 64,
    generator: torch.Generator | int | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> DiagonalResult:
    """Exchangeable deflated diagonal estimator (XDiag-style).

    Reference: E. N. Epperly, J. A. Tropp, R. J. Webber, "XTrace: Making the most of every
    sample in stochastic trace estimation", SIMAX 45 (2024), Sec. on XDiag. With
    ``k = num_matvecs // 2`` probes, sample ``i`` uses the basis ``Q_i`` of
    ``A Omega_{-i}`` (projector ``P_i``) and the probe ``omega_i``:
    ``diag(2 P_i A - P_i A P_i) + omega_i * ((I - P_i) A (I - P_i) omega_i)``. The first term is
    exact given ``Q_i``; the second is unbiased. Unlike the paper's XDiag, the residual is
    projected on both sides, which removes the cross terms from the variance. ``stderr`` is
    the per-entry standard error of the ``k`` exchangeable samples. Exact (up to rounding)
    when ``rank(A) < k``.

    Args:
        op: a :class:`~curvlens.operators.base.CurvatureOperator`.
        num_matvecs: products, at least 4 (two per probe).
        probe: ``"rademacher"`` (default) or ``"gaussian"``.
        chunk_size: vectors per ``op.matmat`` call.
        generator: ``torch.Generator``, int seed or None (fresh seed, recorded in ``info``).
        callback: ``callback(matvecs_done, num_matvecs)`` when the products are done.

    Example:
        >>> import torch, curvlens
        >>> u = torch.arange(1.0, 9.0, dtype=torch.float64)
        >>> res = xdiag(curvlens.DenseOperator(torch.outer(u, u)), 6, generator=0)
        >>> torch.allclose(res.estimate, u * u)  # rank 1 < 3: exact
        True
    """
    op = check_operator(op)
    m = check_int(num_matvecs, "num_matvecs", 4, "xdiag needs at least 4 products (2 per probe)")
    probe = check_probe_kind(probe)
    chunk = check_chunk(chunk_size)
    gen = resolve_generator(generator)
    timer = RunTimer(op, gen)
    sk = XSketch(op, probe=probe, chunk=chunk, gen=gen)
    sk.add(m // 2)
    call_back(callback, timer.matvecs, m)
    return _from_rows(sk.row_samples(), timer=timer, probe=probe, method="xdiag")


__all__ = ["DiagonalResult", "exact_diagonal", "hutchinson_diagonal", "xdiag"]
