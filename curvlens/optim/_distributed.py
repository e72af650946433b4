"""The curvature optimizers on a ``torch.distributed`` process group.

Each rank steps on its own shard of every batch (uneven shards, even empty ones, are fine).
:meth:`~curvlens.optim._base.CurvatureOptimizer.problem` builds its Problem on the group, so
the loss, the gradient, every curvature product and every line-search loss are summed over the
ranks with weights by the global sample count: every rank holds the same bits, and so every
decision made from them (accept or reject, damping, where CG stops) is the same on every rank.
What is drawn at random stays in step too:

* the curvature sub-batch (:func:`group_curvature_subset`): every rank learns every shard's
  batch sizes (one small all-gather) and makes the draws of one process on the union of the
  shards in rank order, keeping those of its own batches, so the generator is in the same state
  on every rank afterwards and the sub-batch equals the single-process one;
* probes (Hutchinson preconditioner, Krylov starts) are D-vectors drawn from that generator:
  the same on every rank;
* Monte-Carlo Fisher targets are per sample, so each rank draws them for its own samples from
  a stream of its own (:func:`rank_generator`), seeded from one draw of the shared generator.

No collective sits inside a loop whose trip count depends on the shard: the empirical-Fisher
diagonal (:func:`group_empirical_fisher_diagonal`) accumulates locally and reduces once.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import torch

from curvlens.distributed.group import all_gather_ints, rank_and_size
from curvlens.errors import NonFiniteLossError
from curvlens.problem.batches import batch_size, collect_batches, subset_batch

__all__ = ["group_curvature_subset", "group_empirical_fisher_diagonal", "group_total", "loss_and_gradient",
           "rank_generator"]

log = logging.getLogger(__name__)

# odd 62-bit constant: rank r's seed is base + r * _MIX (mod 2^62), distinct for every rank
_MIX = 0x2545F4914F6CDD1D & ((1 << 62) - 1)


def _local_batches(batch: Any) -> list:
    if isinstance(batch, (list, tuple)) and len(batch) == 0:
        return []
    return collect_batches(batch)


def group_curvature_subset(batch: Any, fraction: float, generator: torch.Generator, group,
                           device: torch.device | str = "cpu") -> Any:
    """This rank's part of a random ``fraction`` of each batch, drawn as one process would draw
    it on the union of the shards (batches in rank order); a collective.

    Returns one batch, a list of batches, or ``[]`` when this rank holds none.
    """
    mine = _local_batches(batch)
    rank, _ = rank_and_size(group)
    sizes = all_gather_ints([batch_size(b, i) for i, b in enumerate(mine)], group, device=device,
                            what="batch sizes of the curvature sub-batch")
    out = []
    for r, row in enumerate(sizes):
        for j, n in enumerate(row):
            m = max(1, int(round(fraction * n)))
            idx = torch.randperm(n, generator=generator)[:m].sort().values
            if r == rank:
                out.append(subset_batch(mine[j], idx))
    return out[0] if len(out) == 1 else out


def rank_generator(generator: torch.Generator, problem) -> torch.Generator | int:
    """A generator for per-sample draws (Monte-Carlo targets): ``generator`` itself without a
    process group; on a group, an int seed of a stream of this rank's own, from one draw of
    ``generator`` (so ``generator`` advances identically on every rank)."""
    if getattr(problem, "process_group", None) is None:
        return generator
    base = int(torch.randint(0, 2**62, (1,), generator=generator))
    return (base + problem.rank * _MIX) % (1 << 62)


def group_total(value: int, problem) -> int:
    """The sum of an int over the ranks of ``problem``'s group (``value`` without a group): a
    count that decides something (a route, a size limit) must be the same on every rank."""
    if getattr(problem, "process_group", None) is None:
        return int(value)
    buf = torch.tensor([float(value)], dtype=torch.float64)
    return int(problem.reduce_(buf, "count").item())


def loss_and_gradient(problem) -> tuple[torch.Tensor, torch.Tensor]:
    """``problem.loss_and_gradient(flat=True)``; on a group a non-finite loss on any rank's shard
    raises :class:`~curvlens.errors.NonFiniteLossError` on every rank (instead of on that rank
    alone while the others wait for it in the all-reduce). One all-reduce of
    ``[gradient, loss, failed]``."""
    if getattr(problem, "process_group", None) is None:
        return problem.loss_and_gradient(flat=True)
    local = copy.copy(problem)  # the same batches and global weights, without the reduction
    local.process_group = None
    buf = torch.zeros(problem.dim + 2, dtype=problem.dtype, device=problem.device)
    why = ""
    try:
        loss, g = local.loss_and_gradient(flat=True)
        buf[:-2], buf[-2] = g, loss
    except NonFiniteLossError as e:
        why, buf[-1] = str(e), 1.0
    problem.reduce_(buf, "gradient")
    if float(buf[-1]) > 0 or not math.isfinite(float(buf[-2])):
        raise NonFiniteLossError(why or f"loss_fn: the loss is {float(buf[-2]):.4g} on the shard of another rank of the "
                                 "process group; check that rank's data and the model's parameters for NaN/Inf")
    return buf[-2].clone(), buf[:-2].clone()


def _local_problem(problem, data: Any):
    from curvlens.problem import Problem

    return Problem(problem.model, problem.loss_fn, data, params=list(problem.param_names),
                   reduction=problem.reduction, mode=problem.mode, allow_random=problem.allow_random,
                   loss_form=problem.loss_form)


def group_empirical_fisher_diagonal(problem, *, max_loop_samples: int = 128) -> torch.Tensor:
    """``mean_i g_i**2`` over the samples of every shard of a Problem on a group, weighted as
    its loss is; the same bits on every rank.

    Per-sample gradients by ``vmap`` on the local shard, one all-reduce of
    ``[sum g_i**2, count, failed]``; where ``vmap`` fails on any rank, every rank loops over at
    most ``max_loop_samples`` evenly spaced samples of each local batch on a local Problem (no
    collective inside that loop) and one more all-reduce combines the visited samples, as
    :func:`~curvlens.optim._newton_cg_precond.empirical_fisher_diagonal` does in one process.
    """
    D, dt, dev = problem.dim, problem.dtype, problem.device
    scale = 1.0 / problem.num_samples if problem.reduction == "mean" else 1.0
    acc = torch.zeros(D + 2, dtype=dt, device=dev)  # [sum g**2, count, failed]
    try:
        chunk_size = int(min(4096, max(64, 2**24 // max(D, 1))))
        for chunk in problem.per_sample_gradients(chunk_size=chunk_size):
            acc[:D] += (chunk.detach() ** 2).sum(0)
            acc[D] += chunk.shape[0]
    except (RuntimeError, TypeError, ValueError) as exc:  # no vmap rule on this rank
        log.debug("per-sample gradients by vmap failed (%s); looping over samples", exc)
        acc[D + 1] = 1.0
    problem.reduce_(acc, "empirical Fisher diagonal")
    if float(acc[D + 1]) == 0.0:
        return acc[:D] * scale
    acc.zero_()
    for b in problem.batches:
        n = batch_size(b, 0)
        m = min(n, max_loop_samples)
        for i in torch.linspace(0, n - 1, m).round().long().unique().tolist():
            g = _local_problem(problem, subset_batch(b, torch.tensor([i]))).gradient(flat=True)
            acc[:D] += g.detach() ** 2
            acc[D] += 1.0
    problem.reduce_(acc, "empirical Fisher diagonal")
    return acc[:D] / acc[D] * (problem.num_samples * scale)
