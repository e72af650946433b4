"""Exact GGN and Hessian diagonals: curvlens ggn_diagonal / hessian_diagonal vs BackPACK's
DiagGGNExact / DiagHessian, all in the same process.

CPU time (time.process_time) with torch.set_num_threads(1) (the machine is shared), as multiples
of one full-data gradient measured in the same process. The repeats are interleaved (each round
times every method once, in turn) and the median over rounds is reported, so load drift hits all
methods alike. ``ggn_diagonal (hook route)`` is the autograd route that ggn_diagonal keeps for
models outside the Sequential structure, timed on the same model for comparison. float32 models;
the error columns are the largest difference to BackPACK relative to the largest entry.

Models (tanh MLPs, cross-entropy, uneven batches):
  mlp3k: 32-64-16-10 (3.3k parameters) on 512 Gaussian samples in 4 batches;
  digits85k: 64-256-256-10 (85k) and digits167k: 64-512-256-10 (167k) on scikit-learn's digits
  (1797 samples, standardised) in 4 batches.

The Hessian pair is timed on ``--hessian-models`` only (default mlp3k digits85k): BackPACK's
DiagHessian takes about 20 s a call at 85k parameters here and grows with the squared width.

Run: .venv/bin/python benchmarks/ggn_diagonal_cost.py [--repeats 5] [--models mlp3k digits85k digits167k]
     [--hessian-models mlp3k digits85k]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from curvlens.estimators.diagonal_hessian import hessian_diagonal
from curvlens.estimators.ggn_diagonal import _hooked, ggn_diagonal
from curvlens.operators import GGNOperator, HessianOperator


def _mlp(widths):
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def _split(x, y, sizes):
    out, s = [], 0
    for n in sizes:
        out.append((x[s:s + n], y[s:s + n]))
        s += n
    return out


def make_problem(name):
    torch.manual_seed(0)
    if name == "mlp3k":
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(512, 32, generator=g), torch.randint(0, 10, (512,), generator=g)
        return _mlp((32, 64, 16, 10)), _split(x, y, (200, 150, 100, 62))
    from sklearn.datasets import load_digits

    X, Y = load_digits(return_X_y=True)
    x = torch.tensor(X, dtype=torch.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-3)
    y = torch.tensor(Y, dtype=torch.long)
    widths = {"digits85k": (64, 256, 256, 10), "digits167k": (64, 512, 256, 10)}[name]
    return _mlp(widths), _split(x, y, (600, 500, 400, 297))


def methods(model, batches, hessian):
    from backpack import backpack, extend
    from backpack.extensions import DiagGGNExact, DiagHessian

    loss = nn.CrossEntropyLoss()
    N = sum(len(y) for _, y in batches)
    G, H = GGNOperator(model, loss, batches), HessianOperator(model, loss, batches)
    bmodel, bloss = extend(model), extend(nn.CrossEntropyLoss())

    def grad():
        model.zero_grad(set_to_none=True)
        for x, y in batches:
            (loss(model(x), y) * len(y) / N).backward()
        model.zero_grad(set_to_none=True)

    def bp(ext, attr):
        def run():
            bmodel.zero_grad(set_to_none=True)
            acc = None
            for x, y in batches:
                with backpack(ext()):
                    bloss(bmodel(x), y).backward()  # BackPACK sees the loss module's mean only
                d = torch.cat([getattr(p, attr).reshape(-1) for p in bmodel.parameters()]) * (len(y) / N)
                acc = d if acc is None else acc + d
            bmodel.zero_grad(set_to_none=True)
            return acc.double()
        return run

    out = {
        "gradient": grad,
        "ggn_diagonal": lambda: ggn_diagonal(G).estimate,
        "ggn_diagonal (hook route)": lambda: G.problem.reduce_(_hooked(G.problem, G.spec), "ggn"),
        "BackPACK DiagGGNExact": bp(DiagGGNExact, "diag_ggn_exact"),
    }
    if hessian:
        out["hessian_diagonal"] = lambda: hessian_diagonal(H).estimate
        out["BackPACK DiagHessian"] = bp(DiagHessian, "diag_h")
    return out


def measure(name, repeats, hessian):
    model, batches = make_problem(name)
    fns = methods(model, batches, hessian)
    times = {k: [] for k in fns}
    outs = {}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.process_time()
            outs[k] = fn()
            times[k].append(time.process_time() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    D = sum(p.numel() for p in model.parameters())

    def err(a, b):
        return float((outs[a] - outs[b]).abs().max() / outs[b].abs().max())

    errs = {"ggn_diagonal": err("ggn_diagonal", "BackPACK DiagGGNExact"),
            "ggn_diagonal (hook route)": err("ggn_diagonal (hook route)", "BackPACK DiagGGNExact")}
    if hessian:
        errs["hessian_diagonal"] = err("hessian_diagonal", "BackPACK DiagHessian")
    return D, sum(len(y) for _, y in batches), med, times, errs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", nargs="+", default=["mlp3k", "digits85k", "digits167k"])
    ap.add_argument("--hessian-models", nargs="*", default=["mlp3k", "digits85k"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"CPU time (time.process_time), 1 torch thread (machine shared); median of {args.repeats} interleaved "
          "rounds; x gradient = median time / median gradient time")
    for name in args.models:
        D, N, med, times, errs = measure(name, args.repeats, name in args.hessian_models)
        tg = med["gradient"]
        print(f"\n{name}: D = {D}, N = {N} in 4 batches; gradient = {tg * 1e3:.2f} ms")
        print(f"{'method':28s} {'x gradient':>10s} {'ms':>9s} {'min-max ms':>15s} {'rel. err':>9s}")
        for k, v in med.items():
            e = f"{errs[k]:9.1e}" if k in errs else ""
            print(f"{k:28s} {v / tg:10.2f} {v * 1e3:9.2f} {min(times[k]) * 1e3:7.1f}-{max(times[k]) * 1e3:<7.1f} {e}")
        line = (f"ggn_diagonal / DiagGGNExact = {med['ggn_diagonal'] / med['BackPACK DiagGGNExact']:.2f}, "
                f"hook route / DiagGGNExact = {med['ggn_diagonal (hook route)'] / med['BackPACK DiagGGNExact']:.2f}")
        if "hessian_diagonal" in med:
            line += f", hessian_diagonal / DiagHessian = {med['hessian_diagonal'] / med['BackPACK DiagHessian']:.2f}"
        print(line + " (targets <= 1.0)")


if __name__ == "__main__":
    main()
