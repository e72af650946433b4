"""Which output gradients feed the ``G`` factors: empirical, Monte-Carlo or exact (type-2).

For a loss ``L = s * sum_terms e_t`` the curvature in output space is ``s * d^2 e / d f^2``.
- ``"type2"``: backpropagate the columns of an exact square root ``S`` of ``d^2 e / d f^2``
  (``S S^T = d^2 e / d f^2``) and weight their outer products by ``s``: the K-FAC of the GGN.
- ``"mc"``: backpropagate ``d e / d f`` at targets sampled from the model's predictive
  distribution (its expected outer product is ``d^2 e / d f^2``), weight ``s``: the K-FAC of the
  true Fisher, one extra backward per step.
- ``"empirical"``: the gradients of ``L`` itself from the user's backward, weight ``1 / s``.
"""

from __future__ import annotations

from typing import Any

import torch

from curvlens.optim.kfac._losses import LossSpec, identify_loss

__all__ = ["FISHER_KINDS", "loss_spec", "loss_scale", "output_directions"]

FISHER_KINDS = ("mc", "type2", "empirical")


def loss_spec(loss_fn: Any, fisher: str) -> LossSpec | None:
    """The loss table entry of ``loss_fn`` (None only for the empirical Fisher without a loss)."""
    if loss_fn is None:
        if fisher != "empirical":
            raise ValueError(f"loss_fn: fisher={fisher!r} needs the loss to know the model's predictive "
                             "distribution, got None; pass loss_fn=nn.CrossEntropyLoss() (or use "
                             "fisher='empirical')")
        return None
    red = getattr(loss_fn, "reduction", "mean") if isinstance(loss_fn, torch.nn.Module) else "mean"
    if red not in ("mean", "sum"):
        raise ValueError(f"loss_fn: expected reduction 'mean' or 'sum', got {red!r}; K-FAC needs a scalar loss")
    spec = identify_loss(loss_fn, red, purpose="K-FAC")
    if fisher == "type2" and spec.kind in ("bce", "bce_probs"):
        raise ValueError("fisher: 'type2' needs an output Hessian independent of the targets, which "
                         "binary_cross_entropy on probabilities lacks, got fisher='type2'; use fisher='mc' "
                         "or BCEWithLogitsLoss")
    return spec


def loss_scale(spec: LossSpec | None, out: torch.Tensor) -> float:
    """``s``: 1 for a summed loss, ``1 / #terms`` for a mean (``#terms`` = samples times positions
    for class losses, elements otherwise; the batch size when no loss is given)."""
    if spec is None:
        return 1.0 / max(out.shape[0], 1)
    if spec.reduction == "sum":
        return 1.0
    terms = out.numel() // out.shape[1] if spec.kind in ("cross_entropy", "nll") else out.numel()
    return 1.0 / max(terms, 1)


def output_directions(spec: LossSpec, out: torch.Tensor, fisher: str,
                      generator: torch.Generator) -> list[torch.Tensor]:
    """Output-space vectors to backpropagate for the Fisher pass (``(S, *out.shape)`` stacked
    as a list); their layer-output gradients' outer products, weighted by ``s``, give ``G``."""
    out = out.detach()
    if fisher == "mc":
        return [spec.sampled_gradients(out, out, 1, generator)[0]]
    if spec.kind in ("cross_entropy", "nll"):
        if out.dim() != 2:
            raise ValueError(f"fisher: 'type2' supports (N, C) logits, got outputs of shape {tuple(out.shape)}; "
                             "use fisher='mc'")
        p = torch.softmax(out, dim=1) if spec.kind == "cross_entropy" else out.exp()
        eye = torch.eye(p.shape[1], dtype=p.dtype, device=p.device)
        # column c of S = diag(sqrt p) - p sqrt(p)^T is sqrt(p_c) (e_c - p)
        return [p[:, c:c + 1].sqrt() * (eye[c] - p) for c in range(p.shape[1])]
    if spec.kind == "mse":
        h = torch.full_like(out, 2.0)
    else:  # bce_with_logits
        q = torch.sigmoid(out)
        h = q * (1 - q)
    root = h.sqrt().reshape(out.shape[0], -1)
    cols = []
    for k in range(root.shape[1]):
        d = torch.zeros_like(root)
        d[:, k] = root[:, k]
        cols.append(d.reshape(out.shape))
    return cols

