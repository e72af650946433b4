"""What the monitor reads from an optimizer: learning rate, stability threshold, preconditioner.

Stability thresholds of the quadratic model (a step is stable when the curvature along the
sharpest direction is below the threshold):

* gradient descent, ``lr``: ``lambda_max(H) < 2 / lr`` (Cohen et al. 2021, "Gradient descent on
  neural networks typically occurs at the edge of stability");
* heavy-ball momentum ``beta`` (``torch.optim.SGD(momentum=beta)``): ``(2 + 2 beta) / lr``;
* Adam-like optimizers (Adam, AdamW, NAdam with ``betas=(b1, b2)``, ``eps``): the
  preconditioned sharpness ``lambda_max(P^-1 H)`` with ``P = (1 - b1^t) diag(sqrt(v_hat) + eps)``
  and ``v_hat = v / (1 - b2^t)``, against ``(2 + 2 b1) / ((1 - b1) lr)`` (38/lr for b1 = 0.9;
  Cohen et al. 2022, "Adaptive gradient methods at the edge of stability").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from curvlens.operators.base import CurvatureOperator

__all__ = ["OptimizerView", "read_optimizer", "PreconditionedOperator"]


@dataclass(frozen=True)
class OptimizerView:
    """Learning rate and stability thresholds of an optimizer at one moment.

    Attributes:
        name: the optimizer's class name (``"manual"`` for a bare learning rate).
        lr: the largest learning rate over the parameter groups.
        threshold: stability threshold of ``lambda_max(H)`` (``2/lr``, or ``(2+2 beta)/lr`` with
            heavy-ball momentum ``beta``).
        adaptive: True for an Adam-like optimizer (a preconditioner was read).
        preconditioner: flat ``(D,)`` diagonal ``P`` aligned with the monitored parameters, or
            None (not adaptive, or no optimizer state yet).
        preconditioned_threshold: ``(2 + 2 b1) / ((1 - b1) lr)`` for Adam-like, else NaN.
    """

    name: str
    lr: float
    threshold: float
    adaptive: bool
    preconditioner: torch.Tensor | None
    preconditioned_threshold: float


def _lr_of(group: dict) -> float:
    lr = group.get("lr", math.nan)
    return float(lr.item() if isinstance(lr, torch.Tensor) else lr)


def read_optimizer(optimizer, params: list[torch.Tensor] | None = None, *, lr: float | None = None) -> OptimizerView:
    """Read the learning rate, thresholds and (Adam-like) preconditioner without changing anything.

    Args:
        optimizer: a ``torch.optim.Optimizer`` or None (then ``lr`` is required).
        params: the monitored parameters (for the preconditioner), in flat-vector order.
        lr: overrides the learning rate read from the optimizer.

    Example:
        >>> p = torch.nn.Parameter(torch.zeros(3))
        >>> v = read_optimizer(torch.optim.SGD([p], lr=0.1, momentum=0.9))
        >>> round(v.threshold, 6), v.adaptive
        (38.0, False)
    """
    if optimizer is None:
        if lr is None:
            raise ValueError("lr: expected a learning rate when no optimizer is attached, got None; call "
                             "monitor.attach(optimizer) or pass monitor.step(step, lr=0.1)")
        lr = float(lr)
        return OptimizerView("manual", lr, 2.0 / lr if lr > 0 else math.inf, False, None, math.nan)
    groups = optimizer.param_groups
    rate = max(_lr_of(g) for g in groups) if lr is None else float(lr)
    name = type(optimizer).__name__
    g0 = groups[0]
    betas = g0.get("betas")
    adaptive = betas is not None and any("exp_avg_sq" in s for s in optimizer.state.values())
    if not adaptive:
        beta = float(g0.get("momentum", 0.0) or 0.0)
        thr = (2.0 + 2.0 * beta) / rate if rate > 0 else math.inf
        return OptimizerView(name, rate, thr, False, None, math.nan)
    b1 = float(betas[0])
    pthr = (2.0 + 2.0 * b1) / ((1.0 - b1) * rate) if rate > 0 and b1 < 1 else math.inf
    P = _adam_preconditioner(optimizer, params) if params is not None else None
    return OptimizerView(name, rate, 2.0 / rate if rate > 0 else math.inf, True, P, pthr)


def _adam_preconditioner(optimizer, params: list[torch.Tensor]) -> torch.Tensor | None:
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    parts = []
    for p in params:
        st, g = optimizer.state.get(p), group_of.get(id(p))
        if g is None or not st or "exp_avg_sq" not in st or "step" not in st:
            return None
        b1, b2 = (float(b) for b in g["betas"])
        t = float(st["step"])
        v = st["max_exp_avg_sq"] if g.get("amsgrad", False) and "max_exp_avg_sq" in st else st["exp_avg_sq"]
        v_hat = v.detach() / (1.0 - b2**t)
        parts.append(((1.0 - b1**t) * (v_hat.sqrt() + float(g["eps"]))).reshape(-1).to(p.dtype))
    return torch.cat(parts)


class PreconditionedOperator(CurvatureOperator):
    """``P^{-1/2} A P^{-1/2}``: symmetric, with the eigenvalues of ``P^{-1} A`` for diagonal ``P > 0``.

    Example:
        >>> from curvlens.operators import DenseOperator
        >>> A = DenseOperator(torch.diag(torch.tensor([4.0, 1.0], dtype=torch.float64)))
        >>> op = PreconditionedOperator(A, torch.tensor([2.0, 0.5], dtype=torch.float64))
        >>> [round(v, 12) for v in op.matvec(torch.tensor([1.0, 1.0], dtype=torch.float64)).tolist()]
        [2.0, 2.0]
    """

    def __init__(self, op: CurvatureOperator, diag: torch.Tensor):
        super().__init__(op.dim, op.dtype, op.device, param_shapes=op.param_shapes, blocks=op.blocks)
        if diag.shape != (op.dim,) or not bool((diag > 0).all()):
            raise ValueError(f"diag: expected a positive (D,) = ({op.dim},) preconditioner, got shape "
                             f"{tuple(diag.shape)}; read it from the optimizer's state after its first step")
        self.base = op
        self.scale = diag.to(device=op.device, dtype=op.dtype).rsqrt()

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        s = self.scale[:, None]
        return s * self.base.matmat(s * V)
