"""Operator-agnostic linear algebra: Lanczos, restarted eigensolvers, power iteration."""

from curvlens.linalg.lanczos import LanczosResult, lanczos

__all__ = ["LanczosResult", "lanczos"]
