"""``analyze``: one call that runs the chosen diagnostics within a budget.

The measurements run as the rows of the stage table (:mod:`curvlens.diagnostics.stages`):
first the cost of one product (4 products, 4 gradients; model input only), then ``top``,
``trace``, ``bottom``, ``density``, ``per_layer``, ``noise`` and ``gradient_noise``, each only
when a chosen analysis needs it. The budget ``M`` (matvecs; default :data:`DEFAULT_BUDGET` =
300) is split among them by a :class:`~curvlens.diagnostics.BudgetSplitter`: each stage
receives its fraction (top 0.15, trace 0.10, bottom 0.15, density 0.30, per_layer 0.10,
noise 0.20) of what is left divided by the fractions of the stages still to run, so unused
products roll over. Each stage gets its allowance as a hard ``max_matvecs``, so the total
exceeds ``M`` by at most one block of vectors. A budget in seconds (``budget="300s"``,
``"2m"`` or ``budget_seconds=``) is turned into products with the measured time of one
product (80% of the time left), and no stage starts after the deadline. Stages that do not
fit are skipped with a note; eigensolvers that run out of products return
``converged=False`` with their status, never an exception.
"""

from __future__ import annotations

import ctypes
import re
import sys
import time
import warnings
from typing import Any, Callable, Iterable

import torch

from curvlens._rng import resolve_generator
from curvlens.diagnostics._checks import check_callback, check_float
from curvlens.diagnostics._subsets import indexable
from curvlens.diagnostics.analysis import AnalysisResult
from curvlens.diagnostics.budget import BudgetSplitter
from curvlens.diagnostics.conditioning import conditioning_from
from curvlens.diagnostics.saddle import saddle_from
from curvlens.diagnostics.sharpness import sharpness
from curvlens.diagnostics.stages import FRACTIONS, OPERATORS, STAGES, StageContext, plan_stages
from curvlens.operators import CurvatureOperator
from curvlens.problem import Problem
from curvlens.results import RunInfo

__all__ = ["analyze", "ANALYSES", "DEFAULT_BUDGET", "FRACTIONS", "parse_budget"]

ANALYSES = ("conditioning", "sharpness", "saddle", "density", "trace", "noise", "gradient_noise", "per_layer")
DEFAULT_BUDGET = 300
_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_LIBC: Any = None  # glibc handle once looked up, False where malloc_trim is unavailable


def _release_freed_memory() -> bool:
    """Return the C heap's free pages to the OS (glibc ``malloc_trim(0)``); False where unavailable.

    glibc keeps freed blocks below its (dynamic) mmap threshold in the heap, so a stage's freed
    Krylov vectors would otherwise stay in the resident set and add to the next stage's peak.
    Other C libraries and platforms: nothing is done.
    """
    global _LIBC
    if _LIBC is None:
        _LIBC = False
        if sys.platform.startswith("linux"):
            try:
                lib = ctypes.CDLL(None)
                if hasattr(lib, "malloc_trim") and hasattr(lib, "gnu_get_libc_version"):
                    lib.malloc_trim.argtypes, lib.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
                    _LIBC = lib
            except OSError:
                pass
    if _LIBC is False:
        return False
    _LIBC.malloc_trim(0)
    return True


def parse_budget(budget: Any, budget_seconds: Any = None) -> tuple[int | None, float | None]:
    """``(matvecs, seconds)`` from ``budget`` (int matvecs or ``"300s"``/``"2m"``) and ``budget_seconds``.

    Example:
        >>> parse_budget(200), parse_budget("2m"), parse_budget(None, 30)
        ((200, None), (None, 120.0), (None, 30.0))
    """
    mv = sec = None
    if isinstance(budget, bool) or not (budget is None or isinstance(budget, (int, str))):
        raise TypeError(f"budget: expected an int number of matvecs or a string like '300s' / '2m', got "
                        f"{type(budget).__name__}; for float seconds pass budget_seconds=")
    if isinstance(budget, int):
        if budget < 2:
            raise ValueError(f"budget: expected at least 2 matvecs, got {budget}; pass e.g. budget=600")
        mv = budget
    elif isinstance(budget, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-z]*)\s*", budget.lower())
        if m is None or m.group(2) not in _UNITS or float(m.group(1)) <= 0:
            raise ValueError(f"budget: expected a positive duration like '300s', '2m' or '1h', or an int number of "
                             f"matvecs, got {budget!r}")
        sec = float(m.group(1)) * _UNITS[m.group(2)]
    if budget_seconds is not None:
        if sec is not None or mv is not None:
            raise ValueError("budget_seconds: got both budget= and budget_seconds=; pass only one of them")
        sec = check_float(budget_seconds, "budget_seconds", low=0.0, strict_low=True, fix="pass e.g. budget_seconds=120")
    return mv, sec


