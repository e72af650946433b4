"""Probe whether a model supports double backward (needed for Hessian-vector products).

The probe runs the way the operators run the model: inside
:func:`curvlens.problem.state.preserved_state` in eval mode, with the math kernel of
``scaled_dot_product_attention`` selected (the fused CPU / flash / memory-efficient kernels
raise "derivative ... not implemented" on the second backward). :func:`attention_note` says
when that choice matters for a model, so that the user learns why attention runs slower.
"""

from __future__ import annotations

import torch
from torch import nn

from curvlens.problem._checkpoint_formats import _first
from curvlens.problem.differentiable import check_twice_differentiable
from curvlens.problem._state_dict_load import _names
from curvlens.problem.state import preserved_state

__all__ = ["check_double_backward", "attention_note", "no_hvp_advice", "MATH_ATTENTION_NOTE"]

MATH_ATTENTION_NOTE = (
    "attention runs with PyTorch's math kernel of scaled_dot_product_attention inside every curvature "
    "product (the fused kernels have no second derivative); the numbers are exact, products somewhat slower"
)


def no_hvp_advice(fmt: str) -> str:
    """What to do when a model of format ``fmt`` has no double backward (one clause)."""
    if fmt in ("torchscript", "torch_export"):
        return ("a compiled archive may lack second derivatives: save the state_dict and load it with "
                "model='pkg.module:factory' instead")
    return ("every operation in the model's forward needs a second derivative (Hessian and GGN products "
            "alike): replace the one named above, e.g. a custom autograd.Function whose backward is not "
            "itself differentiable")


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _probe(model: nn.Module, inputs: tuple) -> str | None:
    named = [(n, q) for n, q in model.named_parameters() if q.requires_grad]
    if not named:
        return "the model has no parameters that require grad"
    names, params = [n for n, _ in named], [q for _, q in named]
    try:
        with torch.enable_grad():
            out = model(*inputs)
    except Exception as e:
        shapes = ", ".join(str(tuple(t.shape)) for t in inputs if isinstance(t, torch.Tensor))
        hint = ("; the program was exported with a fixed input shape: re-export with "
                "torch.export.export(..., dynamic_shapes=...) marking the batch dimension dynamic"
                if "Guard failed" in str(e) else "")
        return f"forward on inputs of shape {shapes} failed: {_first(e)}{hint}"
    outs = [o for o in (out if isinstance(out, (tuple, list)) else [out])
            if isinstance(o, torch.Tensor) and o.is_floating_point()]
    try:
        with torch.enable_grad():
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


def check_double_backward(model: nn.Module, example_inputs: tuple | torch.Tensor) -> str | None:
    """Probe whether a Hessian-vector product can be taken through ``model``.

    Runs one forward on ``example_inputs``, a first backward with ``create_graph=True`` of
    ``sum(outputs**2)`` and a second backward of ``<grad, 1>``, in eval mode with the math
    attention kernel, exactly as the operators do; the model's mode, buffers and ``.grad`` are
    restored. No randomness, a few products.

    Returns:
        None when both backwards work, else one line saying what failed.

    Example:
        >>> import torch
        >>> layer = torch.nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True)
        >>> check_double_backward(layer, torch.zeros(2, 3, 8)) is None
        True
    """
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    params = [q for q in model.parameters() if q.requires_grad]
    with preserved_state(model, "eval", _device(model), grads=params):
        return _probe(model, inputs)


def attention_note(model: nn.Module, example_inputs: tuple | torch.Tensor | None = None) -> str | None:
    """:data:`MATH_ATTENTION_NOTE` when the model uses attention whose default kernel has no double
    backward (an ``nn.MultiheadAttention`` module, or a probe that fails with the default kernel but
    works with the math one); None otherwise."""
    if any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
        return MATH_ATTENTION_NOTE
    if example_inputs is None:
        return None
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    params = [q for q in model.parameters() if q.requires_grad]
    flags = [(m, m.training) for m in model.modules()]
    saved = [(q, q.grad) for q in params]
    try:
        for m, _ in flags:
            m.training = False
        with torch.random.fork_rng(devices=[]):
            default = _probe(model, inputs)
    finally:
        for m, f in flags:
            m.training = f
        for q, g in saved:
            q.grad = g
    return MATH_ATTENTION_NOTE if default is not None and "attention" in default.lower() else None
