"""Kronecker factors of the supported layers, as pure functions of one forward/backward pass.

For a layer ``z = W a`` (a Linear layer, or a convolution seen as a Linear layer on unfolded
patches) the Fisher block of ``W`` is approximated by ``A (x) G`` with
``A = E[a a^T]`` over input rows and ``G = E[g g^T]`` over output-gradient rows (Martens &
Grosse 2015, "Optimizing neural networks with Kronecker-factored approximate curvature";
Grosse & Martens 2016 for convolutions). Weight sharing (the positions of a convolution, the
leading dimensions of a Linear layer's input beyond the batch) follows Eschenhagen et al. 2023,
"Kronecker-factored approximate curvature for modern neural network architectures": *expand*
makes every position one row; *reduce* makes every sample one row, its input the mean of its
positions' inputs and its output gradient the sum of theirs, so the factors cost ``#positions``
times less (both are exact for a Linear layer without shared dimensions). A bias is handled as a
weight on a constant input 1 (homogeneous coordinates), so ``[W, b]`` shares the two factors.

Scale convention (the one of curvlinops' ``KFACLinearOperator``): for a loss
``L = s * sum_terms e_t`` (``s = 1`` for ``reduction="sum"``, ``1 / #terms`` for ``"mean"``),
``A = sum_rows a a^T / #rows`` (expand: ``#rows = N * #positions``; reduce: ``N``) and ``G = (1 / s) sum_rows gL gL^T`` where ``gL`` are the
gradients of ``L`` with respect to the layer's outputs; then ``A (x) G`` equals the GGN of ``L``
exactly for a single Linear layer under MSE. Functions here return *sums*; the caller divides.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["input_rows", "input_gram", "averaged_rows", "output_rows", "embedding_counts", "normalized_input", "norm_sample_grads",
           "gram"]

_CONV = (nn.Conv1d, nn.Conv2d)

#: Input rows with at most this many entries get the bias input as a copied ones column.
PAD_MAX = 1 << 16


def _patches(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Unfolded patches of a batched convolution input, ``(N, C * prod(kernel), positions)``."""
    if isinstance(module, nn.Conv1d):
        x = x.unsqueeze(-2)
        k, d, p, s = (1, module.kernel_size[0]), (1, module.dilation[0]), (0, module.padding[0]), \
            (1, module.stride[0])
    else:
        k, d, p, s = module.kernel_size, module.dilation, module.padding, module.stride
    return F.unfold(x, k, dilation=d, padding=p, stride=s)


