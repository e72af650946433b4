"""``torchrun --nproc-per-node N -m curvlens_cli analyze ...``: one analysis over N processes.

torchrun sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``. Each process loads
the same files, keeps its shard of the samples (contiguous, nearly equal), and analyzes a
:class:`curvlens.Problem` on the default process group: every product and gradient is summed
over the ranks, so the numbers equal a single-process run on all the data. Rank 0 prints and
writes the report; the other ranks stay silent.
"""

from __future__ import annotations

import datetime
import os

#: seconds a collective waits for the other ranks before failing (instead of hanging)
TIMEOUT_S = 600


def launched_by_torchrun() -> bool:
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ
    except ValueError:
        return False


def init(device: str) -> tuple[int, int]:
    """Initialize the default process group from torchrun's environment; (rank, world size)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=TIMEOUT_S))
    return dist.get_rank(), dist.get_world_size()


def shard_problem(problem, rank: int, world: int):
    """``problem`` restricted to this rank's contiguous share of its samples, on the default group."""
    import torch

    from curvlens import Problem
    from curvlens.distributed import shard
    from curvlens.problem.batches import subset_batch

    local = []
    start = 0
    sl = shard(problem.num_samples, rank, world)
    for b, n in zip(problem.batches, problem.batch_sizes):
        lo, hi = max(sl.start, start), min(sl.stop, start + n)
        if hi > lo:
            local.append(b if (lo, hi) == (start, start + n) else subset_batch(b, torch.arange(lo - start, hi - start)))
        start += n
    return Problem(problem.model, problem.loss_fn, local, params=list(problem.param_names), mode=problem.mode,
                   reduction=problem.reduction, loss_form=problem.loss_form, source=problem.source,
                   notes=problem.notes, process_group="world")
