"""The saddle-free step in the eigenbasis of a small projected Hessian, inside a trust region.

With ``B = U Lambda U^T`` (the Hessian projected onto a few directions) and ``a = U^T V^T g``
(the gradient's coefficients), a step ``s = V U c`` changes the quadratic model by
``m(c) = a^T c + 1/2 sum_i lambda_i c_i^2``. The step minimizes ``a^T c + 1/2 sum_i D_i c_i^2``
subject to ``||c|| <= radius``, where ``D_i`` says how each direction is treated:

- ``negative="abs"`` (Dauphin et al. 2014): ``D_i = (|lambda_i| + damping) / lr`` everywhere,
  so inside the region the step is the saddle-free Newton step ``-lr a_i / (|lambda_i| + damping)``
  (downhill along positive curvature, away from the saddle along negative curvature). Near a
  small-initialization saddle both ``a_i`` and ``lambda_i`` shrink with the distance to it, so
  this step shrinks too and the iterates grow only geometrically.
- ``negative="escape"``: for directions of clearly negative curvature,
  ``lambda_i < -negative_tol * max_j |lambda_j|`` (a tolerance *relative* to the subspace's
  curvature scale and independent of the damping, so a saddle whose negative curvature is far
  smaller than the damping is still seen), ``D_i = lambda_i``, the true curvature. The model is unbounded below along them, so the step
  lies on the trust-region boundary: the exact trust-region solution ``c_i = -a_i / (D_i + mu)``,
  ``mu > -min D``, ``||c|| = radius`` (Moré & Sorensen 1983; in a Lanczos subspace: Gould,
  Lucidi, Roma & Toint 1999), which puts almost all of the length on the most negative
  direction with the downhill sign ``-sign(a_i)``. Its length is the radius however small the
  gradient is, as in negative-curvature descent methods (Curtis & Robinson 2019). In the hard
  case (no gradient along the most negative direction) the remaining length goes along it.
  All other directions (positive, flat, or negative within the tolerance) keep
  ``D_i = (|lambda_i| + damping) / lr``.

The default tolerance, :func:`default_negative_tol`, is ``2 sqrt(eps)`` of the eigenvalues'
dtype (``3.0e-8`` in float64, ``6.9e-4`` in float32): eigenvalues of the projected matrix carry
rounding errors of order ``eps * ||H||`` amplified by the products' summations, and ``sqrt(eps)``
leaves a wide margin above that noise while still resolving a negative eigenvalue ``1e-6`` of the
largest one in float64.

``mu`` solves the secular equation ``||c(mu)|| = radius`` by bisection on ``log`` of its
distance to the pole, bracketed by closed forms (``|a_J| / r <= t <= ||a|| / r``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["SubspaceStep", "default_negative_tol", "subspace_step"]

_BISECTIONS = 80


@dataclass(frozen=True)
class SubspaceStep:
    """The coefficients ``c`` (eigenbasis), the model decrease ``-m(c)`` and how it was found.

    Attributes:
        coefficients: float64 ``c``.
        predicted_decrease: ``-(a^T c + 1/2 sum lambda_i c_i^2)`` with the true eigenvalues.
        on_boundary: ``||c|| = radius`` (the trust region was active).
        escape: a direction of negative curvature got a trust-region-length step.
        shift: the trust-region multiplier ``mu`` (0 inside the region).
    """

    coefficients: torch.Tensor
    predicted_decrease: float
    on_boundary: bool
    escape: bool
    shift: float


def _norm(a: list[float], e: list[float], t: float, skip: frozenset = frozenset()) -> float:
    """``||c||`` for ``c_i = -a_i / (e_i + t)`` (``e_i >= 0`` is ``D_i`` minus the pole)."""
    return math.sqrt(sum((ai / (ei + t)) ** 2 for i, (ai, ei) in enumerate(zip(a, e)) if ai != 0 and i not in skip))


def _solve(a: list[float], e: list[float], radius: float, low: float, high: float) -> float:
    """``t`` in ``[low, high]`` with ``||c(t)|| = radius`` (the norm decreases in ``t``)."""
    lo, hi = math.log(max(low, 1e-300)), math.log(max(high, low, 1e-300))
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        if _norm(a, e, math.exp(mid)) > radius:
            lo = mid
        else:
            hi = mid
    return math.exp(hi)  # the side with ||c|| <= radius


def default_negative_tol(dtype: torch.dtype) -> float:
    """``2 sqrt(eps)`` of ``dtype``: the relative level below which curvature counts as negative.

    Example:
        >>> import torch
        >>> f"{default_negative_tol(torch.float64):.2e}", f"{default_negative_tol(torch.float32):.2e}"
        ('2.98e-08', '6.91e-04')
    """
    return 2.0 * math.sqrt(torch.finfo(dtype).eps)


def negative_threshold(eigenvalues: torch.Tensor, negative_tol: float | None = None) -> float:
    """``negative_tol * max|lambda|`` (``None``: :func:`default_negative_tol` of the eigenvalues' dtype)."""
    tol = default_negative_tol(eigenvalues.dtype) if negative_tol is None else float(negative_tol)
    return tol * float(eigenvalues.abs().max()) if eigenvalues.numel() else 0.0


def subspace_step(eigenvalues: torch.Tensor, coefficients: torch.Tensor, *, damping: float, radius: float,
                  lr: float = 1.0, negative: str = "escape", negative_tol: float | None = None) -> SubspaceStep:
    """Solve the trust-region subproblem of the saddle-free model (see the module docstring).

    Args:
        eigenvalues: ``lambda`` of the projected Hessian (any order).
        coefficients: ``a``, the gradient in the same eigenbasis.
        damping: added to ``|lambda|`` in every direction that gets no escape step.
        radius: trust radius (> 0).
        lr: scales the interior saddle-free step.
        negative: ``"escape"`` or ``"abs"``.
        negative_tol: with ``"escape"``, curvature below ``-negative_tol * max|lambda|`` gets an
            escape step (``0``: any negative eigenvalue); None: :func:`default_negative_tol` of
            the eigenvalues' dtype.

    Returns:
        :class:`SubspaceStep`.

    Example:
        >>> import torch
        >>> lam, a = torch.tensor([-1e-3, 2.0], dtype=torch.float64), torch.tensor([1e-6, 0.2], dtype=torch.float64)
        >>> st = subspace_step(lam, a, damping=1e-4, radius=0.5)  # the escape step has the radius's length
        >>> [round(float(x), 4) for x in st.coefficients], st.escape, round(float(st.coefficients.norm()), 6)
        ([-0.4899, -0.0999], True, 0.5)
        >>> subspace_step(lam, a, damping=1.0, radius=0.5).escape  # a damping far above |lambda| hides nothing
        True
        >>> [round(float(x), 4) for x in subspace_step(lam, a, damping=1e-4, radius=0.5, negative="abs").coefficients]
        [-0.0009, -0.1]
    """
    lam = [float(x) for x in eigenvalues.double().tolist()]
    a = [float(x) for x in coefficients.double().tolist()]
    thr = negative_threshold(eigenvalues, negative_tol) if negative == "escape" else math.inf
    if negative == "escape":
        d = [li if li < -thr else (abs(li) + damping) / lr for li in lam]
    else:
        d = [(abs(li) + damping) / lr for li in lam]
    dmin = min(d) if d else 1.0
    anorm = math.sqrt(sum(x * x for x in a))
    boundary = escape = False
    if dmin > 0:
        pole, e, t = 0.0, d, 0.0
        c = [-ai / di for ai, di in zip(a, d)]
        if math.sqrt(sum(x * x for x in c)) > radius:
            t, boundary = _solve(a, e, radius, 1e-300, anorm / radius), True
            c = [-ai / (ei + t) for ai, ei in zip(a, e)]
    else:
        boundary = escape = True
        pole = dmin
        J = frozenset(i for i, di in enumerate(d) if di <= dmin + 1e-12 * abs(dmin))
        e = [0.0 if i in J else di - dmin for i, di in enumerate(d)]
        aj = math.sqrt(sum(a[i] ** 2 for i in J))
        rest = _norm(a, e, 0.0, skip=J)
        if aj == 0.0 and rest < radius:  # hard case: no gradient along the most negative direction
            c = [0.0 if i in J else -a[i] / e[i] for i in range(len(a))]
            c[min(J)] = math.sqrt(radius ** 2 - rest ** 2)
            t = 0.0
        else:
            low = aj / radius if aj > 0 else 1e-300
            t = _solve(a, e, radius, low, max(anorm / radius, low))
            c = [0.0 if ai == 0 else -ai / (ei + t) for ai, ei in zip(a, e)]
    shift = t - pole
    escape = escape and any(ci != 0.0 and li < -thr for ci, li in zip(c, lam))
    model = sum(ai * ci + 0.5 * li * ci * ci for ai, ci, li in zip(a, c, lam))
    out = torch.tensor(c, dtype=torch.float64)
    return SubspaceStep(out, -model, boundary, escape, shift)
