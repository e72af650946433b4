"""Frobenius norm ``||A||_F = sqrt(tr(A^2))`` from products ``||A v||^2``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from curvlens._rng import resolve_generator
from curvlens.estimators._common import apply_chunked, call_back, check_chunk, check_int, check_operator, mean_stderr
from curvlens.estimators._probes import check_probe_kind, probe_vectors
from curvlens.estimators.hutchpp import hutchpp_sketch
from curvlens.results import RunInfo, RunTimer, register_result

if TYPE_CHECKING:
    from curvlens.operators.base import CurvatureOperator

NORM_METHODS = ("hutchpp", "hutchinson")


@register_result("norm_estimate")
@dataclass(frozen=True)
class NormResult:
    """An estimate of ``||A||_F`` and of ``tr(A^2) = ||A||_F^2``.

    Attributes:
        frobenius: estimate of ``||A||_F`` (square root of ``trace_sq``, clamped at 0).
        frobenius_stderr: its standard error (delta method: ``trace_sq_stderr / (2 frobenius)``).
        trace_sq: unbiased estimate of ``tr(A^2)`` (sum of squared eigenvalues).
        trace_sq_stderr: its standard error (NaN with fewer than two probes).
        num_matvecs, num_probes, probe, method: as in :class:`~curvlens.estimators.TraceResult`.
        info: run metadata.
    """

    frobenius: float
    frobenius_stderr: float
    trace_sq: float
    trace_sq_stderr: float
    num_matvecs: int
    num_probes: int
    probe: str
    method: str
    info: RunInfo


def frobenius_norm(
    op: CurvatureOperator,
    num_matvecs: int = 100,
    *,
    method: str = "hutchpp",
    probe: str = "rademacher",
    chunk_size: int = 64,
    generator: torch.Generator | int | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> NormResult:
    """Estimate ``||A||_F^2 = tr(A^2) = E ||A v||^2`` for probes with ``E[v v^T] = I``.

    ``method="hutchinson"`` averages ``||A v_i||^2`` (Hutchinson 1989 applied to ``A^2``).
    ``method="hutchpp"`` (default) first sketches ``Q = orth(A S)`` with a third of the budget
    and adds the exact ``||A Q||_F^2`` to a Hutchinson estimate of ``||A (I - Q Q^T)||_F^2``
    (the Hutch++ idea of Meyer et al., SOSA 2021): far more accurate when a few eigenvalues
    dominate, exact when ``rank(A) <= num_matvecs // 3``. ``||A||_F / sqrt(D)`` is the RMS
    eigenvalue; ``tr(A)^2 / tr(A^2)`` an effective rank.

    Args:
        op: a :class:`~curvlens.operators.base.CurvatureOperator`.
        num_matvecs: products, at least 2 (``"hutchinson"``) or 4 (``"hutchpp"``).
        method: ``"hutchpp"`` or ``"hutchinson"``.
        probe: ``"rademacher"`` (default) or ``"gaussian"``.
        chunk_size: vectors per ``op.matmat`` call.
        generator: ``torch.Generator``, int seed or None (fresh seed, recorded in ``info``).
        callback: ``callback(matvecs_done, num_matvecs)`` after each stage.

    Example:
        >>> import torch, curvlens
        >>> op = curvlens.DenseOperator(torch.diag(torch.tensor([3.0, -4.0], dtype=torch.float64)))
        >>> round(frobenius_norm(op, 6, probe="gaussian", generator=0).frobenius, 10)  # rank 2 <= 6 // 3
        5.0
    """
    op = check_operator(op)
    if not isinstance(method, str) or method not in NORM_METHODS:
        raise ValueError(f"method: expected one of {NORM_METHODS}, got {method!r}; use method='hutchpp'")
    m = check_int(
        num_matvecs, "num_matvecs", 4 if method == "hutchpp" else 2, f"frobenius_norm(method={method!r}) needs more"
    )
    probe = check_probe_kind(probe)
    chunk = check_chunk(chunk_size)
    gen = resolve_generator(generator)
    timer = RunTimer(op, gen)
    exact = 0.0
    Q = None
    if method == "hutchpp":
        Q, Z = hutchpp_sketch(op, m // 3, probe=probe, chunk=chunk, gen=gen)
        exact = float(torch.linalg.matrix_norm(Z.double()) ** 2) if Z.numel() else 0.0
        call_back(callback, timer.matvecs, m)
    k = m - timer.matvecs
    G = probe_vectors(op.dim, k, kind=probe, dtype=op.dtype, device=op.device, generator=gen)
    if Q is not None and Q.shape[1]:
        G = G - Q @ (Q.T @ G)
    samples = (apply_chunked(op, G, chunk).double() ** 2).sum(0)
    call_back(callback, timer.matvecs, m)
    est, se = mean_stderr(samples)
    tsq, tse = exact + float(est), float(se)
    fro = math.sqrt(max(tsq, 0.0))
    fse = tse / (2 * fro) if fro > 0 else (0.0 if tse == 0 else math.inf)
    return NormResult(
        frobenius=fro, frobenius_stderr=fse, trace_sq=tsq, trace_sq_stderr=tse, num_matvecs=timer.matvecs,
        num_probes=k, probe=probe, method=method,
        info=timer.info(True, f"{method}: fixed budget of {timer.matvecs} matvecs"),
    )


__all__ = ["NormResult", "frobenius_norm"]
