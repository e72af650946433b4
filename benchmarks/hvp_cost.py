"""Cost of one curvature-vector product, as a multiple of one plain gradient over the same data.

Prints, for an MLP (~1.07M parameters), a small CNN and a small transformer block on CPU:
one gradient; one Hessian-vector product (graphs kept / streamed double backward /
forward-over-reverse); one ``matmat`` of 8 vectors per vector; one GGN product; peak memory;
and the same products through curvlinops and PyHessian in the same process.

The "flops x gradient" column counts the matrix-product and convolution flops each call
executes (``torch.utils.flop_counter.FlopCounterMode``) relative to the gradient's: a lower
bound on the time ratio unless the product's kernels run faster per flop than the gradient's.
An exact Hessian-vector product needs the R-op of every layer (Pearlmutter 1994): for a
linear or convolutional layer that is two products in the forward R-pass and four in the
backward one, against one and two for the gradient, so the ratio is near 2 for layers in the
middle of a network and lower only for the first layer (no input gradient) and the output.

Run:  make bench-deps && .venv/bin/python benchmarks/hvp_cost.py [--threads 2] [--models mlp,cnn,transformer]
Peers missing or failing are reported in the table, never hidden. The reference gradient and
every row but the "1 batch" ones use the same batches; "1 batch" rows treat all samples as one
batch (PyHessian's mode), whose larger matrix products are faster on CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import (  # noqa: E402
    batches, fmt, full_gradient, make_problem, num_params, peak_mib, print_table, set_threads, timeit,
)

from curvlens.operators import GGNOperator, HessianOperator  # noqa: E402

SIZES = {"mlp": (1024, 256), "cnn": (512, 128), "transformer": (256, 64)}


def flops_of(fn) -> float:
    """Matrix-product and convolution flops executed by ``fn()`` (NaN if counting fails)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as fc:
            fn()
        return float(fc.get_total_flops())
    except Exception:  # noqa: BLE001 - a missing count is shown as n/a
        return float("nan")


def curvlens_rows(model, loss, data, D, g, x, y):
    v = torch.randn(D, generator=g)
    V = torch.randn(D, 8, generator=g)
    rows = []
    for label, make, arg in [
        ("curvlens H·v (1 batch, graph kept)", lambda: HessianOperator(model, loss, (x, y)), v),
        ("curvlens H·v (graphs kept)", lambda: HessianOperator(model, loss, data), v),
        ("curvlens H·v (streamed)", lambda: HessianOperator(model, loss, data, max_graph_memory=0), v),
        ("curvlens H·v (fwd-over-rev)", lambda: HessianOperator(model, loss, data, backend="fwd_rev"), v),
        ("curvlens H·V k=8, per vector", lambda: HessianOperator(model, loss, data), V),
        ("curvlens G·v (graphs kept)", lambda: GGNOperator(model, loss, data), v),
        ("curvlens G·V k=8, per vector", lambda: GGNOperator(model, loss, data), V),
    ]:
        try:
            t0 = time.perf_counter()
            op = make()
            setup = time.perf_counter() - t0
            k = 1 if arg.ndim == 1 else arg.shape[1]
            t = timeit(lambda: op @ arg, repeat=3) / k
            rows.append((label, t, peak_mib(lambda: op @ arg), setup, flops_of(lambda: op @ arg) / k))
            op = None  # free the graphs before the next row
        except Exception as e:  # noqa: BLE001 - recorded in the table, never hidden
            rows.append((label, float("nan"), float("nan"), f"failed: {type(e).__name__}: {str(e)[:60]}"))
    return rows


