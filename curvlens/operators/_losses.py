"""Closed-form output-space Hessians of the losses the Gauss-Newton and Fisher operators support.

For a batch loss ``L(f, y)`` of model outputs ``f``, the generalized Gauss-Newton matrix is
``J^T (d^2 L / d f^2) J`` (Schraudolph 2002; Martens 2020, "New insights and perspectives on
the natural gradient method"). For the losses here ``d^2 L / d f^2`` is block diagonal, positive
semi-definite and independent of the targets (cross-entropy, BCE-with-logits, MSE), so the
GGN is PSD and equals the Fisher of the matching likelihood. Each spec also samples targets
from the model's predictive distribution, for the Monte-Carlo Fisher.

Conventions (all follow PyTorch's own definitions of the losses):
- ``cross_entropy``: logits ``(N, C)`` or ``(N, C, d1, ...)``; class-index or probability targets.
- ``nll``: the model outputs log-probabilities (``log_softmax``); the Hessian is taken as for
  cross-entropy with those log-probabilities as logits, which is exact because
  ``softmax(log_softmax(z)) = softmax(z)``. (NLL itself is linear in its input, so its literal
  output Hessian is zero and useless.)
- ``mse``: ``mean((f - y)^2)`` over all elements (or the sum).
- ``bce_with_logits``: logits; ``bce``: probabilities in (0, 1) (Hessian depends on targets
  and is positive for targets in [0, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED = ("cross_entropy", "nll", "mse", "bce_with_logits", "bce")

_BY_CLASS = {
    nn.CrossEntropyLoss: "cross_entropy",
    nn.NLLLoss: "nll",
    nn.MSELoss: "mse",
    nn.BCEWithLogitsLoss: "bce_with_logits",
    nn.BCELoss: "bce",
}
_BY_FUNCTION = {
    F.cross_entropy: "cross_entropy",
    F.nll_loss: "nll",
    F.mse_loss: "mse",
    F.binary_cross_entropy_with_logits: "bce_with_logits",
    F.binary_cross_entropy: "bce",
}
_BY_NAME = {"cross_entropy": "cross_entropy", "crossentropy": "cross_entropy", "ce": "cross_entropy",
            "nll": "nll", "mse": "mse", "bce_with_logits": "bce_with_logits", "bce": "bce"}


@dataclass(frozen=True)
class LossSpec:
    """A supported loss: its kind, reduction and options relevant to its Hessian."""

    kind: str
    reduction: str = "mean"
    ignore_index: int = -100

    # -------------------------------------------------------------- the loss itself
    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.kind == "cross_entropy":
            return F.cross_entropy(out, y, reduction=self.reduction, ignore_index=self.ignore_index)
        if self.kind == "nll":
            return F.nll_loss(out, y, reduction=self.reduction, ignore_index=self.ignore_index)
        if self.kind == "mse":
            return F.mse_loss(out, y, reduction=self.reduction)
        if self.kind == "bce_with_logits":
            return F.binary_cross_entropy_with_logits(out, y, reduction=self.reduction)
        return F.binary_cross_entropy(out, y, reduction=self.reduction)

    # -------------------------------------------------------------- helpers
    def _classwise(self) -> bool:
        return self.kind in ("cross_entropy", "nll")

    def _mask(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """Positions that count (class-index targets may be ``ignore_index``), shaped like out
        without its class dimension; None when every position counts."""
        if self._classwise() and not y.is_floating_point():
            m = y != self.ignore_index
            return None if bool(m.all()) else m
        return None

    def scale(self, out: torch.Tensor, y: torch.Tensor) -> float:
        """The reduction factor: 1 for sum, 1 / (number of terms averaged) for mean."""
        if self.reduction == "sum":
            return 1.0
        if self._classwise():
            mask = self._mask(out, y)
            n = int(mask.sum()) if mask is not None else out.numel() // out.shape[1]
        else:
            n = out.numel()
        return 1.0 / max(n, 1)

    def probs(self, out: torch.Tensor) -> torch.Tensor:
        if self.kind == "cross_entropy":
            return torch.softmax(out, dim=1)
        if self.kind == "nll":
            return out.exp()
        if self.kind == "bce_with_logits":
            return torch.sigmoid(out)
        return out

    # -------------------------------------------------------------- output-space Hessian
    def hessian_vp(self, out: torch.Tensor, y: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """``(d^2 L / d f^2) W`` for a batch of directions ``W`` shaped ``(k, *out.shape)``."""
        out = out.detach()
        s = self.scale(out, y)
        if self._classwise():
            p = self.probs(out).unsqueeze(0)
            HW = p * W - p * (p * W).sum(dim=2, keepdim=True)
            mask = self._mask(out, y)
            if mask is not None:
                HW = HW * mask.unsqueeze(0).unsqueeze(2).to(HW.dtype)
            return s * HW
        if self.kind == "mse":
            return (2.0 * s) * W
        if self.kind == "bce_with_logits":
            p = self.probs(out)
            return s * (p * (1 - p)).unsqueeze(0) * W
        p, t = out, y.to(out.dtype)
        return s * (t / p**2 + (1 - t) / (1 - p) ** 2).unsqueeze(0) * W

    # -------------------------------------------------------------- Monte-Carlo Fisher
    def sampled_gradients(self, out: torch.Tensor, y: torch.Tensor, num_samples: int,
                          generator: torch.Generator) -> torch.Tensor:
        """Gradients ``g = d e / d f`` of the per-term negative log-likelihood ``e`` at targets
        sampled from the model's predictive distribution, shaped ``(S, *out.shape)``.

        ``E[g g^T] = d^2 e / d f^2`` per term (the Fisher identity), so
        ``scale * sum_terms J^T g g^T J`` is an unbiased estimate of the GGN.
        """
        out = out.detach()
        gdev = generator.device
        if self._classwise():
            p = self.probs(out)
            C = p.shape[1]
            flat = p.movedim(1, -1).reshape(-1, C)
            idx = torch.multinomial(flat.to(gdev), num_samples, replacement=True, generator=generator)
            onehot = F.one_hot(idx.T.to(out.device), C).to(out.dtype)  # (S, positions, C)
            onehot = onehot.reshape(num_samples, *p.movedim(1, -1).shape).movedim(-1, 2)
            g = p.unsqueeze(0) - onehot
            mask = self._mask(out, y)
            if mask is not None:
                g = g * mask.unsqueeze(0).unsqueeze(2).to(g.dtype)
            return g
        if self.kind == "mse":
            # e = (f - y)^2 is the Gaussian NLL with variance 1/2: sample y ~ N(f, 1/2)
            eps = torch.randn((num_samples, *out.shape), generator=generator, dtype=out.dtype, device=gdev)
            return -2.0 * (0.5**0.5) * eps.to(out.device)
        p = self.probs(out)
        u = torch.rand((num_samples, *out.shape), generator=generator, dtype=out.dtype, device=gdev).to(out.device)
        ys = (u < p.unsqueeze(0)).to(out.dtype)
        if self.kind == "bce_with_logits":
            return p.unsqueeze(0) - ys
        return (p - ys) / (p * (1 - p))


def identify_loss(loss_fn: Any, reduction: str, *, purpose: str) -> LossSpec:
    """Map a criterion (module, function or name) to a :class:`LossSpec` or raise a clear error."""
    kind = None
    if isinstance(loss_fn, nn.Module):
        kind = _BY_CLASS.get(type(loss_fn))
        if kind is not None:
            if getattr(loss_fn, "weight", None) is not None or getattr(loss_fn, "pos_weight", None) is not None:
                raise ValueError(
                    f"loss_fn: {type(loss_fn).__name__} with class weights is not supported by {purpose}; "
                    "its output Hessian depends on the targets. Use an unweighted loss or HessianOperator"
                )
            if kind == "cross_entropy" and getattr(loss_fn, "label_smoothing", 0.0):
                pass  # label smoothing does not change d^2 L / d f^2
            return LossSpec(kind, reduction, int(getattr(loss_fn, "ignore_index", -100)))
    elif isinstance(loss_fn, str):
        kind = _BY_NAME.get(loss_fn.lower())
    else:
        kind = _BY_FUNCTION.get(loss_fn)
    if kind is None:
        name = loss_fn if isinstance(loss_fn, str) else getattr(loss_fn, "__name__", type(loss_fn).__name__)
        raise ValueError(
            f"loss_fn: {purpose} supports {', '.join(SUPPORTED)} (as nn modules, torch.nn.functional "
            f"functions or names), got {name!r}; use HessianOperator for other losses"
        )
    return LossSpec(kind, reduction)
