"""Spectral density of a Hessian (stochastic Lanczos quadrature), plotted on a log scale.

    python examples/spectral_density.py --out density.png

The density of a trained network's Hessian is a bulk near zero plus a few outliers; the
negative part says how far from a minimum the model sits. The plot marks the certified top
and bottom eigenvalues.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import curvlens


def main(out: str = "density.png", num_samples: int = 1000, steps: int = 200, seed: int = 0) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_samples, 10, generator=g)
    y = (x @ torch.randn(10, 4, generator=g)).argmax(dim=1)
    model = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(steps):  # a little training, so the spectrum looks like a real one
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    H = curvlens.HessianOperator(model, nn.CrossEntropyLoss(), (x, y))
    dens = curvlens.spectral_density(H, num_probes=8, num_steps=60, generator=seed)
    ext = curvlens.extreme_eigenvalues(H, generator=seed)

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.semilogy(dens.grid.numpy(), dens.density.clamp_min(1e-12).numpy(), lw=1.2)
    for lam, c in ((ext.lambda_max, "tab:red"), (ext.lambda_min, "tab:purple")):
        ax.axvline(lam, color=c, ls="--", lw=1, label=f"{lam:.3g}")
    ax.set_ylim(1e-6, None)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    ax.set_title(f"Hessian spectral density, {H.dim} parameters")
    ax.legend(title="extreme eigenvalues")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    neg = dens.negative_mass()
    print(f"saved {out}; lambda_max {ext.lambda_max:.4g}, lambda_min {ext.lambda_min:.4g}, "
          f"negative mass {float(neg):.3g}")
    return {"density": dens, "extreme": ext, "out": out}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="density.png")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    main(out=a.out, seed=a.seed)
