"""Optimizer recommendation from curvature measurements.

``recommend(analysis, context)`` runs a table of small named rules
(:data:`~curvlens.recommend.rules.RULES`) over an analysis summary and the training context,
and returns a :class:`Recommendation`: ranked candidates with suggested hyperparameters,
cost per step and confidence, each buildable (``candidate.build(model, loss_fn)``), warnings,
and rejected candidates with why. ``trial=seconds`` re-ranks the top candidates by short,
seeded runs (:mod:`~curvlens.recommend.trials`); :func:`advise_run` reads a training
monitor's series and says whether to switch now.
"""

from curvlens.recommend.advice import RunAdvice, advise_run
from curvlens.recommend.context import RecommendationContext, parse_duration, parse_memory
from curvlens.recommend.engine import as_summary, recommend
from curvlens.recommend.evidence import CANDIDATES, Evidence, Measurements, Outcome
from curvlens.recommend.probe import probe_measurements
from curvlens.recommend.recommendation import Recommendation, RankedCandidate, RejectedCandidate
from curvlens.recommend.rules import RULES, Rule
from curvlens.recommend.trials import TrialResult, run_trials

__all__ = [
    "recommend", "RecommendationContext", "Recommendation", "RankedCandidate", "RejectedCandidate",
    "RULES", "Rule", "Evidence", "Outcome", "Measurements", "CANDIDATES", "as_summary",
    "parse_memory", "parse_duration", "TrialResult", "run_trials", "probe_measurements", "RunAdvice",
    "advise_run",
]
