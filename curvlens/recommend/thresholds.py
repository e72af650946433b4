"""Named thresholds of the optimizer recommender, each with where it comes from.

Every rule in :mod:`curvlens.recommend.rules_curvature` and
:mod:`curvlens.recommend.rules_practical` compares a measurement with one of these constants,
and its reason sentence quotes both. They are rules of thumb distilled from the literature
cited below, not universal truths: change them here (one place) if your experience differs.
"""

from __future__ import annotations

import math

# --- stability (Cohen et al. 2021, "Gradient Descent on Neural Networks Typically Occurs at
# the Edge of Stability"; the momentum-adjusted threshold (2 + 2*beta)/lr is the stability
# limit of heavy-ball momentum on a quadratic, e.g. Goh 2017 "Why Momentum Really Works").

#: ``sharpness_ratio = lr * lambda_max / 2`` (momentum adjusted) above this: the current lr
#: is past the stability threshold of gradient descent on the local quadratic model.
STABILITY_RATIO_UNSTABLE = 1.0
#: above this (but below the unstable ratio): training sits at the edge of stability.
STABILITY_RATIO_EDGE = 0.9
#: suggested SGD lr = this fraction of the stability threshold: 1/lambda_max for plain GD,
#: the step that is optimal for the sharpest direction of a quadratic.
LR_FRACTION_OF_THRESHOLD = 0.5
#: the sharpness of a network grows during training until it reaches the stability threshold
#: (progressive sharpening, Cohen et al. 2021): the suggested SGD lr is divided by this margin
#: so that training survives lambda_max growing by this factor from the measured value.
SHARPENING_MARGIN = 2.0
#: a measured (rather than assumed) margin: lambda_max growth over a recorded run, capped here.
MAX_SHARPENING_MARGIN = 10.0
#: Adam's step is about ``lr * sign(g)`` early on (Kingma & Ba 2015, sec. 2.1); the quadratic model
#: along ``s = sign(g)`` is minimised at ``|g|_1 / (s^T H s)``; the suggested lr is this fraction
#: of it (the same margin for the growth of curvature as for SGD).
ADAM_LR_FRACTION = 0.5

# --- conditioning (gradient descent needs O(kappa) iterations, CG / Newton-type and
# well-preconditioned methods O(sqrt(kappa)) or fewer: Nesterov 2004, Nocedal & Wright 2006 ch. 3, 5).

#: condition number above which a problem counts as ill-conditioned: first-order methods
#: need ~1e4 steps per e-fold of the slowest direction.
ILL_CONDITIONED = 1e4
#: condition number below which plain first-order methods converge in a few hundred steps
#: and curvature-aware methods cannot pay back their overhead.
WELL_CONDITIONED = 1e2

# --- negative curvature (Dauphin et al. 2014, "Identifying and attacking the saddle point
# problem"; quasi-Newton updates need s^T y > 0, Nocedal & Wright 2006 sec. 6.1).

#: fraction of the spectral mass below zero above which the point is a saddle region.
NEGATIVE_MASS_SADDLE = 0.05
#: fraction of the spectral mass below zero above which the point is strongly indefinite.
NEGATIVE_MASS_STRONG = 0.20
#: |lambda_min| / lambda_max above which negative curvature is strong (same sources).
NEGATIVE_RATIO_STRONG = 0.10

# --- noise (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training";
# Zhang et al. 2019, "Which Algorithmic Choices Matter at Which Batch Sizes?").

#: largest acceptable relative standard error of lambda_max (and of the trace) measured on a
#: minibatch, for a second-order method to use curvature from minibatches of that size.
MAX_CURVATURE_RSTDERR = 0.10
#: batch_size / gradient_noise_scale below this: gradient noise dominates, each step is
#: noise-limited and first-order methods are the compute-efficient choice (McCandlish 2018).
NOISE_DOMINATED_FRACTION = 0.1
#: batch_size / gradient_noise_scale above this: steps are curvature-limited, preconditioning
#: keeps paying off as the batch grows (Zhang et al. 2019).
CURVATURE_LIMITED_FRACTION = 1.0
#: support for the first-order method with the cheaper step when the batch lies between
#: NOISE_DOMINATED_FRACTION and CURVATURE_LIMITED_FRACTION of the gradient noise scale (steps to a
#: loss then hardly depend on the preconditioner; Zhang et al. 2019).
BELOW_CRITICAL_CHEAPER_STEP = 0.3

# --- cost (DESIGN.md: an HVP costs 1.1-1.9 gradients with a retained graph, 2-3 recomputed).

