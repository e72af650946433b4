"""The step length K-FAC's own direction wants at the current weights, measured.

K-FAC's first step moves along ``d = -P g_B`` with ``g_B`` the gradient of a mini-batch of ``B``
samples (drawn with replacement, as the trainers do) and ``P = (F_kfac + damping)^{-1}`` its
Kronecker-factored preconditioner built from that same batch's statistics (the optimizer keeps
it until its first inverse refresh). Along that step the quadratic model of the full-data loss,
``q(alpha) = L - alpha g^T P g_B + alpha^2 / 2 (P g_B)^T G (P g_B)`` with ``G`` the Gauss-Newton
matrix (the curvature K-FAC approximates) and ``g`` the full-data gradient, has the expected
minimiser

    ``alpha* = E[g^T P g_B] / E[(P g_B)^T G (P g_B)]``

(Martens & Grosse 2015, sec. 6.4, rescale every K-FAC step this way at the full batch, where
``g_B = g`` and ``alpha* = -g^T d / (d^T G d)``; at a mini-batch the expectation adds the
gradient noise, ``tr(P G P Sigma) / B`` for a fixed ``P``, to the denominator: the
preconditioned form of McCandlish et al. 2018, sec. 2.2). ``E`` is a mean over
:data:`NOISE_BATCHES` drawn batches, each with its own ``P``.

The quadratic model is then checked on the loss itself: ``alpha*`` is halved until the actual
decrease along the first draw's direction is at least :data:`MIN_REDUCTION_RATIO` of the
predicted one (the reduction ratio ``rho`` of Martens & Grosse 2015, sec. 6.5).

Along the mini-batch gradient itself, the direction of a first SGD step, the same model has the
minimiser ``E[g^T g_B] / E[g_B^T G g_B]`` and the decrease ``(E[g^T g_B])^2 / (2 E[g_B^T G g_B])``;
K-FAC's decrease ``(E[g^T P g_B])^2 / (2 E[(P g_B)^T G (P g_B)])`` over it, over the same draws, is
``kfac_progress_ratio``: how much more one step along K-FAC's direction buys than one along the
gradient at this batch, noise included (on an exact GGN, ``P = G^{-1}``, it is
``(g^T G^{-1} g)(g^T G g) / |g|^4 >= 1``, the Newton over the steepest-descent decrease).

``lambda_max(P G)``, the largest eigenvalue of the preconditioned curvature (by power
iteration on ``P G``, whose eigenvalues are those of the symmetric ``P^{1/2} G P^{1/2}``), bounds
the stable step: heavy-ball with momentum ``beta`` along ``-lr P g`` is stable on the quadratic
while ``lr lambda_max(P G) < 2 + 2 beta``.

Cost: one backward with K-FAC's statistics hooks, one eigendecomposition of each layer's
factors per drawn batch, ``2 NOISE_BATCHES + POWER_ITERATIONS`` GGN-vector products and K-FAC
preconditionings, and up to ``LINE_HALVINGS + 1`` loss evaluations. The model's weights,
``.grad``, train/eval flags, buffers and the global RNG are left as they were; the
preconditioner's hooks are removed.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

__all__ = ["kfac_model_step", "NOISE_BATCHES", "POWER_ITERATIONS"]

logger = logging.getLogger(__name__)

#: mini-batches drawn (at a mini-batch size) to estimate ``E[(P g_B)^T G (P g_B)]``
NOISE_BATCHES = 8
#: power iterations on ``P G`` for ``lambda_max(P G)``
POWER_ITERATIONS = 12
#: the least ratio of actual to predicted loss decrease at which the quadratic model is trusted (Martens & Grosse
#: 2015, sec. 6.5, make K-FAC trust its model less below rho = 1/4)
MIN_REDUCTION_RATIO = 0.25
#: halvings of the step tried before giving up on the model
LINE_HALVINGS = 12


def _grads(one, params) -> torch.Tensor:
    return one.flatten([torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params])


def kfac_model_step(model: torch.nn.Module, loss_fn: Any, data: Any, *, damping: float, fisher: str = "mc",
                    batch_size: int | None = None, generator: int = 0) -> dict[str, float]:
    """``alpha*`` along K-FAC's preconditioned direction, and ``lambda_max(P G)`` (module docstring).

    Args:
        model: the network.
        loss_fn: an ``nn`` criterion or a loss name (K-FAC needs the loss to build its Fisher).
        data: one ``(inputs, targets)`` batch or a list of them (the first one is used: the
            full training set, from which the factors, ``g`` and ``G`` are taken).
        damping: K-FAC's Tikhonov damping (the value the optimizer will use).
        fisher: K-FAC's Fisher kind (``"mc"``, ``"type2"`` or ``"empirical"``), as in
            :class:`~curvlens.optim.kfac.KFACPreconditioner`.
        batch_size: the training mini-batch size; None or at least the data's size: full batch.
        generator: int seed of the Monte-Carlo targets and of the drawn mini-batches.

    Returns:
        ``kfac_model_step`` (``alpha*``), ``kfac_lambda_max`` (``lambda_max(P G)`` of the first
        draw's ``P``), ``kfac_trusted_step`` (``alpha* 2^-k``, the first at which the full-data
        loss along the first draw's direction falls by at least :data:`MIN_REDUCTION_RATIO` of the
        quadratic model's prediction), ``kfac_reduction_ratio`` (that ratio) and
        ``kfac_progress_ratio`` (K-FAC's model decrease over the gradient direction's), or ``{}`` when
        K-FAC cannot be built on the model or a value is not finite and positive.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(3, 2)
        >>> g = torch.Generator().manual_seed(0)
        >>> X, Y = torch.randn(64, 3, generator=g), torch.randn(64, 2, generator=g)
        >>> m = kfac_model_step(model, torch.nn.MSELoss(), (X, Y), damping=1e-9, fisher="type2")
        >>> round(m["kfac_model_step"], 3), round(m["kfac_lambda_max"], 3)  # type-2 K-FAC is the exact GGN
        (1.0, 1.0)
    """
    from curvlens.operators import GGNOperator
    from curvlens.problem import Problem

    if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not damping > 0:
        raise ValueError(f"damping: expected a positive number, got {damping!r}; pass e.g. damping=1e-3")
    if isinstance(generator, bool) or not isinstance(generator, int):
        raise TypeError(f"generator: expected an int seed, got {type(generator).__name__}; pass e.g. generator=0")
    from curvlens.optim.kfac import KFACPreconditioner

    problem = Problem(model, loss_fn, data)
    batch = problem.batches[0]
    one = problem.with_data(batch)
    params = one.params
    pair = isinstance(batch, (tuple, list)) and len(batch) == 2 and all(isinstance(t, torch.Tensor) for t in batch)
    n = int(batch[0].shape[0]) if pair else None
    mini = pair and batch_size is not None and batch_size < n
    gen = torch.Generator().manual_seed(generator)
    with one.state_guard():
        g = one.gradient(flat=True).detach()  # the full-data gradient, without K-FAC's hooks on the model
        draws = []
        for k in range(NOISE_BATCHES if mini else 1):
            if mini:
                idx = torch.randint(n, (int(batch_size),), generator=gen)
                draws.append((batch[0][idx], batch[1][idx]))
            else:
                draws.append(batch)
        num = den = lam = gg = ggg = 0.0
        for k, b in enumerate(draws):
            try:  # K-FAC's first step: statistics of this batch; later steps apply the same P
                pre = KFACPreconditioner(model, loss_fn=loss_fn, damping=float(damping), update_every=10**9,
                                         inverse_every=10**9, fisher=fisher, kl_clip=None,
                                         generator=generator + k)
            except (TypeError, ValueError) as err:
                logger.debug("kfac_model_step: K-FAC not built: %s", err)
                return {}
            try:
                for p in params:
                    p.grad = None
                one.with_data(b).batch_loss(0, b)[0].backward()
                gb = _grads(one, params)  # g_B: the gradient direction (SGD's first step, negated)
                pre.step(lr=1.0)
                d = _grads(one, params)  # P_B g_B: K-FAC's first direction (negated)

                def precondition(v: torch.Tensor) -> torch.Tensor:
                    for p, t in zip(params, one.unflatten(v)):
                        p.grad = t.clone()
                    pre.step(lr=1.0)
                    return _grads(one, params)

                G = GGNOperator(one)
                num += float(g @ d)
                den += float(d @ (G @ d))
                gg += float(g @ gb)
                ggg += float(gb @ (G @ gb))
                if k == 0:
                    first, first_dgd = d, den
                    v = d / d.norm()
                    for _ in range(POWER_ITERATIONS):  # eigenvalues of P G (similar to P^1/2 G P^1/2, >= 0)
                        w = precondition(G @ v)
                        lam = float(w.norm())
                        if not lam > 0 or not math.isfinite(lam):
                            break
                        v = w / lam
            except (RuntimeError, ValueError, TypeError) as err:
                logger.debug("kfac_model_step: K-FAC step failed: %s", err)
                return {}
            finally:
                pre.remove()
                for p in params:
                    p.grad = None
    if not all(math.isfinite(x) and x > 0 for x in (num, den, lam)):
        return {}
    alpha = num / den
    out = {"kfac_model_step": alpha, "kfac_lambda_max": lam}
    if math.isfinite(gg) and math.isfinite(ggg) and gg > 0 and ggg > 0:
        # the model decreases at the minimisers along each direction, E[.] over the same draws:
        # (E[g^T P g_B])^2 / (2 E[(P g_B)^T G (P g_B)]) against (E[g^T g_B])^2 / (2 E[g_B^T G g_B])
        out["kfac_progress_ratio"] = (num * num / den) / (gg * gg / ggg)
    out.update(_line_check(one, first, g, alpha, first_dgd))
    return out


def _line_check(one, d: torch.Tensor, g: torch.Tensor, alpha: float, dgd: float) -> dict[str, float]:
    """The largest ``alpha 2^-k`` (``k <= LINE_HALVINGS``) at which the full-data loss along ``-d`` falls by at
    least :data:`MIN_REDUCTION_RATIO` of what the quadratic model predicts (Martens & Grosse 2015, sec. 6.5:
    the reduction ratio ``rho``); ``kfac_trusted_step`` and its ``kfac_reduction_ratio``."""
    params = one.params
    saved = [p.detach().clone() for p in params]
    l0 = float(one.loss())
    gd, dd = float(g @ d), dgd
    a, rho = alpha, float("nan")
    try:
        for _ in range(LINE_HALVINGS + 1):
            with torch.no_grad():
                for p, w, t in zip(params, saved, one.unflatten(d)):
                    p.copy_(w - a * t)
            pred = -a * gd + 0.5 * a * a * dd
            rho = (float(one.loss()) - l0) / pred if pred < 0 else float("nan")
            if math.isfinite(rho) and rho >= MIN_REDUCTION_RATIO:
                break
            a *= 0.5
    finally:
        with torch.no_grad():
            for p, w in zip(params, saved):
                p.copy_(w)
    return {"kfac_trusted_step": a, "kfac_reduction_ratio": rho}
