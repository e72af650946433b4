"""The optimizer benchmark harness: runs registered methods on registered problems.

Problems live in ``_opt_problems.py`` (``@register_problem``), methods in ``_opt_methods.py``
(``@register_method``); this module only runs them and summarizes. For every (problem,
method) pair every value of the method's hyper-parameter grid is run with every seed for the
problem's CPU-time budget (``time.process_time`` on one thread; evaluations of the full
training loss are excluded from the clock). The *tuned* setting of a method is the grid value
with the smallest median time to the problem's target loss (ties and never-reached: the
smallest median loss at the budget). Reported per method: the tuned value (marked when it is
at an edge of its grid, where a wider grid may find a better one), the median time to target,
the median loss (and the problem's extra metrics) at equal wall-clock (the budget).
Each finished run is stored as JSON under ``OUT/runs/`` and reused, so an interrupted benchmark
resumes (delete a method's folder after changing its settings; ``--no-cache`` ignores them).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

__all__ = ["Curve", "RunSummary", "run_one", "run_grid", "tuned", "grid_edge", "loss_at", "time_to_target",
           "median_curve"]


@dataclass
class Curve:
    """One run: CPU seconds (excluding evaluations), full training loss, extra metrics."""

    times: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    metrics: list[dict] = field(default_factory=list)
    steps: int = 0
    diverged: bool = False


def time_to_target(curve: Curve, target: float) -> float:
    """First recorded CPU time at which the loss is <= target (inf if never)."""
    for t, loss in zip(curve.times, curve.losses):
        if loss <= target:
            return t
    return math.inf


def _index_at(curve: Curve, t: float) -> int | None:
    idx = None
    for i, ti in enumerate(curve.times):
        if ti <= t:
            idx = i
        else:
            break
    return idx


def loss_at(curve: Curve, t: float) -> float:
    """The loss of the last evaluation at or before CPU time ``t`` (inf after divergence)."""
    if curve.diverged and (not curve.times or curve.times[-1] <= t):
        return math.inf
    i = _index_at(curve, t)
    return math.inf if i is None else curve.losses[i]


def metrics_at(curve: Curve, t: float) -> dict:
    i = _index_at(curve, t)
    if i is None or (curve.diverged and curve.times[-1] <= t):
        return {}
    return dict(curve.metrics[i])


def _median(xs: list[float]) -> float:
    xs = [x if x == x else math.inf for x in xs]
    return float(statistics.median(xs)) if xs else math.inf


def run_one(problem, method, hparam: float, seed: int, budget: float, *, max_evals: int = 150) -> Curve:
    """Run ``method`` with ``hparam`` on ``problem`` (seed ``seed``) for ``budget`` CPU seconds."""
    inst = problem.make(seed)
    inst.problem = problem.name
    stepper = method.build(inst, hparam, seed)
    bs = method.batch_size.get(problem.name, inst.batch_size) if isinstance(method.batch_size, dict) else (
        method.batch_size or inst.batch_size)
    full = inst.full_batch or bs is None or bs >= inst.num_samples
    gen = torch.Generator().manual_seed(10_000 + seed)
    order, pos = None, 0
    curve = Curve()

    def evaluate(t: float) -> bool:
        loss = float(inst.eval_loss(inst.model))
        curve.times.append(t)
        curve.losses.append(loss if math.isfinite(loss) else math.inf)
        curve.metrics.append(inst.metrics(inst.model) if inst.metrics is not None else {})
        return math.isfinite(loss)

    evaluate(0.0)
    used, last_eval = 0.0, 0.0
    gap = budget / max_evals
    while used < budget:
        if full:
            batch = inst.data
        else:
            if order is None or pos + bs > inst.num_samples:
                order, pos = torch.randperm(inst.num_samples, generator=gen), 0
            idx = order[pos : pos + bs]
            pos += bs
            batch = tuple(t[idx] for t in inst.data)
        t0 = time.process_time()
        stepper(batch)
        used += time.process_time() - t0
        curve.steps += 1
        if used - last_eval >= gap or used >= budget or curve.steps <= 3:
            last_eval = used
            if not evaluate(used):
                curve.diverged = True
                break
    return curve


@dataclass
class RunSummary:
    """All runs of one (problem, method): per grid value, per seed."""

    problem: str
    method: str
    kind: str
    hparam_name: str
    curves: dict[float, list[Curve]]
    target: float
    budget: float

    def ttt(self, c: Curve) -> float:
        """Time to target within the budget (a last step may end past it)."""
        t = time_to_target(c, self.target)
        return t if t <= self.budget else math.inf

    def stats(self, hparam: float) -> dict:
        cs = self.curves[hparam]
        return {
            "time_to_target": _median([self.ttt(c) for c in cs]),
            "loss_at_budget": _median([loss_at(c, self.budget) for c in cs]),
            "steps": _median([c.steps for c in cs]),
            "metrics_at_budget": _median_metrics([metrics_at(c, self.budget) for c in cs]),
            "per_seed_time_to_target": [self.ttt(c) for c in cs],
        }


def _median_metrics(ms: list[dict]) -> dict:
    keys = set().union(*ms) if ms else set()
    return {k: _median([m.get(k, math.inf) for m in ms]) for k in sorted(keys)}


def tuned(summary: RunSummary) -> float:
    """The grid value with the smallest median time to target, then smallest median loss at budget."""
    return min(summary.curves, key=lambda h: (summary.stats(h)["time_to_target"], summary.stats(h)["loss_at_budget"]))


def grid_edge(grid, value: float) -> str | None:
    """``"low"`` / ``"high"`` when ``value`` is the smallest / largest value of a grid of at least
    two values (the tuned setting may lie beyond the grid: widen it), else None.

    Example:
        >>> grid_edge([1e-3, 1e-2, 1e-1], 1e-1), grid_edge([1e-3, 1e-2, 1e-1], 1e-2), grid_edge([1.0], 1.0)
        ('high', None, None)
    """
    vals = sorted(float(v) for v in grid)
    if len(vals) < 2:
        return None
    return "low" if float(value) == vals[0] else "high" if float(value) == vals[-1] else None


def _cached_run(problem, method, h: float, s: int, budget: float, cache_dir) -> Curve:
    """``run_one``, or its stored result: each finished run is written to ``cache_dir`` as JSON
    (keyed by problem, method, value, seed and budget), so an interrupted benchmark resumes."""
    if cache_dir is None:
        return run_one(problem, method, h, s, budget)
    path = pathlib.Path(cache_dir) / problem.name / method.name / f"{h:g}_seed{s}_budget{budget:g}.json"
    if path.exists():
        return Curve(**json.loads(path.read_text()))
    c = run_one(problem, method, h, s, budget)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(c)))
    tmp.replace(path)
    return c


def run_grid(problem, method, seeds: list[int], budget: float, *, log: Callable[[str], Any] = print,
             cache_dir=None) -> RunSummary:
    """Every grid value of ``method`` with every seed on ``problem`` (runs cached in ``cache_dir``)."""
    grid = method.grid_for(problem.name)
    curves: dict[float, list[Curve]] = {}
    target = problem.target
    for h in grid:
        curves[h] = []
        for s in seeds:
            c = _cached_run(problem, method, h, s, budget, cache_dir)
            curves[h].append(c)
            log(f"  {problem.name:>10s} {method.name:>10s} {method.hparam}={h:<8g} seed={s} steps={c.steps:<6d} "
                f"loss={c.losses[-1]:.4e} t_target={time_to_target(c, target):.3g}s")
    return RunSummary(problem.name, method.name, method.kind, method.hparam, curves, target, budget)


def median_curve(curves: list[Curve], grid: torch.Tensor) -> list[float]:
    """Median over runs of the loss at each time of ``grid`` (step interpolation)."""
    out = []
    for t in grid.tolist():
        out.append(_median([loss_at(c, t) for c in curves]))
    return out
