"""Run metadata shared by every result type, and the registry used for (de)serialization.

Every public algorithm returns a frozen dataclass with an ``info: RunInfo`` field. Result
classes register themselves with :func:`register_result` under a stable ``kind`` and a
``schema`` version, which the HDF5 layer uses to round-trip them.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch

T = TypeVar("T")

#: kind name -> (class, schema version)
RESULT_KINDS: dict[str, tuple[type, int]] = {}


def register_result(kind: str, schema: int = 1) -> Callable[[type[T]], type[T]]:
    """Class decorator: register a frozen result dataclass under ``kind`` with ``schema``."""

    def deco(cls: type[T]) -> type[T]:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"register_result: {cls.__name__} must be a dataclass")
        if kind in RESULT_KINDS and RESULT_KINDS[kind][0].__qualname__ != cls.__qualname__:
            raise ValueError(f"register_result: kind {kind!r} is already used by {RESULT_KINDS[kind][0]}")
        RESULT_KINDS[kind] = (cls, schema)
        cls.__curvlens_kind__ = kind  # type: ignore[attr-defined]
        cls.__curvlens_schema__ = schema  # type: ignore[attr-defined]
        return cls

    return deco


@register_result("run_info")
@dataclass(frozen=True)
class RunInfo:
    """How a result was obtained.

    Attributes:
        seed: the seed of the generator used (``generator.initial_seed()``), or None when the
            computation used no randomness.
        matvecs: number of curvature-vector products spent.
        wall_time: seconds spent.
        converged: whether every requested quantity met its tolerance.
        status: one sentence; on non-convergence it says what to increase.
        dtype: dtype of the products (e.g. ``"torch.float64"``).
        device: device of the products.
    """

    seed: int | None
    matvecs: int
    wall_time: float
    converged: bool
    status: str
    dtype: str = ""
    device: str = ""


class RunTimer:
    """Helper that measures wall time and matvecs of one algorithm call on one operator."""

    def __init__(self, op: Any = None, generator: torch.Generator | None = None):
        self.op = op
        self.start_matvecs = int(getattr(op, "num_matvecs", 0)) if op is not None else 0
        self.start = time.perf_counter()
        self.seed = None if generator is None else int(generator.initial_seed())

    @property
    def matvecs(self) -> int:
        if self.op is None:
            return 0
        return int(self.op.num_matvecs) - self.start_matvecs

    def info(self, converged: bool, status: str, *, extra_matvecs: int = 0) -> RunInfo:
        op = self.op
        return RunInfo(
            seed=self.seed,
            matvecs=self.matvecs + extra_matvecs,
            wall_time=time.perf_counter() - self.start,
            converged=bool(converged),
            status=status,
            dtype=str(getattr(op, "dtype", "")),
            device=str(getattr(op, "device", "")),
        )
