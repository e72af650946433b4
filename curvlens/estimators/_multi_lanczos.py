"""Several independent Lanczos recurrences advanced together (one ``matmat`` per step).

Model operators push ``k`` vectors through one batched backward pass, which costs much less
than ``k`` separate products; SLQ's probes are independent, so their recurrences can share
those passes. Each recurrence is fully re-orthogonalized against its own basis (twice),
exactly as :func:`curvlens.linalg.lanczos.lanczos` does, and stops on its own breakdown.
"""

from __future__ import annotations

import numpy as np
import torch


def multi_lanczos(op, Q0: torch.Tensor, num_steps: int, *, callback=None, done: int = 0, total: int = 0):
    """Run one Lanczos recurrence per column of ``Q0`` (unit columns), sharing ``matmat`` calls.

    Returns:
        A list with, per column, ``(alphas, betas, breakdown)`` (float64 arrays, bool).
    """
    D, B = Q0.shape
    m = int(min(num_steps, D))
    basis = torch.empty(B, m, D, dtype=Q0.dtype, device=Q0.device)  # per probe: (m, D) rows
    eps = float(torch.finfo(Q0.dtype).eps)
    alphas = [[] for _ in range(B)]
    betas = [[] for _ in range(B)]
    broke = [False] * B
    norm_est = np.zeros(B)
    active = torch.arange(B, device=Q0.device)
    q, q_prev, beta_prev = Q0.clone(), torch.zeros_like(Q0), torch.zeros(B, dtype=Q0.dtype, device=Q0.device)
    for j in range(m):
        basis[:, j] = q.T
        idx = active
        w = op.matmat(q[:, idx])
        a = (w * q[:, idx]).sum(0)
        w = w - q[:, idx] * a - q_prev[:, idx] * beta_prev[idx]
        Qj = basis[:, : j + 1] if idx.numel() == B else basis[idx, : j + 1]  # (b, j+1, D)
        wt = w.T.unsqueeze(2)  # (b, D, 1)
        for _ in range(2):  # full re-orthogonalization against each probe's own basis, twice
            wt = wt - torch.bmm(Qj.transpose(1, 2), torch.bmm(Qj, wt))
        w = wt.squeeze(2).T
        bnorm = torch.linalg.vector_norm(w, dim=0)
        done += int(idx.numel())
        if callback is not None:
            callback(done, total)
        keep = []
        a_np, b_np = a.double().cpu().numpy(), bnorm.double().cpu().numpy()
        for t, col in enumerate(idx.tolist()):
            alphas[col].append(float(a_np[t]))
            prev = betas[col][-1] if betas[col] else 0.0
            norm_est[col] = max(norm_est[col], abs(a_np[t]) + b_np[t] + prev)
            if j == m - 1:
                continue
            if not np.isfinite(b_np[t]) or b_np[t] <= 1e3 * eps * max(norm_est[col], 1e-300):
                broke[col] = True
                continue
            betas[col].append(float(b_np[t]))
            keep.append(t)
        if j == m - 1 or not keep:
            break
        kt = torch.tensor(keep, device=Q0.device)
        new_idx = idx[kt]
        q_prev[:, new_idx] = q[:, new_idx]
        q[:, new_idx] = w[:, kt] / bnorm[kt]
        beta_prev[new_idx] = bnorm[kt]
        active = new_idx
    return [(np.asarray(alphas[b]), np.asarray(betas[b]), broke[b]) for b in range(B)]


def ritz_from_tridiagonal(alphas: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ritz values (ascending) and squared first components of ``T``'s eigenvectors."""
    from scipy.linalg import eigh_tridiagonal

    if len(alphas) == 1:
        return alphas.copy(), np.ones(1)
    theta, S = eigh_tridiagonal(alphas, betas)
    return theta, S[0, :] ** 2
