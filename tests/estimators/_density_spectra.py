"""Dense test matrices with known spectra for the spectral density tests (engineer C)."""

from __future__ import annotations

import numpy as np
import torch

from curvlens.operators.dense import DenseOperator


def op_with_spectrum(eigenvalues, seed: int = 0, dtype=torch.float64) -> DenseOperator:
    """``Q diag(eigenvalues) Q^T`` with a random orthogonal ``Q`` (seeded, never global RNG)."""
    ev = torch.as_tensor(np.asarray(eigenvalues), dtype=torch.float64)
    D = ev.numel()
    g = torch.Generator().manual_seed(1000 + seed)
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    A = Q @ torch.diag(ev) @ Q.T
    return DenseOperator(((A + A.T) / 2).to(dtype))


def spectra(D: int = 48) -> dict[str, np.ndarray]:
    """Indefinite with outliers, clustered, degenerate, rank-deficient (many exact zeros)."""
    rng = np.random.default_rng(7)
    n3 = D // 3
    return {
        "indefinite": np.concatenate([np.linspace(-1.0, 3.0, D - 3), [10.0, 15.0, 25.0]]),
        "clustered": np.concatenate(
            [rng.normal(0.0, 0.01, n3), rng.normal(1.0, 0.01, n3), rng.normal(5.0, 0.01, D - 2 * n3)]
        ),
        "degenerate": np.repeat([-2.0, 1.0, 4.0], [n3, n3, D - 2 * n3]),
        "rank_deficient": np.concatenate([np.zeros(D - D // 4), np.linspace(0.5, 8.0, D // 4)]),
    }
