"""Dense test matrices with known spectra (float64, random orthogonal eigenvectors)."""

from __future__ import annotations

import numpy as np
import torch

from curvlens.operators.dense import DenseOperator


def with_spectrum(eigenvalues, *, seed: int = 0, dtype=torch.float64) -> DenseOperator:
    """``Q diag(eigenvalues) Q^T`` with a seeded random orthogonal ``Q``."""
    ev = np.asarray(eigenvalues, dtype=np.float64)
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(len(ev), len(ev))))
    A = (Q * ev) @ Q.T
    A = 0.5 * (A + A.T)
    return DenseOperator(torch.from_numpy(A).to(dtype), is_psd=bool(ev.min() >= 0))


def hessian_like_spectrum(D: int = 300, seed: int = 0) -> np.ndarray:
    """A trained-network-like spectrum: few top outliers (0.76 ...), a bulk near zero, and a
    small negative end: a continuum down to -0.0355 then five clustered values in [-0.042, -0.036]."""
    rng = np.random.default_rng(seed)
    top = np.array([0.76, 0.52, 0.41, 0.33, 0.27, 0.21, 0.17, 0.14, 0.12, 0.1])
    bottom = np.array([-0.042, -0.0405, -0.039, -0.0375, -0.036])
    neg = -np.linspace(0.0, 0.0355, D // 4)
    bulk = 0.09 * rng.beta(0.5, 6, D - len(top) - len(bottom) - len(neg))
    return np.sort(np.concatenate([top, bottom, neg, bulk]))


def recomputed_residuals(op: DenseOperator, res) -> np.ndarray:
    """True residuals of an EigenResult recomputed independently with the dense matrix."""
    A = op.matrix.double()
    V = res.eigenvectors.double()
    lam = res.eigenvalues.double()
    return torch.linalg.vector_norm(A @ V - V * lam, dim=0).numpy()
