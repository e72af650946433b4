"""Optimizer recommendation from curvature measurements (issue 6).

``recommend(analysis, context)`` runs a table of small named rules
(:data:`~curvlens.recommend.rules.RULES`) over an analysis summary and the training context,
and returns a :class:`Recommendation`: ranked candidates with suggested hyperparameters,
cost per step and confidence, warnings, and rejected candidates with why.
"""

from curvlens.recommend.context import RecommendationContext, parse_duration, parse_memory
from curvlens.recommend.engine import as_summary, recommend
from curvlens.recommend.evidence import CANDIDATES, Evidence, Measurements, Outcome
from curvlens.recommend.recommendation import Recommendation, RankedCandidate, RejectedCandidate
from curvlens.recommend.rules import RULES, Rule

__all__ = [
    "recommend", "RecommendationContext", "Recommendation", "RankedCandidate", "RejectedCandidate",
    "RULES", "Rule", "Evidence", "Outcome", "Measurements", "CANDIDATES", "as_summary",
    "parse_memory", "parse_duration",
]
