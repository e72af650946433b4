"""Sharpness against the learning rate: the gradient-descent stability threshold.

On a quadratic with Hessian eigenvalue ``l``, gradient descent with step ``lr`` is stable iff
``l < 2 / lr``; heavy-ball momentum ``beta`` raises the threshold to ``(2 + 2 beta) / lr``
(e.g. Cohen et al., "Gradient descent on neural networks typically occurs at the edge of
stability", ICLR 2021). ``ratio = lambda_max / threshold`` (``lr * lambda_max / 2`` without
momentum): below 1 the sharpest direction is stable, near 1 training sits at the edge of
stability, above 1 that direction diverges (or the optimizer will move to a flatter region).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from curvlens.diagnostics._checks import check_float
from curvlens.results import RunInfo, register_result

__all__ = ["SharpnessResult", "sharpness"]


@register_result("sharpness")
@dataclass(frozen=True)
class SharpnessResult:
    """``lambda_max`` against the stability threshold of (momentum) gradient descent.

    Attributes:
        lambda_max: the largest eigenvalue used.
        lr, momentum: the user's learning rate and heavy-ball momentum.
        threshold: ``(2 + 2 * momentum) / lr`` (``2 / lr`` without momentum).
        ratio: ``lambda_max / threshold``.
        stable: ``ratio < 1``.
        info: run metadata (no products).
    """

    lambda_max: float
    lr: float
    momentum: float
    threshold: float
    ratio: float
    stable: bool
    info: RunInfo


def sharpness(lambda_max: float, lr: float, momentum: float = 0.0) -> SharpnessResult:
    """Compare ``lambda_max`` with the stability threshold ``(2 + 2 momentum) / lr``.

    Args:
        lambda_max: largest curvature eigenvalue (e.g. ``top_eigenpairs(op).eigenvalues[0]``).
        lr: learning rate, > 0.
        momentum: heavy-ball momentum in ``[0, 1)``.

    Example:
        >>> s = sharpness(30.0, lr=0.1)
        >>> s.threshold, s.ratio, s.stable
        (20.0, 1.5, False)
    """
    t0 = time.perf_counter()
    lmax = check_float(lambda_max, "lambda_max", fix="pass the top eigenvalue, e.g. float(top.eigenvalues[0])")
    lr = check_float(lr, "lr", low=0.0, strict_low=True, fix="pass the learning rate of your optimizer, e.g. lr=0.1")
    momentum = check_float(momentum, "momentum", low=0.0, high=1.0, strict_high=True,
                           fix="pass the heavy-ball momentum (SGD momentum=0.9) or 0.0")
    threshold = (2.0 + 2.0 * momentum) / lr
    ratio = lmax / threshold
    info = RunInfo(seed=None, matvecs=0, wall_time=time.perf_counter() - t0, converged=True,
                   status=f"lambda_max is {ratio:.3g} x the stability threshold {threshold:.4g}")
    return SharpnessResult(lambda_max=lmax, lr=lr, momentum=momentum, threshold=threshold, ratio=ratio,
                           stable=bool(ratio < 1.0), info=info)
