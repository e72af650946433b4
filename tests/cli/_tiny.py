"""Tiny model, data and loss factories for the CLI tests.

Used by path, the way a user would: ``--model tests/cli/_tiny.py:make``,
``--data tests/cli/_tiny.py:data``, ``--loss tests/cli/_tiny.py:half_mse``. Also importable as
``tests.cli._tiny``. Every random draw uses an explicit ``torch.Generator`` (never the global RNG).
"""

from __future__ import annotations

import torch
from torch import nn

from curvlens.data.demo import demo_model

IN, HIDDEN, OUT = 3, 4, 2
NUM_SAMPLES = 64
#: parameters of :func:`make`: (3*4 + 4) + (4*4 + 4) + (4*2 + 2)
NUM_PARAMS = (IN * HIDDEN + HIDDEN) + (HIDDEN * HIDDEN + HIDDEN) + (HIDDEN * OUT + OUT)


def make(seed: int = 0) -> nn.Module:
    """The tiny tanh MLP 3-4-4-2 in float64 (46 parameters)."""
    return demo_model(IN, OUT, HIDDEN, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def make_wider() -> nn.Module:
    """A different architecture (hidden 5): loading a :func:`make` state_dict into it must fail."""
    return demo_model(IN, OUT, HIDDEN + 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def make_logprobs() -> nn.Module:
    """:func:`make` followed by ``LogSoftmax`` (outputs log-probabilities, for ``--loss nll``)."""
    return nn.Sequential(make(), nn.LogSoftmax(dim=1))


def make_probs() -> nn.Module:
    """:func:`make` followed by ``Sigmoid`` (outputs probabilities, for ``--loss bce_probs``)."""
    return nn.Sequential(make(), nn.Sigmoid())


def make_raises() -> nn.Module:
    raise RuntimeError("tiny factory refuses to build: no such GPU")


def make_not_a_module():
    return 42


class _OnceTanh(torch.autograd.Function):
    """tanh whose backward cannot itself be differentiated (no Hessian-vector products through it)."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (1 - y * y)


class OnceDifferentiableTanh(nn.Module):
    def forward(self, x):
        return _OnceTanh.apply(x)


def make_once_differentiable() -> nn.Module:
    """:func:`make` with first-derivative-only activations: same state_dict keys, no double backward."""
    m = make()
    m[1], m[3] = OnceDifferentiableTanh(), OnceDifferentiableTanh()
    return m


def inputs(n: int = NUM_SAMPLES, seed: int = 1, features: int = IN) -> torch.Tensor:
    return torch.randn(n, features, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def labels(n: int = NUM_SAMPLES, seed: int = 2) -> torch.Tensor:
    return torch.randint(0, OUT, (n,), generator=torch.Generator().manual_seed(seed))


def data():
    """A data factory: ``--data tests/cli/_tiny.py:data`` gives the same samples as the data files."""
    return inputs(), labels()


def half_mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A user loss ``--loss tests/cli/_tiny.py:half_mse``: 0.5 * mean squared error."""
    return 0.5 * ((outputs - targets) ** 2).mean()


class TinyTransformer(nn.Module):
    """Each of the 3 features as a token: embed, one ``nn.TransformerEncoderLayer`` with PyTorch's
    default (fused) attention, mean-pool, classify. float32, where the fused CPU kernel runs."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(1, 4)
        self.encoder = nn.TransformerEncoderLayer(4, 2, dim_feedforward=8, dropout=0.1, batch_first=True)
        self.head = nn.Linear(4, OUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x.unsqueeze(-1))).mean(1))


def make_transformer() -> nn.Module:
    """:class:`TinyTransformer`, initialised from seed 0 without the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return TinyTransformer()
