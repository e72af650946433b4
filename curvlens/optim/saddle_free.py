"""Saddle-free Newton in a few Krylov directions of the Hessian.

Reference: Dauphin, Pascanu, Gulcehre, Cho, Ganguli & Bengio, "Identifying and attacking the
saddle point problem in high-dimensional non-convex optimization", NeurIPS 2014. Near a saddle
Newton's step ``-H^{-1} g`` moves *towards* the saddle along negative curvature; the
saddle-free step ``-|H|^{-1} g`` (``|H|`` = ``H`` with its eigenvalues replaced by their
absolute values) moves downhill along positive curvature and away from the saddle along
negative curvature. As in the paper it is taken in a small subspace: the Krylov space of the
Hessian around the gradient (Lanczos started at ``g``), optionally enriched with the previous
steps so the directions accumulate trends across steps. With ``B = V^T H V = U Lambda U^T`` and
``a = U^T V^T g`` the step is ``s = V U c``, where ``c`` solves the trust-region subproblem of
the saddle-free model (:mod:`curvlens.optim._subspace_trust_region`):

- along positive (and flat) curvature ``c_i = -lr a_i / (|lambda_i| + damping)``, Dauphin's
  step, shortened Levenberg-Marquardt-style when it leaves the trust region;
- along clearly negative curvature, ``lambda_i < -negative_tol * max|lambda|`` (relative to the
  subspace's curvature scale, independent of the damping), with ``negative="escape"`` (the
  default), the true negative curvature is kept, so the step goes to the trust-region boundary
  with the downhill sign: near a small-initialization saddle ``|lambda|^{-1} g`` shrinks with
  the distance to the saddle, while this escape step keeps the trust radius, which doubles
  after every step whose reduction ratio is good. ``negative="abs"`` is the paper's
  ``|lambda|^{-1}`` rule in every direction. The damping acts only on the other directions, so a
  saddle whose negative curvature is far smaller than the damping still gets an escape step.

A fresh Krylov basis contains the gradient; on the steps that reuse an older basis
(``refresh_every > 1``) the gradient's component outside it, ``(I - V V^T) g``, takes a
first-order step of the base rule (SGD or Adam), projected out of the subspace, and the
whole step is bounded by the trust radius. Products: the loss, gradient and all products of a
step come from one graph (:class:`~curvlens.optim._step_hessian.StepHessian`); a refresh costs
``subspace`` products and nothing else (the step lies in the subspace, so the quadratic model
``m(s) = g^T s + 1/2 s^T H s`` is ``a^T c + 1/2 sum lambda_i c_i^2``, exact); a step on an older
basis costs one product (``H s`` for the model), or none with ``between_refreshes="first_order"``
(a gradient and a loss evaluation, like the base rule's; the model then leaves out the curvature
of the base step). The ratio ``rho`` of the actual to the
predicted decrease adapts the damping (x3/2 when ``rho < 1/4``, x2/3 when ``rho > 3/4``) and the
trust radius (halved to half the step when ``rho < 1/4``, doubled up to ``max_trust_radius``
after a good step on the boundary); a step that raises the loss or makes it non-finite is
undone exactly, and with ``retries`` re-solved at once on the same basis (the standard
trust-region loop: the model of a rejected step is still valid, so only a loss evaluation is
spent, not a new basis).

With ``between_refreshes="base"`` the steps between refreshes are the base rule alone on the
whole gradient: a saddle-free Newton step every ``refresh_every`` steps, plain SGD or Adam in
between, with no trust radius, loss check or damping adaptation on the base steps. The ratio
rule above is calibrated for a quadratic model; for a first-order model of a well-scaled step
``rho`` is about 1/2 (exactly 1/2 for the line-optimal step on a quadratic), below the 3/4 that
grows the radius, while mini-batch noise pushes it below 1/4 often enough to halve it, so the
base rule's steps end up clipped far below their own length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from curvlens.optim._base import CurvatureOptimizer, StepRecord, register_optimizer
from curvlens.optim._distributed import loss_and_gradient
from curvlens.optim._krylov_subspace import krylov_subspace
from curvlens.optim._saddle_free_analysis import settings_from_analysis
from curvlens.optim._step_hessian import StepHessian
from curvlens.optim._subspace_trust_region import default_negative_tol, negative_threshold, subspace_step

__all__ = ["SaddleFreeNewton", "SaddleFreeStep"]

MIN_DAMPING, MAX_DAMPING = 1e-10, 1e10
_BASES = ("sgd", "adam")
_NEGATIVE = ("escape", "abs")
_BETWEEN = ("exact", "first_order", "base")


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
        trust_radius: the radius the step was bounded by.
        escape: whether a direction of negative curvature got a trust-region-length step.
        negative_threshold: ``negative_tol * max|lambda|``; curvature below its negative got the
            escape rule (``negative="escape"``).
        retries: rejected tries before the one recorded (``retries`` option); the record's step,
            damping and trust radius are those of the last try.
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
    trust_radius: float = 0.0
    escape: bool = False
    negative_threshold: float = 0.0
    retries: int = 0


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
            eigen-decomposition are reused (see ``between_refreshes``).
        between_refreshes: the quadratic model of a step on a reused basis. ``"exact"``: one
            product ``H s`` (the loss, gradient and product from one second-order graph), so the
            predicted decrease is exact on a quadratic. ``"first_order"``: no second-order graph
            and no product, a step costs a gradient and a loss evaluation, like the base rule's;
            the model is the subspace part with the stored eigenvalues plus the first-order term
            of the base step (its curvature, and the cross term, are left out). ``"base"``: the
            base rule's own step on the whole gradient (not projected, not bounded by the trust
            radius, no loss evaluation; non-finite weights are undone), so a step costs one
            gradient and the damping and radius change only on refresh steps.
        history: how many previous steps enrich the subspace (taken out of ``subspace``).
        trust_radius: the initial trust radius (largest step norm); it is halved to half the
            step after a rejected or poor step and doubled after a good step on the boundary.
        max_trust_radius: the largest trust radius (None: ``100 * trust_radius``).
        negative: ``"escape"`` (a trust-region-length step along clearly negative curvature,
            the downhill sign) or ``"abs"`` (the ``|lambda|^{-1}`` rule of Dauphin et al. there too).
        negative_tol: an eigenvalue counts as clearly negative when it is below
            ``-negative_tol * max|lambda|`` of the subspace, whatever the damping (which acts only
            on the other directions). None: ``2 sqrt(eps)`` of the parameters' dtype (``3.0e-8``
            in float64, ``6.9e-4`` in float32), above the products' rounding noise; ``0`` counts
            every negative eigenvalue. In ``[0, 1)``.
        retries: after a rejected try (the loss rose or was not finite) re-solve the subspace
            problem with the damping raised x3/2 and the radius halved to half the step, on the same
            gradient, basis and eigenpairs, and try again, up to this many times within one step.
            A retry costs one loss evaluation (on an older basis with ``between_refreshes="exact"``
            also a new second-order graph and the model's one product) instead of a whole step with
            a new basis. ``0`` (the default): a rejected try ends the step, and the next step
            rebuilds everything.
        params: which parameters (default: all with ``requires_grad``).
        generator: draws the Krylov start only when the gradient is exactly zero.
        process_group: None, ``"world"`` or a process group (as for :class:`~curvlens.Problem`):
            each rank passes its shard of every batch; the steps equal one process's on the union.

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
                 between_refreshes: str = "exact", history: int = 0, trust_radius: float = 1.0,
                 max_trust_radius: float | None = None, negative: str = "escape",
                 negative_tol: float | None = None, retries: int = 0, params: Any = None,
                 generator: torch.Generator | int | None = None, process_group: Any = None):
        subspace = _check_int(subspace, "subspace", 1, "pass the number of Krylov directions, e.g. subspace=10")
        damping = self.check_number(damping, "damping", fix="pass e.g. damping=1e-2")
        lr = self.check_number(lr, "lr", fix="pass e.g. lr=1.0 (the full saddle-free step)")
        if base not in _BASES:
            raise ValueError(f"base: expected 'sgd' or 'adam', got {base!r}; pick the rule for the gradient "
                             "outside the subspace")
        if base_lr is not None:
            base_lr = self.check_number(base_lr, "base_lr", fix="pass e.g. base_lr=1e-3, or None for the default")
        refresh_every = _check_int(refresh_every, "refresh_every", 1, "pass e.g. refresh_every=1 (every step)")
        if between_refreshes not in _BETWEEN:
            raise ValueError(f"between_refreshes: expected 'exact', 'first_order' or 'base', got "
                             f"{between_refreshes!r}; pick the model of the steps on a reused basis")
        history = _check_int(history, "history", 0, "pass e.g. history=2, or 0 for a pure Krylov subspace")
        if history >= subspace:
            raise ValueError(f"history: expected fewer than subspace={subspace} previous steps, got {history}; "
                             "at least one direction must be a Krylov direction")
        trust_radius = self.check_number(trust_radius, "trust_radius", fix="pass e.g. trust_radius=1.0")
        if max_trust_radius is None:
            max_trust_radius = 100.0 * trust_radius
        max_trust_radius = self.check_number(max_trust_radius, "max_trust_radius",
                                             fix="pass e.g. max_trust_radius=100.0, or None for 100 * trust_radius")
        if max_trust_radius < trust_radius:
            raise ValueError(f"max_trust_radius: expected at least trust_radius={trust_radius:g}, got "
                             f"{max_trust_radius:g}; raise it or lower trust_radius")
        if negative not in _NEGATIVE:
            raise ValueError(f"negative: expected 'escape' or 'abs', got {negative!r}; pick how directions of "
                             "negative curvature are stepped along")
        if negative_tol is not None:
            negative_tol = self.check_number(negative_tol, "negative_tol", strict=False,
                                             fix="pass e.g. negative_tol=1e-6, or None for 2 sqrt(eps) of the dtype")
            if negative_tol >= 1.0:
                raise ValueError(f"negative_tol: expected a number in [0, 1) (relative to max|lambda|), got "
                                 f"{negative_tol:g}; no eigenvalue is below -max|lambda|, use negative='abs' instead")
        retries = _check_int(retries, "retries", 0, "pass e.g. retries=3, or 0 to end a step at its first rejection")
        defaults = dict(subspace=subspace, lr=lr, base=base, base_lr=base_lr, refresh_every=refresh_every,
                        between_refreshes=between_refreshes, history=history, trust_radius=trust_radius,
                        max_trust_radius=max_trust_radius, negative=negative, negative_tol=negative_tol,
                        retries=retries)
        super().__init__(model, loss_fn, defaults, params=params, generator=generator, process_group=process_group)
        gs = self.global_state
        gs.setdefault("damping", damping)
        gs.setdefault("radius", trust_radius)
        gs.setdefault("history", [])

    @classmethod
    def from_analysis(cls, result, model: nn.Module, loss_fn: Any, **overrides) -> "SaddleFreeNewton":
        """A SaddleFreeNewton whose damping, trust radius and negative-curvature rule come from a
        measured spectrum (``result`` from :func:`curvlens.analyze`, ideally with
        ``curvature="hessian"``); ``overrides`` win. The reasons are in :attr:`analysis_reasons`.

        See :func:`curvlens.optim._saddle_free_analysis.settings_from_analysis` for the rules.
        """
        kw, reasons = settings_from_analysis(result)
        over = sorted(k for k in overrides if k in kw)
        opt = cls(model, loss_fn, **{**kw, **overrides})
        opt.analysis_reasons = tuple(r for r in reasons if r.split("=")[0].split()[0] not in over) + tuple(
            f"{k}={overrides[k]!r}: given by the caller" for k in over)
        return opt

    def _hp(self, key: str) -> Any:
        group = self.param_groups[0]
        return group[key] if key in group else self.defaults[key]  # a state_dict saved before the key existed

    # ------------------------------------------------------------------ pieces of the step
    def _refresh(self, op: StepHessian, g: torch.Tensor) -> int:
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

    def _trial(self, rec: dict, g, g_out, hess, V, lam, U, a, damping: float, radius: float, rule: str,
               tol: float) -> tuple[torch.Tensor, float, dict]:
        """One candidate step at ``damping`` and ``radius``: the step, its predicted decrease and the
        base rule's new state; fills the record's ``escape``, ``step_norm`` and ``matvecs``."""
        sub = subspace_step(lam, a, damping=damping, radius=radius, lr=self._hp("lr"), negative=rule,
                            negative_tol=tol)
        rec["escape"] = sub.escape
        s = V @ (U @ sub.coefficients).to(V.dtype)
        predicted, adam_state = math.nan, {}
        if g_out is None:  # a fresh Krylov basis starts at g: the step lies in it and the model is exact
            predicted = sub.predicted_decrease
            norm = float(torch.linalg.vector_norm(s))
        else:
            s_out, adam_state = self._base_step(g_out, float(lam.abs().max()), damping)
            s = s + (s_out - V @ (V.T @ s_out))
            norm, alpha = float(torch.linalg.vector_norm(s)), 1.0
            if norm > radius:
                alpha = radius / norm
                s, norm = s * alpha, radius
            if math.isfinite(norm) and hess is not None:
                Hs = hess.matvec(s)
                rec["matvecs"] += 1
                predicted = -float(torch.dot(g, s) + 0.5 * torch.dot(s, Hs))
            elif math.isfinite(norm):  # the subspace curvature of the stored eigenpairs, the rest first order
                c = sub.coefficients
                predicted = -(float(torch.dot(g, s)) + 0.5 * alpha ** 2 * float((lam.double() * c * c).sum()))
        rec["step_norm"] = norm
        return s, predicted, adam_state

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
        refresh = "basis" not in gs or k % self._hp("refresh_every") == 0
        damping, radius = float(gs["damping"]), float(gs["radius"])
        if not refresh and self._hp("between_refreshes") == "base":
            return self._base_only(problem, dict(step=k, loss_before=math.nan, loss_after=None, damping=damping,
                                                 matvecs=0, trust_radius=radius, refreshed=False), damping)
        if refresh or self._hp("between_refreshes") == "exact":
            hess = StepHessian(problem, validate=not getattr(self, "_validated", False))
            self._validated = True
            loss0, g = hess.loss, hess.gradient
        else:  # a first-order step on the reused basis: no second-order graph
            hess = None
            loss0, g = loss_and_gradient(problem)
        rec = dict(step=k, loss_before=float(loss0), loss_after=None, damping=damping, matvecs=0, trust_radius=radius,
                   refreshed=refresh)
        if refresh:
            rec["matvecs"] = self._refresh(hess, g)
        if "basis" not in gs:
            return self._finish(loss0, rec, False, "the projected Hessian is not finite; step skipped, damping raised")
        V, lam, U = gs["basis"], gs["eigenvalues"], gs["eigenvectors"]
        cV = V.T @ g
        gnorm = float(torch.linalg.vector_norm(g))
        rec["subspace_norm_fraction"] = float(torch.linalg.vector_norm(cV)) / gnorm if gnorm > 0 else 0.0
        rec["eigenvalues"] = tuple(float(x) for x in lam)
        rec["num_negative"] = int((lam < 0).sum())
        rule = self._hp("negative")
        if gnorm == 0.0:  # at a critical point every rule leaves along the most negative direction
            rule = "escape"
        tol = self._hp("negative_tol")
        tol = default_negative_tol(V.dtype) if tol is None else tol
        rec["negative_threshold"] = negative_threshold(lam, tol)
        a = U.T @ cV.double()
        g_out = None if rec["refreshed"] else g - V @ cV
        snap, retries = None, 0
        while True:
            s, predicted, adam_state = self._trial(rec, g, g_out, hess, V, lam, U, a, damping, radius, rule, tol)
            norm = rec["step_norm"]
            if not math.isfinite(norm):
                return self._finish(loss0, rec, False, "the step is not finite; weights kept, damping raised")
            snap = self.snapshot() if snap is None else snap
            self.add_to_params(s)
            loss1 = float(problem.loss())
            actual = rec["loss_before"] - loss1 if math.isfinite(loss1) else -math.inf
            rho = actual / predicted if predicted > 0 else math.nan
            rec.update(loss_after=loss1, predicted_decrease=predicted, actual_decrease=actual, rho=rho)
            if math.isfinite(loss1) and self.params_finite() and loss1 <= rec["loss_before"]:
                break
            self.restore(snap)
            if retries >= self._hp("retries"):
                why = "not finite" if not math.isfinite(loss1) else f"higher ({loss1:.6g} > {rec['loss_before']:.6g})"
                return self._finish(loss0, rec, False, f"the loss after the step was {why}; weights restored exactly, "
                                    "damping raised, trust radius halved")
            retries += 1  # the same basis, gradient and eigenpairs; only the damping and the radius change
            damping, radius = min(MAX_DAMPING, damping * 1.5), self._shrunk_radius(norm, radius)
            if hess is not None and g_out is not None:  # the restore invalidated the graph the model's product needs
                hess = StepHessian(problem)
            rec.update(retries=retries, damping=damping, trust_radius=radius)
        gs.update(adam_state)
        if not rho >= 0.25:  # also nan: the model predicted no decrease
            gs["damping"] = min(MAX_DAMPING, damping * 1.5)
            gs["radius"] = self._shrunk_radius(norm, radius)
        elif rho > 0.75:
            gs["damping"] = max(MIN_DAMPING, damping * 2.0 / 3.0)
            if norm >= 0.99 * radius:
                gs["radius"] = min(self._hp("max_trust_radius"), 2.0 * radius)
        h = self._hp("history")
        if h:
            gs["history"] = ([s.clone()] + list(gs["history"]))[:h]
        return self._finish(loss0, rec, True, "step accepted")

    def _base_only(self, problem, rec: dict, damping: float) -> torch.Tensor:
        """``between_refreshes="base"``: the base rule's own step on the whole gradient, unbounded and
        without a loss evaluation (like the base rule alone); only non-finite weights are undone."""
        gs = self.global_state
        loss0, g = loss_and_gradient(problem)
        rec["loss_before"] = float(loss0)
        lam = gs["eigenvalues"]
        rec["eigenvalues"], rec["num_negative"] = tuple(float(x) for x in lam), int((lam < 0).sum())
        s, adam_state = self._base_step(g, float(lam.abs().max()), damping)
        rec["predicted_decrease"] = -float(torch.dot(g, s))  # first order: the base rule has no model
        rec["step_norm"] = norm = float(torch.linalg.vector_norm(s))
        if not math.isfinite(norm):
            return self._finish(loss0, rec, False, "the step is not finite; weights kept, damping raised")
        snap = self.snapshot()
        self.add_to_params(s)
        if not self.params_finite():
            self.restore(snap)
            return self._finish(loss0, rec, False, "the weights after the step were not finite; weights restored "
                                "exactly, damping raised, trust radius halved")
        gs.update(adam_state)
        h = self._hp("history")
        if h:
            gs["history"] = ([s.clone()] + list(gs["history"]))[:h]
        return self._finish(loss0, rec, True, "base rule step (between_refreshes='base'), not checked by a loss")

    def _shrunk_radius(self, norm: float, radius: float) -> float:
        """Half the step, kept when there was no step and floored at 1e-12 of the largest radius."""
        if not norm > 0:
            return radius
        return max(0.5 * norm, 1e-12 * self._hp("max_trust_radius"))

    def _finish(self, loss0: torch.Tensor, rec: dict, accepted: bool, status: str) -> torch.Tensor:
        gs = self.global_state
        if not accepted:
            gs["damping"] = min(MAX_DAMPING, rec["damping"] * 1.5)
            if math.isfinite(rec.get("step_norm", math.nan)):
                gs["radius"] = self._shrunk_radius(rec["step_norm"], rec["trust_radius"])
        gs["step"] = rec["step"] + 1
        self.last_step = SaddleFreeStep(accepted=accepted, status=status, next_damping=float(gs["damping"]), **rec)
        return loss0
