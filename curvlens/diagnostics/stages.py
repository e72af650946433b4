"""The stage table of :func:`~curvlens.diagnostics.analyze`: what it measures, in order, with what share.

A stage is a small function ``fn(ctx, allowance) -> (result, products) | None`` that runs one
measurement on the shared :class:`StageContext` within ``allowance`` products (passed to its
solver as a hard ``max_matvecs``) and returns the result with the products it spent, or None
when the allowance is too small (the driver notes the skip). The driver runs the rows whose
``needed_by`` meets the chosen analyses, in table order, sharing the budget with a
:class:`~curvlens.diagnostics.BudgetSplitter` built from the rows' fractions. A row with
``fraction=None`` runs before the budget is split (its products are charged to the budget);
add a stage by writing its function and inserting a :class:`Stage` row.

=============== ======== ============================================================== =========================
stage           fraction what it runs                                                   needed by
=============== ======== ============================================================== =========================
cost            (fixed)  4 products, 4 gradients (warm-up + 3 pairs): ``hvp_cost``      always (model input)
top             0.15     ``top_eigenpairs(k=4, rtol=1e-3)`` (k=1 below 24 products)      conditioning, sharpness,
                                                                                        per_layer, noise
trace           0.10     ``krylov_trace(per_block=True)`` (Hutchinson below 4 products)  trace, conditioning,
                                                                                        per_layer, noise
bottom          0.15     ``bottom_eigenpairs(k=1)`` to ``1e-2 max(|l_min|, l_max)``;     conditioning, saddle
                         exact (full Krylov space) when ``D`` products fit the budget
density         0.30     SLQ, ``min(30, D)`` steps x up to 10 probes                     density, saddle
per_layer       0.10     ``top_eigenpairs`` of each diagonal block                       per_layer
noise           0.20     minibatch study (products on B samples count B/N)              noise
gradient_noise  0        gradient noise scale (gradients only, no products)             gradient_noise
=============== ======== ============================================================== =========================
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

import torch

from curvlens.diagnostics.budget import BudgetSplitter
from curvlens.diagnostics.gradient_noise import gradient_noise_scale
from curvlens.diagnostics.noise import curvature_noise
from curvlens.diagnostics.per_layer import per_layer_breakdown
from curvlens.diagnostics.product_cost import ProductCost, measure_product_cost
from curvlens.estimators import hutchinson_trace, krylov_trace
from curvlens.estimators.density import spectral_density
from curvlens.linalg import bottom_eigenpairs, top_eigenpairs
from curvlens.operators import DenseOperator, GGNOperator, HessianOperator, MCFisherOperator

__all__ = ["Stage", "StageContext", "ProductCost", "STAGES", "FRACTIONS", "OPERATORS", "plan_stages"]

OPERATORS = {"hessian": HessianOperator, "ggn": GGNOperator, "fisher": MCFisherOperator}


@dataclass
class StageContext:
    """What the stages share during one :func:`analyze` call (internal, mutable).

    ``model`` is None when ``analyze`` was given an operator; ``out`` collects the results of
    the stages run so far by name (later stages read earlier ones: per_layer reads top and
    trace); ``budget`` is set once the budget is split.
    """

    op: Any
    gen: torch.Generator
    chosen: set
    notes: list
    callback: Callable[[str, int, int], None] | None = None
    model: Any = None
    loss_fn: Any = None
    data: Any = None
    samples: Any = None
    kind: str = "operator"
    params: Any = None
    mode: str = "eval"
    max_graph_memory: int | None = None
    batch_sizes: Any = None
    target_rstderr: float = 0.1
    deadline: float | None = None
    budget: BudgetSplitter | None = None
    cost: ProductCost | None = None
    out: dict = field(default_factory=dict)

    def progress(self, stage: str):
        """``callback(done, total)`` for a solver, reporting as ``callback(stage, done, total)``."""
        cb = self.callback
        return None if cb is None else (lambda d, t: cb(stage, int(d), int(t)))

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.perf_counter() > self.deadline


StageFn = Callable[[StageContext, int], "tuple[Any, int | float] | None"]


@dataclass(frozen=True)
class Stage:
    """One row of the stage table.

    Attributes:
        name: stage name (the key in the callback and in the notes).
        fraction: share of the product budget (see :class:`BudgetSplitter`), or None for a
            measurement that runs before the split, with its products charged to the budget.
        fn: ``fn(ctx, allowance) -> (result, products) | None``.
        needed_by: the analyses that need the stage (``"*"``: always).
        reports: call ``callback(name, 1, 1)`` when the stage finishes.
    """

    name: str
    fraction: float | None
    fn: StageFn
    needed_by: tuple[str, ...]
    reports: bool = True

    def wanted(self, chosen) -> bool:
        return "*" in self.needed_by or bool(set(self.needed_by) & set(chosen))


def run_cost(ctx: StageContext, allowance: int):
    """Time one product against one gradient (model input only; an operator has no gradient):
    an untimed warm-up pair, then :data:`~curvlens.diagnostics.product_cost.COST_PAIRS` timed
    (gradient, product) pairs, the median ratio (:func:`~curvlens.diagnostics.product_cost.measure_product_cost`)."""
    if ctx.model is None:
        return None, 0
    op = ctx.op
    v = torch.randn(op.dim, generator=ctx.gen, dtype=torch.float64).to(op.dtype).to(op.device)
    ctx.cost = measure_product_cost(op, v)
    return ctx.cost, ctx.cost.pairs + 1


def run_top(ctx: StageContext, a: int):
    k = 4 if a >= 24 and ctx.op.dim >= 8 else 1
    if a < 2:
        return None
    res = top_eigenpairs(ctx.op, k, max_matvecs=a, generator=ctx.gen, callback=ctx.progress("top"))
    return res, int(res.info.matvecs)


def run_trace(ctx: StageContext, a: int):
    if a >= 4:
        res = krylov_trace(ctx.op, a, per_block=True, generator=ctx.gen, callback=ctx.progress("trace"))
    elif a >= 2:
        res = hutchinson_trace(ctx.op, a, per_block=True, generator=ctx.gen, callback=ctx.progress("trace"))
    else:
        return None
    return res, int(res.info.matvecs)


#: the bottom stage certifies lambda_min to this fraction of lambda_max (the scale on which the
#: relative curvature |lambda_min| / lambda_max of the saddle verdict is read)
BOTTOM_TOL_OF_MAX = 1e-2
#: largest D for which the bottom stage takes the exact answer (a D-vector Krylov basis)
EXACT_BOTTOM_DIM = 4096


def _exact_bottom(ctx: StageContext, D: int):
    """``D`` products form the matrix (columns of the identity, in blocks); Lanczos on the dense
    float64 matrix with a ``D``-vector basis then spans the whole space (no further products of
    the operator), and the pair is certified against the same matrix."""
    op = ctx.op
    cols = []
    for i in range(0, D, 64):
        E = torch.zeros(D, min(64, D - i), dtype=op.dtype, device=op.device)
        E[torch.arange(i, i + E.shape[1]), torch.arange(E.shape[1])] = 1.0
        cols.append(op.matmat(E).double().cpu())
    A = torch.cat(cols, 1)
    dense = DenseOperator(0.5 * (A + A.T))
    res = bottom_eigenpairs(dense, 1, rtol=1e-12, block_size=1, basis_size=D, max_matvecs=D + 1,
                            generator=ctx.gen, callback=ctx.progress("bottom"))
    vec = res.eigenvectors.to(dtype=op.dtype, device=op.device)
    status = f"{res.info.status}; exact: the {D} x {D} matrix formed with {D} products"
    res = dataclasses.replace(res, eigenvectors=vec, info=dataclasses.replace(res.info, matvecs=D, status=status))
    ctx.notes.append(f"bottom: D = {D} fits the budget, lambda_min from the formed matrix ({D} products; "
                     "exact up to rounding)")
    return res, D


def run_bottom(ctx: StageContext, a: int):
    """``lambda_min``: exact when ``D`` products fit the allowance (the matrix is formed); for
    ``D <= EXACT_BOTTOM_DIM`` otherwise the whole allowance with an unrestarted basis and a tight
    tolerance; for large ``D`` certified to ``max(1e-2 |lambda_min|, 1e-2 lambda_max)``. When not
    certified, a note says that the value is a Rayleigh quotient, an upper bound on ``lambda_min``."""
    if a < 2:
        return None
    op, D = ctx.op, int(ctx.op.dim)
    if D <= EXACT_BOTTOM_DIM:
        if D <= a:
            return _exact_bottom(ctx, D)
        # small D: no restart (the basis holds every product) and the whole allowance for accuracy
        res = bottom_eigenpairs(op, 1, rtol=1e-10, block_size=1, basis_size=min(D, a), max_matvecs=a,
                                generator=ctx.gen, callback=ctx.progress("bottom"))
        if not bool(res.converged[0]):
            ctx.notes.append(f"bottom: lambda_min to residual {float(res.residuals[0]):.3g} in {res.info.matvecs} "
                             f"products (D = {D}: a budget giving the bottom stage {D} products makes it exact); "
                             "the value is a Rayleigh quotient, an upper bound on lambda_min")
        return res, int(res.info.matvecs)
    top = ctx.out.get("top")
    atol = None
    if top is not None and float(top.eigenvalues[0]) > 0:
        atol = BOTTOM_TOL_OF_MAX * float(top.eigenvalues[0])
    res = bottom_eigenpairs(op, 1, rtol=1e-2, atol=atol, max_matvecs=a, generator=ctx.gen,
                            callback=ctx.progress("bottom"))
    if not bool(res.converged[0]):
        ctx.notes.append(f"bottom: lambda_min not certified in {res.info.matvecs} products; the reported value "
                         f"{float(res.eigenvalues[0]):.4g} is a Rayleigh quotient, an upper bound on lambda_min "
                         f"(residual {float(res.residuals[0]):.3g}); raise budget")
    return res, int(res.info.matvecs)


def run_density(ctx: StageContext, a: int):
    steps = min(30, ctx.op.dim, a // 2)
    if steps < 1 or a < 2:
        return None
    probes = max(2, min(10, a // steps))
    res = spectral_density(ctx.op, num_probes=probes, num_steps=steps, fill_budget=False, generator=ctx.gen,
                           callback=ctx.progress("density"))
    return res, int(res.info.matvecs)


def run_per_layer(ctx: StageContext, a: int):
    res = per_layer_breakdown(ctx.op, trace=ctx.out.get("trace"), top=ctx.out.get("top"), max_matvecs=a,
                              deadline=ctx.deadline, generator=ctx.gen)
    return res, int(res.info.matvecs)


def run_noise(ctx: StageContext, a: int):
    """Curvature noise versus batch size on seeded subsets, compared with the full-data top and trace."""
    if a < 1:
        return None
    top, trace = ctx.out.get("top"), ctx.out.get("trace")
    full = {}
    if top is not None:
        full["lambda_max"] = float(top.eigenvalues[0])
        full["directional"] = float(top.eigenvalues[0])
    if trace is not None:
        full["trace"] = float(trace.estimate)
    cls = OPERATORS[ctx.kind]
    kw = dict(params=ctx.params, mode=ctx.mode, max_graph_memory=ctx.max_graph_memory)
    if ctx.kind == "fisher":
        kw["generator"] = ctx.op.seed
    samples, model, loss_fn = ctx.samples, ctx.model, ctx.loss_fn

    def make(idx):
        return samples.operator(cls, model, loss_fn, idx, **kw)

    res = curvature_noise(make, samples.num_samples, full_values=full,
                          direction=None if top is None else top.eigenvectors[:, 0],
                          batch_sizes=None if ctx.batch_sizes is None else list(ctx.batch_sizes),
                          target_rstderr=ctx.target_rstderr, full_operator=ctx.op, max_matvecs=float(a),
                          deadline=ctx.deadline, generator=ctx.gen, callback=ctx.progress("noise"))
    return res, int(res.info.matvecs)


def run_gradient_noise(ctx: StageContext, a: int):
    res = gradient_noise_scale(ctx.model, ctx.loss_fn, ctx.data, params=ctx.params, mode=ctx.mode, generator=ctx.gen,
                               process_group=ctx.op.problem.process_group)
    return res, 0


STAGES: tuple[Stage, ...] = (
    Stage("cost", None, run_cost, ("*",), reports=False),
    Stage("top", 0.15, run_top, ("conditioning", "sharpness", "per_layer", "noise")),
    Stage("trace", 0.10, run_trace, ("trace", "conditioning", "per_layer", "noise")),
    Stage("bottom", 0.15, run_bottom, ("conditioning", "saddle")),
    Stage("density", 0.30, run_density, ("density", "saddle")),
    Stage("per_layer", 0.10, run_per_layer, ("per_layer",)),
    Stage("noise", 0.20, run_noise, ("noise",)),
    Stage("gradient_noise", 0.0, run_gradient_noise, ("gradient_noise",)),
)

FRACTIONS = {s.name: s.fraction for s in STAGES if s.fraction}  # the product stages' shares


def plan_stages(chosen) -> tuple[Stage, ...]:
    """The rows of :data:`STAGES` that the chosen analyses need, in table order."""
    return tuple(s for s in STAGES if s.wanted(chosen))
