"""Splitting a product budget among stages that run one after the other: :class:`BudgetSplitter`.

The rule (the one :func:`~curvlens.diagnostics.analyze` uses): stages are ordered, each with a
non-negative fraction. When stage ``s`` asks for its allowance it gets::

    floor(left * f_s / (f_s + sum of f over the stages after s))

where ``left`` is the total minus everything spent so far (the quotient is computed in
floating point and rounded down). A stage that uses less than its allowance (or is skipped
and spends nothing) leaves the rest to the stages after it, in proportion to their fractions;
the last stage with a positive fraction gets what is left (less at most one product lost to
rounding). The fractions need not sum to one, only to something positive; a stage with
fraction 0 gets nothing (it may still be charged a fixed cost with :meth:`BudgetSplitter.spend`).

With the fractions of :func:`~curvlens.diagnostics.analyze` and 300 products, stages that each
spend their whole allowance get 45, 29, 45, 90, 30 and 61 products.

Each allowance is meant to be passed as a hard ``max_matvecs`` to the stage's solver, so the
total overshoots only by what a solver spends past its ceiling (at most one block of vectors).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping

__all__ = ["BudgetSplitter"]


def _check_amount(value, name: str, fix: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a non-negative number of products, got {type(value).__name__} "
                        f"({value!r}); {fix}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: expected a finite, non-negative number of products, got {value!r}; {fix}")
    return value


def _pairs(fractions) -> list[tuple[str, float]]:
    if isinstance(fractions, Mapping):
        items = list(fractions.items())
    elif isinstance(fractions, Iterable) and not isinstance(fractions, (str, bytes)):
        items = list(fractions)
        if not all(isinstance(p, tuple) and len(p) == 2 for p in items):
            raise TypeError("fractions: expected a mapping {stage: fraction} or (stage, fraction) pairs, got an "
                            "iterable with other items; pass e.g. {'top': 0.5, 'trace': 0.5}")
    else:
        raise TypeError(f"fractions: expected a mapping {{stage: fraction}} in run order, got "
                        f"{type(fractions).__name__}; pass e.g. {{'top': 0.5, 'trace': 0.5}}")
    seen: set[str] = set()
    out = []
    for name, f in items:
        if not isinstance(name, str):
            raise TypeError(f"fractions: expected stage names as str, got {type(name).__name__} ({name!r})")
        if name in seen:
            raise ValueError(f"fractions: stage {name!r} appears twice; give each stage once")
        seen.add(name)
        if isinstance(f, bool) or not isinstance(f, numbers.Real):
            raise TypeError(f"fractions: expected a number for stage {name!r}, got {type(f).__name__} ({f!r})")
        if not math.isfinite(f) or f < 0:
            raise ValueError(f"fractions: expected a finite fraction >= 0 for stage {name!r}, got {f!r}; "
                             "use 0 for a stage that gets no share")
        out.append((name, float(f)))
    total = sum(f for _, f in out)
    if not total > 0:
        raise ValueError(f"fractions: expected fractions summing to a positive number, got sum {total:g} over "
                         f"{len(out)} stage(s); give at least one stage a positive fraction")
    return out


class BudgetSplitter:
    """A product budget shared by ordered stages, unused products rolling over (see module doc).

    Args:
        total: the budget in products (``>= 0``; an int, or a float for fractional products
            such as minibatch products counted as ``B / N`` of a full one).
        fractions: ``{stage: fraction}`` in run order (or ``(stage, fraction)`` pairs); fractions
            are ``>= 0`` and sum to something positive.

    Stages may be asked for in any order; a stage's allowance always divides what is left by
    the fractions of that stage and the stages after it in the table order.

    Example:
        >>> b = BudgetSplitter(300, {"top": 0.15, "trace": 0.10, "bottom": 0.15, "density": 0.6})
        >>> b.allowance("top")
        45
        >>> b.spend("top", 20)          # 25 products unused: they roll over
        >>> b.allowance("trace"), b.left
        (32, 280)
        >>> b.spend("trace", 0)          # a stage that spent nothing
        >>> b.allowance("bottom")
        56
    """

    def __init__(self, total: int | float, fractions: Mapping[str, float] | Iterable[tuple[str, float]]):
        self._total = _check_amount(total, "total", "pass the budget in products, e.g. total=300")
        pairs = _pairs(fractions)
        self._fractions = dict(pairs)
        self._order = tuple(n for n, _ in pairs)
        self._spent: dict[str, float | int] = {}

    @property
    def total(self) -> int | float:
        """The whole budget."""
        return self._total

    @property
    def stages(self) -> tuple[str, ...]:
        """Stage names in run order."""
        return self._order

    @property
    def fractions(self) -> dict[str, float]:
        """``{stage: fraction}`` (a copy)."""
        return dict(self._fractions)

    @property
    def spent(self) -> int | float:
        """Products charged so far, all stages together."""
        return sum(self._spent.values())

    @property
    def left(self) -> int | float:
        """``total - spent`` (negative when a stage overshot its allowance)."""
        return self._total - self.spent

    def spent_by(self, stage: str) -> int | float:
        """Products charged to ``stage`` so far (0 before it ran)."""
        self._check_stage(stage)
        return self._spent.get(stage, 0)

    def _check_stage(self, stage) -> None:
        if stage not in self._fractions:
            raise ValueError(f"stage: unknown stage {stage!r}; expected one of {self._order}")

    def allowance(self, stage: str) -> int:
        """Products ``stage`` may spend now: its fraction of what is left over the fractions of
        it and the stages after it (0 when those fractions are all 0 or nothing is left)."""
        self._check_stage(stage)
        rest = sum(self._fractions[s] for s in self._order[self._order.index(stage):])
        if rest <= 0:
            return 0
        return max(0, int(self.left * self._fractions[stage] / rest))

    def spend(self, stage: str, used: int | float) -> None:
        """Charge ``used`` products to ``stage`` (adds up over calls; may exceed the allowance)."""
        self._check_stage(stage)
        used = _check_amount(used, "used", "pass the products the stage spent, e.g. result.info.matvecs")
        self._spent[stage] = self._spent.get(stage, 0) + used

    def __repr__(self) -> str:
        return f"BudgetSplitter(total={self._total!r}, spent={self.spent!r}, stages={self._order})"
