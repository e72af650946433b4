"""K-FAC on a ``torch.distributed`` process group: one all-reduce per step.

Each rank runs the forward and backward of its own shard. Before the factors are updated,
:class:`GroupSync` flattens into ONE buffer everything the ranks must agree on:

* every block's statistics of this step: the input factor ``A`` as a sum over rows with its
  row count (summed over ranks, so ``A = sum_rows a a^T / #rows`` over the union of the
  shards), and the output-gradient factors ``G`` (and a normalization block's ``F``), which are
  ``s * sum`` with ``s = 1 / #terms`` of the rank's own batch: they are averaged with weights
  ``#terms`` of each rank, which gives ``(1 / #terms of the union) * sum`` over the union;
* the gradients of all trainable parameters, averaged with the same weights (skipped for a
  ``DistributedDataParallel`` model, whose backward has already averaged them);
* the loss of the step (for the :class:`~curvlens.optim.kfac.KFAC` optimizer).

A loss with ``reduction="sum"`` sums instead of averaging. One all-reduce, then the buffer is
unflattened: every rank holds the same bits, so the eigendecompositions, the preconditioned
gradients, the KL clip and the damping are the same on every rank. For the empirical and the
type-2 Fisher this equals one process on the union of the shards; ``fisher="mc"`` samples
targets for the local batch from a per-rank stream (:func:`rank_stream`), so its factors are
an average over the ranks' draws.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from curvlens.distributed.group import all_reduce_sum, rank_and_size, resolve_group, unwrap_ddp
from curvlens.optim.kfac._weak_hook import WeakHook
from curvlens.optim.kfac.fisher import loss_scale

__all__ = ["GroupSync", "group_sync", "rank_stream", "reduce_loss", "synchronized_backward"]

# odd constant: rank r's stream is seeded base + r * _MIX (mod 2^62)
_MIX = 0x2545F4914F6CDD1D & ((1 << 62) - 1)

#: factor keys that are sums over rows with a row count (the others are ``s``-weighted sums)
COUNTED = ("A",)


def rank_stream(generator: torch.Generator, group) -> torch.Generator:
    """A generator of this rank's own, seeded from one draw of ``generator`` (which advances
    identically on every rank)."""
    base = int(torch.randint(0, 2**62, (1,), generator=generator))
    rank, _ = rank_and_size(group)
    return torch.Generator(device=generator.device).manual_seed((base + rank * _MIX) % (1 << 62))


def group_sync(pre, process_group) -> tuple[object, "GroupSync | None"]:
    """(the resolved group, its :class:`GroupSync`) for a preconditioner; (None, None) alone.

    On a group, ``fisher="mc"`` draws from a per-rank stream (:func:`rank_stream`).
    """
    group = resolve_group(process_group)
    if group is None:
        return None, None
    if pre.ekfac:
        raise ValueError("ekfac: the eigenvalue-corrected moments are not reduced over a process group, got "
                         "ekfac=True with a process_group; pass ekfac=False (K-FAC) or process_group=None")
    if pre.fisher == "mc":
        pre.generator = rank_stream(pre.generator, group)
    return group, GroupSync(pre, group)


def _factor_shape(block, key: str) -> tuple[int, ...]:
    """The shape of a block's factor ``key``, known on every rank (also one without statistics)."""
    m = block.module
    if isinstance(m, nn.Embedding):
        return (m.num_embeddings,) if key == "A" else (m.embedding_dim, m.embedding_dim)
    if hasattr(block, "dense"):  # NormBlock
        width = m.weight.numel() + (m.bias.numel() if getattr(m, "bias", None) is not None else 0)
        return (width, width) if block.dense else (width,)
    if key == "A":
        d_in = m.weight[0].numel() + (1 if m.bias is not None else 0)
        return (d_in, d_in)
    return (m.weight.shape[0], m.weight.shape[0])


