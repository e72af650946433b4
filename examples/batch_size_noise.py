"""How many samples do I need for a stable top eigenvalue? The batch-size noise study.

    python examples/batch_size_noise.py

For a ladder of batch sizes, curvlens draws independent seeded minibatches, measures the top
eigenvalue, the trace and the curvature along the full-data top eigenvector on each, fits
``variance ~ a + b / B`` and reports the batch size at which each quantity's relative standard
error falls below 10%: below it, curvature estimates at that batch size are too noisy for
K-FAC or Newton-CG. The gradient noise scale (McCandlish et al. 2018) is reported beside it.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import curvlens


def main(num_samples: int = 4096, hidden: int = 32, seed: int = 0, budget: int = 800) -> dict:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_samples, 16, generator=g)
    w = torch.randn(16, 4, generator=g)
    y = (x @ w + 0.5 * torch.randn(num_samples, 4, generator=g)).argmax(dim=1)  # noisy labels
    model = nn.Sequential(nn.Linear(16, hidden), nn.Tanh(), nn.Linear(hidden, 4))

    res = curvlens.analyze(model, nn.CrossEntropyLoss(), (x, y), which=["noise", "gradient_noise"],
                           budget=budget, generator=seed)
    noise, gns = res.noise, res.gradient_noise
    print(f"{'batch':>7} " + " ".join(f"{q:>14}" for q in noise.quantities) + "   (relative std. error)")
    for j, b in enumerate(noise.batch_sizes.tolist()):
        print(f"{b:>7} " + " ".join(f"{float(noise.rstderr[i, j]):>14.3f}" for i in range(len(noise.quantities))))
    for q, c in zip(noise.quantities, noise.critical_batch.tolist()):
        print(f"critical batch size for {q:<12} ~ {c:,.0f} samples (relative error {noise.target_rstderr:.0%})")
    if gns is not None:
        print(f"gradient noise scale B_simple    ~ {gns.b_simple:,.0f} samples")
    return {"analysis": res}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-samples", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    main(num_samples=a.num_samples, seed=a.seed)
