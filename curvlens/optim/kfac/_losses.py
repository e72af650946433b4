"""The loss table (closed-form output Hessians, predictive sampling), from its one owner."""

from __future__ import annotations

from curvlens.problem.losses import LossSpec, identify_loss

__all__ = ["LossSpec", "identify_loss"]
