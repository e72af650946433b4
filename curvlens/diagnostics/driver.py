"""``analyze``: one call that runs the chosen diagnostics within a budget.

Budget splitting. The budget ``M`` (matvecs; default :data:`DEFAULT_BUDGET` = 300) is spent
stage by stage in this order, each stage receiving its fraction of what is left divided by the
fractions of the stages still to run (so unused products roll over):

========== ======== =======================================================================
stage      fraction what it runs
========== ======== =======================================================================
top        0.15     ``top_eigenpairs(k=4, rtol=1e-3)`` (k=1 below 24 products)
trace      0.10     ``krylov_trace(per_block=True)`` (Hutchinson below 4 products)
bottom     0.15     ``bottom_eigenpairs(k=1, rtol=1e-2)``
density    0.30     SLQ, ``min(30, D)`` steps x up to 10 probes
per_layer  0.10     ``top_eigenpairs`` of each diagonal block
noise      0.20     minibatch study (products on B samples count B/N)
========== ======== =======================================================================

plus three products (a warm-up and two timed) and two gradients to measure ``hvp_cost`` (the faster of two). Each stage gets its allowance as a
hard ``max_matvecs``, so the total exceeds ``M`` by at most one block of vectors. A budget in
seconds (``budget="300s"``, ``"2m"`` or ``budget_seconds=``) is turned into products with the
measured time of one product (80% of the time left), and no stage starts after the deadline.
Stages that do not fit are skipped with a note; eigensolvers that run out of products return
``converged=False`` with their status, never an exception.
"""

from __future__ import annotations

import logging
import math
import re
import time
import warnings
from typing import Any, Callable, Iterable

import torch

from curvlens._rng import resolve_generator
from curvlens.diagnostics._checks import check_callback, check_float
from curvlens.diagnostics._subsets import indexable
from curvlens.diagnostics.analysis import AnalysisResult
from curvlens.diagnostics.conditioning import conditioning_from
from curvlens.diagnostics.gradient_noise import gradient_noise_scale
from curvlens.diagnostics.noise import curvature_noise
from curvlens.diagnostics.per_layer import per_layer_breakdown
from curvlens.diagnostics.saddle import saddle_from
from curvlens.diagnostics.sharpness import sharpness
from curvlens.estimators import hutchinson_trace, krylov_trace
from curvlens.estimators.density import spectral_density
from curvlens.linalg import bottom_eigenpairs, top_eigenpairs
from curvlens.operators import CurvatureOperator, GGNOperator, HessianOperator, MCFisherOperator
from curvlens.results import RunInfo

__all__ = ["analyze", "ANALYSES", "DEFAULT_BUDGET", "FRACTIONS", "parse_budget"]

log = logging.getLogger("curvlens.diagnostics")

ANALYSES = ("conditioning", "sharpness", "saddle", "density", "trace", "noise", "gradient_noise", "per_layer")
DEFAULT_BUDGET = 300
FRACTIONS = {"top": 0.15, "trace": 0.10, "bottom": 0.15, "density": 0.30, "per_layer": 0.10, "noise": 0.20}
_OPERATORS = {"hessian": HessianOperator, "ggn": GGNOperator, "fisher": MCFisherOperator}
_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


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


