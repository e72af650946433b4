"""Shared helpers of the stochastic estimators: validation, rank-revealing orthonormalization,
block sums and the adaptive stopping rule. Private: the public functions live in
``trace.py``, ``hutchpp.py``, ``xtrace.py``, ``diagonal.py`` and ``norms.py``.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import torch

from curvlens.errors import ConvergenceWarning

from curvlens.operators.base import Block, CurvatureOperator


def check_operator(op: object, name: str = "op") -> CurvatureOperator:
    if not isinstance(op, CurvatureOperator):
        raise TypeError(
            f"{name}: expected a curvlens CurvatureOperator, got {type(op).__name__}; "
            "wrap a dense matrix with curvlens.DenseOperator(A) or build a HessianOperator/GGNOperator"
        )
    return op


def check_int(value: object, name: str, minimum: int, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}{'; ' + hint if hint else ''}")
    return int(value)


def check_budget(
    num_matvecs: object, target_rstderr: object, max_matvecs: object, *, minimum: int, method: str
) -> tuple[int, float | None, int]:
    """Validate the (num_matvecs, target_rstderr, max_matvecs) triple; return max_matvecs resolved."""
    m = check_int(num_matvecs, "num_matvecs", minimum, f"{method} needs at least {minimum} products")
    if target_rstderr is not None:
        if isinstance(target_rstderr, bool) or not isinstance(target_rstderr, (int, float)) or not (
            0 < float(target_rstderr) < math.inf
        ):
            raise ValueError(
                f"target_rstderr: expected a positive float (relative standard error, e.g. 0.01), "
                f"got {target_rstderr!r}; pass target_rstderr=None for a fixed budget"
            )
        target_rstderr = float(target_rstderr)
    if max_matvecs is None:
        mx = 10 * m if target_rstderr is not None else m
    else:
        mx = check_int(max_matvecs, "max_matvecs", m, f"max_matvecs must be at least num_matvecs={m}")
        if target_rstderr is None and mx != m:
            raise ValueError(
                f"max_matvecs: only used with target_rstderr (adaptive mode), got max_matvecs={mx} "
                f"without target_rstderr; pass target_rstderr=0.01 or drop max_matvecs"
            )
    return m, target_rstderr, mx


def check_chunk(chunk_size: object) -> int:
    return check_int(chunk_size, "chunk_size", 1, "it is the number of probes per op.matmat call")


def apply_chunked(op: CurvatureOperator, V: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """``op.matmat(V)`` in column chunks of at most ``chunk_size`` (bounded memory)."""
    if V.shape[1] <= chunk_size:
        return op.matmat(V)
    return torch.cat([op.matmat(V[:, i : i + chunk_size]) for i in range(0, V.shape[1], chunk_size)], dim=1)


def rank_tolerance(shape, dtype: torch.dtype) -> float:
    """Relative singular-value threshold below which a direction of a ``shape`` block counts as
    numerically null: ``10 * max(shape) * eps``, capped at ``sqrt(eps)`` so that tall blocks keep
    their directions (uncapped, ``D >= 840k`` float32 vectors would all count as null)."""
    eps = torch.finfo(dtype).eps
    return min(10 * max(shape) * eps, math.sqrt(eps))


def orth(Y: torch.Tensor, against: torch.Tensor | None = None) -> torch.Tensor:
    """Orthonormal basis of ``span(Y)`` minus ``span(against)``, dropping numerically null directions.

    Projects ``Y`` off ``against`` twice ("twice is enough"), then keeps the left singular
    vectors whose singular value exceeds :func:`rank_tolerance` times ``scale``. The result may have
    fewer columns than ``Y`` (a low-rank operator), which makes deflation exact.
    """
    scale = float(torch.linalg.matrix_norm(Y, ord=2)) if Y.numel() else 0.0
    W = Y
    if against is not None and against.shape[1] > 0:
        for _ in range(2):
            W = W - against @ (against.T @ W)
    if W.shape[1] == 0 or scale == 0.0:
        return Y.new_zeros(Y.shape[0], 0)
    U, S, _ = torch.linalg.svd(W, full_matrices=False)
    tol = rank_tolerance(W.shape, W.dtype) * scale
    return U[:, S > tol].contiguous()


def block_sums(R: torch.Tensor, blocks: Sequence[Block]) -> torch.Tensor:
    """Sum the rows of ``R`` (D, k) within each block: returns (num_blocks, k) in float64."""
    R = R.double()
    if len(blocks) == 0:
        return R.new_zeros(0, R.shape[1])
    return torch.stack([R[b.slice].sum(0) for b in blocks])


def mean_stderr(samples: torch.Tensor, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample mean and standard error of the mean along ``dim`` (float64; NaN stderr for n < 2)."""
    s = samples.double()
    n = s.shape[dim]
    mean = s.mean(dim)
    if n < 2:
        return mean, torch.full_like(mean, math.nan)
    return mean, s.std(dim, unbiased=True) / math.sqrt(n)


def rel(stderr: float, estimate: float) -> float:
    return abs(stderr) / abs(estimate) if estimate != 0 else math.inf


def next_round(
    num_probes: int, used: int, rstderr: float, target: float, max_matvecs: int, per_probe: int = 1
) -> int:
    """Number of new probes for the next adaptive round (0 when done or out of budget).

    ``num_probes`` probes were used so far, costing ``used`` products in all; each new probe
    costs ``per_probe`` products.

    The standard error falls like ``1/sqrt(n)``, so about ``n (rstderr / target)^2`` probes in
    total reach the target; we aim 10% beyond it and grow at most 4x per round, which stops
    close to the target without many rounds.
    """
    if rstderr <= target:
        return 0
    left = (max_matvecs - used) // per_probe
    if left <= 0:
        return 0
    n = num_probes
    want = math.ceil(n * (min(rstderr / target, 2.0) ** 2 * 1.1 if math.isfinite(rstderr) else 4.0)) - n
    return int(min(max(want, 1, n // 4), 3 * n, left))


def finish_status(
    method: str, target: float | None, converged: bool, used: int, rstderr: float, max_matvecs: int
) -> str:
    if target is None:
        return f"{method}: fixed budget of {used} matvecs, relative standard error {rstderr:.3g}"
    if converged:
        return f"{method}: reached relative standard error {rstderr:.3g} <= target {target:g} in {used} matvecs"
    status = (
        f"{method}: relative standard error {rstderr:.3g} above target_rstderr={target:g} after "
        f"max_matvecs={max_matvecs}; increase max_matvecs (about "
        f"{math.ceil(used * (rstderr / target) ** 2) if math.isfinite(rstderr) else 'many more'} needed) "
        "or loosen target_rstderr"
    )
    warnings.warn(status, ConvergenceWarning, stacklevel=3)
    return status


def call_back(callback: Callable[[int, int], None] | None, done: int, total: int) -> None:
    if callback is not None:
        callback(done, total)
