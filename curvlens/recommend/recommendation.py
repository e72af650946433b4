"""The result of :func:`curvlens.recommend.recommend`: ranked candidates, warnings, rejections."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from curvlens.results import RunInfo, register_result


def confidence_label(c: float) -> str:
    """``"high"`` (>= 0.7), ``"medium"`` (>= 0.4) or ``"low"``."""
    return "high" if c >= 0.7 else "medium" if c >= 0.4 else "low"


@register_result("recommendation_candidate")
@dataclass(frozen=True)
class RankedCandidate:
    """One recommended optimizer.

    Attributes:
        optimizer: candidate id (``sgd_momentum``, ``adamw``, ``diag_hessian``, ``lbfgs``,
            ``kfac``, ``newton_cg``).
        label: human name, e.g. ``"K-FAC"``.
        score: prior + sum of rule evidence (higher is better).
        confidence: in [0, 1]; lower when measurements are missing or the ranking is close.
        cost_per_step: expected cost of one step in gradients of the same batch (SGD = 1).
        hyperparameters: suggested settings (numbers, str, lists, None when not derivable).
        reasons: ``"for: ..."`` / ``"against: ..."`` sentences, strongest first, then notes.
        runnable: whether curvlens can build it (:meth:`build`); candidates that are not come
            after every runnable one, with why in ``build_note``.
        build_note: how it is built (``torch.optim.SGD``, a curvlens registry name) or why not.
    """

    optimizer: str
    label: str
    score: float
    confidence: float
    cost_per_step: float
    hyperparameters: dict
    reasons: tuple[str, ...]
    runnable: bool = True
    build_note: str = ""

    def build(self, model: Any, loss_fn: Any = None, *, generator: Any = None, **overrides: Any):
        """A ready optimizer with the suggested hyperparameters (``overrides`` replace some, e.g.
        ``lr=0.01``): ``torch.optim`` for first-order methods and L-BFGS, curvlens' own optimizers
        (by registry name) for Newton-CG, K-FAC and saddle-free Newton.

        Raises:
            ValueError: the candidate is not runnable (see ``build_note``).
        """
        from curvlens.recommend.build import build

        return build(self.optimizer, dict(self.hyperparameters), model, loss_fn, overrides=overrides,
                     generator=generator)

    @property
    def code(self) -> tuple[str, ...]:
        """The two lines of Python that build this optimizer (``model`` and ``loss_fn`` in scope)."""
        from curvlens.recommend.build import code_lines

        return code_lines(self.optimizer, dict(self.hyperparameters)) if self.runnable else ()


@register_result("recommendation_rejected")
@dataclass(frozen=True)
class RejectedCandidate:
    """A candidate that was ruled out (hard constraint or score below the rejection threshold)."""

    optimizer: str
    label: str
    reasons: tuple[str, ...]


@register_result("recommendation")
@dataclass(frozen=True)
class Recommendation:
    """Ranked optimizer candidates with the evidence behind them.

    Attributes:
        candidates: ranked best first.
        rejected: ruled-out candidates, with why.
        warnings: problems found in the analysis or the context (instability, saddle region,
            non-finite values, contradictions).
        missing: what to measure or set to raise confidence.
        confidence: confidence of the top choice, in [0, 1].
        context: the context used, as plain values.
        info: run metadata (deterministic: no seed, no matvecs).
        trials: the trial runs that re-ranked the candidates (empty without ``trial=``).
    """

    candidates: tuple[RankedCandidate, ...]
    rejected: tuple[RejectedCandidate, ...]
    warnings: tuple[str, ...]
    missing: tuple[str, ...]
    confidence: float
    context: dict
    info: RunInfo
    trials: tuple = ()

    @property
    def top(self) -> RankedCandidate | None:
        """The best candidate, or None when every candidate was rejected."""
        return self.candidates[0] if self.candidates else None

    def build(self, model: Any, loss_fn: Any = None, *, generator: Any = None, **overrides: Any):
        """The top candidate's optimizer (see :meth:`RankedCandidate.build`)."""
        if self.top is None:
            raise ValueError("recommendation: expected a ranked candidate, got none (all rejected); see .rejected")
        return self.top.build(model, loss_fn, generator=generator, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: ``{"candidates": [...], "warnings": [...], "rejected": [...], ...}``."""
        return {
            "candidates": [
                {"optimizer": c.optimizer, "label": c.label, "score": c.score,
                 "hyperparameters": dict(c.hyperparameters), "cost_per_step": c.cost_per_step,
                 "confidence": c.confidence, "reasons": list(c.reasons), "runnable": c.runnable,
                 "build_note": c.build_note, "code": list(c.code)}
                for c in self.candidates
            ],
            "trials": [t.to_dict() for t in self.trials],
            "warnings": list(self.warnings),
            "rejected": [{"optimizer": r.optimizer, "label": r.label, "reasons": list(r.reasons)}
                         for r in self.rejected],
            "missing": list(self.missing),
            "confidence": self.confidence,
        }

    def to_text(self, *, max_reasons: int = 6) -> str:
        """Human-readable report (used by ``curvlens recommend``)."""
        lines = [f"Optimizer recommendation (confidence {self.confidence:.2f}, {confidence_label(self.confidence)})"]
        if not self.candidates:
            lines.append("  no candidate survived the constraints; see rejected below")
        for i, c in enumerate(self.candidates, 1):
            lines.append(f"{i:2d}. {c.label}  score {c.score:+.2f}  confidence {c.confidence:.2f}  "
                         f"cost/step {c.cost_per_step:.2f}x SGD")
            lines.append(f"    hyperparameters: {_hp_text(c.hyperparameters)}")
            if c.runnable:
                lines.extend(f"    >>> {x}" for x in c.code)
            else:
                lines.append(f"    ! {c.build_note}")
            lines.extend(f"    {_mark(r)} {_strip(r)}" for r in c.reasons[:max_reasons])
            if len(c.reasons) > max_reasons:
                lines.append(f"    ... {len(c.reasons) - max_reasons} more (use --format json)")
        if self.trials:
            lines.append("Trial runs (loss decrease per second, best learning rate of each bracket):")
            lines.extend(f"  {t.summary_line()}" for t in self.trials)
        if self.warnings:
            lines.append("Warnings:")
            lines.extend(f"  ! {w}" for w in self.warnings)
        if self.rejected:
            lines.append("Rejected:")
            lines.extend(f"  x {r.label}: {'; '.join(r.reasons[:3])}" for r in self.rejected)
        if self.missing:
            lines.append("To raise confidence:")
            lines.extend(f"  - {s}" for s in self.missing)
        return "\n".join(lines)

    def to_markdown(self, *, heading_level: int = 2) -> str:
        """A Markdown section for the analysis report."""
        h = "#" * heading_level
        out = [f"{h} Optimizer recommendation", "",
               f"Confidence of the top choice: **{self.confidence:.2f}** ({confidence_label(self.confidence)}).", ""]
        if self.candidates:
            out += ["| rank | optimizer | score | confidence | cost/step (x SGD) | hyperparameters |",
                    "|---:|---|---:|---:|---:|---|"]
            out += [f"| {i} | {c.label} | {c.score:+.2f} | {c.confidence:.2f} | {c.cost_per_step:.2f} | "
                    f"{_hp_text(c.hyperparameters).replace('|', '/')} |" for i, c in enumerate(self.candidates, 1)]
            top = self.candidates[0]
            out += ["", f"Why {top.label}:", ""] + [f"- {r}" for r in top.reasons]
        else:
            out.append("No candidate survived the constraints.")
        for title, items in (("Warnings", self.warnings),
                             ("Rejected", [f"{r.label}: {'; '.join(r.reasons)}" for r in self.rejected]),
                             ("To raise confidence", self.missing)):
            if items:
                out += ["", f"{h}# {title}", ""] + [f"- {x}" for x in items]
        return "\n".join(out) + "\n"


def _mark(reason: str) -> str:
    return "+" if reason.startswith("for:") else "-" if reason.startswith("against:") else "*"


def _strip(reason: str) -> str:
    for p in ("for: ", "against: ", "note: "):
        if reason.startswith(p):
            return reason[len(p):]
    return reason


def _hp_text(hp: dict) -> str:
    def f(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}"
        if isinstance(v, (list, tuple)):
            return "(" + ", ".join(f(x) for x in v) + ")"
        return "unknown" if v is None else str(v)

    return ", ".join(f"{k}={f(v)}" for k, v in hp.items()) or "-"
