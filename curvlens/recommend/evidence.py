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
    "saddle_free_newton": "saddle-free Newton",
}
FIRST_ORDER = ("sgd_momentum", "adamw")
SECOND_ORDER = ("kfac", "newton_cg", "lbfgs", "saddle_free_newton")
CURVATURE_AWARE = ("diag_hessian", "lbfgs", "kfac", "newton_cg", "saddle_free_newton")
#: methods that choose their step by a line search or a trust region, not a fixed learning rate
LINE_SEARCH = ("lbfgs",)


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

    def note(self, optimizers, reason: str) -> None:
        """A fact about the candidate that is neither for nor against it (weight 0)."""
        for o in _as_tuple(optimizers):
            self.evidence.append(Evidence(self.rule, o, 0.0, reason))

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

    def full_batch(self, batch_size: int | None, dataset_size: int | None = None) -> bool:
        """Whether ``batch_size`` covers every sample (deterministic gradients)."""
        n = self.num("num_samples")
        return batch_size is not None and ((n is not None and n > 0 and batch_size >= n)
                                           or (dataset_size is not None and batch_size >= dataset_size))

    def bottom_resolved(self) -> bool | None:
        """Whether the smallest Ritz value is separated from 0 by its certificate.

        True when ``lambda_min`` is certified and ``lambda_min - lambda_min_residual > 0`` (the
        residual is read when the summary has it), False when it is not certified or its
        interval reaches 0, None when ``lambda_min`` was not measured.
        """
        lmin = self.num("lambda_min")
        if lmin is None:
            return None
        if self.text("lambda_min_status") is not None:
            return self.text("lambda_min_status") in ("verified", "resolved")
        if self.flag("lambda_min_certified") is False:
            return False
        r = self.num("lambda_min_residual")
        return lmin - (r or 0.0) > 0 if lmin > 0 else True

    def condition(self) -> tuple[float, str] | None:
        """The condition number to reason with, and which quantity it is.

        In order: ``condition_number`` (ratio of resolved extremes); the lower bound
        ``kappa >= theta_max / theta_min`` that always holds because Ritz values lie inside the
        spectrum (``condition_number_lower_bound``, or ``lambda_max/lambda_min`` with a
        positive ``lambda_min``): key ``"...lower_bound"`` when the bottom end is unresolved;
        and only when the smallest eigenvalue is negative or unmeasured, the
        ``effective_condition_number`` (a different quantity, named as such in every reason).
        """
        v = self.num("condition_number")
        if v is not None and v >= 1:
            return v, "condition_number"
        bound = self.num("condition_number_lower_bound")
        lmax, lmin = self.num("lambda_max"), self.num("lambda_min")
        if bound is None and lmax is not None and lmin is not None and lmin > 0 and lmax >= lmin:
            bound = lmax / lmin
            if self.bottom_resolved():
                return bound, "lambda_max/lambda_min"
        if bound is not None and bound >= 1:
            return bound, "condition_number_lower_bound"
        if lmin is not None and lmin > 0:
            return None  # positive but unresolved bottom end: an effective ratio would hide it
        v = self.num("effective_condition_number")
        if v is not None and v >= 1:
            return v, "effective_condition_number"
        return None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fmt(x: float | None, digits: int = 4) -> str:
    """Compact number for reason sentences (``digits`` significant digits)."""
    if x is None:
        return "n/a"
    return f"{x:.{digits}g}"
