"""Probe whether a model supports double backward (needed for Hessian-vector products)."""

from __future__ import annotations

import torch
from torch import nn

from curvlens.io._checkpoint_formats import _first
from curvlens.operators.model import check_twice_differentiable
from curvlens.io._state_dict_load import _names


def check_double_backward(model: nn.Module, example_inputs: tuple | torch.Tensor) -> str | None:
    """Probe whether a Hessian-vector product can be taken through ``model``.

    Runs one forward on ``example_inputs``, a first backward with ``create_graph=True`` of
    ``sum(outputs**2)`` and a second backward of ``<grad, 1>``: no randomness, a few products.

    Returns:
        None when both backwards work, else one line saying what failed.
    """
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    named = [(n, q) for n, q in model.named_parameters() if q.requires_grad]
    if not named:
        return "the model has no parameters that require grad"
    names, params = [n for n, _ in named], [q for _, q in named]
    try:
        out = model(*inputs)
    except Exception as e:
        shapes = ", ".join(str(tuple(t.shape)) for t in inputs if isinstance(t, torch.Tensor))
        hint = ("; the program was exported with a fixed input shape: re-export with "
                "torch.export.export(..., dynamic_shapes=...) marking the batch dimension dynamic"
                if "Guard failed" in str(e) else "")
        return f"forward on inputs of shape {shapes} failed: {_first(e)}{hint}"
    outs = [o for o in (out if isinstance(out, (tuple, list)) else [out]) if isinstance(o, torch.Tensor) and o.is_floating_point()]
    try:
        scalar = sum(o.pow(2).sum() for o in outs)
        grads = torch.autograd.grad(scalar, params, create_graph=True, allow_unused=True)
        dot = sum(g.sum() for g in grads if g is not None and g.requires_grad)
        if not isinstance(dot, torch.Tensor):
            return "the first backward produced no graph, so no second derivative can be taken"
        check_twice_differentiable(grads, "a Hessian-vector product")
        second = torch.autograd.grad(dot, params, allow_unused=True)
    except Exception as e:
        return f"double backward failed: {_first(e)}"
    # every parameter that reaches the output has a non-zero Hessian block of sum(out**2), so a
    # missing second derivative means the graph was cut (e.g. a non-differentiable backward)
    cut = [n for n, g1, g2 in zip(names, grads, second) if g1 is not None and g2 is None]
    if cut:
        return ("double backward failed: the second derivative does not reach " + _names(cut, 3)
                + " (the graph is cut, e.g. by a custom autograd.Function with a non-differentiable backward)")
    return None
