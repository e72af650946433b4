"""Candidates, the evidence that rules produce, and a tolerant view of an analysis summary."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from curvlens.recommend import thresholds as T

#: candidate id -> human label, in a fixed order (ties in score keep this order).
CANDIDATES = {
    "sgd_momentum": "SGD+momentum",
    "adamw": "Adam/AdamW",
    "diag_hessian": "diagonal-Hessian method (AdaHessian/Sophia)",
    "lbfgs": "L-BFGS",
    "kfac": "K-FAC",
    "newton_cg": "Newton-CG",
}
FIRST_ORDER = ("sgd_momentum", "adamw")
SECOND_ORDER = ("kfac", "newton_cg", "lbfgs")
CURVATURE_AWARE = ("diag_hessian", "lbfgs", "kfac", "newton_cg")


@dataclass(frozen=True)
class Evidence:
    """One piece of evidence for (weight > 0) or against (weight < 0) a candidate.

    ``veto`` marks a hard constraint (does not fit in memory, unsupported layers): the
    candidate is rejected whatever its score.
    """

    rule: str
    optimizer: str
    weight: float
    reason: str
    veto: bool = False


@dataclass
class Outcome:
    """What one rule found: evidence, warnings and measurements it lacked."""

    evidence: list[Evidence] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    rule: str = ""

    def support(self, optimizers, weight: float, reason: str) -> None:
        for o in _as_tuple(optimizers):
            self.evidence.append(Evidence(self.rule, o, abs(weight), reason))

    def oppose(self, optimizers, weight: float, reason: str) -> None:
        for o in _as_tuple(optimizers):
            self.evidence.append(Evidence(self.rule, o, -abs(weight), reason))

    def veto(self, optimizers, reason: str) -> None:
        for o in _as_tuple(optimizers):
            self.evidence.append(Evidence(self.rule, o, 0.0, reason, veto=True))

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def need(self, key: str, why: str) -> None:
        """A measurement the rule lacked: ``"measure KEY: WHY"``."""
        self.missing.append(f"measure {key}: {why}")

    def ask(self, key: str, why: str) -> None:
        """A context value the rule lacked: ``"set KEY in the context: WHY"``."""
        self.missing.append(f"set {key} in the context: {why}")


def _as_tuple(x) -> tuple[str, ...]:
    return (x,) if isinstance(x, str) else tuple(x)


class Measurements:
    """A tolerant read-only view of an analysis summary dict.

    Missing keys, ``None`` and non-finite numbers all read as "not measured" through
    :meth:`num`; non-finite ones are remembered in :attr:`nonfinite` so that the engine can warn.
    """

    def __init__(self, summary: Mapping[str, Any]):
        self.raw = dict(summary)
        self.nonfinite: set[str] = set()
        for k, v in self.raw.items():
            if _is_number(v) and not math.isfinite(float(v)):
                self.nonfinite.add(k)
            elif isinstance(v, (list, tuple)) and any(_is_number(x) and not math.isfinite(float(x)) for x in v):
                self.nonfinite.add(k)

    def num(self, key: str) -> float | None:
        v = self.raw.get(key)
        if not _is_number(v) or not math.isfinite(float(v)):
            return None
        return float(v)

    def flag(self, key: str) -> bool | None:
        v = self.raw.get(key)
        return bool(v) if isinstance(v, (bool, int)) and not isinstance(v, float) else None

    def text(self, key: str) -> str | None:
        v = self.raw.get(key)
        return v if isinstance(v, str) and v else None

    def series(self, key: str) -> list[float] | None:
        v = self.raw.get(key)
        if not isinstance(v, (list, tuple)) or not v or not all(_is_number(x) for x in v):
            return None
        return [float(x) for x in v]

    # --- derived quantities ------------------------------------------------------------

    def noise_rstderr_at(self, batch: int, which: str = "lambda_max") -> tuple[float, int] | None:
        """Relative std error of ``which`` at ``batch`` from the noise study.

        Returns ``(rstderr, measured_batch)``: the value measured at the nearest batch size,
        scaled as ``1/sqrt(B)`` (standard error of a mean) when ``batch`` was not measured.
        """
        sizes = self.series("noise_batch_sizes")
        errs = self.series(f"noise_rstderr_{which}")
        if sizes is None or errs is None or len(sizes) != len(errs):
            return None
        pairs = [(b, r) for b, r in zip(sizes, errs) if b > 0 and math.isfinite(r) and r >= 0]
        if not pairs:
            return None
        b0, r0 = min(pairs, key=lambda p: abs(math.log(p[0] / batch)))
        return r0 * math.sqrt(b0 / batch), int(b0)

    def critical_batch(self, which: str = "lambda_max") -> tuple[float, str] | None:
        """Smallest batch whose curvature estimate has rstderr <= MAX_CURVATURE_RSTDERR.

        Uses the summary's ``critical_batch_<which>`` when present, otherwise the noise study
        (first measured size under the threshold, else ``1/sqrt(B)`` extrapolation).
        Returns ``(batch, source)``.
        """
        direct = self.num(f"critical_batch_{which}")
        if direct is not None and direct > 0:
            return direct, f"critical_batch_{which}"
        sizes = self.series("noise_batch_sizes")
        errs = self.series(f"noise_rstderr_{which}")
        if sizes is None or errs is None or len(sizes) != len(errs):
            return None
        pairs = sorted((b, r) for b, r in zip(sizes, errs) if b > 0 and math.isfinite(r) and r >= 0)
        if not pairs:
            return None
        for b, r in pairs:
            if r <= T.MAX_CURVATURE_RSTDERR:
                return b, "noise study"
        b, r = pairs[-1]
        return b * (r / T.MAX_CURVATURE_RSTDERR) ** 2, "noise study, extrapolated as 1/sqrt(B)"

    def condition(self) -> tuple[float, str] | None:
        """The condition number to reason with: exact when PSD, effective otherwise."""
        for key in ("condition_number", "effective_condition_number"):
            v = self.num(key)
            if v is not None and v >= 1:
                return v, key
        lmax, lmin = self.num("lambda_max"), self.num("lambda_min")
        if lmax is not None and lmin is not None and lmin > 0 and lmax >= lmin:
            return lmax / lmin, "lambda_max/lambda_min"
        return None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fmt(x: float | None, digits: int = 4) -> str:
    """Compact number for reason sentences (``digits`` significant digits)."""
    if x is None:
        return "n/a"
    return f"{x:.{digits}g}"
