"""Step costs of the candidates, timed interleaved so that their ratios hold on a loaded machine.

The time model of :func:`~curvlens.recommend.rules_practical.rule_step_cost` compares the CPU
time of one step of each candidate with one SGD step. On a shared CPU the time of the same step
drifts with the load (cache contention, frequency): timings of different candidates taken at
different moments differ by up to ~1.5x with no change in their cost. So the steps are timed in
rounds: every round times one short run of each candidate, SGD first
(:func:`curvlens.recommend.trials.step_seconds` with one repetition, ``time.process_time``), and
the cost of a candidate in that round is its time over SGD's in the same round; the reported
time is the median ratio over the rounds times the median SGD step. A candidate whose rounds
have used :data:`ROUND_SECONDS` of CPU is not timed again (a Newton-CG step on a recurrent
network costs ~1 s).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

__all__ = ["interleaved_step_seconds", "ROUNDS", "ROUND_SECONDS"]

#: timing rounds (each times every candidate once)
ROUNDS = 5
#: CPU seconds after which a candidate is not timed again
ROUND_SECONDS = 1.0


def interleaved_step_seconds(specs: dict[str, dict], model: torch.nn.Module, loss_fn: Any, data: Any, *,
                             batch_size: int | None = None, rounds: int = ROUNDS,
                             reference: str = "sgd_momentum", out: dict | None = None) -> dict[str, float]:
    """``{candidate: seconds per step}`` of every candidate in ``specs`` (``{id: hyperparameters}``).

    Args:
        specs: the candidates to time and their hyperparameters; ``reference`` must be one of them.
        model, loss_fn, data: the training problem (left as it was, see
            :func:`~curvlens.recommend.trials.step_seconds`).
        batch_size: the training batch (None: full batch).
        rounds: timing rounds; the ratios to the reference are the median over them.
        reference: the candidate every ratio is taken against (one gradient per step).
        out: optional; receives ``accepted_steps``: ``{candidate: [accepted / first trial step]}`` of
            line-search methods (L-BFGS), one per timed step.

    Returns:
        Seconds per step (per iteration for L-BFGS): the median ratio to the reference times the
        reference's median time. Candidates that cannot be built or fail a step are left out.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> model = torch.nn.Linear(4, 2)
        >>> data = (torch.randn(32, 4, generator=g), torch.randint(0, 2, (32,), generator=g))
        >>> t = interleaved_step_seconds({"sgd_momentum": {"lr": 0.1}, "adamw": {"lr": 1e-3}}, model,
        ...                              torch.nn.CrossEntropyLoss(), data, rounds=2)
        >>> sorted(t), all(v > 0 for v in t.values())
        (['adamw', 'sgd_momentum'], True)
    """
    from curvlens.recommend.trials import step_seconds

    if reference not in specs:
        raise ValueError(f"reference: expected one of the timed candidates {sorted(specs)}, got {reference!r}; "
                         "include it in specs")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds: expected a positive int, got {rounds!r}; pass e.g. rounds=5")
    order = [reference] + [o for o in specs if o != reference]
    ref_times: list[float] = []
    ratios: dict[str, list[float]] = {o: [] for o in order}
    spent = {o: 0.0 for o in order}
    failed: set[str] = set()
    for _ in range(rounds):
        ref = step_seconds(reference, specs[reference], model, loss_fn, data, batch_size=batch_size, repeats=1)
        if ref is None or ref <= 0:
            break
        ref_times.append(ref)
        for o in order[1:]:
            if o in failed or (ratios[o] and spent[o] >= ROUND_SECONDS):
                continue
            t0, info = time.process_time(), {}
            sec = step_seconds(o, specs[o], model, loss_fn, data, batch_size=batch_size, repeats=1, out=info)
            spent[o] += time.process_time() - t0
            if out is not None and info.get("accepted_steps"):
                out.setdefault("accepted_steps", {}).setdefault(o, []).extend(info["accepted_steps"])
            if sec is None or sec <= 0:
                failed.add(o)
                continue
            ratios[o].append(sec / ref)
    if not ref_times:
        return {}
    unit = statistics.median(ref_times)
    out = {reference: unit}
    out.update({o: statistics.median(r) * unit for o, r in ratios.items() if o != reference and r})
    return out
