"""The rule table: every rule the recommender applies, in order, with what it reads.

A rule is a small function ``rule(m, ctx, out)`` (see :mod:`~curvlens.recommend.evidence`);
add one by writing the function and appending a :class:`Rule` row here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from curvlens.recommend import rules_curvature as C
from curvlens.recommend import rules_practical as P
from curvlens.recommend.context import RecommendationContext
from curvlens.recommend.evidence import Measurements, Outcome

RuleFn = Callable[[Measurements, RecommendationContext, Outcome], None]


@dataclass(frozen=True)
class Rule:
    """One row of the rule table.

    Attributes:
        name: stable name, quoted in evidence.
        fn: the rule function.
        reads: the summary keys and context fields it reads (documentation and tests).
    """

    name: str
    fn: RuleFn
    reads: tuple[str, ...]


RULES: tuple[Rule, ...] = (
    Rule("finite_values", C.rule_finite_values, ("*",)),
    Rule("certification", C.rule_certification, ("lambda_max", "lambda_max_certified", "lambda_min", "lambda_min_certified")),
    Rule("consistency", P.rule_consistency, ("num_samples", "lr", "momentum", "ctx.batch_size", "ctx.lr")),
    Rule("stability", C.rule_stability, ("lambda_max", "lr", "momentum", "ctx.lr", "ctx.momentum")),
    Rule("conditioning", C.rule_conditioning,
         ("condition_number", "condition_number_lower_bound", "lambda_min_status", "lambda_min_residual",
          "effective_condition_number", "lambda_max", "lambda_min", "num_samples", "ctx.batch_size")),
    Rule("negative_curvature", C.rule_negative_curvature,
         ("negative_mass", "negative_mass_stderr", "saddle_verdict", "lambda_min", "lambda_max", "curvature", "num_samples", "ctx.batch_size")),
    Rule("curvature_noise", P.rule_curvature_noise,
         ("critical_batch_lambda_max", "noise_batch_sizes", "noise_rstderr_lambda_max", "ctx.batch_size")),
    Rule("gradient_noise", P.rule_gradient_noise, ("gradient_noise_scale", "num_samples", "ctx.batch_size")),
    Rule("memory", P.rule_memory, ("num_params", "ctx.memory_bytes", "ctx.bytes_per_param")),
    Rule("layer_support", P.rule_layer_support, ("ctx.layer_types",)),
    Rule("product_cost", P.rule_product_cost, ("hvp_cost", "sequential_hvp_cost")),
    Rule("phase", P.rule_phase, ("ctx.phase",)),
    Rule("current_optimizer", P.rule_current_optimizer, ("ctx.optimizer", "ctx.phase")),
    Rule("step_cost", P.rule_step_cost,
         ("step_seconds_<candidate>", "gradient_seconds", "hvp_cost", "sequential_hvp_cost", "lambda_max",
          "lambda_min", "num_samples", "num_params", "ctx.batch_size", "ctx.memory_bytes")),
    Rule("kfac_fit", P.rule_kfac_fit, ("kfac_lambda_max", "num_samples", "ctx.batch_size")),
    Rule("kfac_progress", P.rule_kfac_progress, ("kfac_progress_ratio", "num_samples", "ctx.batch_size")),
    Rule("time_budget", P.rule_time_budget, ("gradient_seconds", "num_samples", "ctx.batch_size", "ctx.time_budget_s")),
)


def run_rule(rule: Rule, m: Measurements, ctx: RecommendationContext) -> Outcome:
    """Apply one rule and return what it found."""
    out = Outcome(rule=rule.name)
    rule.fn(m, ctx, out)
    return out
