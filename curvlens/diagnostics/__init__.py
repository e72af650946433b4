"""Diagnostics built on the operators and estimators: conditioning, sharpness, saddle index,
curvature noise versus batch size, gradient noise scale, per-layer breakdown, and
:func:`analyze`, which runs them as a table of stages (:data:`STAGES`) sharing one budget
(:class:`BudgetSplitter`) and returns one :class:`AnalysisResult`.
"""

from curvlens.diagnostics._noise_fit import FIT_STATUSES, NoiseLawFit, fit_noise_law
from curvlens.diagnostics.analysis import SUMMARY_KEYS, AnalysisResult
from curvlens.diagnostics.budget import BudgetSplitter
from curvlens.diagnostics.driver import ANALYSES, DEFAULT_BUDGET, analyze
from curvlens.diagnostics.conditioning import ConditioningResult, conditioning_from
from curvlens.diagnostics.gradient_noise import GradientNoiseResult, gradient_noise_scale
from curvlens.diagnostics.noise import NoiseStudyResult, curvature_noise, default_batch_sizes, fit_variance_law
from curvlens.diagnostics.per_layer import PerLayerResult, per_layer_breakdown
from curvlens.diagnostics.product_cost import ProductCost, measure_product_cost
from curvlens.diagnostics.saddle import SaddleResult, saddle_from, saddle_verdict
from curvlens.diagnostics.sharpness import SharpnessResult, sharpness
from curvlens.diagnostics.stages import STAGES, Stage

__all__ = [
    "FIT_STATUSES", "NoiseLawFit", "fit_noise_law",
    "analyze", "AnalysisResult", "SUMMARY_KEYS", "ANALYSES", "DEFAULT_BUDGET",
    "BudgetSplitter", "STAGES", "Stage",
    "ConditioningResult", "conditioning_from",
    "SharpnessResult", "sharpness",
    "SaddleResult", "saddle_from", "saddle_verdict",
    "NoiseStudyResult", "curvature_noise", "default_batch_sizes", "fit_variance_law",
    "GradientNoiseResult", "gradient_noise_scale",
    "PerLayerResult", "per_layer_breakdown",
    "ProductCost", "measure_product_cost",
]
