"""One rank of the two-process tests: ``python -m tests.distributed._worker SCENARIO OUT``.

The environment gives RANK, WORLD_SIZE and MASTER_PORT; the process group is gloo on
127.0.0.1 (loopback only) with a short timeout. Each rank writes its results to OUT.rank.pt.
"""

from __future__ import annotations

import datetime
import os
import sys

import torch
import torch.distributed as dist
from torch import nn

N_SAMPLES = 23
SHARDS = {0: [(0, 8), (8, 15)], 1: [(15, 20), (20, 23)]}  # uneven: 15 and 8 samples, batches of 8/7/5/3


def make_model() -> nn.Module:
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    return model


def make_data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N_SAMPLES, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (N_SAMPLES,), generator=g)
    return x, y


def local_batches(rank: int, shards=SHARDS):
    x, y = make_data()
    return [(x[a:b], y[a:b]) for a, b in shards[rank]]


def measure(problem) -> dict:
    import curvlens

    H = curvlens.HessianOperator(problem)
    G = curvlens.GGNOperator(problem)
    v = torch.randn(problem.dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    top = curvlens.top_eigenpairs(H, k=5, generator=0)
    tr = curvlens.krylov_trace(H, num_matvecs=30, generator=0)
    dens = curvlens.spectral_density(H, num_probes=2, num_steps=20, generator=0)
    return {"loss": problem.loss(), "grad": problem.gradient(flat=True), "Hv": H @ v, "Gv": G @ v,
            "top": top.eigenvalues, "trace": torch.tensor(tr.estimate),
            "negative_mass": torch.tensor(dens.negative_mass()), "num_samples": problem.num_samples}


def analysis(problem_or_model, *args) -> dict:
    """``analyze``'s summary without the timing-derived keys (they differ from run to run)."""
    import curvlens

    res = curvlens.analyze(problem_or_model, *args, budget=150, lr=0.1, generator=0,
                           which=["conditioning", "sharpness", "saddle", "density", "trace", "per_layer"])
    return {k: v for k, v in res.summary().items() if "cost" not in k and "time" not in k and "second" not in k}


def run(scenario: str, rank: int, model: nn.Module, loss) -> dict:
    import curvlens

    if scenario == "analyze":
        return analysis(curvlens.Problem(model, loss, local_batches(rank), process_group="world"))
    if scenario == "equal":
        return measure(curvlens.Problem(model, loss, local_batches(rank), process_group="world"))
    if scenario == "empty":
        shards = {0: [(0, 8), (8, 15), (15, 23)], 1: []}
        return measure(curvlens.Problem(model, loss, local_batches(rank, shards), process_group="world"))
    if scenario == "ddp":
        ddp = nn.parallel.DistributedDataParallel(model)
        return measure(curvlens.Problem(ddp, loss, local_batches(rank), process_group="world"))
    if scenario == "local":  # process_group=None under an initialized group: this process alone
        return {"num_samples": curvlens.Problem(model, loss, local_batches(rank)).num_samples}
    if scenario == "fail":
        problem = curvlens.Problem(model, loss, local_batches(rank), process_group="world")
        H = curvlens.HessianOperator(problem)
        if rank == 1:  # this rank dies before the product; rank 0 must not hang
            sys.stdout.flush()
            os._exit(3)  # no process-group teardown: a dead rank does not say goodbye
        try:
            H @ torch.ones(problem.dim, dtype=torch.float64)
        except curvlens.distributed.ProcessGroupError as e:
            print(f"ProcessGroupError: {e}", flush=True)
            os._exit(4)  # the group is broken: skip its teardown, which may abort on a closed peer
        return {}
    from tests.distributed._optim_worker import SCENARIOS  # the optimizers and analyze's minibatch studies

    return SCENARIOS[scenario]("world", rank)


def main(scenarios: str, out: str) -> None:
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            init_method=f"tcp://127.0.0.1:{os.environ['MASTER_PORT']}",
                            timeout=datetime.timedelta(seconds=float(os.environ.get("PG_TIMEOUT", "30"))))
    results = {}
    for scenario in scenarios.split(","):
        results[scenario] = run(scenario, rank, make_model(), nn.CrossEntropyLoss())
    torch.save(results, f"{out}.{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
