"""Library quickstart: a curvature operator, its certified top eigenvalues and its trace.

    python examples/quickstart.py            # ~10 s on a laptop CPU

Trains nothing: it builds a small classifier on synthetic data, wraps its loss Hessian as a
matrix-free operator, and asks for the five largest eigenvalues (certified by residuals) and
the trace (with a standard error). Swap ``HessianOperator`` for ``GGNOperator`` to get the
Gauss-Newton matrix instead.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import curvlens


def main(num_samples: int = 2000, hidden: int = 64, k: int = 5, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_samples, 20, generator=g)
    y = (x[:, :5].sum(dim=1) > 0).long() + (x[:, 5] > 1).long()
    model = nn.Sequential(nn.Linear(20, hidden), nn.Tanh(), nn.Linear(hidden, 3))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=256)

    H = curvlens.HessianOperator(model, nn.CrossEntropyLoss(), loader)
    print(f"Hessian of a {H.dim:,}-parameter model over {H.num_samples:,} samples")

    top = curvlens.top_eigenpairs(H, k=k, generator=seed)
    for lam, res, ok in zip(top.eigenvalues.tolist(), top.residuals.tolist(), top.converged.tolist()):
        print(f"  lambda = {lam: .6f}   residual {res:.1e}   {'certified' if ok else 'NOT certified'}")

    tr = curvlens.krylov_trace(H, num_matvecs=100, generator=seed)
    print(f"  trace  = {tr.estimate:.4f} +- {tr.stderr:.4f}  ({tr.info.matvecs} products)")
    print(f"  total products: {H.num_matvecs}")
    return {"operator": H, "eigenvalues": top.eigenvalues, "converged": top.converged,
            "trace": tr.estimate, "trace_stderr": tr.stderr}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-samples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    main(num_samples=a.num_samples, seed=a.seed)
