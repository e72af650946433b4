"""Cost of one CG iteration on a damped GGN, as a multiple of one plain gradient.

An MLP of ~100k parameters (128 -> 256 -> 256 -> 10, tanh, cross-entropy) on 512 samples.
Reports, in CPU time (``time.process_time``) with ``torch.set_num_threads(1)`` because the
benchmark machine is shared: one gradient; one product with ``G + 0.1 I``; one CG iteration
(``curvlens.linalg.cg`` run for a fixed number of iterations with a zero tolerance); and the
CG overhead beyond its product (dot products, axpys, bookkeeping), measured directly as a CG iteration on a diagonal
operator of the same size, whose product is negligible.

Run:  .venv/bin/python benchmarks/cg_cost.py [--iters 30] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from torch import nn

from curvlens.errors import ConvergenceWarning
from curvlens.linalg import cg
from curvlens.operators import GGNOperator
from curvlens.operators.algebra import DiagonalOperator


def cpu_time(fn, repeat: int) -> float:
    """Median CPU seconds of ``fn()`` over ``repeat`` runs (after one warm-up run)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)  # model initialization in this benchmark process only
    model = nn.Sequential(nn.Linear(128, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 10))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(512, 128, generator=g), torch.randint(0, 10, (512,), generator=g)
    loss_fn = nn.CrossEntropyLoss()
    params = [p for p in model.parameters()]
    D = sum(p.numel() for p in params)

    def gradient():
        return torch.autograd.grad(loss_fn(model(x), y), params)

    op = GGNOperator(model, loss_fn, (x, y)) + 0.1
    v = torch.randn(D, generator=g)
    b = torch.randn(D, generator=g)

    cheap = DiagonalOperator(torch.linspace(1.0, 2.0, D))  # same D, negligible product: CG's own vector work

    def solve(A=op):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # a zero tolerance is never met
            return cg(A, b, rtol=0.0, maxiter=args.iters)

    t_grad = cpu_time(gradient, args.repeat)
    t_prod = cpu_time(lambda: op.matvec(v), args.repeat)
    res = solve()
    t_cg = cpu_time(solve, args.repeat) / res.iterations
    t_vec = cpu_time(lambda: solve(cheap), args.repeat) / args.iters
    print(f"CG on (GGN + 0.1 I) of an MLP with D = {D} parameters, 512 samples, float32")
    print("CPU time (time.process_time), torch.set_num_threads(1), median of "
          f"{args.repeat} runs; CG for {res.iterations} iterations ({res.info.matvecs} products)")
    rows = [("gradient", t_grad), ("product (G + 0.1 I) v", t_prod), ("CG iteration", t_cg),
            ("CG iteration minus product", t_cg - t_prod),
            ("CG iteration, diagonal operator", t_vec)]
    print(f"{'':34s}{'ms':>10s}{'x gradient':>12s}")
    for name, t in rows:
        print(f"{name:34s}{1e3 * t:10.2f}{t / t_grad:12.3f}")
    print(f"CG's own work (diagonal-operator row) / product: {t_vec / t_prod:.1%}; the 'minus product' row is "
          "the same quantity measured as a difference of two noisy timings")


if __name__ == "__main__":
    main()
