"""Trial runs: short, seeded runs of the top candidates that re-rank them by measured progress.

Each candidate is run from the same weights with a small learning-rate bracket around its
advice (``lr x TRIAL_BRACKET``; for K-FAC at a mini-batch, from its noise-floor edge to its measured
model step, :func:`_bracket`). For a line-search method such as L-BFGS the lr is the first
step the line search tries: the search accepts or shortens it, so the bracket measures which
initial step costs the fewest evaluations, and the trial's best becomes the advice; an L-BFGS step
makes :data:`LINE_SEARCH_ITERS` iterations, each with a complete search (``max_eval`` is passed:
torch's default cuts the search short). Every run has a fixed number of steps, planned from the trial time
and the measured cost of one step, so that a run is replayed exactly by ``(seed, steps)``; its
CPU time (``time.process_time``) is measured. When the best run of a bracket (by its final
loss: the runs make equal steps) is at the bracket's edge, one more lr beyond that edge is run, and
one more again while the new lr is the best (:func:`_extension`, :data:`TRIAL_EXTENSIONS`; every
run's time share leaves room for them). Candidates are re-ranked by
the loss decrease per second of their best bracket member to a common deep loss
(:mod:`curvlens.recommend.trial_rank`; the best member of a bracket is chosen the same way), a diverged
run counting as no progress.
At the full batch every step's own loss (the full-data loss before the step) is checked against the
divergence threshold too, so a run that overshoots early and recovers before the next recorded point
still counts as diverged.

The user's model comes back bit-identical: weights and buffers are restored after each run,
``.grad`` and train/eval flags are put back, hooks an optimizer registered (K-FAC's statistics
hooks) are removed, and every run draws its mini-batches from its own
generator inside :func:`torch.random.fork_rng` (seeded for dropout), so the global RNG never moves.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from curvlens.recommend.evidence import LINE_SEARCH
from curvlens.results import RunInfo, register_result

__all__ = ["TrialResult", "run_trials", "TRIAL_BRACKET", "plan_steps", "step_seconds"]

#: learning-rate multipliers tried around each candidate's advice
TRIAL_BRACKET = (1 / 3, 1.0, 3.0)
#: at most this many extensions of a bracket beyond its edge (:func:`_extension`), each made only while
#: the previous one was the best run: with :data:`TRIAL_BRACKET` the bracket then reaches 27x either way
TRIAL_EXTENSIONS = 2
#: a run whose full-data loss exceeds this multiple of the initial loss has diverged
DIVERGED_FACTOR = 1.5
#: full-data loss evaluations recorded per run (the curve in the report)
CURVE_POINTS = 30
MIN_STEPS, MAX_STEPS = 3, 20_000
#: steps timed per candidate to plan its runs
CALIBRATION_STEPS = 3
#: L-BFGS iterations per ``.step()`` in trials and step timings, and the evaluations each line search
#: may use (torch's strong-Wolfe default ``max_ls``). ``torch.optim.LBFGS`` caps the evaluations of a
#: ``.step()`` at ``int(1.25 * max_iter)`` by default, one at ``max_iter=1``: its search then keeps
#: the first trial step or no step at all, so ``max_eval`` is always passed.
LINE_SEARCH_ITERS, LINE_SEARCH_EVALS = 5, 25
#: repetitions of a step timing (fresh optimizer from the same weights; the median is kept) while
#: their CPU time stays under :data:`TIMING_REPEAT_SECONDS`
TIMING_REPEATS, TIMING_REPEAT_SECONDS = 5, 1.0


@register_result("recommendation_trial")
@dataclass(frozen=True)
class TrialResult:
    """The trial runs of one candidate.

    Attributes:
        optimizer, label: the candidate.
        lrs: ``(R,)`` learning rates tried (the bracket around the advice, then the extensions
            beyond its edge while its best run was there).
        steps: optimizer steps per run (the plan; replay with ``run_trials(..., steps=...)``).
        run_index, steps_done, seconds, losses: the curves, one row per record: which run
            (index into ``lrs``), steps done, CPU seconds spent in steps, full-data loss.
        rates: ``(R,)`` loss decrease per CPU second of each run (0 when it diverged).
        diverged: ``(R,)`` whether each run diverged (non-finite or > 1.5x the initial loss).
        best_lr: the lr of the best run (the first to reach the comparison level of the bracket's
            lowest final loss, :mod:`curvlens.recommend.trial_rank`); rate: its loss decrease per second.
        initial_loss: full-data loss at the start (the same for every run).
        seed: seed of the runs' mini-batch draws and dropout.
        info: run metadata.
    """

    optimizer: str
    label: str
    lrs: np.ndarray
    steps: int
    run_index: np.ndarray
    steps_done: np.ndarray
    seconds: np.ndarray
    losses: np.ndarray
    rates: np.ndarray
    diverged: np.ndarray
    best_lr: float
    rate: float
    initial_loss: float
    seed: int
    info: RunInfo

    def final_losses(self) -> list[float]:
        """The last recorded loss of each run."""
        return [float(self.losses[self.run_index == i][-1]) for i in range(len(self.lrs))]

    def summary_line(self) -> str:
        runs = ", ".join(f"lr {lr:.3g}: {'diverged' if d else f'{r:.3g}/s'}"
                         for lr, r, d in zip(self.lrs, self.rates, self.diverged))
        return f"{self.label}: best lr {self.best_lr:.3g}, {self.rate:.3g} loss/s ({runs}; {self.steps} steps each)"

    def to_dict(self) -> dict:
        return {"optimizer": self.optimizer, "lrs": [float(x) for x in self.lrs], "steps": int(self.steps),
                "rates": [float(x) for x in self.rates], "diverged": [bool(x) for x in self.diverged],
                "final_losses": self.final_losses(), "best_lr": self.best_lr, "rate": self.rate,
                "initial_loss": self.initial_loss, "seed": self.seed}


def _bracket(candidate) -> list[float]:
    """The lrs tried: the advice times :data:`TRIAL_BRACKET` (a line search's first trial step too).

    When the advice carries ``lr_model_step`` above its lr by more than the bracket's ratio (K-FAC at
    a mini-batch: the lr is the geometric mean of the noise-floor edge ``(1 - sqrt(beta))^2`` and
    ``lr_model_step``, the measured one-step optimum of the quadratic model,
    :func:`~curvlens.recommend.hyperparams.kfac_lr`), the bracket spans the two bounds instead:
    ``lr^2 / lr_model_step`` (the edge), the lr and the model step. Which bound a run of this length
    favours is what the measurements cannot say; the extensions go on past either end."""
    hp = candidate.hyperparameters
    lr = hp.get("lr")
    if lr is None:
        return [1.0]
    upper = hp.get("lr_model_step")
    if isinstance(upper, (int, float)) and math.isfinite(upper) and upper > float(lr) * TRIAL_BRACKET[-1]:
        return [float(lr) ** 2 / float(upper), float(lr), float(upper)]
    return [float(lr) * f for f in TRIAL_BRACKET]


def _extension(lrs: list[float], finals: list[float]) -> float | None:
    """The lr one bracket step beyond the edge when the bracket's best run is at that edge, else None.

    The runs of one bracket make the same number of steps from the same weights and seed, so their
    final losses (a diverged run: infinite) compare the lrs deterministically: the decision is
    replayed exactly by the seed. When the best is the smallest lr (also when every run
    diverged) the bracket's ratio is applied once more downwards, when it is the largest, upwards.
    The lrs may come in any order (an earlier extension is appended at the end); they are sorted
    first. :func:`run_trials` extends up to :data:`TRIAL_EXTENSIONS` times, while the edge stays
    best: with :data:`TRIAL_BRACKET` this reaches 27x either way, so advice 30x off is corrected to
    within 3x of the best value."""
    if len(lrs) < 2 or len(finals) != len(lrs):
        return None
    order = sorted(range(len(lrs)), key=lambda k: lrs[k])
    lrs, finals = [lrs[k] for k in order], [finals[k] for k in order]
    i = min(range(len(finals)), key=lambda k: (finals[k], k))
    if i == 0:
        return lrs[0] * lrs[0] / lrs[1]
    if i == len(lrs) - 1 and math.isfinite(finals[i]):
        return lrs[-1] * lrs[-1] / lrs[-2]
    return None


def plan_steps(seconds_per_run: float, cost_per_step: float, gradient_seconds: float) -> int:
    """Steps that fit ``seconds_per_run`` at ``cost_per_step`` gradients of ``gradient_seconds`` each."""
    n = seconds_per_run / max(cost_per_step * gradient_seconds, 1e-9)
    return int(min(max(n, MIN_STEPS), MAX_STEPS))


class _Batches:
    """Mini-batches of ``batch_size`` drawn from one (inputs, targets) pair or a list of batches."""

    def __init__(self, data: Any, batch_size: int | None, gen: torch.Generator):
        self.data, self.gen = data, gen
        self.pair = isinstance(data, (tuple, list)) and len(data) == 2 and all(
            isinstance(t, torch.Tensor) for t in data)
        self.n = int(data[0].shape[0]) if self.pair else None
        self.batch_size = batch_size if self.pair and batch_size is not None and batch_size < self.n else None
        self.list = list(data) if not self.pair and isinstance(data, (list, tuple)) else None
        self.i = 0

    def full(self) -> bool:
        return self.batch_size is None and self.list is None

    def next(self) -> Any:
        if self.batch_size is not None:
            idx = torch.randint(self.n, (self.batch_size,), generator=self.gen)
            return (self.data[0][idx], self.data[1][idx])
        if self.list is not None:
            b = self.list[self.i % len(self.list)]
            self.i += 1
            return b
        return self.data


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_state_dict_hooks", "_load_state_dict_pre_hooks", "_forward_hooks_with_kwargs",
               "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called")


def _hook_keys(model: torch.nn.Module) -> list:
    return [(m, name, set(getattr(m, name).keys())) for m in model.modules() for name in _HOOK_DICTS
            if isinstance(getattr(m, name, None), dict)]


def _remove_new_hooks(saved: list) -> None:
    """Remove hooks an optimizer registered on the model during a run (e.g. K-FAC's statistics hooks)."""
    for m, name, keys in saved:
        d = getattr(m, name)
        for k in [k for k in d if k not in keys]:
            del d[k]


def _iterations(opt, steps: int) -> int:
    """Iterations ``opt`` made: ``torch.optim.LBFGS`` counts them in its state, other optimizers make one
    per step."""
    if isinstance(opt, torch.optim.LBFGS):
        first = opt.param_groups[0]["params"][0]
        return int(opt.state.get(first, {}).get("n_iter", steps))
    return steps


def _one_run(candidate, model, loss_fn, problem, data, lr, steps, batch_size, seed,
             out: dict | None = None) -> tuple[list, bool]:
    """Train a fresh optimizer for ``steps`` steps; ``[(steps_done, seconds, loss)]`` and diverged.
    ``out`` (optional) receives ``iterations``: the optimizer's iterations (L-BFGS makes several a step),
    and ``accepted_steps``: for L-BFGS the step its line search accepted at the end of each step over
    the first trial step ``lr`` (1: the first trial was kept)."""
    gen = torch.Generator().manual_seed(seed)
    batches = _Batches(data, batch_size, gen)
    overrides = {"lr": lr}
    if candidate.optimizer in LINE_SEARCH:  # a few iterations per step, each with a complete line search
        overrides.update(max_iter=LINE_SEARCH_ITERS, max_eval=LINE_SEARCH_ITERS + LINE_SEARCH_EVALS)
    opt = candidate.build(model, loss_fn, generator=seed, **overrides)
    curvlens_step = hasattr(opt, "last_step") and hasattr(opt, "problem")
    marks = sorted({max(1, round(steps * (k + 1) / CURVE_POINTS)) for k in range(CURVE_POINTS)})
    l0 = float(problem.loss())
    curve, spent, diverged, accepted = [(0, 0.0, l0)], 0.0, False, []
    for k in range(1, steps + 1):
        batch = batches.next()
        t0 = time.process_time()
        if curvlens_step:
            loss = opt.step(batch)
        else:
            def closure():
                opt.zero_grad(set_to_none=True)
                value = problem.batch_loss(0, batch)[0]
                value.backward()
                return value

            loss = opt.step(closure)
        spent += time.process_time() - t0
        if isinstance(opt, torch.optim.LBFGS) and lr > 0:  # the step its line search accepted last
            t = opt.state.get(opt.param_groups[0]["params"][0], {}).get("t")
            if t is not None:
                accepted.append(float(t) / lr)
        value = None if loss is None else float(loss.detach() if torch.is_tensor(loss) else loss)
        bad = value is not None and not math.isfinite(value)
        if value is not None and batches.full() and value > DIVERGED_FACTOR * l0 + 1e-12:
            bad = True  # at the full batch the step's own loss is the full-data loss: checked at every step
        if k in marks or bad:
            full = float(problem.loss())
            curve.append((k, spent, full))
            if bad or not math.isfinite(full) or full > DIVERGED_FACTOR * l0 + 1e-12:
                diverged = True
                break
    if out is not None:
        out["iterations"] = _iterations(opt, curve[-1][0])
        out["accepted_steps"] = accepted
    return curve, diverged


def _restore(model, params, weights, buffers, grads, flags) -> None:
    with torch.no_grad():
        for p, w in zip(params, weights):
            p.copy_(w)
        for b, v in zip(model.buffers(), buffers):
            b.copy_(v)
    for p, g in zip(params, grads):
        p.grad = g
    for m, f in flags:
        m.training = f


def run_trials(candidates: Sequence, model: torch.nn.Module, loss_fn: Any, data: Any, *, seconds: float,
               batch_size: int | None = None, gradient_seconds: float | None = None, seed: int = 0,
               steps: dict[str, int] | None = None) -> tuple[TrialResult, ...]:
    """Run every candidate of ``candidates`` over its lr bracket; one :class:`TrialResult` each.

    Args:
        candidates: runnable :class:`~curvlens.recommend.RankedCandidate` s (the top few).
        model, loss_fn, data: the training problem (``data``: one ``(inputs, targets)`` pair of
            the training set, or a list of batches).
        seconds: CPU time for all runs together (split evenly).
        batch_size: mini-batch size (None: full batch).
        gradient_seconds: measured time of one full-data gradient (plans the steps).
        seed: seed of mini-batch draws, dropout and the optimizers' own randomness.
        steps: ``{optimizer: steps}`` to replay a plan exactly instead of planning from time.
    """
    from curvlens.problem import Problem

    if not (isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds)
            and seconds > 0):
        raise ValueError(f"trial: expected a positive number of seconds, got {seconds!r}; pass e.g. trial=30")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}; pass e.g. seed=0")
    problem = Problem(model, loss_fn, data)
    params = list(model.parameters())
    weights = [p.detach().clone() for p in params]
    buffers = [b.detach().clone() for b in model.buffers()]
    grads = [p.grad for p in params]
    flags = [(m, m.training) for m in model.modules()]
    hooks = _hook_keys(model)
    runs = sum(len(_bracket(c)) + TRIAL_EXTENSIONS * (len(_bracket(c)) > 1)
               for c in candidates) or 1  # shares for the extensions
    t_grad = gradient_seconds if gradient_seconds and gradient_seconds > 0 else 1e-3
    n = int(data[0].shape[0]) if isinstance(data, (tuple, list)) and len(data) == 2 and \
        isinstance(data[0], torch.Tensor) else None
    scale = batch_size / n if (batch_size and n and batch_size < n) else 1.0
    out = []
    try:
        for c in candidates:
            t_start = time.perf_counter()
            lrs = _bracket(c)
            nsteps = (steps or {}).get(c.optimizer)
            if not nsteps:  # plan from the measured time of a few steps (the plan is recorded and replayable)
                with torch.random.fork_rng(devices=_cuda_devices(params)):
                    torch.manual_seed(seed)
                    try:
                        probe, _ = _one_run(c, model, loss_fn, problem, data, lrs[len(lrs) // 2], CALIBRATION_STEPS,
                                            batch_size, seed)
                    finally:
                        _remove_new_hooks(hooks)
                        _restore(model, params, weights, buffers, grads, flags)
                per_step = probe[-1][1] / max(probe[-1][0], 1)
                nsteps = plan_steps(seconds / runs, 1.0, per_step) if per_step > 0 else \
                    plan_steps(seconds / runs, c.cost_per_step, t_grad * scale)
            rows, rates, div, finals = [], [], [], []

            def run(lr: float) -> None:
                with torch.random.fork_rng(devices=_cuda_devices(params)):
                    torch.manual_seed(seed)
                    try:
                        curve, d = _one_run(c, model, loss_fn, problem, data, lr, int(nsteps), batch_size, seed)
                    finally:
                        _remove_new_hooks(hooks)
                _restore(model, params, weights, buffers, grads, flags)
                rows.extend((len(rates), *r) for r in curve)
                l0, (_, sec, lend) = curve[0][2], curve[-1]
                rates.append(0.0 if d or sec <= 0 else max(l0 - lend, 0.0) / sec)
                div.append(d)
                finals.append(math.inf if d or not math.isfinite(lend) else lend)

            for lr in lrs:
                run(lr)
            for _ in range(TRIAL_EXTENSIONS):
                more = _extension(lrs, finals)
                if more is None:
                    break
                lrs.append(more)
                run(more)
            best = _best_run(rows, finals, div, lrs)
            arr = np.array(rows, dtype=np.float64)
            info = RunInfo(seed=seed, matvecs=0, wall_time=time.perf_counter() - t_start, converged=not all(div),
                           status=f"{len(lrs)} run(s) of {int(nsteps)} steps" + ("; every run diverged" if all(div)
                                                                               else ""))
            out.append(TrialResult(
                optimizer=c.optimizer, label=c.label, lrs=np.array(lrs, dtype=np.float64), steps=int(nsteps),
                run_index=arr[:, 0].astype(np.int64), steps_done=arr[:, 1].astype(np.int64), seconds=arr[:, 2],
                losses=arr[:, 3], rates=np.array(rates), diverged=np.array(div, dtype=bool),
                best_lr=float(lrs[best]), rate=float(rates[best]), initial_loss=float(arr[0, 3]), seed=seed,
                info=info))
    finally:
        _remove_new_hooks(hooks)
        _restore(model, params, weights, buffers, grads, flags)
    return tuple(out)


def _curve(rows: list, i: int) -> tuple[list[float], list[float]]:
    """(seconds, losses) of run ``i`` from the rows ``(run, steps_done, seconds, loss)``."""
    sel = [r for r in rows if r[0] == i]
    return [r[2] for r in sel], [r[3] for r in sel]


def _best_run(rows: list, finals: list[float], diverged: list[bool], lrs: list[float]) -> int:
    """The bracket's best run: the first to reach the comparison level of the bracket's lowest final
    loss (:mod:`curvlens.recommend.trial_rank`), ties to the lower final loss, then to the smaller lr."""
    from curvlens.recommend.trial_rank import comparison_level, rank_key

    ok = [f for f in finals if math.isfinite(f)]
    level = comparison_level(float(rows[0][3]), min(ok)) if ok else -math.inf
    return min(range(len(lrs)), key=lambda i: (rank_key(*_curve(rows, i), level, diverged[i]), lrs[i]))


def _cuda_devices(params) -> list:
    """The CUDA device of the model, whose RNG ``torch.manual_seed`` also seeds (forked with the CPU's)."""
    return [p.device for p in params if p.device.type == "cuda"][:1]


class _Spec:
    """The part of a candidate that :func:`_one_run` uses: an optimizer id and its hyperparameters."""

    def __init__(self, optimizer: str, hyperparameters: dict):
        self.optimizer, self.hyperparameters = optimizer, dict(hyperparameters)

    def build(self, model, loss_fn=None, *, generator=None, **overrides):
        from curvlens.recommend.build import build

        return build(self.optimizer, self.hyperparameters, model, loss_fn, overrides=overrides, generator=generator)


def step_seconds(optimizer: str, hyperparameters: dict, model: torch.nn.Module, loss_fn: Any, data: Any, *,
                 batch_size: int | None = None, steps: int = CALIBRATION_STEPS, seed: int = 0,
                 repeats: int = TIMING_REPEATS, out: dict | None = None) -> float | None:
    """Measured CPU seconds of one step (L-BFGS: one iteration) of ``optimizer`` on the problem.

    ``steps`` steps from the current weights with a fresh optimizer, their CPU time
    (``time.process_time``, so other processes on a loaded machine do not count) over the
    iterations made; repeated up to ``repeats`` times while the repetitions' CPU time stays under
    :data:`TIMING_REPEAT_SECONDS`, and the median kept (one slow repetition, e.g. a page fault or
    a cache flush by another process, does not move it). The model, ``.grad``, flags, hooks and
    the global RNG come back as they were, as in :func:`run_trials`. None when the optimizer
    cannot be built or a step fails. ``out`` (optional) receives ``accepted_steps`` (L-BFGS: the
    accepted step over the first trial step, one per timed step, see :func:`_one_run`).
    """
    from curvlens.problem import Problem

    problem = Problem(model, loss_fn, data)
    params = list(model.parameters())
    saved = ([p.detach().clone() for p in params], [b.detach().clone() for b in model.buffers()],
             [p.grad for p in params], [(m, m.training) for m in model.modules()])
    hooks = _hook_keys(model)
    spec = _Spec(optimizer, hyperparameters)
    lr = hyperparameters.get("lr")
    per_iter: list[float] = []
    spent = 0.0
    for _ in range(max(int(repeats), 1)):
        info: dict = {}
        try:
            with torch.random.fork_rng(devices=_cuda_devices(params)):
                torch.manual_seed(seed)
                curve, _ = _one_run(spec, model, loss_fn, problem, data, 1.0 if lr is None else float(lr),
                                    int(steps), batch_size, seed, out=info)
        except (RuntimeError, ValueError, TypeError):
            return None
        finally:
            _remove_new_hooks(hooks)
            _restore(model, params, *saved)
        sec, its = curve[-1][1], info.get("iterations", curve[-1][0])
        if its <= 0:
            return None
        per_iter.append(sec / its)
        if out is not None:
            out.setdefault("accepted_steps", []).extend(info.get("accepted_steps", []))
        spent += sec
        if spent >= TIMING_REPEAT_SECONDS:
            break
    return float(np.median(per_iter))
