"""Refuse graphs that cannot be differentiated twice (second derivatives would be wrong)."""

from __future__ import annotations

import torch

__all__ = ["check_twice_differentiable"]


def check_twice_differentiable(tensors, who: str) -> None:
    """Refuse graphs that contain a first-derivative-only node (``@once_differentiable``).

    Differentiating through such a node must fail, but with unused-input handling autograd can
    drop its contribution silently, which would give a wrong curvature; so walk the graph once.
    """
    seen: set = set()
    stack = [t.grad_fn for t in tensors if isinstance(t, torch.Tensor) and t.grad_fn is not None]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if type(fn).__name__ in ("Error", "DelayedError"):
            raise ValueError(
                f"model: {who} needs second derivatives, but the model contains an operation that can "
                "only be differentiated once (a custom autograd.Function whose backward is marked "
                "@once_differentiable, or a non-differentiable op); make its backward differentiable "
                "or replace it by torch operations"
            )
        stack.extend(n for n, _ in fn.next_functions)
