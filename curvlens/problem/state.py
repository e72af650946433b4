"""Leave the user's model exactly as it was: mode, buffers, ``.grad`` and the global RNG."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
_NORM = nn.modules.batchnorm._NormBase  # BatchNorm*d, SyncBatchNorm, InstanceNorm with running stats


def check_mode(model: nn.Module, mode: str, allow_random: bool) -> None:
    """Validate ``mode`` and refuse active dropout (a random operator) unless allowed."""
    if mode not in ("eval", "train"):
        raise ValueError(f"mode: expected 'eval' or 'train', got {mode!r}")
    if mode == "train" and not allow_random:
        active = [n or type(m).__name__ for n, m in model.named_modules() if isinstance(m, _DROPOUT) and m.p > 0]
        if active:
            raise ValueError(
                f"mode='train' with active dropout ({', '.join(active[:3])}) makes every product random, "
                "so the operator is not one fixed matrix. Use mode='eval' (default), set p=0, or pass "
                "allow_random=True to accept a random operator"
            )


@contextlib.contextmanager
def preserved_state(model: nn.Module, mode: str, device: torch.device, *, grads=()) -> Iterator[None]:
    """Run the model in ``mode`` and restore everything afterwards.

    - train/eval flags of every submodule are restored;
    - in train mode, normalization layers use batch statistics but do not update their
      running statistics (``track_running_stats`` is switched off for the forward pass);
    - any other buffer a forward pass changes in place is restored;
    - the ``.grad`` of the tensors in ``grads`` (the selected parameters) is set aside and
      put back, the same tensor objects untouched (a ``loss_fn`` that calls ``backward``
      cannot leak into the user's gradients);
    - the global RNG (CPU and the model's CUDA device) is forked, so dropout or other random
      layers do not advance the user's RNG stream;
    - attention runs with the math kernel of ``scaled_dot_product_attention``, the only one
      whose backward can itself be differentiated (flash and memory-efficient kernels raise
      "derivative ... not implemented" on the second backward).
    """
    flags = [(m, m.training) for m in model.modules()]
    norms = [(m, m.track_running_stats) for m in model.modules() if isinstance(m, _NORM)]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    saved_grads = [(p, p.grad) for p in grads]
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), twice_differentiable_attention():
            for p, _ in saved_grads:  # set aside: a backward inside cannot accumulate into them
                p.grad = None
            for m, _ in flags:  # set flags directly: some modules (torch.export) refuse .train()
                m.training = mode == "train"
            if mode == "train":
                for m, _ in norms:
                    m.track_running_stats = False
            yield
    finally:
        for m, t in norms:
            m.track_running_stats = t
        for m, f in flags:
            m.training = f
        with torch.no_grad():
            for p, g in saved_grads:
                p.grad = g
            for b, saved in buffers:
                if b.shape != saved.shape or not torch.equal(b, saved):
                    b.copy_(saved)


def twice_differentiable_attention():
    """Context selecting the math SDPA backend (differentiable twice), where torch has one."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3: nothing to select
        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.MATH])
