"""Train a small classifier with Hessian-free Newton-CG (curvlens.optim.NewtonCG).

    python examples/train_newton_cg.py               # ~1 min on one laptop CPU core

A 64-32-10 tanh network on scikit-learn's bundled digits (no download). Each step takes a
mini-batch for the loss and gradient and a quarter of it for Gauss-Newton products; CG is
preconditioned by the empirical-Fisher diagonal, the damping adapts from the reduction ratio,
and ``opt.last_step`` says what each step did.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from curvlens.optim.newton_cg import NewtonCG


def main(steps: int = 30, batch_size: int = 512, hidden: int = 32, seed: int = 0, num_samples: int | None = None) -> dict:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    if num_samples is not None:
        x, y = x[:num_samples], y[:num_samples]
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():  # the model's initialization only
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, 10))
    loss_fn = nn.CrossEntropyLoss()
    opt = NewtonCG(model, loss_fn, curvature="ggn", damping=1e-2, curvature_fraction=0.25, generator=seed)
    losses = []
    for step in range(steps):
        idx = torch.randperm(len(x), generator=g)[:batch_size]
        loss = opt.step((x[idx], y[idx]))  # the loss before the step
        losses.append(float(loss))
        r = opt.last_step
        print(f"step {step:3d}  loss {float(loss):.4f}  CG {r.cg_iterations:3d} ({r.cg_stop_reason})  "
              f"alpha {r.alpha:.2f}  rho {r.rho if r.rho is None else round(r.rho, 2)}  damping {r.damping:.2e}")
    with torch.no_grad():
        out = model(x)
        final, acc = float(loss_fn(out, y)), float((out.argmax(1) == y).float().mean())
    print(f"training loss {final:.4f}, accuracy {acc:.3f}")
    return {"losses": losses, "final_loss": final, "accuracy": acc, "optimizer": opt, "model": model}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=512)
    a = ap.parse_args()
    main(steps=a.steps, batch_size=a.batch_size)
