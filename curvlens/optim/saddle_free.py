"""Saddle-free Newton in a few Krylov directions of the Hessian.

Reference: Dauphin, Pascanu, Gulcehre, Cho, Ganguli & Bengio, "Identifying and attacking the
saddle point problem in high-dimensional non-convex optimization", NeurIPS 2014. Near a saddle
Newton's step ``-H^{-1} g`` moves *towards* the saddle along negative curvature; the
saddle-free step ``-|H|^{-1} g`` (``|H|`` = ``H`` with its eigenvalues replaced by their
absolute values) moves downhill along positive curvature and away from the saddle along
negative curvature. As in the paper it is taken in a small subspace: the Krylov space of the
Hessian around the gradient (Lanczos started at ``g``), optionally enriched with the previous
steps so the directions accumulate trends across steps. With ``B = V^T H V = U Lambda U^T``:

    s_in = -lr V U (|Lambda| + damping)^{-1} U^T V^T g,

and the gradient's component outside the subspace, ``(I - V V^T) g``, takes a first-order step
of the base rule (SGD or Adam), projected out of the subspace. The whole step is bounded by a
trust radius. The predicted decrease is that of the quadratic model ``m(s) = g^T s +
1/2 s^T H s`` (one extra product ``H s``), the actual one the true change of the loss; their
ratio ``rho`` adapts the damping (x3/2 when ``rho < 1/4``, x2/3 when ``rho > 3/4``), and a step
that raises the loss or makes it non-finite is undone exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from curvlens.operators import HessianOperator
from curvlens.optim._base import CurvatureOptimizer, StepRecord, register_optimizer
from curvlens.optim._krylov_subspace import krylov_subspace

__all__ = ["SaddleFreeNewton", "SaddleFreeStep"]

MIN_DAMPING, MAX_DAMPING = 1e-10, 1e10
_BASES = ("sgd", "adam")


@dataclass(frozen=True)
class SaddleFreeStep(StepRecord):
    """What one saddle-free Newton step did (see :class:`~curvlens.optim._base.StepRecord`).

    Attributes:
        eigenvalues: the projected Hessian's eigenvalues (ascending) used by the step.
        num_negative: how many of them are negative.
        predicted_decrease: ``-m(s)`` of the quadratic model for the step taken (or tried).
        actual_decrease: ``loss_before - loss_after`` (``-inf`` for a non-finite loss).
        rho: ``actual / predicted`` (nan when the model predicts no decrease).
        damping: the damping the step used.
        next_damping: the damping after adaptation (used by the next step).
        step_norm: ``||s||`` of the step taken (or tried).
        subspace_norm_fraction: ``||V^T g|| / ||g||``, the share of the gradient in the subspace.
        refreshed: whether the subspace was rebuilt at this step.
        matvecs: Hessian-vector products used.
    """

    eigenvalues: tuple[float, ...] = ()
    num_negative: int = 0
    predicted_decrease: float = 0.0
    actual_decrease: float = 0.0
    rho: float = math.nan
    damping: float = 0.0
    next_damping: float = 0.0
    step_norm: float = 0.0
    subspace_norm_fraction: float = 0.0
    refreshed: bool = False
    matvecs: int = 0


def _check_int(value: Any, name: str, low: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}; {fix}")
    return int(value)


@register_optimizer("saddle_free_newton")
class SaddleFreeNewton(CurvatureOptimizer):
    """Saddle-free Newton (Dauphin et al. 2014) in a Krylov subspace of the Hessian.

    Args:
        model: the network (its trainable parameters, or the selection ``params``).
        loss_fn: a criterion, a loss name or ``loss_fn(model, batch)`` (as for :class:`~curvlens.Problem`).
        subspace: number of directions (Lanczos vectors around the gradient plus ``history``).
        damping: initial damping added to ``|Lambda|``; adapted from the reduction ratio.
        lr: step size of the saddle-free step in the subspace (1.0 = the full step).
        base: first-order rule for the gradient outside the subspace, ``"sgd"`` or ``"adam"``.
            A freshly built Krylov basis contains the gradient, so the base rule acts on the
            steps between refreshes (``refresh_every > 1``), where the basis is older than the
            gradient.
        base_lr: its step size; None: ``1 / (max|Lambda| + damping)`` for SGD (the step that is
            stable for the largest curvature found), ``1e-3`` for Adam.
        refresh_every: rebuild the subspace every this many steps; in between, the basis and its
            eigen-decomposition are reused and a step costs a gradient and two products.
        history: how many previous steps enrich the subspace (taken out of ``subspace``).
        trust_radius: the largest step norm; the radius halves after a rejected or poor step and
            regrows (x2, up to ``trust_radius``) after a good one.
        params: which parameters (default: all with ``requires_grad``).
        generator: draws the Krylov start only when the gradient is exactly zero.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> class Saddle(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.x = nn.Parameter(torch.tensor(0.5, dtype=torch.float64))
        ...         self.y = nn.Parameter(torch.tensor(1e-3, dtype=torch.float64))
        >>> m = Saddle()
        >>> opt = SaddleFreeNewton(m, lambda model, b: model.x ** 2 - model.y ** 2 + model.y ** 4, subspace=2)
        >>> for _ in range(20):
        ...     _ = opt.step(torch.zeros(1))
        >>> round(abs(m.y.item()), 4), opt.last_step.num_negative
        (0.7071, 0)
    """

    def __init__(self, model: nn.Module, loss_fn: Any, *, subspace: int = 10, damping: float = 1e-2,
                 lr: float = 1.0, base: str = "sgd", base_lr: float | None = None, refresh_every: int = 1,
                 history: int = 0, trust_radius: float = 1.0, params: Any = None,
                 generator: torch.Generator | int | None = None):
        subspace = _check_int(subspace, "subspace", 1, "pass the number of Krylov directions, e.g. subspace=10")
        damping = self.check_number(damping, "damping", fix="pass e.g. damping=1e-2")
        lr = self.check_number(lr, "lr", fix="pass e.g. lr=1.0 (the full saddle-free step)")
        if base not in _BASES:
            raise ValueError(f"base: expected 'sgd' or 'adam', got {base!r}; pick the rule for the gradient "
                             "outside the subspace")
        if base_lr is not None:
            base_lr = self.check_number(base_lr, "base_lr", fix="pass e.g. base_lr=1e-3, or None for the default")
        refresh_every = _check_int(refresh_every, "refresh_every", 1, "pass e.g. refresh_every=1 (every step)")
        history = _check_int(history, "history", 0, "pass e.g. history=2, or 0 for a pure Krylov subspace")
        if history >= subspace:
            raise ValueError(f"history: expected fewer than subspace={subspace} previous steps, got {history}; "
                             "at least one direction must be a Krylov direction")
        trust_radius = self.check_number(trust_radius, "trust_radius", fix="pass e.g. trust_radius=1.0")
        defaults = dict(subspace=subspace, lr=lr, base=base, base_lr=base_lr, refresh_every=refresh_every,
                        history=history, trust_radius=trust_radius)
        super().__init__(model, loss_fn, defaults, params=params, generator=generator)
        gs = self.global_state
        gs.setdefault("damping", damping)
        gs.setdefault("radius", trust_radius)
        gs.setdefault("history", [])

    def _hp(self, key: str) -> Any:
        return self.param_groups[0][key]

    # ------------------------------------------------------------------ pieces of the step
    def _refresh(self, op, g: torch.Tensor) -> int:
        gs = self.global_state
        sub = krylov_subspace(op, g, self._hp("subspace"), extra=list(gs["history"]), generator=self._gen)
        B = sub.projected
        if not bool(torch.isfinite(B).all()):
            gs.pop("basis", None)
            return sub.matvecs
        lam, U = torch.linalg.eigh(0.5 * (B + B.T))
        gs["basis"], gs["eigenvalues"], gs["eigenvectors"] = sub.basis, lam, U
        return sub.matvecs

    def _base_step(self, g_out: torch.Tensor, lam_abs_max: float, damping: float) -> tuple[torch.Tensor, dict]:
        """The base rule's step on the out-of-subspace gradient, and its new state (kept on acceptance)."""
        base, lr = self._hp("base"), self._hp("base_lr")
        if base == "sgd":
            return -(lr if lr is not None else 1.0 / (lam_abs_max + damping)) * g_out, {}
        gs = self.global_state
        b1, b2, eps = 0.9, 0.999, 1e-8
        t = gs.get("adam_t", 0) + 1
        m = gs.get("adam_m", torch.zeros_like(g_out)) * b1 + (1 - b1) * g_out
        v = gs.get("adam_v", torch.zeros_like(g_out)) * b2 + (1 - b2) * g_out * g_out
        mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        step = -(lr if lr is not None else 1e-3) * mhat / (vhat.sqrt() + eps)
        return step, {"adam_t": t, "adam_m": m, "adam_v": v}

    # ------------------------------------------------------------------ the step
    def step(self, batch: Any = None, closure: Any = None, **kwargs) -> torch.Tensor:
        """One saddle-free Newton step on ``batch``; returns the loss before the step.

        ``batch`` is anything :class:`~curvlens.Problem` accepts. ``closure`` is not supported:
        the optimizer evaluates the loss itself.
        """
        if closure is not None:
            raise TypeError("closure: SaddleFreeNewton evaluates the loss itself, got a closure; call opt.step(batch)")
        if batch is None:
            raise ValueError("batch: expected the (inputs, targets) batch of this step, got None; call opt.step(batch)")
        gs = self.global_state
        k = gs["step"]
        problem = self.problem(batch)
        loss0, g = problem.loss_and_gradient(flat=True)
        damping, radius = float(gs["damping"]), float(gs["radius"])
        rec = dict(step=k, loss_before=float(loss0), loss_after=None, damping=damping, matvecs=0)
        op = HessianOperator(problem)
        rec["refreshed"] = "basis" not in gs or k % self._hp("refresh_every") == 0
        if rec["refreshed"]:
            rec["matvecs"] = self._refresh(op, g)
        if "basis" not in gs:
            return self._finish(loss0, rec, False, "the projected Hessian is not finite; step skipped, damping raised")
        V, lam, U = gs["basis"], gs["eigenvalues"], gs["eigenvectors"]
        cV = V.T @ g
        g_out = g - V @ cV
        gnorm = float(torch.linalg.vector_norm(g))
        rec["subspace_norm_fraction"] = float(torch.linalg.vector_norm(cV)) / gnorm if gnorm > 0 else 0.0
        rec["eigenvalues"] = tuple(float(x) for x in lam)
        rec["num_negative"] = int((lam < 0).sum())
        s_sub = -(U @ ((U.T @ cV.double()) / (lam.abs() + damping))) * self._hp("lr")
        if gnorm == 0.0 and float(lam[0]) < 0:  # at a critical point: leave along the most negative direction
            s_sub = U[:, 0] * radius
        s = V @ s_sub.to(V.dtype)
        s_out, adam_state = self._base_step(g_out, float(lam.abs().max()), damping)
        s = s + (s_out - V @ (V.T @ s_out))
        norm = float(torch.linalg.vector_norm(s))
        if norm > radius:
            s, norm = s * (radius / norm), radius
        rec["step_norm"] = norm
        if not math.isfinite(norm):
            return self._finish(loss0, rec, False, "the step is not finite; weights kept, damping raised")
        Hs = op @ s
        rec["matvecs"] += 1
        predicted = -float(torch.dot(g, s) + 0.5 * torch.dot(s, Hs))
        snap = self.snapshot()
        self.add_to_params(s)
        loss1 = float(problem.loss())
        actual = rec["loss_before"] - loss1 if math.isfinite(loss1) else -math.inf
        rho = actual / predicted if predicted > 0 else math.nan
        rec.update(loss_after=loss1, predicted_decrease=predicted, actual_decrease=actual, rho=rho)
        if not math.isfinite(loss1) or not self.params_finite() or loss1 > rec["loss_before"]:
            self.restore(snap)
            why = "not finite" if not math.isfinite(loss1) else f"higher ({loss1:.6g} > {rec['loss_before']:.6g})"
            return self._finish(loss0, rec, False, f"the loss after the step was {why}; weights restored exactly, "
                                "damping raised, trust radius halved")
        gs.update(adam_state)
        if not rho >= 0.25:  # also nan: the model predicted no decrease
            gs["damping"] = min(MAX_DAMPING, damping * 1.5)
            gs["radius"] = 0.5 * norm
        elif rho > 0.75:
            gs["damping"] = max(MIN_DAMPING, damping * 2.0 / 3.0)
            if norm >= 0.99 * radius:
                gs["radius"] = min(self._hp("trust_radius"), 2.0 * radius)
        h = self._hp("history")
        if h:
            gs["history"] = ([s.clone()] + list(gs["history"]))[:h]
        return self._finish(loss0, rec, True, "step accepted")

    def _finish(self, loss0: torch.Tensor, rec: dict, accepted: bool, status: str) -> torch.Tensor:
        gs = self.global_state
        if not accepted:
            gs["damping"] = min(MAX_DAMPING, rec["damping"] * 1.5)
            if math.isfinite(rec.get("step_norm", math.nan)) and rec["step_norm"] > 0:
                gs["radius"] = 0.5 * rec["step_norm"]
        gs["step"] = rec["step"] + 1
        self.last_step = SaddleFreeStep(accepted=accepted, status=status, next_damping=float(gs["damping"]), **rec)
        return loss0
