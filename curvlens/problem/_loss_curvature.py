"""Closed-form output Hessians and target samplers of the losses in :mod:`curvlens.problem.losses`.

Each Hessian function takes the predictive probabilities ``p`` of the (detached) outputs, the
targets and directions ``W`` shaped ``(k, *outputs.shape)``, and returns ``(d^2 e / d f^2) W``
per term ``e`` of the loss, before the reduction factor. Each sampler draws targets from the
model's predictive distribution and returns the gradients ``g = d e / d f`` at them, shaped
``(S, *outputs.shape)``, so that ``E[g g^T] = d^2 e / d f^2`` (the Fisher identity; Martens
2020). Random draws use only the given generator, on its own device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def identity(out: torch.Tensor) -> torch.Tensor:
    return out


def softmax_hessian(p: torch.Tensor, y: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``(diag(p) - p p^T) W`` along the class dimension (dimension 2 of ``W``)."""
    p = p.unsqueeze(0)
    return p * W - p * (p * W).sum(dim=2, keepdim=True)


def mse_hessian(p: torch.Tensor, y: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``2 W``: each term ``(f - y)^2`` has second derivative 2."""
    return 2.0 * W


def bernoulli_hessian(p: torch.Tensor, y: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``p (1 - p) W`` for binary cross-entropy on logits, ``p = sigmoid(f)``."""
    return (p * (1 - p)).unsqueeze(0) * W


def bernoulli_probs_hessian(p: torch.Tensor, y: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``(t / p^2 + (1 - t) / (1 - p)^2) W`` for binary cross-entropy on probabilities ``p = f``."""
    t = y.to(p.dtype)
    return (t / p**2 + (1 - t) / (1 - p) ** 2).unsqueeze(0) * W


def sample_categorical(p: torch.Tensor, num_samples: int, generator: torch.Generator) -> torch.Tensor:
    """``p - onehot(c)`` with classes ``c ~ p`` at every position (classes along dimension 1)."""
    C = p.shape[1]
    last = p.movedim(1, -1)
    idx = torch.multinomial(last.reshape(-1, C).to(generator.device), num_samples, replacement=True,
                            generator=generator)
    onehot = F.one_hot(idx.T.to(p.device), C).to(p.dtype)  # (S, positions, C)
    onehot = onehot.reshape(num_samples, *last.shape).movedim(-1, 2)
    return p.unsqueeze(0) - onehot


def sample_gaussian(f: torch.Tensor, num_samples: int, generator: torch.Generator) -> torch.Tensor:
    """``(f - y)^2`` is the Gaussian negative log-likelihood with variance 1/2: ``y ~ N(f, 1/2)``."""
    eps = torch.randn((num_samples, *f.shape), generator=generator, dtype=f.dtype, device=generator.device)
    return -2.0 * (0.5**0.5) * eps.to(f.device)


def _bernoulli_draws(p: torch.Tensor, num_samples: int, generator: torch.Generator) -> torch.Tensor:
    u = torch.rand((num_samples, *p.shape), generator=generator, dtype=p.dtype, device=generator.device)
    return (u.to(p.device) < p.unsqueeze(0)).to(p.dtype)


def sample_bernoulli(p: torch.Tensor, num_samples: int, generator: torch.Generator) -> torch.Tensor:
    """``p - t`` with ``t ~ Bernoulli(p)`` (gradient with respect to the logit)."""
    return p.unsqueeze(0) - _bernoulli_draws(p, num_samples, generator)


def sample_bernoulli_probs(p: torch.Tensor, num_samples: int, generator: torch.Generator) -> torch.Tensor:
    """``(p - t) / (p (1 - p))`` with ``t ~ Bernoulli(p)`` (gradient with respect to ``p``)."""
    return (p - _bernoulli_draws(p, num_samples, generator)) / (p * (1 - p))
