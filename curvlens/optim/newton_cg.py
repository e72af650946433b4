"""Hessian-free (truncated) Newton: :class:`NewtonCG` and its step record.

References: J. Martens, "Deep learning via Hessian-free optimization" (ICML 2010); J. Martens
and I. Sutskever, "Training deep and recurrent networks with Hessian-free optimization"
(Neural Networks: Tricks of the Trade, 2012); J. Nocedal and S. Wright, *Numerical
Optimization*, 2nd ed., Alg. 7.1 (line-search Newton-CG).

One step on a batch: the loss and gradient ``g`` on the batch (when the curvature is the GGN
of the whole batch through its materialized output Jacobian ``J``, ``g = J^T dl/df`` from it,
without a backward pass of its own); the curvature ``B`` (GGN by default, or the Hessian, or a
Fisher) on a curvature sub-batch through the live operators;
preconditioned CG on ``(B + lambda I) s = -g`` from a decayed previous solution, stopped by
the relative progress of the quadratic model; backtracking over the kept CG iterates; an
Armijo line search on the chosen iterate; Levenberg-Marquardt adaptation of ``lambda`` from the
reduction ratio. A non-finite loss or product rejects the step and restores the weights.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from curvlens.errors import ConvergenceWarning, NonFiniteLossError
from curvlens.linalg.cg import cg
from curvlens.operators.ggn_jacobian import JacobianGGNOperator
from curvlens.optim._base import CurvatureOptimizer, StepRecord, register_optimizer
from curvlens.optim._distributed import loss_and_gradient, rank_generator
from curvlens.optim._newton_cg_analysis import settings_from_analysis
from curvlens.optim._newton_cg_damping import DampingRule, reduction_ratio
from curvlens.optim._newton_cg_options import CURVATURES, check_options
from curvlens.optim._newton_cg_precond import curvature_diagonal
from curvlens.optim._newton_cg_product import ProductChooser
from curvlens.optim._newton_cg_search import armijo_search, backtrack_kept
from curvlens.problem.differentiable import check_twice_differentiable

__all__ = ["CURVATURES", "DampingRule", "NewtonCG", "NewtonCGStep"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewtonCGStep(StepRecord):
    """What one :meth:`NewtonCG.step` did (besides the fields of :class:`StepRecord`).

    Attributes:
        damping: ``lambda`` used in this step; next_damping: after the adaptation.
        rho: reduction ratio (actual / predicted decrease; None when no step was tried).
        cg_iterations, cg_stop_reason: of the CG run (``stop_reason`` as in ``CGResult``).
        iterate: the CG iteration chosen by backtracking (None for another direction).
        alpha: the line-search step length (0 when rejected).
        step_norm: ``||alpha s||`` of the update taken.
        negative_curvature: whether CG met a direction with ``p^T B p <= 0``.
        direction: ``"cg"``, ``"negative_curvature"``, ``"gradient"`` or ``"none"``.
        grad_norm: ``||g||`` (with weight decay).
        curvature_samples: samples in the curvature batch; products: curvature products used.
    """

    damping: float
    next_damping: float
    rho: float | None
    cg_iterations: int
    cg_stop_reason: str | None
    iterate: int | None
    alpha: float
    step_norm: float
    negative_curvature: bool
    direction: str
    grad_norm: float
    curvature_samples: int
    products: int


def _operator(kind: str, problem, gen: torch.Generator, max_graph_memory):
    from curvlens.operators import EmpiricalFisherOperator, GGNOperator, HessianOperator, MCFisherOperator

    kw = {} if max_graph_memory is None else {"max_graph_memory": max_graph_memory}
    if kind == "ggn":
        return GGNOperator(problem, **kw)
    if kind == "hessian":
        return HessianOperator(problem, **kw)
    if kind == "fisher":  # on a process group each rank samples its own targets from its own stream
        return MCFisherOperator(problem, generator=rank_generator(gen, problem), **kw)
    return EmpiricalFisherOperator(problem, **kw)


@register_optimizer("newton_cg")
class NewtonCG(CurvatureOptimizer):
    """Hessian-free Newton-CG (Martens 2010) as a ``torch.optim.Optimizer``.

    Args:
        model: the network (its trainable parameters, or ``params``, are optimized).
        loss_fn: a criterion, a loss name or ``loss_fn(model, batch)`` (``"hessian"`` and
            ``"empirical_fisher"`` curvature only), as for :class:`~curvlens.Problem`.
        curvature: ``"ggn"`` (default; PSD), ``"hessian"`` (truncated Newton: CG stops at the
            first direction of non-positive curvature), ``"fisher"`` (Monte-Carlo Fisher) or
            ``"empirical_fisher"``.
        lr: the first step length the line search tries (1 is the Newton step).
        damping: initial Tikhonov damping ``lambda >= 0`` (0: undamped; default 1e-3, adapted by
            ``damping_rule``; :meth:`from_analysis` sets it to 1e-2 of the measured ``lambda_max``).
        adapt_damping: Levenberg-Marquardt adaptation by ``damping_rule`` (default
            :class:`DampingRule`: x3/2 when ``rho < 1/4``, x2/3 when ``rho > 3/4``).
        curvature_fraction: fraction of each batch used for curvature when ``step`` gets no
            ``curvature_batch`` (drawn from ``generator``).
        preconditioner: ``"auto"`` (default: the exact GGN diagonal on the Jacobian product
            route, where it is free, else ``"empirical_fisher"``), ``"empirical_fisher"``
            (Martens' choice; per-sample gradients),
            ``"hutchinson"`` (``precond_probes`` probes of the curvature), ``"exact"`` or None;
            the preconditioner is ``(diag + lambda + weight_decay)^precond_exponent``.
        cg_maxiter, cg_rtol, cg_progress_tol: CG iteration cap, residual tolerance and
            Martens' relative-progress tolerance (None: off).
        warm_start: CG starts from ``warm_start`` times the previous solution (0: from zero).
        backtrack: backtrack over the CG iterates kept at ``ceil(1.3^j)``.
        backtrack_rho: take the last CG iterate without walking back (one loss evaluation) when
            its reduction ratio (actual / predicted decrease) is at least this and its actual
            decrease is at least the model's decrease at the previous kept iterate; None always
            walks back while the loss improves (see :mod:`curvlens.optim._newton_cg_search`).
        line_search: Armijo backtracking ``f(theta + a s) <= f + c a g^T s`` (``armijo_c``),
            at most ``ls_max`` shrinks of ``a`` by ``ls_shrink`` (or, with ``ls_low``, to the minimizer
            of the quadratic interpolating the failed trial, kept in ``[ls_low a, ls_shrink a]``).
        weight_decay: adds ``weight_decay / 2 ||theta||^2`` to the objective (and to ``B``).
        params: which parameters (default all with ``requires_grad``).
        generator: the curvature batch, probes and MC Fisher samples (never the global RNG).
        max_graph_memory: passed to the curvature operators.
        product: how GGN products are computed: ``"auto"`` (default: through the materialized
            output Jacobian when ``M * D <= max_jacobian_entries`` output entries x parameters,
            else autograd), ``"autograd"`` (double backward on retained graphs) or
            ``"jacobian"``; both routes are exact (see :mod:`curvlens.optim._newton_cg_product`).
        process_group: None, ``"world"`` or a process group (as for :class:`~curvlens.Problem`):
            each rank passes its shard of every batch; the steps equal one process's on the union.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(32, 3, generator=g, dtype=torch.float64)
        >>> model = nn.Linear(3, 1).double()
        >>> opt = NewtonCG(model, nn.MSELoss(), damping=0.0, curvature_fraction=1.0, generator=0)
        >>> loss = opt.step((x, x.sum(1, keepdim=True)))
        >>> float(nn.MSELoss()(model(x), x.sum(1, keepdim=True)).detach()) < 1e-12
        True
    """

    def __init__(self, model: nn.Module, loss_fn: Any, *, curvature: str = "ggn", lr: float = 1.0,
                 damping: float = 1e-3, adapt_damping: bool = True, damping_rule: DampingRule | None = None,
                 curvature_fraction: float = 0.5, preconditioner: str | None = "auto",
                 precond_exponent: float = 0.75, precond_probes: int = 10, cg_maxiter: int = 250,
                 cg_rtol: float = 1e-10, cg_progress_tol: float | None = 5e-4, warm_start: float = 0.95,
                 backtrack: bool = True, backtrack_rho: float | None = 0.5, line_search: bool = True,
                 armijo_c: float = 1e-2, ls_shrink: float = 0.8, ls_low: float | None = None, ls_max: int = 30,
                 weight_decay: float = 0.0, params: Any = None,
                 generator: torch.Generator | int | None = None, max_graph_memory: int | None = None,
                 product: str = "auto", max_jacobian_entries: int = 2**22,
                 process_group: Any = None):
        o = check_options(loss_fn, curvature=curvature, lr=lr, damping=damping, damping_rule=damping_rule,
                          curvature_fraction=curvature_fraction, preconditioner=preconditioner,
                          precond_exponent=precond_exponent, precond_probes=precond_probes, cg_maxiter=cg_maxiter,
                          cg_rtol=cg_rtol, cg_progress_tol=cg_progress_tol, warm_start=warm_start,
                          backtrack_rho=backtrack_rho, armijo_c=armijo_c, ls_shrink=ls_shrink, ls_low=ls_low,
                          ls_max=ls_max, weight_decay=weight_decay, product=product,
                          max_jacobian_entries=max_jacobian_entries)
        super().__init__(model, loss_fn, {"lr": o["lr"], "weight_decay": o["weight_decay"]}, params=params,
                         generator=generator, process_group=process_group)
        self.global_state.setdefault("damping", o["damping"])
        self.adapt_damping, self.backtrack, self.line_search = bool(adapt_damping), bool(backtrack), bool(line_search)
        self.damping_rule = o["damping_rule"] or DampingRule()
        for name in ("curvature", "curvature_fraction", "preconditioner", "precond_exponent", "precond_probes",
                     "cg_maxiter", "cg_rtol", "cg_progress_tol", "warm_start", "backtrack_rho", "armijo_c",
                     "ls_shrink", "ls_low", "ls_max"):
            setattr(self, name, o[name])
        self.max_graph_memory = max_graph_memory
        self.products = ProductChooser(product, curvature, o["max_jacobian_entries"])
        self.analysis_reasons: tuple[str, ...] = ()
        self._checked_differentiable = curvature == "empirical_fisher"

    @classmethod
    def from_analysis(cls, result, model: nn.Module, loss_fn: Any, **overrides) -> "NewtonCG":
        """A NewtonCG whose initial damping, CG budget and first step length come from a measured
        spectrum (``result`` from :func:`curvlens.analyze`); ``overrides`` win. The reasons are in
        :attr:`analysis_reasons`."""
        kw, reasons = settings_from_analysis(result, overrides.get("curvature", "ggn"))
        over = sorted(k for k in overrides if k in kw)
        opt = cls(model, loss_fn, **{**kw, **overrides})
        opt.analysis_reasons = reasons + tuple(f"{k}={overrides[k]!r}: given by the caller" for k in over)
        return opt

    @property
    def damping(self) -> float:
        """The damping the next step uses."""
        return float(self.global_state["damping"])

    # ------------------------------------------------------------------ helpers
    def _objective(self, problem, wd: float) -> float:
        f = float(problem.loss())
        if wd:
            f += 0.5 * wd * sum(float((p.detach() ** 2).sum()) for p in self.params)
        return f if math.isfinite(f) else math.inf

    def _trial(self, problem, snap, s: torch.Tensor, alpha: float, wd: float) -> float:
        """The objective at ``theta + alpha s`` (the weights are put back exactly afterwards)."""
        self.add_to_params(s, alpha)
        try:
            return self._objective(problem, wd) if self.params_finite() else math.inf
        finally:
            self.restore(snap)

    def _finish(self, record: NewtonCGStep, loss: torch.Tensor) -> torch.Tensor:
        self.global_state["damping"] = record.next_damping
        self.global_state["step"] = record.step + 1
        self.last_step = record
        log.debug("NewtonCG step %d: %s", record.step, record.status)
        return loss

    def _reject(self, k: int, loss: torch.Tensor, lam: float, why: str, **fields) -> torch.Tensor:
        new = self.damping_rule.after_nonfinite(lam)
        base = dict(rho=None, cg_iterations=0, cg_stop_reason=None, iterate=None, alpha=0.0, step_norm=0.0,
                    negative_curvature=False, direction="none", grad_norm=math.nan, curvature_samples=0, products=0)
        base.update(fields)
        return self._finish(NewtonCGStep(
            step=k, loss_before=float(loss), loss_after=None, accepted=False,
            status=f"rejected: {why}; weights restored, damping raised from {lam:.3g} to {new:.3g}",
            damping=lam, next_damping=new, **base), loss)

    def _curvature_operator(self, cproblem):
        return self.products.operator(
            cproblem, lambda: _operator(self.curvature, cproblem, self._gen, self.max_graph_memory))

    def _check_differentiable(self, problem) -> None:
        if self._checked_differentiable or not problem.batches:  # an empty shard: nothing to probe
            return
        with problem.state_guard():
            loss, _, _ = problem.batch_loss(0)
            g = torch.autograd.grad(loss, problem.params, create_graph=True, allow_unused=True)
        check_twice_differentiable([t for t in g if t is not None], f"NewtonCG(curvature={self.curvature!r})")
        self._checked_differentiable = True

    # ------------------------------------------------------------------ the step
    def step(self, batch: Any = None, closure: Any = None, *, curvature_batch: Any = None) -> torch.Tensor:
        """One Newton-CG step on ``batch``; returns the loss before the step (a detached tensor).

        Args:
            batch: an ``(inputs, targets)`` batch, a list of batches or anything
                :class:`~curvlens.Problem` accepts.
            closure: not supported (pass the batch).
            curvature_batch: the batch for the curvature products (default: a random
                ``curvature_fraction`` of ``batch``).
        """
        if closure is None and callable(batch) and not hasattr(batch, "__iter__"):
            closure, batch = batch, None
        if closure is not None:
            raise TypeError("closure: NewtonCG evaluates the loss itself, got a closure; call opt.step(batch) "
                            "with an (inputs, targets) batch")
        if batch is None:
            raise ValueError("batch: expected an (inputs, targets) batch or a list of batches, got None; call "
                             "opt.step(batch)")
        gs, grp = self.global_state, self.param_groups[0]
        k, lam, lr, wd = int(gs["step"]), float(gs["damping"]), float(grp["lr"]), float(grp["weight_decay"])
        problem = self.problem(batch)
        nan = torch.tensor(math.nan, dtype=problem.dtype, device=problem.device)
        # curvature on the whole batch of one process: the operator first (a non-finite loss would
        # raise in its build on one rank only, so a process group keeps the reduced gradient first)
        whole = (curvature_batch is None and self.curvature_fraction >= 1.0 and self.process_group is None
                 and not self.products.disabled)
        op = early_failed = None
        if whole:  # on the Jacobian route the gradient is J^T dl/df from the operator's build
            cproblem = problem.with_data(batch)
            try:
                op = self._curvature_operator(cproblem)
            except NonFiniteLossError:
                early_failed = True
        try:
            if isinstance(op, JacobianGGNOperator):
                loss, g = op.loss_and_gradient()  # g = J^T dl/df: no separate backward pass
                if not math.isfinite(float(loss)):
                    raise NonFiniteLossError("loss_fn: the loss before the step is not finite")
            else:
                loss, g = loss_and_gradient(problem)  # on a group: raised on every rank when on any
        except NonFiniteLossError:
            return self._reject(k, nan, lam, "non-finite loss before the step")
        self._check_differentiable(problem)
        theta = self.flat_params()
        if wd:
            g = g + wd * theta
        gnorm = float(torch.linalg.vector_norm(g))
        if not math.isfinite(gnorm):
            return self._reject(k, loss, lam, "non-finite gradient")
        f0 = float(loss) + (0.5 * wd * float(theta @ theta) if wd else 0.0)
        if early_failed:
            return self._reject(k, loss, lam, "non-finite loss on the curvature batch", grad_norm=gnorm)
        if not whole:
            cbatch = (curvature_batch if curvature_batch is not None
                      else self.curvature_subset(batch, self.curvature_fraction))
            cproblem = problem.with_data(cbatch)
            try:
                op = self._curvature_operator(cproblem)
            except NonFiniteLossError:
                return self._reject(k, loss, lam, "non-finite loss on the curvature batch", grad_norm=gnorm)
        ncurv = cproblem.num_samples
        shift = lam + wd
        A = op + shift if shift > 0 else op
        diag = curvature_diagonal(self.preconditioner, cproblem, op, num_probes=self.precond_probes,
                                  generator=self._gen)
        m_diag = None
        if diag is not None:
            d = diag + shift
            if bool(torch.isfinite(d).all()):
                floor = max(float(d.max()), 1.0) * 1e-12
                m_diag = d.clamp_min(floor) ** self.precond_exponent
        x0 = gs.get("prev_solution")
        if x0 is not None and self.warm_start > 0 and x0.shape == g.shape and bool(torch.isfinite(x0).all()):
            x0 = (self.warm_start * x0).to(g)
            Ax0 = A @ x0  # use the warm start only where the damped model decreases along it
            x0 = x0 if float(0.5 * (x0 @ Ax0) + g @ x0) < 0 else None
        else:
            x0 = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            res = cg(A, -g, rtol=self.cg_rtol, maxiter=self.cg_maxiter, M_diag=m_diag, x0=x0,
                     keep="martens" if self.backtrack else None, progress_tol=self.cg_progress_tol)
        info = dict(cg_iterations=res.iterations, cg_stop_reason=res.stop_reason, grad_norm=gnorm,
                    curvature_samples=ncurv, negative_curvature=res.negative_direction is not None)
        if res.stop_reason == "nonfinite":
            info["products"] = op.num_matvecs
            return self._reject(k, loss, lam, "non-finite curvature product in CG", **info)
        gs["prev_solution"] = res.x.detach().clone()
        snap = self.snapshot()
        s, it, direction, fs, sAs = self._choose(problem, snap, res, g, wd, f0)
        gts = float(g @ s)
        if not gts < 0:  # never uphill: fall back to the preconditioned gradient
            s = -g / m_diag if m_diag is not None else -g
            it, direction, fs, gts = None, "gradient", None, float(g @ s)
            sAs = None
        if sAs is None:
            sAs = float(s @ (A @ s))
        alpha, f1 = self._line_search(problem, snap, s, gts, f0, lr, fs, wd)
        predicted = alpha * gts + 0.5 * alpha * alpha * sAs
        rho = reduction_ratio(f1 - f0, predicted) if alpha > 0 else -math.inf
        new_lam = self.damping_rule.update(lam, rho) if self.adapt_damping else lam
        info.update(products=op.num_matvecs, iterate=it, direction=direction)
        if alpha == 0.0 and not math.isfinite(f1):
            return self._reject(k, loss, lam, "non-finite loss at every trial step length", **info)
        if alpha == 0.0:
            return self._finish(NewtonCGStep(
                step=k, loss_before=float(loss), loss_after=None, accepted=False,
                status=f"rejected: no step length passed the line search; damping {lam:.3g} -> {new_lam:.3g}",
                damping=lam, next_damping=new_lam, rho=None, alpha=0.0, step_norm=0.0, **info), loss)
        self.add_to_params(s, alpha)
        if not self.params_finite():
            self.restore(snap)
            return self._reject(k, loss, lam, "non-finite weights after the step", **info)
        f1_data = f1 - (0.5 * wd * float(self.flat_params().pow(2).sum()) if wd else 0.0)
        return self._finish(NewtonCGStep(
            step=k, loss_before=float(loss), loss_after=f1_data, accepted=True,
            status=f"accepted: {direction} step, alpha={alpha:.3g}, rho={rho:.3g}, CG {res.stop_reason} after "
                   f"{res.iterations} iterations", damping=lam, next_damping=new_lam, rho=rho, alpha=alpha,
            step_norm=alpha * float(torch.linalg.vector_norm(s)), **info), loss)

    def _choose(self, problem, snap, res, g, wd, f0):
        """(direction, CG iteration, objective at theta + s or None, s^T A s or None)."""
        kept = list(zip(res.kept_iterations, res.kept_iterates))
        phi = res.quadratic_values
        moved = any(bool(x.abs().max() > 0) for _, x in kept)
        if not moved and res.negative_direction is not None:
            p = res.negative_direction
            p = -p if float(g @ p) > 0 else p
            curv = abs(res.negative_curvature or 0.0) + max(self.damping, 1e-12)
            s = p * (abs(float(g @ p)) / (curv * float(p @ p)))
            return s, None, "negative_curvature", None, None
        if not self.backtrack or len(kept) == 1:
            i, x = kept[-1]
            return x, i, "cg", None, 2.0 * (phi[i] - float(g @ x))
        # Martens (2010), Sec. 4.6: walk back from the last kept iterate while the objective improves
        i, x, fj = backtrack_kept(lambda x, a: self._trial(problem, snap, x, a, wd), kept, phi, f0,
                                  self.backtrack_rho)
        return x, i, "cg", fj, 2.0 * (phi[i] - float(g @ x))

    def _line_search(self, problem, snap, s, gts, f0, lr, fs, wd) -> tuple[float, float]:
        """(alpha, objective at theta + alpha s); alpha = 0 when no length is accepted."""
        f = fs if (fs is not None and lr == 1.0) else None
        if not self.line_search:
            f = self._trial(problem, snap, s, lr, wd) if f is None else f
            return (lr, f) if math.isfinite(f) else (0.0, f)
        return armijo_search(lambda x, a: self._trial(problem, snap, x, a, wd), s, f0, gts, lr, f,
                             c=self.armijo_c, shrink=self.ls_shrink, low=self.ls_low, max_iter=self.ls_max)
