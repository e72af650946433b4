"""One curvature product on 1 process against 2 (gloo, 127.0.0.1), on the same total data.

Each rank holds half of the samples; a product is the local product plus one all-reduce of a
D-vector (the bytes sent per product are counted by the Problem and printed: they should be
D floats). The time ratio is wall time of one product on 2 ranks over 1 rank, each rank with
one torch thread. On a 2-core machine shared with other work, 2 ranks compete for the cores:
the ratio shows the communication overhead on top of half the compute, not a clean speed-up.

Run:  .venv/bin/python benchmarks/distributed_product.py [--samples 2048] [--batch 256]
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import subprocess
import sys
import time

import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def problem_data(samples: int):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(samples, 784, generator=g)
    y = torch.randint(0, 10, (samples,), generator=g)
    model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 256), nn.ReLU(), nn.Linear(256, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model, x, y


def worker(samples: int, batch: int, repeat: int) -> None:
    import torch.distributed as dist

    import curvlens
    from curvlens.distributed import shard

    torch.set_num_threads(1)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    group = None
    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=120),
                                init_method=f"tcp://127.0.0.1:{os.environ['MASTER_PORT']}")
        group = "world"
    model, x, y = problem_data(samples)
    sl = shard(samples, rank, world)
    xs, ys = x[sl], y[sl]
    data = [(xs[i : i + batch], ys[i : i + batch]) for i in range(0, len(ys), batch)]
    problem = curvlens.Problem(model, nn.CrossEntropyLoss(), data, process_group=group)
    H = curvlens.HessianOperator(problem)
    v = torch.randn(problem.dim, generator=torch.Generator().manual_seed(1))
    H @ v  # warm-up
    before = getattr(problem, "reduced_bytes", 0)
    best = float("inf")
    for _ in range(repeat):
        if group:
            dist.barrier()
        t = time.perf_counter()
        H @ v
        best = min(best, time.perf_counter() - t)
    sent = (getattr(problem, "reduced_bytes", 0) - before) / repeat
    if rank == 0:
        print(f"RESULT world={world} D={problem.dim} product_s={best:.4f} bytes_per_product={sent:.0f}", flush=True)
    if group:
        dist.destroy_process_group()


def launch(world: int, args) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", "--samples", str(args.samples), "--batch",
                               str(args.batch), "--repeat", str(args.repeat)], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=dict(os.environ, RANK=str(r), WORLD_SIZE=str(world), MASTER_PORT=str(port),
                                       OMP_NUM_THREADS="1"))
             for r in range(world)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    line = [ln for ln in outs[0].splitlines() if ln.startswith("RESULT")]
    if not line:
        raise RuntimeError("rank 0 printed no result:\n" + "\n".join(outs))
    return line[0]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--worker", action="store_true")
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.samples, args.batch, args.repeat)
    res = {}
    for world in (1, 2):
        fields = dict(kv.split("=") for kv in launch(world, args).split()[1:])
        res[world] = fields
    D = int(res[1]["D"])
    print(f"torch {torch.__version__}, gloo on 127.0.0.1, 1 thread per rank, MLP D={D:,}, {args.samples} samples\n")
    print("ranks  product s  ratio to 1 rank  bytes sent per product  = D floats?")
    for world in (1, 2):
        t, b = float(res[world]["product_s"]), float(res[world]["bytes_per_product"])
        ratio = t / float(res[1]["product_s"])
        print(f"{world:<6} {t:<10.4f} {ratio:<16.2f} {b:<23.0f} {b / (4 * D):.2f} x D float32")


if __name__ == "__main__":
    main()