#: default cost of one curvature product in gradients when ``hvp_cost`` was not measured.
DEFAULT_HVP_COST = 2.0
#: ``hvp_cost`` above this: curvature products are expensive (graph recomputed, no
#: double-backward fusion); Newton-CG, which needs many per step, suffers most.
HVP_COST_EXPENSIVE = 3.0
#: largest average curvature overhead per step (in gradients) that the suggested refresh
#: interval aims for (K-FAC inverses, Hessian diagonal): Martens & Grosse 2015 amortise the
#: inverses over ~20-100 steps to keep the overhead to a fraction of a gradient.
MAX_CURVATURE_OVERHEAD = 0.25
#: clamp of the suggested refresh interval.
MIN_REFRESH_INTERVAL = 1
MAX_REFRESH_INTERVAL = 100
#: curvature products that one refresh is approximated by (a proxy: K-FAC inverts factors,
#: costed here as a few products; the diagonal-Hessian method draws one Hutchinson probe).
REFRESH_PRODUCTS = {"kfac": 4.0, "diag_hessian": 1.0}
#: cost of the factor statistics of K-FAC per step, in gradients (Martens & Grosse 2015).
KFAC_STATS_OVERHEAD = 0.3
#: elementwise work of Adam beyond SGD, in gradients (a few vector ops per parameter).
ADAM_OVERHEAD = 0.05
#: average function+gradient evaluations per L-BFGS step with a strong-Wolfe line search.
LBFGS_EVALS_PER_STEP = 1.25
#: upper bound on CG iterations per Newton-CG step (truncated Newton, Martens 2010).
MAX_CG_ITERS = 50
#: CG relative residual aimed for within a Newton step.
CG_TOL = 1e-2
#: score lost per decade of a candidate's cost per step in gradients (the time model: a step
#: costing c gradients must make c times an SGD step's progress to break even in a time race).
STEP_COST_PENALTY = 0.5
#: measured step-cost ratios below this count as equal to an SGD step (no penalty): the spread of
#: the interleaved timings (curvlens/recommend/timing.py) between processes on a loaded CPU,
#: e.g. Adam/SGD 1.07-1.34 on a digits MLP and K-FAC/SGD 2.06-2.78 on an autoencoder over three
#: processes each, so a smaller difference in cost is not evidence.
STEP_COST_RESOLUTION = 1.3
#: candidates whose scores lie within this of the last one a trial runs are tried too: the score a step-time
#: difference under :data:`STEP_COST_RESOLUTION` can move, ``STEP_COST_PENALTY * log10(STEP_COST_RESOLUTION)``
#: (0.057), so that which of two tied candidates is tried is not decided by timing noise (measured: on the suite's
#: regression problem Newton-CG and Adam scored 1.147 and 1.128 and swapped third place between runs)
TRIAL_TIE_MARGIN = STEP_COST_PENALTY * math.log10(STEP_COST_RESOLUTION)
#: gradient descent's stability edge for a unit step on the preconditioned curvature ``P G``: K-FAC's
#: unit natural-gradient step overshoots its top direction when ``lambda_max(P G)`` exceeds it
KFAC_UNIT_STEP_EDGE = 2.0

# --- damping (Levenberg-Marquardt; Martens 2010 "Deep learning via Hessian-free optimization").

#: initial damping is at least lambda_max / this, bounding the damped condition number.
MAX_DAMPED_CONDITION = 1e3
#: initial damping is at least this multiple of |lambda_min| when the curvature is indefinite,
#: so that (H + damping I) is positive definite.
NEGATIVE_DAMPING_MARGIN = 1.1

# --- memory: parameter-sized copies held by each method (params + grad + state).

MEMORY_COPIES = {
    "sgd_momentum": 3.0,  # params, grad, momentum buffer
    "adamw": 4.0,  # params, grad, two moments
    "diag_hessian": 5.0,  # Adam-like moments + Hessian diagonal estimate
    "lbfgs": 3.0 + 2 * 10,  # params, grad, direction + 10 (s, y) pairs
    "kfac": 6.0,  # factors, their inverses, momentum (proxy without layer shapes)
    "newton_cg": 7.0,  # CG vectors (x, r, p, Ap) + retained graph not included
    "saddle_free_newton": 3.0 + 10,  # params, grad, direction + a 10-vector Krylov basis
}
#: a method whose state takes more than this fraction of the memory budget is penalized
#: (activations, data and the graph need the rest).
MEMORY_TIGHT_FRACTION = 0.5

# --- time budget.

#: fewer SGD-equivalent steps than this in the time budget: overhead-heavy methods are penalized.
FEW_STEPS = 1000

# --- K-FAC layer support (common implementations: Linear and Conv2d).

KFAC_SUPPORTED_LAYERS = frozenset({"linear", "conv1d", "conv2d", "conv3d", "embedding"})

# --- defaults that are priors, not measurements.

#: Kingma & Ba 2015 default learning rate; fine-tuning uses the common 1e-4 scale.
ADAM_DEFAULT_LR = 1e-3
ADAM_FINETUNE_LR = 1e-4
#: decoupled weight decay of AdamW (Loshchilov & Hutter 2019).
ADAMW_WEIGHT_DECAY = 1e-2
#: AdaHessian default learning rate is 0.15 (Yao et al. 2021); a rounder, smaller value.
DIAG_HESSIAN_LR = 0.1
#: heavy-ball momentum when the context does not give one.
DEFAULT_MOMENTUM = 0.9
#: steps between K-FAC's inverse refreshes assumed by the modelled cost (curvlens' KFAC default, 25).
KFAC_INVERSE_INTERVAL = 25
#: K-FAC lr with momentum 0.9: lr / (1 - momentum) = 1, a unit natural-gradient step.
KFAC_MOMENTUM = 0.9
#: L-BFGS history size (Nocedal & Wright 2006 recommend 3-20).
LBFGS_HISTORY = 10

#: prior score of each candidate before any evidence (Adam(W) is the default most practitioners
#: reach for; curvature-aware methods must earn their place from measurements).
PRIOR_SCORE = {
    "sgd_momentum": 0.5,
    "adamw": 0.6,
    "diag_hessian": 0.0,
    "lbfgs": 0.0,
    "kfac": 0.0,
    "newton_cg": 0.0,
    "saddle_free_newton": -0.3,
}
#: a candidate whose score falls below this is moved to the rejected list.
REJECT_SCORE = -1.0
