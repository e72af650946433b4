"""A :class:`~curvlens.Problem` on a ``torch.distributed`` process group.

Each rank holds its own shard of the data. Every quantity a Problem or an operator returns is
a sum over samples of weighted per-batch terms, with weights that use the *global* number of
samples, so one all-reduce (sum) of each rank's partial result gives every rank the
single-process value over the union of the shards: the loss, the gradient (one vector of D
numbers) and each curvature product (one D-vector per direction). After the all-reduce every
rank holds the same bits, so Lanczos, trace and density run unchanged and identically on every
rank as long as their random probes are drawn from the same seed (pass an explicit
``generator=`` seed; a fresh OS-entropy seed would differ between ranks).

DDP's hooks fire on ``.backward()``, not on ``torch.autograd.grad``, so the reduction is
explicit here; a ``DistributedDataParallel`` wrapper is unwrapped to its ``module``.

A rank that fails while the others wait in an all-reduce makes them fail when the process
group's ``timeout`` (set in ``init_process_group``) runs out; that failure is re-raised as a
:class:`ProcessGroupError` that says so, instead of a hang.
"""

from __future__ import annotations

from typing import Any

import torch

from curvlens.errors import CurvlensError

__all__ = ["ProcessGroupError", "resolve_group", "all_reduce_sum", "all_gather_ints", "rank_and_size", "shard",
           "unwrap_ddp"]


class ProcessGroupError(CurvlensError, RuntimeError):
    """A collective operation of a distributed Problem failed (another rank failed or timed out)."""


def resolve_group(process_group: Any):
    """``None`` (this process alone), ``"world"`` (the default group) or a process group."""
    if process_group is None:
        return None
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise ValueError(
            f"process_group: got {process_group!r} but torch.distributed is not initialized; call "
            "torch.distributed.init_process_group(...) first (torchrun sets the environment), or pass "
            "process_group=None for this process alone"
        )
    if isinstance(process_group, str):
        if process_group != "world":
            raise ValueError(f"process_group: expected None, 'world' or a ProcessGroup, got {process_group!r}")
        return dist.group.WORLD
    if not isinstance(process_group, dist.ProcessGroup):
        raise TypeError(
            f"process_group: expected None, 'world' or a torch.distributed.ProcessGroup, got "
            f"{type(process_group).__name__}"
        )
    return process_group


def rank_and_size(group) -> tuple[int, int]:
    """(rank within the group, group size); (0, 1) for ``None``."""
    if group is None:
        return 0, 1
    import torch.distributed as dist

    return dist.get_rank(group), dist.get_world_size(group)


def _backend_device(group, device: torch.device) -> torch.device:
    import torch.distributed as dist

    backend = str(dist.get_backend(group)).lower()
    return device if ("nccl" in backend and device.type == "cuda") or device.type == "cpu" else torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor, group, *, what: str = "tensor") -> torch.Tensor:
    """Sum ``tensor`` over the ranks of ``group`` in place (and return it); no-op for ``None``."""
    if group is None:
        return tensor
    import torch.distributed as dist

    dev = _backend_device(group, tensor.device)
    buf = tensor if tensor.device == dev and tensor.is_contiguous() else tensor.contiguous().to(dev)
    try:
        dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=group)
    except RuntimeError as e:  # gloo/nccl raise RuntimeError (or a subclass) on timeouts and peer failures
        r, n = rank_and_size(group)
        raise ProcessGroupError(
            f"process group: the all-reduce of the {what} on rank {r} of {n} failed ({str(e).splitlines()[0][:160]}); "
            "another rank probably failed or is not running the same computation: see that rank's error"
        ) from e
    if buf is not tensor:
        tensor.copy_(buf)
    return tensor


def all_gather_ints(values, group, *, device: torch.device | str = "cpu", what: str = "sizes") -> list[list[int]]:
    """Every rank's list of ints (lists may differ in length), in rank order; ``[values]`` for ``None``.

    Two small collectives: the lengths, then the lists padded to the longest one.
    """
    values = [int(v) for v in values]
    if group is None:
        return [values]
    import torch.distributed as dist

    r, n = rank_and_size(group)
    dev = _backend_device(group, torch.device(device))
    try:
        lens = [torch.zeros(1, dtype=torch.int64, device=dev) for _ in range(n)]
        dist.all_gather(lens, torch.tensor([len(values)], dtype=torch.int64, device=dev), group=group)
        width = max(int(t.item()) for t in lens)
        mine = torch.zeros(max(width, 1), dtype=torch.int64, device=dev)
        mine[: len(values)] = torch.tensor(values, dtype=torch.int64)
        rows = [torch.zeros_like(mine) for _ in range(n)]
        dist.all_gather(rows, mine, group=group)
    except RuntimeError as e:
        raise ProcessGroupError(
            f"process group: the all-gather of the {what} on rank {r} of {n} failed "
            f"({str(e).splitlines()[0][:160]}); another rank probably failed or is not running the same "
            "computation: see that rank's error"
        ) from e
    return [row[: int(k.item())].tolist() for row, k in zip(rows, lens)]


def shard(samples: int, rank: int, world: int) -> slice:
    """Contiguous, nearly equal shard ``rank`` of ``samples`` indices (the first ranks get one more)."""
    base, extra = divmod(samples, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def unwrap_ddp(model):
    """The wrapped module of a ``DistributedDataParallel`` (or ``DataParallel``) model, else the model."""
    from torch import nn

    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model