def _windows(module: nn.Module, x: torch.Tensor):
    """The kernel offsets' windows of a convolution input: ``(views, C, K)`` with ``views`` the
    ``K = prod(kernel)`` strided views ``(N, H_out, W_out, C)`` of the zero-padded input in
    channels-last layout, one per kernel offset (row-major over the kernel)."""
    if isinstance(module, nn.Conv1d):
        x = x.unsqueeze(-2)
        k, d, p, s = (1, module.kernel_size[0]), (1, module.dilation[0]), (0, module.padding[0]), \
            (1, module.stride[0])
    else:
        k, d, p, s = module.kernel_size, module.dilation, module.padding, module.stride
    xp = F.pad(x, (p[1], p[1], p[0], p[0])).permute(0, 2, 3, 1).contiguous()
    ho = (xp.shape[1] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    wo = (xp.shape[2] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    views = [xp[:, i * d[0]: i * d[0] + (ho - 1) * s[0] + 1: s[0], j * d[1]: j * d[1] + (wo - 1) * s[1] + 1: s[1]]
             for i in range(k[0]) for j in range(k[1])]
    return views, xp.shape[3], k[0] * k[1]


def _channel_major(m: torch.Tensor, c: int, k: int) -> torch.Tensor:
    """A square matrix over ``(offset, channel)`` inputs (plus a trailing bias input) reordered
    to ``(channel, offset)``, the order of ``weight.flatten(1)``."""
    perm = torch.arange(c * k, device=m.device).reshape(k, c).T.reshape(-1)
    if m.shape[0] > c * k:
        perm = torch.cat([perm, perm.new_tensor([c * k])])
    return m.index_select(0, perm).index_select(1, perm)


def _conv_gram(module: nn.Module, x: torch.Tensor, bias: bool) -> tuple[torch.Tensor, int]:
    """``(sum_rows a a^T, #rows)`` of a convolution's patch rows without ``F.unfold``: the rows are
    written once (one concatenation of the offsets' channels-last windows, each a block of ``C``
    columns, and of a column of ones for the bias input), their Gram is one matrix product, and
    the ``(d_in + 1)^2`` result is reordered to channel-major."""
    views, c, k = _windows(module, x.detach())
    n, ho, wo = views[0].shape[:3]
    if bias:
        views = views + [views[0].new_ones(n, ho, wo, 1)]
    rows = torch.cat(views, dim=-1).reshape(n * ho * wo, -1)
    return _channel_major(rows.T @ rows, c, k), rows.shape[0]


def _plain_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Input rows of a Linear or convolution layer without the constant bias input."""
    x = x.detach()
    if isinstance(module, nn.Linear):
        return x.reshape(-1, module.in_features)
    if isinstance(module, _CONV):
        patches = _patches(module, x)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])
    raise TypeError(f"module: expected Linear, Conv1d or Conv2d, got {type(module).__name__}")


def input_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Input rows ``a`` of a Linear or convolution layer, ``(rows, d_in [+ 1])``.

    Convolutions are unfolded into patches (``C_in * prod(kernel)`` per output position,
    in the order of ``weight.flatten(1)``); a trailing 1 is appended when the layer has a bias.

    Example:
        >>> input_rows(nn.Linear(3, 2), torch.ones(4, 3)).shape
        torch.Size([4, 4])
    """
    rows = _plain_rows(module, x)
    if module.bias is not None:
        rows = torch.cat([rows, rows.new_ones(rows.shape[0], 1)], dim=1)
    return rows


def averaged_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """K-FAC-reduce input rows without the bias input: each sample's mean over its positions,
    ``(N, d_in)`` (convolution patches averaged over the output positions; a Linear layer's
    input averaged over its dimensions between the batch and the features).

    Example:
        >>> averaged_rows(nn.Conv1d(1, 1, 2), torch.tensor([[[1., 2., 4.]]])).tolist()
        [[1.5, 3.0]]
    """
    x = x.detach()
    if isinstance(module, nn.Linear):
        if x.dim() <= 2:
            return x.reshape(-1, module.in_features)
        return x.reshape(x.shape[0], -1, module.in_features).mean(1)
    if isinstance(module, _CONV):  # the mean of each offset's window, without unfolding
        views, c, k = _windows(module, x)
        return torch.stack([v.mean((1, 2)) for v in views], 2).reshape(x.shape[0], c * k)
    raise TypeError(f"module: expected Linear, Conv1d or Conv2d, got {type(module).__name__}")


def input_gram(module: nn.Module, x: torch.Tensor, reduce: bool = False) -> tuple[torch.Tensor, int]:
    """``(sum_rows a a^T, #rows)`` for the rows :func:`input_rows` returns (``reduce=True``: the
    rows of :func:`averaged_rows` with the bias input), without forming them.

    The constant bias input is never materialized: the bias row and column of the sum are the
    column sums of the other inputs, and its corner the number of rows (one matrix product of
    ``2 rows d_in^2`` flops and one column sum instead of a copy of the rows with a column of ones).

    Example:
        >>> s, n = input_gram(nn.Linear(3, 2), torch.ones(4, 3))
        >>> s[-1].tolist(), n
        ([4.0, 4.0, 4.0, 4.0], 4)
    """
    if isinstance(module, _CONV) and not reduce:
        return _conv_gram(module, x, module.bias is not None)
    rows = averaged_rows(module, x) if reduce else _plain_rows(module, x)
    n = rows.shape[0]
    if module.bias is not None and rows.numel() <= PAD_MAX:
        # small rows: a copy with the ones column and one product (two operations instead of
        # eight; the per-operation overhead outweighs the copy)
        padded = F.pad(rows, (0, 1), value=1.0)
        return padded.T @ padded, n
    g = rows.T @ rows
    if module.bias is None:
        return g, n
    d = g.shape[0]
    out = g.new_empty(d + 1, d + 1)
    out[:d, :d] = g
    s = rows.sum(0)
    out[:d, d] = s
    out[d, :d] = s
    out[d, d] = n
    return out, n


def output_rows(module: nn.Module, gz: torch.Tensor, reduce: bool = False) -> torch.Tensor:
    """Output-gradient rows ``g`` of a Linear or convolution layer, ``(rows, d_out)``;
    ``reduce=True``: one row per sample, the sum over its positions, ``(N, d_out)``."""
    gz = gz.detach()
    if isinstance(module, _CONV):
        if reduce:
            return gz.flatten(2).sum(2)
        return gz.movedim(1, -1).reshape(-1, gz.shape[1])
    if reduce and gz.dim() > 2:
        return gz.reshape(gz.shape[0], -1, gz.shape[-1]).sum(1)
    return gz.reshape(-1, gz.shape[-1])


def embedding_counts(module: nn.Embedding, idx: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """How often each row of the embedding was looked up: the diagonal of ``sum_rows a a^T``
    for one-hot inputs ``a`` (its off-diagonal entries are exactly zero)."""
    return torch.bincount(idx.reshape(-1), minlength=module.num_embeddings).to(dtype)


def normalized_input(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x_hat`` of a normalization layer, so that its output is ``weight * x_hat + bias``.

    BatchNorm uses the batch statistics in training mode (or without running statistics) and
    the running ones otherwise, exactly as its forward does; nothing is updated.
    """
    x = x.detach()
    if isinstance(module, nn.LayerNorm):
        return F.layer_norm(x, module.normalized_shape, eps=module.eps)
    if isinstance(module, nn.GroupNorm):
        return F.group_norm(x, module.num_groups, eps=module.eps)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        shape = [1, -1] + [1] * (x.dim() - 2)
        if module.training or module.running_mean is None:
            dims = [0] + list(range(2, x.dim()))
            mean = x.mean(dim=dims)
            var = x.var(dim=dims, unbiased=False)
        else:
            mean, var = module.running_mean, module.running_var
        return (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + module.eps)
    raise TypeError(f"module: expected LayerNorm, GroupNorm or BatchNorm, got {type(module).__name__}")


def norm_sample_grads(module: nn.Module, x_hat: torch.Tensor, gz: torch.Tensor) -> torch.Tensor:
    """Per-sample gradients of a normalization layer's ``(weight, bias)``, ``(N, 2 * numel)``.

    Each sample's gradient sums over its positions: ``dweight = sum g * x_hat``,
    ``dbias = sum g``. Cross-sample coupling through BatchNorm's batch statistics is ignored
    (the usual approximation for normalization layers in K-FAC).
    """
    gz = gz.detach()
    n = gz.shape[0]
    if isinstance(module, nn.LayerNorm):
        k = len(module.normalized_shape)
        lead = tuple(range(1, gz.dim() - k))
        gw = (gz * x_hat).sum(dim=lead) if lead else gz * x_hat
        gb = gz.sum(dim=lead) if lead else gz
    else:  # channels in dimension 1
        rest = tuple(range(2, gz.dim()))
        gw = (gz * x_hat).sum(dim=rest) if rest else gz * x_hat
        gb = gz.sum(dim=rest) if rest else gz
    return torch.cat([gw.reshape(n, -1), gb.reshape(n, -1)], dim=1)


def gram(rows: torch.Tensor) -> torch.Tensor:
    """``rows^T rows`` (the sum of outer products of the rows)."""
    return rows.T @ rows