def _which(which: Iterable[str] | None, skip: Iterable[str] | None, per_layer: bool) -> set[str]:
    def names(x, arg):
        if isinstance(x, str):
            x = [x]
        x = list(x)
        bad = [n for n in x if n not in ANALYSES]
        if bad:
            raise ValueError(f"{arg}: unknown analysis {bad[0]!r}; expected names from {ANALYSES}")
        return set(x)

    chosen = set(ANALYSES) if which is None else names(which, "which")
    if skip is not None:
        chosen -= names(skip, "skip")
    if not per_layer:
        chosen.discard("per_layer")
    return chosen


def analyze(
    model: Any,
    loss_fn: Callable | None = None,
    data: Any = None,
    *,
    curvature: str = "hessian",
    params: Any = None,
    which: Iterable[str] | None = None,
    skip: Iterable[str] | None = None,
    budget: int | str | None = None,
    budget_seconds: float | None = None,
    lr: float | None = None,
    momentum: float = 0.0,
    batch_sizes: Iterable[int] | None = None,
    target_rstderr: float = 0.1,
    per_layer: bool = True,
    generator: torch.Generator | int | None = None,
    callback: Callable[[str, int, int], None] | None = None,
    mode: str = "eval",
    max_graph_memory: int | None = None,
) -> AnalysisResult:
    """Run the chosen curvature diagnostics on ``(model, loss_fn, data)`` and return one result.

    One operator is built and reused for every full-data measurement (its retained graphs make
    products cheap); the noise study builds minibatch operators on seeded subsets.

    Args:
        model: an ``nn.Module``; or a :class:`~curvlens.Problem` (then ``loss_fn``, ``data``,
            ``params`` and ``mode`` come from it; on a process group every rank runs the same
            analysis, gets the same result, and the noise and gradient-noise studies, which draw
            minibatches from one process's data, are skipped with a note); or a prebuilt
            :class:`~curvlens.operators.CurvatureOperator` (then ``loss_fn``/``data`` are not
            needed and the noise, gradient-noise and hvp-cost measurements are skipped with a note).
        loss_fn, data, params, mode, max_graph_memory: as for the operators.
        curvature: ``"hessian"`` (default), ``"ggn"`` or ``"fisher"`` (Monte-Carlo Fisher).
        which: analyses to run, from :data:`ANALYSES` (default all); ``skip`` removes some.
        budget: int matvecs (default 300) or a duration string (``"300s"``, ``"2m"``);
            ``budget_seconds`` for a float number of seconds. Split as in the module docstring
            (the stage table: :data:`curvlens.diagnostics.stages.STAGES`).
        lr, momentum: the user's optimizer, for the sharpness analysis (skipped without lr).
        batch_sizes: ladder of the noise study (default: 5 largest powers of two below N).
        target_rstderr: relative standard error defining the critical batch sizes.
        per_layer: False skips the per-layer breakdown.
        generator: Generator, int seed or None (fresh seed, recorded in ``info.seed``).
        callback: ``callback(stage, done, total)`` progress (stages: ``"top"``, ``"trace"``,
            ``"bottom"``, ``"density"``, ``"per_layer"``, ``"noise"``, ``"gradient_noise"``).

    Returns:
        :class:`~curvlens.diagnostics.AnalysisResult`; ``.summary()`` is the flat dict.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(64, 3, generator=g, dtype=torch.float64), torch.randint(0, 2, (64,), generator=g)
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
        >>> res = analyze(model, nn.CrossEntropyLoss(), (x, y), budget=200, lr=0.1, generator=0)
        >>> sorted(res.summary())[:3], res.info.matvecs <= 200 + 2
        (['condition_number', 'condition_number_lower_bound', 'critical_batch_lambda_max'], True)
    """
    t0 = time.perf_counter()
    mv_budget, sec_budget = parse_budget(budget, budget_seconds)
    chosen = _which(which, skip, per_layer)
    if lr is not None:
        lr = check_float(lr, "lr", low=0.0, strict_low=True, fix="pass your optimizer's learning rate, e.g. lr=0.1")
    momentum = check_float(momentum, "momentum", low=0.0, high=1.0, strict_high=True, fix="pass e.g. momentum=0.9")
    target_rstderr = check_float(target_rstderr, "target_rstderr", low=0.0, strict_low=True, fix="use 0.1")
    check_callback(callback)
    gen = resolve_generator(generator)
    notes: list[str] = []
    if isinstance(model, CurvatureOperator):
        op = model
        kind = type(model).__name__.replace("Operator", "").lower() or "operator"
        kind = {"hessian": "hessian", "ggn": "ggn", "mcfisher": "fisher"}.get(kind, "operator")
        for st in ("noise", "gradient_noise"):
            if st in chosen:
                notes.append(f"{st} skipped: analyze was given an operator, not (model, loss_fn, data)")
                chosen.discard(st)
        ctx = StageContext(op=op, gen=gen, chosen=chosen, notes=notes, callback=callback, kind=kind)
    else:
        if curvature not in OPERATORS:
            raise ValueError(f"curvature: expected 'hessian', 'ggn' or 'fisher', got {curvature!r}")
        if isinstance(model, Problem):
            problem = model
            if loss_fn is not None or data is not None:
                raise TypeError("analyze: got a Problem and also loss_fn/data; these belong to the Problem: pass "
                                "analyze(problem, ...) alone, or analyze(model, loss_fn, data, ...)")
            model, loss_fn, data = problem.model, problem.loss_fn, problem.batches
            params, mode = list(problem.param_names), problem.mode
        else:
            problem = Problem(model, loss_fn, data, params=params, mode=mode)
        kw = dict(max_graph_memory=max_graph_memory)
        if curvature == "fisher":
            kw["generator"] = int(torch.randint(0, 2**62, (1,), generator=gen))
        op = OPERATORS[curvature](problem, **kw)
        samples = None
        if "noise" in chosen:
            samples, why = indexable(data, process_group=problem.process_group, device=problem.device)
            if samples is None:
                notes.append(f"noise skipped: {why}")
                chosen.discard("noise")
        ctx = StageContext(op=op, gen=gen, chosen=chosen, notes=notes, callback=callback, model=model,
                           loss_fn=loss_fn, data=data, samples=samples, kind=curvature, params=params, mode=mode,
                           max_graph_memory=max_graph_memory, batch_sizes=batch_sizes,
                           target_rstderr=target_rstderr)
    plan = plan_stages(chosen)
    pre = [s for s in plan if s.fraction is None]
    pre_spent: dict[str, int | float] = {}
    for stage in pre:  # before the split: measures what the budget is converted with
        _, pre_spent[stage.name] = stage.fn(ctx, 0)
    M = _open_budget(ctx, plan, t0, mv_budget, sec_budget)
    for name, used in pre_spent.items():
        ctx.budget.spend(name, used)
    for stage in plan:
        if stage.fraction is None:
            continue
        if ctx.past_deadline():
            notes.append(f"{stage.name} skipped: time budget spent")
            continue
        a = ctx.budget.allowance(stage.name)
        ran = stage.fn(ctx, a)
        if ran is None:
            notes.append(f"{stage.name} skipped: {a} products left, too few")
            continue
        ctx.out[stage.name], used = ran
        ctx.budget.spend(stage.name, used)
        _release_freed_memory()  # the stage's freed vectors leave the resident set before the next stage
        if callback is not None and stage.reports:
            callback(stage.name, 1, 1)
    return _assemble(ctx, t0, M, lr, momentum)


