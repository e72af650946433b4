"""Several processes through ``torch.distributed``: a Problem on a process group.

``curvlens.Problem(model, loss_fn, shard, process_group="world")`` sums losses, gradients and
curvature products over the ranks (each holding its own shard of the data), so every operator,
eigensolver, estimator and ``analyze`` above it runs unchanged and gives the single-process
result over the union of the shards. See :mod:`curvlens.distributed.group`.
"""

from curvlens.distributed.group import (
    ProcessGroupError, all_gather_ints, all_reduce_sum, rank_and_size, resolve_group, shard, unwrap_ddp,
)

__all__ = ["ProcessGroupError", "all_gather_ints", "all_reduce_sum", "rank_and_size", "resolve_group", "shard", "unwrap_ddp"]
