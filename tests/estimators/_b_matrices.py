"""Dense test matrices with known spectra for the trace/diagonal/norm estimator tests."""

from __future__ import annotations

import torch

from curvlens import Block, DenseOperator


def rotation(dim: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    return Q


def with_spectrum(eigs, seed: int = 0) -> torch.Tensor:
    eigs = torch.as_tensor(eigs, dtype=torch.float64)
    Q = rotation(len(eigs), seed)
    A = (Q * eigs) @ Q.T
    return (A + A.T) / 2


BLOCKS = (Block("layer0", 0, 7), Block("layer1", 7, 16), Block("layer2", 16, 24))
D = 24


def psd_decaying() -> torch.Tensor:
    return with_spectrum([0.6**i for i in range(D)], seed=1)


def indefinite() -> torch.Tensor:
    return with_spectrum([(-1) ** i * (1.0 + 3.0 * 0.7**i) for i in range(D)], seed=2)


def diag_dominant() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    E = 0.05 * torch.randn(D, D, generator=g, dtype=torch.float64)
    return torch.diag(torch.linspace(1.0, 5.0, D, dtype=torch.float64)) + (E + E.T) / 2


def low_rank(rank: int = 4) -> torch.Tensor:
    return with_spectrum([5.0, -3.0, 2.0, 0.5, -1.5, 1.0][:rank] + [0.0] * (D - rank), seed=4)


MATRICES = {"psd_decaying": psd_decaying, "indefinite": indefinite, "diag_dominant": diag_dominant}


def op_of(A: torch.Tensor) -> DenseOperator:
    return DenseOperator(A, blocks=BLOCKS)


def block_traces(A: torch.Tensor) -> torch.Tensor:
    return torch.stack([A[b.slice, b.slice].diagonal().sum() for b in BLOCKS])