def _open_budget(ctx: StageContext, plan, t0: float, mv_budget: int | None, sec_budget: float | None) -> int:
    """Fix the product budget (a time budget is converted with the measured product time) and split it."""
    if sec_budget is not None:
        ctx.deadline = t0 + sec_budget
        left = ctx.deadline - time.perf_counter()
        per = ctx.cost.matvec_seconds if ctx.cost is not None and ctx.cost.matvec_seconds else 1e-3
        mv_budget = max(2, int(0.8 * max(left, 0.0) / max(per, 1e-9)))
        ctx.notes.append(f"time budget {sec_budget:g}s: about {mv_budget} products of {per:.3g}s each")
    M = DEFAULT_BUDGET if mv_budget is None else mv_budget
    # every row is registered (pre-split rows with no share) so that their products are charged;
    # with no product stage to split among, the whole table keeps the account
    rows = [(s.name, s.fraction or 0.0) for s in plan]
    if not any(f > 0 for _, f in rows):
        rows = [(s.name, s.fraction or 0.0) for s in STAGES]
    ctx.budget = BudgetSplitter(M, rows)
    return M


def _assemble(ctx: StageContext, t0: float, M: int, lr, momentum) -> AnalysisResult:
    """The derived analyses (conditioning, sharpness, saddle) from the stage results, and the result."""
    chosen, notes, out, op = ctx.chosen, ctx.notes, ctx.out, ctx.op
    top, bottom, trace, density = out.get("top"), out.get("bottom"), out.get("trace"), out.get("density")
    gnoise = out.get("gradient_noise")
    cond = sharp = sad = None
    if "conditioning" in chosen and top is not None:
        cond = conditioning_from(top, bottom, trace=None if trace is None else trace.estimate, dim=op.dim,
                                 psd=bool(getattr(op, "is_psd", False)))
    if "sharpness" in chosen and top is not None:
        if lr is None:
            notes.append("sharpness skipped: pass lr= (and momentum=) to compare lambda_max with 2/lr")
        else:
            sharp = sharpness(float(top.eigenvalues[0]), lr, momentum)
    if "saddle" in chosen and (density is not None or bottom is not None):
        sad = saddle_from(density, bottom, lambda_max=None if top is None else float(top.eigenvalues[0]))
    runs = [r for r in (top, bottom, trace, density, out.get("per_layer"), out.get("noise"), gnoise) if r is not None]
    ok = all(r.info.converged for r in runs)
    total = ctx.budget.spent
    status = (f"{len(runs)} measurement(s), {total} matvecs of budget {M}"
              + ("" if ok else "; some did not converge (see each result's status): raise budget"))
    if not ok:
        warnings.warn(f"analyze: {status}", UserWarning, stacklevel=3)
    info = RunInfo(seed=int(ctx.gen.initial_seed()), matvecs=int(total), wall_time=time.perf_counter() - t0,
                   converged=ok, status=status, dtype=str(op.dtype), device=str(op.device))
    hvp_cost = None if ctx.cost is None else ctx.cost.hvp_cost
    return AnalysisResult(
        curvature=ctx.kind, num_params=int(op.dim), num_samples=int(getattr(op, "num_samples", 0)), lr=lr,
        momentum=momentum if lr is not None else None, top=top, bottom=bottom,
        trace=trace if "trace" in chosen or "conditioning" in chosen or "per_layer" in chosen else None,
        density=density if density is not None and ("density" in chosen or "saddle" in chosen) else None,
        conditioning=cond, sharpness=sharp, saddle=sad, noise=out.get("noise"), gradient_noise=gnoise,
        per_layer=out.get("per_layer"), hvp_cost=hvp_cost, notes=tuple(notes), info=info,
    )