def _grad_seconds(op) -> float:
    t0 = time.perf_counter()
    op.gradient()
    return time.perf_counter() - t0


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
        model: an ``nn.Module``, or a prebuilt :class:`~curvlens.operators.CurvatureOperator`
            (then ``loss_fn``/``data`` are not needed and the noise, gradient-noise and
            hvp-cost measurements are skipped with a note).
        loss_fn, data, params, mode, max_graph_memory: as for the operators.
        curvature: ``"hessian"`` (default), ``"ggn"`` or ``"fisher"`` (Monte-Carlo Fisher).
        which: analyses to run, from :data:`ANALYSES` (default all); ``skip`` removes some.
        budget: int matvecs (default 300) or a duration string (``"300s"``, ``"2m"``);
            ``budget_seconds`` for a float number of seconds. Split as in the module docstring.
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
        (['condition_number', 'critical_batch_lambda_max', 'critical_batch_trace'], True)
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
        op, kind, samples = model, type(model).__name__.replace("Operator", "").lower() or "operator", None
        kind = {"hessian": "hessian", "ggn": "ggn", "mcfisher": "fisher"}.get(kind, "operator")
        for st in ("noise", "gradient_noise"):
            if st in chosen:
                notes.append(f"{st} skipped: analyze was given an operator, not (model, loss_fn, data)")
                chosen.discard(st)
    else:
        if curvature not in _OPERATORS:
            raise ValueError(f"curvature: expected 'hessian', 'ggn' or 'fisher', got {curvature!r}")
        kind = curvature
        kw = dict(params=params, mode=mode, max_graph_memory=max_graph_memory)
        if curvature == "fisher":
            kw["generator"] = int(torch.randint(0, 2**62, (1,), generator=gen))
        op = _OPERATORS[curvature](model, loss_fn, data, **kw)
        samples = None
        if "noise" in chosen:
            samples, why = indexable(data)
            if samples is None:
                notes.append(f"noise skipped: {why}")
                chosen.discard("noise")
    num_samples = int(getattr(op, "num_samples", 0))
    spent = {"timing": 0}
    hvp_cost = None
    if isinstance(model, CurvatureOperator):
        t_mv = None
    else:
        v = torch.randn(op.dim, generator=gen, dtype=torch.float64).to(op.dtype).to(op.device)
        op.matvec(v)  # warm-up: the first product pays one-time setup costs
        t_grad, t_mv = [], []
        for _ in range(2):  # min of two: robust to a busy machine
            t_grad.append(_grad_seconds(op))
            t1 = time.perf_counter()
            op.matvec(v)
            t_mv.append(time.perf_counter() - t1)
        t_grad, t_mv = min(t_grad), min(t_mv)
        spent["timing"] = 3
        hvp_cost = t_mv / t_grad if t_grad > 0 else None
    deadline = None
    if sec_budget is not None:
        deadline = t0 + sec_budget
        left = deadline - time.perf_counter()
        per = t_mv if t_mv else 1e-3
        mv_budget = max(2, int(0.8 * max(left, 0.0) / max(per, 1e-9)))
        notes.append(f"time budget {sec_budget:g}s: about {mv_budget} products of {per:.3g}s each")
    M = DEFAULT_BUDGET if mv_budget is None else mv_budget

    need = {
        "top": bool(chosen & {"conditioning", "sharpness", "per_layer", "noise"}),
        "trace": bool(chosen & {"trace", "conditioning", "per_layer", "noise"}),
        "bottom": bool(chosen & {"conditioning", "saddle"}),
        "density": bool(chosen & {"density", "saddle"}),
        "per_layer": "per_layer" in chosen,
        "noise": "noise" in chosen,
    }
    stages = [s for s in FRACTIONS if need[s]]
    out: dict[str, Any] = {}

    def allowance(stage: str) -> int:
        left = M - sum(spent.values())
        rest = sum(FRACTIONS[s] for s in stages[stages.index(stage):])
        return max(0, int(left * FRACTIONS[stage] / rest))

    def cb(stage):
        return None if callback is None else (lambda d, t: callback(stage, int(d), int(t)))

    for stage in stages:
        if deadline is not None and time.perf_counter() > deadline:
            notes.append(f"{stage} skipped: time budget spent")
            continue
        a = allowance(stage)
        res = None
        if stage == "top":
            k = 4 if a >= 24 and op.dim >= 8 else 1
            if a >= 2:
                res = top_eigenpairs(op, k, max_matvecs=a, generator=gen, callback=cb(stage))
        elif stage == "trace":
            if a >= 4:
                res = krylov_trace(op, a, per_block=True, generator=gen, callback=cb(stage))
            elif a >= 2:
                res = hutchinson_trace(op, a, per_block=True, generator=gen, callback=cb(stage))
        elif stage == "bottom":
            if a >= 2:
                res = bottom_eigenpairs(op, 1, rtol=1e-2, max_matvecs=a, generator=gen, callback=cb(stage))
        elif stage == "density":
            steps = min(30, op.dim, a // 2)
            if steps >= 1 and a >= 2:
                probes = max(2, min(10, a // steps))
                res = spectral_density(op, num_probes=probes, num_steps=steps, fill_budget=False, generator=gen,
                                       callback=cb(stage))
        elif stage == "per_layer":
            res = per_layer_breakdown(op, trace=out.get("trace"), top=out.get("top"), max_matvecs=a,
                                      deadline=deadline, generator=gen)
        elif stage == "noise":
            res = _noise(op, samples, out, model, loss_fn, kind, params, mode, max_graph_memory, batch_sizes,
                         target_rstderr, a, deadline, gen, cb(stage), notes)
        if res is None:
            notes.append(f"{stage} skipped: {a} products left, too few")
            continue
        out[stage] = res
        spent[stage] = int(res.info.matvecs)
        if callback is not None:
            callback(stage, 1, 1)

    gnoise = None
    if "gradient_noise" in chosen:
        if deadline is not None and time.perf_counter() > deadline:
            notes.append("gradient_noise skipped: time budget spent")
        else:
            gnoise = gradient_noise_scale(model, loss_fn, data, params=params, mode=mode, generator=gen)
            if callback is not None:
                callback("gradient_noise", 1, 1)
    top, bottom, trace, density = out.get("top"), out.get("bottom"), out.get("trace"), out.get("density")
    cond = sharp = sad = None
    if "conditioning" in chosen and top is not None:
        cond = conditioning_from(top, bottom, trace=None if trace is None else trace.estimate, dim=op.dim)
    if "sharpness" in chosen and top is not None:
        if lr is None:
            notes.append("sharpness skipped: pass lr= (and momentum=) to compare lambda_max with 2/lr")
        else:
            sharp = sharpness(float(top.eigenvalues[0]), lr, momentum)
    if "saddle" in chosen and (density is not None or bottom is not None):
        sad = saddle_from(density, bottom, lambda_max=None if top is None else float(top.eigenvalues[0]))
    runs = [r for r in (top, bottom, trace, density, out.get("per_layer"), out.get("noise"), gnoise) if r is not None]
    ok = all(r.info.converged for r in runs)
    total = sum(spent.values())
    status = (f"{len(runs)} measurement(s), {total} matvecs of budget {M}"
              + ("" if ok else "; some did not converge (see each result's status): raise budget"))
    if not ok:
        warnings.warn(f"analyze: {status}", UserWarning, stacklevel=2)
    info = RunInfo(seed=int(gen.initial_seed()), matvecs=int(total), wall_time=time.perf_counter() - t0,
                   converged=ok, status=status, dtype=str(op.dtype), device=str(op.device))
    return AnalysisResult(
        curvature=kind, num_params=int(op.dim), num_samples=num_samples, lr=lr,
        momentum=momentum if lr is not None else None, top=top, bottom=bottom,
        trace=trace if "trace" in chosen or "conditioning" in chosen or "per_layer" in chosen else None,
        density=density if density is not None and ("density" in chosen or "saddle" in chosen) else None,
        conditioning=cond, sharpness=sharp, saddle=sad, noise=out.get("noise"), gradient_noise=gnoise,
        per_layer=out.get("per_layer"), hvp_cost=hvp_cost, notes=tuple(notes), info=info,
    )


def _noise(op, samples, out, model, loss_fn, kind, params, mode, max_graph_memory, batch_sizes, target, allowance,
           deadline, gen, callback, notes):
    top, trace = out.get("top"), out.get("trace")
    full = {}
    if top is not None:
        full["lambda_max"] = float(top.eigenvalues[0])
        full["directional"] = float(top.eigenvalues[0])
    if trace is not None:
        full["trace"] = float(trace.estimate)
    cls = _OPERATORS[kind]
    kw = dict(params=params, mode=mode, max_graph_memory=max_graph_memory)
    if kind == "fisher":
        kw["generator"] = op.seed

    def make(idx):
        return cls(model, loss_fn, samples.subset(idx), **kw)

    if allowance < 1:
        return None
    return curvature_noise(make, samples.num_samples, full_values=full,
                           direction=None if top is None else top.eigenvectors[:, 0],
                           batch_sizes=None if batch_sizes is None else list(batch_sizes), target_rstderr=target,
                           full_operator=op,
                           max_matvecs=float(allowance), deadline=deadline, generator=gen, callback=callback)
