"""Check that a loaded model, loss and data fit together, before any curvature is computed.

Each mismatch is explained in one line that names the arguments of
:func:`curvlens.problem.load.load_problem` to change (``data=``, ``data_keys=``, ``model=``,
``loss=``, ``dtype=``).
"""

from __future__ import annotations

from typing import Any

import torch

from curvlens.errors import CheckpointError

_PROBE_SAMPLES = 8  # samples run through model and loss by check_fits
_DOUBLE_BACKWARD_SAMPLES = 2  # samples of the double-backward probe


def first_inputs(data: Any) -> tuple[torch.Tensor] | None:
    """The inputs of the first few samples for the double-backward probe: from ``(inputs,
    targets)`` tensors or the first batch of a list; None for other structures."""
    first = data[0] if isinstance(data, list) and data else data
    if isinstance(first, (tuple, list)) and len(first) == 2 and isinstance(first[0], torch.Tensor):
        return (first[0][:_DOUBLE_BACKWARD_SAMPLES],)
    return None


def _first_batch(data: Any) -> Any:
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return data[0][:_PROBE_SAMPLES], data[1][:_PROBE_SAMPLES]
    for batch in data:
        return batch
    raise ValueError("data: the data source yielded no batch; pass data holding at least one sample")


def _short(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:200] if lines else type(e).__name__


def check_fits(model: torch.nn.Module, loss_fn: Any, data: Any, loss_label: str) -> None:
    """Run the first samples through ``model`` and ``loss_fn``; explain a mismatch in one line.

    Args:
        model: the loaded network.
        loss_fn: the criterion ``loss_fn(outputs, targets)``.
        data: ``(inputs, targets)`` tensors or an iterable of such batches.
        loss_label: how the loss was named by the caller (for the message).

    Raises:
        ValueError: the data holds no ``(inputs, targets)`` batch.
        CheckpointError: the model cannot take the inputs, the loss cannot compare outputs with
            the targets, or the loss on the first samples is not finite.
    """
    batch = _first_batch(data)
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(
            f"data: expected (inputs, targets) batches, got {type(batch).__name__}; pass a file holding inputs "
            "and targets, or a factory returning (inputs, targets) batches"
        )
    x, y = batch
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    x, y = x.to(dev), y.to(dev)
    float_params = [p.dtype for p in model.parameters() if p.is_floating_point()]
    with torch.no_grad():
        try:
            out = model(x)
        except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as e:  # torch.export guards assert
            if isinstance(x, torch.Tensor) and not x.is_floating_point() and float_params:
                raise CheckpointError(
                    f"data/model dtype mismatch: the inputs are {x.dtype} but the model computes in "
                    f"{float_params[0]} ({_short(e)}); save the inputs as floats (inputs.float() before saving); "
                    "integer inputs suit only models that start with an embedding"
                ) from e
            raise CheckpointError(
                f"data/model shape mismatch: the model cannot take inputs of shape {tuple(x.shape)} "
                f"({_short(e)}); check data=/data_keys= and model="
            ) from e
        try:
            val = loss_fn(out, y)
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise CheckpointError(
                f"loss/target mismatch: loss={loss_label} cannot compare outputs of shape {shape} with "
                f"targets of shape {tuple(y.shape)} and dtype {y.dtype} ({_short(e)}); pick the loss that "
                "matches the targets (cross_entropy/nll: class indices; mse: same shape; "
                "bce_with_logits/bce_probs: 0/1 floats)"
            ) from e
    if isinstance(val, torch.Tensor) and val.numel() == 1 and not bool(torch.isfinite(val)):
        raise CheckpointError(
            f"NaN loss: the loss on the first samples is {float(val)}; check the data and the checkpoint "
            "for NaN/Inf (or use dtype='float64' if it overflows)"
        )
