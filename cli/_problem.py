"""Assemble (model, loss, data) for ``curvlens analyze`` and check that they fit together.

Every failure becomes a :class:`curvlens.errors.CheckpointError` (or ``ValueError``) with one
sentence naming what did not fit and how to fix it; the command turns it into exit code 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from curvlens.errors import CheckpointError

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class Problem:
    model: torch.nn.Module
    loss_fn: Any
    data: Any
    source: str
    notes: tuple[str, ...] = ()
    num_samples: int | None = None


def demo(seed: int, dtype: str | None) -> Problem:
    from curvlens.data import demo_problem

    p = demo_problem(seed=seed, dtype=DTYPES[dtype or "float32"])
    x, y = p.data
    return Problem(p.model, p.loss_fn, (x, y), f"built-in demo: {p.description}", (), len(y))


def load(checkpoint: str, *, model: str | None, data: str, data_keys: str | None, loss: str,
         batch_size: int | None, num_samples: int | None, trust: bool, device: str, dtype: str | None) -> Problem:
    from curvlens.io.checkpoint import load_checkpoint
    from curvlens.io.datafiles import load_data
    from curvlens.io.losses import resolve_loss

    dt = DTYPES[dtype] if dtype else None
    inputs = load_data(data, keys=data_keys, num_samples=num_samples, batch_size=batch_size, dtype=dt)
    example = _first_inputs(inputs)
    # double backward is probed after check_fits, so that inputs the model cannot take are reported as
    # a data/model mismatch rather than as a model without Hessian-vector products
    loaded = load_checkpoint(checkpoint, model=model, trust=trust, map_location="cpu")
    net = loaded.model
    if dt is not None:
        net = net.to(dtype=dt)
    net = net.to(device)
    loss_fn = resolve_loss(loss)
    if isinstance(inputs, tuple) and batch_size:
        x, y = inputs
        inputs = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(y), batch_size)]
    n = len(inputs[1]) if isinstance(inputs, tuple) else None
    prob = Problem(net, loss_fn, inputs, f"{os.path.basename(checkpoint)} ({loaded.format})",
                   tuple(loaded.notes), n)
    check_fits(prob, loss)
    if example is not None:
        from curvlens.io.checkpoint import check_double_backward

        problem = check_double_backward(net, tuple(t.to(device) for t in example))
        if problem is not None:
            raise CheckpointError(
                f"{loaded.format} model {checkpoint!r} cannot give Hessian-vector products: {problem}; save the "
                "state_dict and load it with --model pkg.module:factory instead"
            )
    return prob


def _first_inputs(data: Any):
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return (data[0][:2],)
    return None


def _first_batch(data: Any):
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return data[0][:8], data[1][:8]
    for batch in data:
        return batch
    raise ValueError("data: the data source yielded no batch; check --data")


def check_fits(prob: Problem, loss_name: str) -> None:
    """Run the first few samples through model and loss; explain a mismatch in one line."""
    batch = _first_batch(prob.data)
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(f"data: expected (inputs, targets) batches, got {type(batch).__name__}; check --data")
    x, y = batch
    dev = next((p.device for p in prob.model.parameters()), torch.device("cpu"))
    x, y = x.to(dev), y.to(dev)
    with torch.no_grad():
        try:
            out = prob.model(x)
        except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as e:  # torch.export guards assert
            raise CheckpointError(
                f"data/model shape mismatch: the model cannot take inputs of shape {tuple(x.shape)} "
                f"({_short(e)}); check --data/--data-keys and --model"
            ) from e
        try:
            val = prob.loss_fn(out, y)
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise CheckpointError(
                f"loss/target mismatch: --loss {loss_name} cannot compare outputs of shape {shape} with "
                f"targets of shape {tuple(y.shape)} and dtype {y.dtype} ({_short(e)}); pick the loss that "
                "matches the targets (cross_entropy/nll: class indices; mse: same shape; bce: 0/1 floats)"
            ) from e
    if isinstance(val, torch.Tensor) and val.numel() == 1 and not bool(torch.isfinite(val)):
        raise CheckpointError(
            f"NaN loss: the loss on the first samples is {float(val)}; check the data and the checkpoint "
            "for NaN/Inf (or use --dtype float64 if it overflows)"
        )


def _short(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0][:200] if s else type(e).__name__
