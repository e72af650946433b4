"""Cheap measurements on the model itself that an analysis summary does not hold.

:func:`probe_measurements` spends a few gradients and one Hessian-vector product:

* ``gradient_seconds``: CPU time of one full gradient of ``data`` (median of three), the unit
  of the time model (the analysis' wall time includes its own overheads and is not used);
* ``gradient_l1``, ``gradient_norm``: ``|g|_1`` and ``|g|_2`` at the current weights;
* ``sign_curvature``: ``s^T H s`` with ``s = sign(g)``, the curvature along the direction of an
  early Adam step (Adam's update is about ``lr * sign(g)`` while the second moment is dominated
  by the current gradient; Kingma & Ba 2015, sec. 2.1; Balles & Hennig 2018 "Dissecting Adam").
  The quadratic model along ``s`` is minimised at ``lr = |g|_1 / (s^T H s)``: the
  preconditioned step size that Adam-like methods take their learning rate from;
* ``sequential_hvp_cost``: CPU time of one Hessian-vector product on a retained graph, one
  vector at a time (as CG and Lanczos inside an optimizer step use them), over
  ``gradient_seconds``: the cost per product of Newton-CG's and saddle-free Newton's inner
  iterations (an analysis may report a lower per-vector cost from products batched together).

The model's weights, ``.grad``, train/eval flags, buffers and the global RNG are left as they
were (:meth:`curvlens.problem.Problem.state_guard`).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

__all__ = ["probe_measurements"]


def probe_measurements(model: torch.nn.Module, loss_fn: Any, data: Any, *, repeats: int = 3) -> dict[str, float]:
    """Gradient time, gradient norms and the curvature along ``sign(g)`` (see the module docstring).

    Args:
        model: the network (float dtype and device of its parameters are used).
        loss_fn: a criterion, a loss name or ``loss_fn(model, batch)`` (as for :class:`~curvlens.Problem`).
        data: one batch or an iterable of batches (the full training set the advice is for).
        repeats: gradients timed (the median is reported).

    Returns:
        Summary keys ``gradient_seconds``, ``gradient_l1``, ``gradient_norm``, ``sign_curvature``,
        ``sequential_hvp_cost`` (missing when a quantity is not finite).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(3, 1, bias=False)
        >>> X, y = torch.eye(3), torch.zeros(3, 1)
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(1.0)
        >>> m = probe_measurements(model, torch.nn.MSELoss(), (X, y))
        >>> round(m["gradient_l1"], 4), round(m["sign_curvature"], 4)  # g = 2/3 (1,1,1), H = 2/3 I
        (2.0, 2.0)
    """
    from curvlens.operators import HessianOperator
    from curvlens.problem import Problem

    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats: expected a positive int, got {repeats!r}; pass e.g. repeats=3")
    problem = Problem(model, loss_fn, data)
    times = []
    with problem.state_guard():
        for _ in range(repeats):
            t0 = time.process_time()
            _, g = problem.loss_and_gradient(flat=True)
            times.append(time.process_time() - t0)
    g = g.detach()
    out: dict[str, float] = {"gradient_seconds": float(statistics.median(times))}
    l1, l2 = float(g.abs().sum()), float(g.norm())
    if torch.isfinite(g).all():
        out.update(gradient_l1=l1, gradient_norm=l2)
        s = torch.sign(g)
        if bool(s.any()):
            op = HessianOperator(problem)
            hs = op @ s  # the first product also builds the graph it reuses
            curv = float(s @ hs)
            if curv == curv and abs(curv) != float("inf"):
                out["sign_curvature"] = curv
            ptimes = []
            for _ in range(repeats):
                t0 = time.process_time()
                op @ s
                ptimes.append(time.process_time() - t0)
            if out["gradient_seconds"] > 0:
                out["sequential_hvp_cost"] = float(statistics.median(ptimes)) / out["gradient_seconds"]
    return out