class GroupSync:
    """The one all-reduce of a :class:`~curvlens.optim.kfac.KFACPreconditioner`'s step."""

    def __init__(self, pre, group):
        self.pre, self.group = pre, group
        self.reduce_grads = not isinstance(pre.model, nn.parallel.DistributedDataParallel)
        self.params = [p for p in unwrap_ddp(pre.model).parameters() if p.requires_grad]
        self.synced_step: int | None = None
        self.reduced_bytes = 0
        self.terms = 1.0  # 1 / s of the last forward with gradients enabled (0 for an empty batch)
        hook = WeakHook(self, "_on_forward")
        hook.handle = pre.model.register_forward_hook(hook)
        pre._handles.append(hook.handle)

    def _on_forward(self, module, inputs, output) -> None:
        if not torch.is_grad_enabled():
            return
        if isinstance(output, torch.Tensor) and output.dim():
            self.terms = 0.0 if output.shape[0] == 0 else 1.0 / loss_scale(self.pre.spec, output)
        else:
            x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            self.terms = float(max(1, x.shape[0])) if x is not None and x.dim() else 1.0

    def _weight(self) -> tuple[float, bool]:
        """(this rank's weight, whether the ranks' values are averaged with it)."""
        spec = self.pre.spec
        if spec is not None and spec.reduction == "sum":
            return 1.0, False
        return self.terms, True

    def synchronize(self, loss: float | None = None) -> float | None:
        """All-reduce this step's statistics (on an update step), gradients and ``loss``; once
        per step (later calls in the same step return the reduced loss of the first). Returns the
        loss over the union of the shards (NaN when any rank's loss is not finite)."""
        pre = self.pre
        if self.synced_step == pre.steps:
            return self._loss
        ref = self.params[0]
        dt, dev = ref.dtype, ref.device
        w, mean = self._weight()
        updating = pre.steps % pre.update_every == 0
        parts, layout = [], []
        empty = mean and w == 0.0  # an empty local batch: its mean loss is NaN, its weight 0
        finite = loss is not None and (empty or math.isfinite(loss))
        parts.append(torch.tensor([w * loss if finite and not empty else 0.0, w, float(not finite and loss is not None)],
                                  dtype=dt, device=dev))
        if updating:
            for b in pre.blocks.values():
                present = b.has_batch
                parts.append(torch.tensor([float(present), w * float(present)], dtype=dt, device=dev))
                for key in b.factor_keys:
                    shape = _factor_shape(b, key)
                    if present and tuple(b._sums[key].shape) != shape:
                        raise ValueError(f"model: the K-FAC factor {key} of layer {b.name} has shape "
                                         f"{tuple(b._sums[key].shape)}, expected {shape}; the layer is not "
                                         "supported on a process group")
                    val = b._sums[key].to(dt).reshape(-1) if present else torch.zeros(math.prod(shape), dtype=dt,
                                                                                       device=dev)
                    counted = key in COUNTED
                    parts.append(val if counted else val * w)
                    parts.append(torch.tensor([b._counts[key] if present and counted else 0.0], dtype=dt,
                                              device=dev))
                    layout.append((b, key, shape, counted))
        grads = self.params if self.reduce_grads else []
        for p in grads:
            g = p.grad
            parts.append(torch.tensor([float(g is not None), w * float(g is not None)], dtype=dt, device=dev))
            parts.append(torch.zeros(p.numel(), dtype=dt, device=dev) if g is None else g.detach().reshape(-1) * w)
        buf = torch.cat(parts)
        self.reduced_bytes += buf.numel() * buf.element_size()
        all_reduce_sum(buf, self.group, what="K-FAC factors and gradients")
        head, i = buf[:3], 3
        self._loss = None
        if loss is not None:
            total = (float(head[0] / head[1]) if float(head[1]) > 0 else math.nan) if mean else float(head[0])
            self._loss = math.nan if float(head[2]) > 0 else total
        for b in (pre.blocks.values() if updating else ()):
            n_present, w_present = float(buf[i]), float(buf[i + 1])
            i += 2
            sums, counts = {}, {}
            for key in b.factor_keys:
                shape = _factor_shape(b, key)
                k = math.prod(shape)
                val, count = buf[i:i + k].reshape(shape), float(buf[i + k])
                i += k + 1
                counted = key in COUNTED
                sums[key] = val.clone() if counted or not mean else val / w_present if w_present else val.clone()
                counts[key] = count if counted else 0.0
            b.reset_batch()
            if n_present > 0:
                b._sums, b._counts = sums, counts
        for p in grads:
            n_present, w_present = float(buf[i]), float(buf[i + 1])
            i += 2
            val = buf[i:i + p.numel()].reshape(p.shape)
            i += p.numel()
            if n_present > 0:
                new = (val / w_present if mean else val).to(p.dtype)
                if p.grad is None:
                    p.grad = new.clone()
                else:
                    p.grad.copy_(new)
        self.synced_step = pre.steps
        return self._loss

    def discard(self) -> None:
        """Drop this step's statistics on every block (after a non-finite loss)."""
        for b in self.pre.blocks.values():
            b.reset_batch()
        self.pre._outputs, self.pre._pending = [], []


def synchronized_backward(pre, loss: torch.Tensor, value: float) -> float:
    """``loss.backward()`` where the local loss is finite, then the step's one all-reduce;
    returns the loss over the union of the shards (NaN when any rank's is not finite)."""
    if math.isfinite(value):  # (an empty local batch has a NaN mean loss and no backward)
        loss.backward()
    total = pre._sync.synchronize(value)
    if not math.isfinite(total):
        pre._sync.discard()
    return total


def reduce_loss(pre, value: float) -> float:
    """The loss over the union of the shards from each rank's ``value`` (one scalar all-reduce,
    weighted as :class:`GroupSync` weights; NaN when any rank's is not finite)."""
    w, mean = pre._sync._weight()
    ref = pre._sync.params[0]
    empty = mean and w == 0.0
    finite = empty or math.isfinite(value)
    buf = torch.tensor([w * value if finite and not empty else 0.0, w, float(not finite)], dtype=ref.dtype,
                       device=ref.device)
    all_reduce_sum(buf, pre._sync.group, what="K-FAC loss")
    if float(buf[2]) > 0 or (mean and float(buf[1]) == 0):
        return math.nan
    return float(buf[0] / buf[1]) if mean else float(buf[0])
