"""Cost of a live operator's first product after a weight update, against a cached product.

An operator built from a :class:`curvlens.Problem` keeps each batch's differentiable graph
while memory allows, so a product costs about one extra backward. After an optimizer step
changes the weights in place, the next product rebuilds those graphs first (a forward and a
gradient with ``create_graph=True`` per kept batch), then multiplies. This script prints, as
multiples of one plain gradient over the same data measured in the same process:

- a cached product (weights unchanged),
- the first product after an in-place update (refresh + product), on the same operator,
- building a new operator and its first product (what a caller without live operators does),
- the refresh alone (``op.refresh()``).

Flop model: the refresh is one forward and one backward with graph (~1x a gradient's flops
plus the bookkeeping of ``create_graph``), the product one more backward through that graph
(~1-2x), so "after update" should be near "cached" + 1-1.5x and below "new operator".

The machine running the benchmarks is shared: times are CPU time (``time.process_time``) with
one torch thread unless ``--threads`` says otherwise.

Run:  .venv/bin/python benchmarks/live_refresh.py [--models mlp,cnn] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import batches, fmt, make_problem, num_params, print_table, set_threads  # noqa: E402

from curvlens import Problem  # noqa: E402
from curvlens.operators import GGNOperator, HessianOperator  # noqa: E402

SIZES = {"mlp": (1024, 256), "cnn": (512, 128)}


def cpu_best(fn, repeat: int = 5, setup=None) -> float:
    """Best CPU time of ``fn()`` over ``repeat`` runs (``setup()`` runs untimed before each)."""
    best = float("inf")
    for _ in range(repeat + 1):  # the first run warms up
        if setup is not None:
            setup()
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def rows_for(name: str, repeat: int) -> list[dict]:
    n, bs = SIZES[name]
    model, loss, x, y = make_problem(name, n)
    data = batches(x, y, bs)
    problem = Problem(model, loss, data)
    tg = cpu_best(lambda: problem.gradient(), repeat)
    v = torch.randn(problem.dim, generator=torch.Generator().manual_seed(0))
    params = problem.params

    def bump():  # an in-place update that changes nothing numerically but moves the version counters
        with torch.no_grad():
            for p in params:
                p.mul_(1.0)

    rows = [{"model": name, "D": f"{num_params(model):,}", "operator": "gradient (reference)",
             "CPU ms": fmt(tg * 1e3, 1), "x gradient": "1.00"}]
    for label, cls in (("H", HessianOperator), ("G", GGNOperator)):
        op = cls(problem)
        cached = cpu_best(lambda: op @ v, repeat)
        after = cpu_best(lambda: op @ v, repeat, setup=bump)
        fresh = cpu_best(lambda: cls(problem) @ v, repeat)
        refresh = cpu_best(op.refresh, repeat)
        for what, t in ((f"{label}·v cached", cached), (f"{label}·v after in-place update (refresh + product)", after),
                        (f"new {cls.__name__} + first {label}·v", fresh), (f"{label} refresh alone", refresh)):
            rows.append({"model": name, "D": "", "operator": what, "CPU ms": fmt(t * 1e3, 1),
                         "x gradient": fmt(t / tg)})
        assert op.num_refreshes >= repeat, "the live operator did not refresh after the updates"
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), float32, CPU time (process_time)\n")
    table = []
    for name in args.models.split(","):
        table += rows_for(name, args.repeat)
    print_table(table, ["model", "D", "operator", "CPU ms", "x gradient"])


if __name__ == "__main__":
    main()
