"""Exact GGN diagonal: curvlens.ggn_diagonal vs exact_diagonal (D products) vs BackPACK DiagGGNExact.

CPU time (time.process_time) with torch.set_num_threads(1) (the machine is shared), as multiples
of one full-data gradient measured in the same process; best of ``--repeats``. Model: a
3.5k-parameter tanh MLP (32-64-16-10... see make_model) on 512 samples in 4 uneven batches.

Run: .venv/bin/python benchmarks/ggn_diagonal_cost.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from curvlens.estimators import exact_diagonal
from curvlens.estimators.ggn_diagonal import ggn_diagonal
from curvlens.operators import GGNOperator


def make_problem():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10))
    sizes = (200, 150, 100, 62)
    batches = [(torch.randn(n, 32, generator=g), torch.randint(0, 10, (n,), generator=g)) for n in sizes]
    return model, nn.CrossEntropyLoss(), batches


def cpu(fn, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t)
    return best, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, loss, batches = make_problem()
    D = sum(p.numel() for p in model.parameters())
    N = sum(len(y) for _, y in batches)

    def grad():
        model.zero_grad(set_to_none=True)
        for x, y in batches:
            (loss(model(x), y) * len(y) / N).backward()
        model.zero_grad(set_to_none=True)

    tg, _ = cpu(grad, args.repeats)
    op = GGNOperator(model, loss, batches)
    t_ours, ours = cpu(lambda: ggn_diagonal(op), args.repeats)
    t_exact, ref = cpu(lambda: exact_diagonal(op, chunk_size=256), 1)
    rows = [("curvlens ggn_diagonal", t_ours, float((ours.estimate - ref.estimate).abs().max()))]
    rows.append((f"curvlens exact_diagonal ({D} products)", t_exact, 0.0))
    try:
        from backpack import backpack, extend
        from backpack.extensions import DiagGGNExact

        bmodel, bloss = extend(model), extend(nn.CrossEntropyLoss())

        def bp():
            bmodel.zero_grad(set_to_none=True)
            acc = None
            for x, y in batches:
                with backpack(DiagGGNExact()):
                    bloss(bmodel(x), y).backward()  # BackPACK sees the loss module's mean only
                d = torch.cat([p.diag_ggn_exact.reshape(-1) for p in bmodel.parameters()]) * (len(y) / N)
                acc = d if acc is None else acc + d
            bmodel.zero_grad(set_to_none=True)
            return acc

        t_bp, d_bp = cpu(bp, args.repeats)
        rows.append(("BackPACK DiagGGNExact", t_bp, float((d_bp.double() - ref.estimate).abs().max())))
    except Exception as e:  # reported, never hidden
        rows.append((f"BackPACK failed: {type(e).__name__}: {e}", float("nan"), float("nan")))
    print(f"D = {D}, N = {N} in {len(batches)} batches; CPU time, 1 torch thread (machine shared); "
          f"gradient = {tg * 1e3:.2f} ms")
    print(f"{'method':45s} {'x gradient':>11s} {'max |err|':>10s}")
    for name, t, err in rows:
        print(f"{name:45s} {t / tg:11.2f} {err:10.2e}")
    if len(rows) == 3 and rows[2][1] == rows[2][1]:
        print(f"ggn_diagonal / BackPACK = {t_ours / rows[2][1]:.2f} (target <= 1.0)")


if __name__ == "__main__":
    main()
