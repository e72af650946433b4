"""Cost of the default ``analyze`` on an MLP (~1M parameters), a small CNN and a transformer block.

Prints one row per model: parameters, samples, wall time and matvecs of the full default
analysis, the time of one gradient over the same data ("one epoch"), and the analysis cost as a
multiple of it. Target: the 1M-parameter MLP on 2,000 samples in under 2 minutes on 2 CPU cores.

Usage: ``python benchmarks/analyze_cost.py [--samples 2000] [--models mlp,cnn,transformer] [--budget N]``
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from torch import nn

from curvlens.diagnostics import analyze


class _Block(nn.Module):
    """Token embedding, one transformer encoder layer (no dropout), mean pool, linear head."""

    def __init__(self, vocab=64, d=64, seq=16, classes=10):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(seq, d))
        self.layer = nn.TransformerEncoderLayer(d, 4, 128, dropout=0.0, batch_first=True)
        self.head = nn.Linear(d, classes)

    def forward(self, tokens):
        return self.head(self.layer(self.emb(tokens) + self.pos).mean(1))


def problem(name: str, n: int, g: torch.Generator):
    if name == "mlp":
        model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 256), nn.ReLU(), nn.Linear(256, 10))
        x = torch.randn(n, 784, generator=g)
    elif name == "cnn":
        model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1),
                              nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 4 * 4, 10))
        x = torch.randn(n, 3, 16, 16, generator=g)
    elif name == "transformer":
        model = _Block()
        x = torch.randint(0, 64, (n, 16), generator=g)
    else:
        raise SystemExit(f"--models: unknown model {name!r}; use mlp, cnn, transformer")
    y = torch.randint(0, 10, (n,), generator=g)
    return model, x, y


def epoch_gradient_seconds(model, loss_fn, x, y, repeats=3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        loss = loss_fn(model(x), y)
        torch.autograd.grad(loss, [p for p in model.parameters()])
        best = min(best, time.perf_counter() - t0)
    return best


def progress(name: str, t0: float):
    def cb(stage: str, done: int, total: int) -> None:
        if done == total == 1:
            print(f"  {name}: {stage} done at {time.perf_counter() - t0:.1f}s", flush=True)
    return cb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--models", default="mlp,cnn,transformer")
    ap.add_argument("--budget", type=int, default=None, help="matvecs (default: analyze's default)")
    ap.add_argument("--verbose", action="store_true", help="print each stage's end time")
    args = ap.parse_args()
    rows = []
    for name in args.models.split(","):
        g = torch.Generator().manual_seed(0)
        with torch.random.fork_rng():
            torch.manual_seed(0)  # initial weights only; analyze itself uses its own generator
            model, x, y = problem(name, args.samples, g)
        loss_fn = nn.CrossEntropyLoss()
        t_grad = epoch_gradient_seconds(model, loss_fn, x, y)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = analyze(model, loss_fn, (x, y), budget=args.budget, lr=0.1, momentum=0.9, generator=0,
                          callback=progress(name, t0) if args.verbose else None)
        wall = time.perf_counter() - t0
        s = res.summary()
        stages = {k: getattr(res, k) for k in ("top", "trace", "bottom", "density", "per_layer", "noise",
                                                 "gradient_noise")}
        print(f"{name}: " + ", ".join(f"{k} {v.info.wall_time:.1f}s/{v.info.matvecs}mv" for k, v in stages.items()
                                      if v is not None), flush=True)
        rows.append((name, s["num_params"], s["num_samples"], wall, s["matvecs"], t_grad, wall / t_grad,
                     s["hvp_cost"], s["lambda_max"], res.gradient_noise.method if res.gradient_noise else "-"))
    head = ("model", "params", "N", "analyze s", "matvecs", "epoch grad s", "x epoch grad", "hvp/grad", "lambda_max",
            "grad noise")
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for r in rows:
        print(f"{r[0]} | {r[1]:,} | {r[2]} | {r[3]:.1f} | {r[4]} | {r[5]:.3f} | {r[6]:.0f} | "
              f"{(r[7] or float('nan')):.2f} | {r[8]:.4g} | {r[9]}")


if __name__ == "__main__":
    main()
