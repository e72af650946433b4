"""What the recommender cannot measure: the user's training setup.

:class:`RecommendationContext` is validated on construction, so that a contradictory or
impossible setup fails early with a message naming the argument, what was expected, what was
got and how to fix it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

PHASES = ("early", "mid", "fine-tuning")
_PHASE_ALIASES = {"finetuning": "fine-tuning", "fine_tuning": "fine-tuning", "finetune": "fine-tuning",
                  "middle": "mid", "start": "early"}

#: spellings of optimizers -> candidate id used by the recommender.
OPTIMIZER_ALIASES = {
    "sgd": "sgd_momentum", "sgd+momentum": "sgd_momentum", "sgd_momentum": "sgd_momentum",
    "momentum": "sgd_momentum", "heavy-ball": "sgd_momentum", "nesterov": "sgd_momentum",
    "adam": "adamw", "adamw": "adamw", "adam/adamw": "adamw",
    "adahessian": "diag_hessian", "sophia": "diag_hessian", "diag_hessian": "diag_hessian",
    "lbfgs": "lbfgs", "l-bfgs": "lbfgs", "l_bfgs": "lbfgs",
    "kfac": "kfac", "k-fac": "kfac",
    "newton_cg": "newton_cg", "newton-cg": "newton_cg", "hessian-free": "newton_cg", "hf": "newton_cg",
}

_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12,
          "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_TIME_UNITS = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}


def parse_memory(text: str | int | float) -> int:
    """Parse a memory size such as ``"8GB"``, ``"512MiB"``, ``"1.5g"`` or ``1e9`` into bytes.

    Example:
        >>> parse_memory("8GB"), parse_memory("1KiB")
        (8000000000, 1024)
    """
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise TypeError(f"memory: expected bytes (int) or a string like '8GB', got {type(text).__name__}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _UNITS:
            raise ValueError(
                f"memory: expected a size like '8GB', '512MiB' or a number of bytes, got {text!r}; "
                f"units: {', '.join(u for u in _UNITS if u)}"
            )
        value = float(m.group(1)) * _UNITS[unit]
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"memory: expected a positive size, got {text!r}; pass e.g. '8GB'")
    return int(value)


def parse_duration(text: str | int | float) -> float:
    """Parse a duration such as ``"90s"``, ``"30m"``, ``"2h"`` or ``3600`` into seconds."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise TypeError(f"time_budget: expected seconds or a string like '2h', got {type(text).__name__}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _TIME_UNITS:
            raise ValueError(
                f"time_budget: expected a duration like '90s', '30m', '2h' or seconds, got {text!r}"
            )
        value = float(m.group(1)) * _TIME_UNITS[unit]
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"time_budget: expected a positive duration, got {text!r}; pass e.g. '2h'")
    return value


def _positive_int(name: str, value: Any, fix: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise TypeError(f"{name}: expected a positive int, got {value!r} ({type(value).__name__}); {fix}")
    if value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value}; {fix}")
    return int(value)