def curvlinops_rows(model, loss, data, D, g):
    try:
        from curvlinops import GGNLinearOperator, HessianLinearOperator
    except Exception as e:  # noqa: BLE001
        return [("curvlinops", float("nan"), float("nan"), f"import failed: {type(e).__name__}: {e}")]
    params = [p for p in model.parameters() if p.requires_grad]
    v = torch.randn(D, generator=g)
    V = torch.randn(D, 8, generator=g)
    rows = []
    for label, cls, arg in [("curvlinops H·v", HessianLinearOperator, v),
                            ("curvlinops H·V k=8, per vector", HessianLinearOperator, V),
                            ("curvlinops G·v", GGNLinearOperator, v)]:
        try:
            t0 = time.perf_counter()
            op = cls(model, loss, params, data, check_deterministic=False)
            setup = time.perf_counter() - t0
            k = 1 if arg.ndim == 1 else arg.shape[1]
            t = timeit(lambda: op @ arg, repeat=3) / k
            rows.append((label, t, peak_mib(lambda: op @ arg), setup))
        except Exception as e:  # noqa: BLE001
            rows.append((label, float("nan"), float("nan"), f"failed: {type(e).__name__}: {str(e)[:60]}"))
    return rows


def pyhessian_rows(model, loss, x, y, data, g):
    try:
        from pyhessian import hessian as PyHessian
        from pyhessian.utils import hessian_vector_product
    except Exception as e:  # noqa: BLE001
        return [("PyHessian", float("nan"), float("nan"), f"import failed: {type(e).__name__}: {e}")]
    rows = []
    v = [torch.randn(p.shape, generator=g) for p in model.parameters()]
    try:
        t0 = time.perf_counter()
        h = PyHessian(model, loss, data=(x, y), cuda=False)  # one batch, graph kept
        setup = time.perf_counter() - t0
        t = timeit(lambda: hessian_vector_product(h.gradsH, h.params, v), repeat=3)
        rows.append(("PyHessian H·v (1 batch, graph kept)", t, peak_mib(lambda: hessian_vector_product(h.gradsH, h.params, v)), setup))
        del h
    except Exception as e:  # noqa: BLE001
        rows.append(("PyHessian H·v (1 batch)", float("nan"), float("nan"), f"failed: {type(e).__name__}: {str(e)[:60]}"))
    try:
        h = PyHessian(model, loss, dataloader=data, cuda=False)
        t = timeit(lambda: h.dataloader_hv_product(v), repeat=3)
        rows.append(("PyHessian H·v (dataloader)", t, peak_mib(lambda: h.dataloader_hv_product(v)), 0.0))
    except Exception as e:  # noqa: BLE001
        rows.append(("PyHessian H·v (dataloader)", float("nan"), float("nan"), f"failed: {type(e).__name__}: {str(e)[:60]}"))
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="mlp,cnn,transformer")
    ap.add_argument("--no-peers", action="store_true")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, CPU\n")
    for name in args.models.split(","):
        n, bs = SIZES[name]
        model, loss, x, y = make_problem(name, n)
        data = batches(x, y, bs)
        D = num_params(model)
        grad = full_gradient(model, loss, data)
        tg = timeit(grad, repeat=5)
        g = torch.Generator().manual_seed(0)
        fg = flops_of(grad)
        rows = [("gradient (reference)", tg, peak_mib(grad), 0.0, fg)]
        rows += curvlens_rows(model, loss, data, D, g, x, y)
        if not args.no_peers:
            rows += curvlinops_rows(model, loss, data, D, g)
            rows += pyhessian_rows(model, loss, x, y, data, g)
        table = []
        for label, t, mem, setup, *fl in rows:
            note = setup if isinstance(setup, str) else ""
            table.append({"method": label, "ms / product": fmt(t * 1e3, 1), "x gradient": fmt(t / tg),
                          "flops x gradient": fmt(fl[0] / fg) if fl else "",
                          "peak MiB": fmt(mem, 0), "setup s": "" if note else fmt(setup),
                          "note": note})
        print(f"== {name}: {D:,} parameters, {n} samples in batches of {bs} ==")
        print_table(table, ["method", "ms / product", "x gradient", "flops x gradient", "peak MiB", "setup s", "note"])
        print()


if __name__ == "__main__":
    main()