@dataclass(frozen=True)
class RecommendationContext:
    """The training setup that curvature measurements cannot reveal.

    Every field is optional; a missing one lowers the confidence of the rules that need it.

    Args:
        optimizer: the optimizer in use now (e.g. ``"sgd"``, ``"adamw"``); mapped to a
            candidate id when recognised (see :data:`OPTIMIZER_ALIASES`).
        lr: current learning rate (> 0).
        momentum: current momentum (heavy-ball) in ``[0, 1)``.
        batch_size: training batch size (>= 1).
        dataset_size: number of training samples; ``batch_size`` may not exceed it.
        memory_bytes: accelerator memory budget, bytes or a string like ``"8GB"``.
        phase: ``"early"``, ``"mid"`` or ``"fine-tuning"``.
        time_budget_s: wall time available for training, seconds or a string like ``"2h"``.
        layer_types: layer kinds in the model, e.g. ``("linear", "conv2d", "layernorm")``
            (K-FAC needs supported layers); a comma-separated string is accepted.
        bytes_per_param: bytes of one parameter (4 for float32).

    Example:
        >>> ctx = RecommendationContext(optimizer="SGD", lr=0.1, momentum=0.9, batch_size=64,
        ...                             memory_bytes="8GB", phase="early")
        >>> ctx.optimizer_id, ctx.memory_bytes
        ('sgd_momentum', 8000000000)
    """

    optimizer: str | None = None
    lr: float | None = None
    momentum: float | None = None
    batch_size: int | None = None
    dataset_size: int | None = None
    memory_bytes: int | str | None = None
    phase: str | None = None
    time_budget_s: float | str | None = None
    layer_types: tuple[str, ...] | str | None = None
    bytes_per_param: int = 4

    def __post_init__(self) -> None:
        s = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        if self.optimizer is not None:
            if not isinstance(self.optimizer, str) or not self.optimizer.strip():
                raise TypeError(f"optimizer: expected a name such as 'sgd' or 'adamw', got {self.optimizer!r}")
            s("optimizer", self.optimizer.strip())
        for name in ("lr", "momentum"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise TypeError(f"{name}: expected a number, got {v!r} ({type(v).__name__})")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr: expected a positive finite learning rate, got {self.lr}; pass e.g. lr=0.01")
        if self.momentum is not None and not (0.0 <= self.momentum < 1.0):
            raise ValueError(
                f"momentum: expected a value in [0, 1), got {self.momentum}; heavy-ball momentum 1 or more "
                "diverges, pass e.g. momentum=0.9 (or 0 for none)"
            )
        s("batch_size", _positive_int("batch_size", self.batch_size, "pass the training batch size, e.g. 64"))
        s("dataset_size", _positive_int("dataset_size", self.dataset_size, "pass the number of training samples"))
        if self.batch_size is not None and self.dataset_size is not None and self.batch_size > self.dataset_size:
            raise ValueError(
                f"batch_size: expected at most dataset_size={self.dataset_size}, got {self.batch_size}; "
                "a batch cannot hold more samples than the data set: fix one of the two"
            )
        if self.memory_bytes is not None:
            s("memory_bytes", parse_memory(self.memory_bytes))
        if self.time_budget_s is not None:
            s("time_budget_s", parse_duration(self.time_budget_s))
        if self.phase is not None:
            p = str(self.phase).strip().lower()
            p = _PHASE_ALIASES.get(p, p)
            if p not in PHASES:
                raise ValueError(f"phase: expected one of {', '.join(PHASES)}, got {self.phase!r}")
            s("phase", p)
        lt = self.layer_types
        if lt is not None:
            if isinstance(lt, str):
                lt = [x for x in lt.split(",")]
            try:
                items = tuple(str(x).strip().lower() for x in lt)
            except TypeError:
                raise TypeError(
                    f"layer_types: expected layer names like ('linear', 'conv2d'), got {lt!r}"
                ) from None
            items = tuple(x.replace("nn.", "") for x in items if x)
            if not items:
                raise ValueError("layer_types: expected at least one layer name, got an empty list; "
                                 "pass e.g. 'linear,conv2d' or leave it unset")
            s("layer_types", items)
        if isinstance(self.bytes_per_param, bool) or not isinstance(self.bytes_per_param, int) \
                or self.bytes_per_param < 1:
            raise ValueError(f"bytes_per_param: expected a positive int (4 for float32), got {self.bytes_per_param!r}")

    @property
    def optimizer_id(self) -> str | None:
        """Candidate id of the current optimizer, or None when unknown or unset."""
        if self.optimizer is None:
            return None
        return OPTIMIZER_ALIASES.get(self.optimizer.lower().replace(" ", ""))

    @property
    def effective_momentum(self) -> float:
        """Momentum used in the stability threshold: 0 for Adam-like or unset optimizers without one."""
        return float(self.momentum) if self.momentum is not None else 0.0
