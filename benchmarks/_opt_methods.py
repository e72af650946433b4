"""Methods of the optimizer benchmark (register more with ``@register_method``).

A method is a :class:`Method`: ``build(instance, hparam, seed)`` returns a function
``step(batch)`` that performs one optimizer step on ``batch``; ``grid`` is the grid of its
tuned hyper-parameter (named ``hparam``; per problem through ``grids``), ``kind`` one of
``"first_order"``, ``"quasi_newton"``, ``"curvature"`` (used for the ratios in the table),
``batch_size`` an optional override of the problem's mini-batch size (an int or a dict
problem -> int). Curvature methods are imported lazily so the harness runs without them.

Engineers adding methods: append a ``register_method(Method(...))`` call at the end of
:func:`register_defaults` or in your own function called from ``benchmarks/optimizers.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

__all__ = ["METHODS", "Method", "register_method", "torch_stepper"]

METHODS: dict[str, "Method"] = {}


@dataclass(frozen=True)
class Method:
    name: str
    kind: str
    build: Callable[[Any, float, int], Callable[[Any], None]]
    grid: tuple[float, ...]
    hparam: str = "lr"
    grids: dict = field(default_factory=dict)  # problem name -> grid
    batch_size: Any = None  # None (the problem's), an int, or a dict problem -> int

    def grid_for(self, problem: str) -> tuple[float, ...]:
        return tuple(self.grids.get(problem, self.grid))


def register_method(m: Method) -> Method:
    if m.name in METHODS:
        raise ValueError(f"method {m.name!r} registered twice")
    METHODS[m.name] = m
    return m


def torch_stepper(opt: torch.optim.Optimizer, inst) -> Callable[[Any], None]:
    """``step(batch)`` for a closure-based torch optimizer on ``inst.model`` / ``inst.loss_fn``."""
    model, loss_fn = inst.model, inst.loss_fn

    def step(batch):
        x, y = batch

        def closure():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            return loss

        opt.step(closure)

    return step


def _adam(inst, lr, seed):
    return torch_stepper(torch.optim.Adam(inst.model.parameters(), lr=lr), inst)


def _sgd(inst, lr, seed):
    return torch_stepper(torch.optim.SGD(inst.model.parameters(), lr=lr, momentum=0.9), inst)


def _lbfgs(inst, lr, seed):
    opt = torch.optim.LBFGS(inst.model.parameters(), lr=lr, max_iter=20, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0)
    return torch_stepper(opt, inst)


#: NewtonCG options per problem (everything else is the default: GGN, products through the output
#: Jacobian where M * D is small, else autograd; curvature on half of each batch). The PINN's model
#: differentiates with respect to its inputs inside ``forward``, so torch.func cannot build per-sample
#: gradients or Jacobians: its Jacobian is built by vmapped one-hot backward passes on sub-batches
#: (JacobianGGNOperator's "batched" route) and CG runs unpreconditioned on all 130 points. On the
#: autoencoder the empirical-Fisher diagonal (per-sample gradients of 300 samples x
#: 37,896 parameters) cost ~40% of a step and did not pay for itself: CG runs unpreconditioned.
#: On the PINN the Armijo search halves the step (``ls_shrink=0.5``, Nocedal and Wright's usual
#: factor) instead of Martens' 0.8: its early steps are accepted at a = 0.03-0.3, which took up to
#: 16 loss evaluations at 0.8. Measured on seeds 3-8, held out from the benchmark's seeds: median
#: 26% less time to the target at damping 0.1, faster on 5 of 6 seeds.
NEWTON_CG_OPTIONS = {"pinn": {"preconditioner": None, "curvature_fraction": 1.0, "ls_shrink": 0.5},
                     "autoencoder": {"preconditioner": None}}

#: NewtonCG's grid (initial damping) per problem, bracketing the tuned value (on logreg the tuned
#: value sat at the grid's low edge 1e-6: the grid goes down to the damping rule's floor 1e-8)
NEWTON_CG_GRIDS = {"logreg": (1e-8, 1e-7, 1e-6, 1e-5, 1e-4), "pinn": (3e-3, 1e-2, 1e-1, 1.0)}

#: SGD-momentum's grids widened where its tuned lr sat at an edge of the default grid: on the PINN
#: at the low edge 1e-2 (which diverged: 1.7e2 at the budget), on the autoencoder at the high edge 0.3, then 3
SGD_WIDENED_GRIDS = {"pinn": (1e-4, 3e-4, 1e-3, 3e-3), "autoencoder": (0.3, 1.0, 3.0, 10.0)}


def _newton_cg(inst, damping, seed, **kw):
    from curvlens.optim.newton_cg import NewtonCG

    kw = {**NEWTON_CG_OPTIONS.get(inst.problem, {}), **kw}
    opt = NewtonCG(inst.model, inst.loss_fn, damping=damping, generator=seed, **kw)

    def step(batch):
        opt.step(batch)

    return step


def register_defaults() -> None:
    """Adam, SGD with momentum 0.9, L-BFGS (strong Wolfe) and Newton-CG."""
    if "adam" not in METHODS:
        register_method(Method("adam", "first_order", _adam, (1e-3, 3e-3, 1e-2, 3e-2),
                               grids={"logreg": (3e-2, 1e-1, 3e-1, 1.0)}))
    if "sgd_m" not in METHODS:
        register_method(Method("sgd_m", "first_order", _sgd, (1e-2, 3e-2, 1e-1, 3e-1),
                               grids={"logreg": (3.0, 10.0, 30.0, 100.0), **SGD_WIDENED_GRIDS}))
    if "lbfgs" not in METHODS:
        register_method(Method("lbfgs", "quasi_newton", _lbfgs, (0.1, 0.3, 1.0, 3.0)))
    if "newton_cg" not in METHODS:
        # the grid is over the initial damping (adapted by Levenberg-Marquardt); everything else is
        # NewtonCG's default or NEWTON_CG_OPTIONS
        register_method(Method("newton_cg", "curvature", _newton_cg, (1e-4, 1e-3, 1e-2, 1e-1), hparam="damping",
                               grids=NEWTON_CG_GRIDS, batch_size={"autoencoder": 600}))


# ---------------------------------------------------------------------- saddle-free Newton
def _saddle_free(inst, radius, seed, **kw):
    from curvlens.optim.saddle_free import SaddleFreeNewton

    opt = SaddleFreeNewton(inst.model, inst.loss_fn, trust_radius=radius, generator=seed, **{**_SFN_SETTINGS, **kw})

    def step(batch):
        opt.step(batch)

    return step


#: 2 Lanczos directions around the gradient + the previous step, rebuilt every step: 3 Hessian-vector
#: products per step (the quadratic model is exact in the subspace, so no product for the predicted
#: decrease), the loss, gradient and products from one graph; escape steps of trust-region length
#: along negative curvature; a small initial damping (adapted from the reduction ratio) so the first
#: steps scale with the small curvature near a small-init saddle. The grid is the initial trust radius.
_SFN_SETTINGS = dict(subspace=3, history=1, refresh_every=1, damping=1e-4, negative="escape")

_register_defaults_before_saddle = register_defaults


def register_defaults() -> None:  # noqa: F811 - extends the methods by saddle-free Newton
    """The methods above and saddle-free Newton (grid over the initial trust radius)."""
    _register_defaults_before_saddle()
    if "saddle_free" not in METHODS:
        register_method(Method("saddle_free", "curvature", _saddle_free, (0.25, 0.5, 1.0, 2.0), hparam="trust_radius",
                               batch_size={"autoencoder": 600}))


# ---------------------------------------------------------------------- K-FAC
def _kfac(inst, lr, seed, **kw):
    from curvlens.optim.kfac import KFAC

    opt = KFAC(inst.model, inst.loss_fn, lr=lr, generator=seed, **kw)

    def step(batch):
        opt.step(batch)

    return step


def _kfac_with(**kw):
    return lambda inst, lr, seed: _kfac(inst, lr, seed, **kw)


#: K-FAC's grid: learning rate (the method's ``hparam``) x damping (one method per damping, named
#: ``kfac_d<damping>``); momentum 0.9, Monte-Carlo Fisher, factors every step, inverses every 10
#: steps, KL clip 1e-3 (the defaults of ``curvlens.optim.kfac.KFAC``)
KFAC_LRS = (0.03, 0.1, 0.3, 1.0)
KFAC_DAMPINGS = (1e-4, 1e-3, 1e-2)

_register_defaults_before_kfac = register_defaults


def register_defaults() -> None:  # noqa: F811 - extends the methods by K-FAC
    """The methods above and K-FAC, one method per damping of :data:`KFAC_DAMPINGS`."""
    _register_defaults_before_kfac()
    for d in KFAC_DAMPINGS:
        if f"kfac_d{d:g}" not in METHODS:
            register_method(Method(f"kfac_d{d:g}", "curvature", _kfac_with(damping=d), KFAC_LRS))


# ---------------------------------------------------------------------- K-FAC at its defaults
#: K-FAC with every setting at the library's defaults (damping 1e-2, statistics every 5 steps,
#: inverses every 25 as explicit Cholesky inverses of the damped factors, KL clip 1e-2,
#: momentum 0.5, Monte-Carlo Fisher); only ``lr`` is tuned
KFAC_DEFAULT_LRS = (0.1, 0.3, 0.5, 1.0)

_register_defaults_before_kfac_defaults = register_defaults


def register_defaults() -> None:  # noqa: F811 - extends the methods by K-FAC at its defaults
    """The methods above and ``kfac`` (the library's defaults, lr over :data:`KFAC_DEFAULT_LRS`)."""
    _register_defaults_before_kfac_defaults()
    if "kfac" not in METHODS:
        register_method(Method("kfac", "curvature", _kfac_with(), KFAC_DEFAULT_LRS))


# ---------------------------------------------------------------------- K-FAC: expand against reduce
#: The two treatments of a convolution's shared positions (``weight_sharing=``, Eschenhagen et
#: al. 2023), every other setting at the library's defaults; on the digits CNN the learning-rate
#: grid reaches down to 0.01 (the best K-FAC rate there once sat at the bottom of
#: :data:`KFAC_DEFAULT_LRS`; with the KL clip active early the rate matters little), and Adam's
#: grid there is widened up to 0.1 (its best sat at the top, 0.03, of the shared grid)
KFAC_CNN_LRS = (0.01, 0.03, 0.1, 0.3, 0.5, 1.0)
ADAM_CNN_LRS = (3e-3, 1e-2, 3e-2, 1e-1)

_register_defaults_before_kfac_sharing = register_defaults


def register_defaults() -> None:  # noqa: F811 - extends the methods by K-FAC-expand / K-FAC-reduce
    """The methods above, ``kfac_expand`` and ``kfac_reduce``, and Adam's digits-CNN grid."""
    _register_defaults_before_kfac_sharing()
    for ws in ("expand", "reduce"):
        if f"kfac_{ws}" not in METHODS:
            register_method(Method(f"kfac_{ws}", "curvature", _kfac_with(weight_sharing=ws), KFAC_DEFAULT_LRS,
                                   grids={"digits_cnn": KFAC_CNN_LRS}))
    if "kfac" in METHODS:
        METHODS["kfac"].grids.setdefault("digits_cnn", KFAC_CNN_LRS)
    if "adam" in METHODS:
        METHODS["adam"].grids.setdefault("digits_cnn", ADAM_CNN_LRS)


# ---------------------------------------------------------------------- saddle-free problems: grids, hybrid
#: On the deep linear network at its saddle the shared first-order grids put the best Adam rate
#: (3e-2) at their top edge while Adam at 0.1 is ~3x faster; these grids reach past the fastest
#: rate, up to where the methods slow down again or diverge (SGD-momentum diverges at 0.3 from
#: this initialization and stalls on the 0.068 plateau below it)
DEEP_LINEAR_ADAM_LRS = (1e-2, 3e-2, 1e-1, 3e-1, 1.0)
DEEP_LINEAR_SGD_LRS = (1e-2, 3e-2, 1e-1, 2e-1, 3e-1)

#: Saddle-free Newton as a hybrid with Adam: the subspace (2 Lanczos directions + the previous
#: step) is rebuilt every 20 steps; in between, the stored eigenpairs give the subspace part of
#: the step and Adam (the base rule) the part outside it, with no second-order graph or product
#: (``between_refreshes="first_order"``), on the problem's mini-batches of 128. The grid is Adam's
#: ``base_lr``. Benchmark settings, not the library's defaults.
SFN_ADAM_SETTINGS = dict(subspace=3, history=1, refresh_every=20, damping=1e-4, negative="escape", base="adam",
                         between_refreshes="first_order", trust_radius=2.0)
SFN_ADAM_LRS = (1e-3, 3e-3, 1e-2, 3e-2)


def _saddle_free_adam(inst, base_lr, seed):
    from curvlens.optim.saddle_free import SaddleFreeNewton

    opt = SaddleFreeNewton(inst.model, inst.loss_fn, base_lr=base_lr, generator=seed, **SFN_ADAM_SETTINGS)

    def step(batch):
        opt.step(batch)

    return step


#: The same hybrid with ``between_refreshes="base"``: every 20th step a saddle-free Newton step in
#: a freshly built subspace (2 Lanczos directions + the previous step), the 19 steps in between
#: Adam alone on the whole gradient (no projection, trust radius or loss check). The trust-region
#: ratio rule is made for a quadratic model; on ``saddle_free_adam``'s first-order steps (lr 1e-2,
#: seed 0) it shrank the radius from 2 to 0.06-0.4 within 25 steps and clipped the Adam steps to
#: it (median step norm 0.07-0.36), and without the clip two thirds of the steps were rejected on
#: their mini-batch and the damping rose to 1e10. Benchmark settings.
SFN_BASE_SETTINGS = {**SFN_ADAM_SETTINGS, "between_refreshes": "base"}


def _saddle_free_base(inst, base_lr, seed):
    from curvlens.optim.saddle_free import SaddleFreeNewton

    opt = SaddleFreeNewton(inst.model, inst.loss_fn, base_lr=base_lr, generator=seed, **SFN_BASE_SETTINGS)

    def step(batch):
        opt.step(batch)

    return step


_register_defaults_before_saddle_grids = register_defaults


def register_defaults() -> None:  # noqa: F811 - deep-linear first-order grids, saddle-free + Adam hybrid
    """The methods above, Adam's and SGD-momentum's deep-linear grids, ``saddle_free_adam`` and
    ``saddle_free_base``."""
    _register_defaults_before_saddle_grids()
    if "adam" in METHODS:
        METHODS["adam"].grids.setdefault("deep_linear", DEEP_LINEAR_ADAM_LRS)
    if "sgd_m" in METHODS:
        METHODS["sgd_m"].grids.setdefault("deep_linear", DEEP_LINEAR_SGD_LRS)
    if "saddle_free_adam" not in METHODS:
        register_method(Method("saddle_free_adam", "curvature", _saddle_free_adam, SFN_ADAM_LRS, hparam="base_lr"))
    if "saddle_free_base" not in METHODS:
        register_method(Method("saddle_free_base", "curvature", _saddle_free_base, SFN_ADAM_LRS, hparam="base_lr"))


# ---------------------------------------------------------------------- Newton-CG with Martens' full walk back
def _newton_cg_walkback(inst, damping, seed):
    return _newton_cg(inst, damping, seed, backtrack_rho=None)


_register_defaults_before_walkback = register_defaults


def register_defaults() -> None:  # noqa: F811 - extends the methods by Newton-CG with the full walk back
    """The methods above and ``newton_cg_walkback``: Newton-CG with ``backtrack_rho=None``, i.e. CG
    backtracking always walks back over the kept iterates while the loss improves (Martens 2010),
    instead of taking the last iterate when its reduction ratio is >= 0.5 (the default). On the PINN
    the default reaches the target sooner and the walk back reaches a lower error late in the run."""
    _register_defaults_before_walkback()
    if "newton_cg_walkback" not in METHODS:
        register_method(Method("newton_cg_walkback", "curvature", _newton_cg_walkback, (1e-4, 1e-3, 1e-2, 1e-1),
                               hparam="damping", grids=NEWTON_CG_GRIDS, batch_size={"autoencoder": 600}))


# ---------------------------------------------------------------------- K-FAC with fresh inverses
#: K-FAC with the factors' statistics AND their inverses refreshed every 5 steps
#: (``update_every=5, inverse_every=5``), kept as Cholesky factors (``inverse="triangular"``: the
#: inversion is the factorization alone, each step two triangular solves per factor); every other
#: setting at the library's defaults. On the digits CNN a run to the target takes ~40 steps, so
#: the default ``inverse_every=25`` refreshes the inverses only once; refreshing them at every
#: statistics step cut the steps to the target from 47 to 35 (median of seeds 0-2).
#: ``kfac_fresh_reduce`` is the same with ``weight_sharing="reduce"``. Benchmark settings.
KFAC_FRESH = dict(update_every=5, inverse_every=5, inverse="triangular")

_register_defaults_before_kfac_fresh = register_defaults


def register_defaults() -> None:  # noqa: F811 - extends the methods by K-FAC with fresh inverses
    """The methods above, ``kfac_fresh`` and ``kfac_fresh_reduce``."""
    _register_defaults_before_kfac_fresh()
    for name, kw in (("kfac_fresh", {}), ("kfac_fresh_reduce", {"weight_sharing": "reduce"})):
        if name not in METHODS:
            register_method(Method(name, "curvature", _kfac_with(**KFAC_FRESH, **kw), KFAC_DEFAULT_LRS))


# ---------------------------------------------------------------------- K-FAC with sub-batch statistics
#: K-FAC whose factor statistics come from a random quarter of each statistics batch
#: (``statistics_fraction=0.25``; the Monte-Carlo backward still runs through the whole batch),
#: statistics every 5 steps, inverses every 10 as Cholesky factors (``inverse="triangular"``);
#: every other setting at the library's defaults. On the digits CNN: 39.5 steps to the target
#: (median of seeds 0-5) at 1.33x an SGD step (``benchmarks/results/kfac_step_cost.txt``).
KFAC_SUB = dict(update_every=5, inverse_every=10, inverse="triangular", statistics_fraction=0.25)

_register_defaults_before_kfac_sub = register_defaults


def register_defaults() -> None:  # noqa: F811 - extends the methods by K-FAC with sub-batch statistics
    """The methods above and ``kfac_sub``."""
    _register_defaults_before_kfac_sub()
    if "kfac_sub" not in METHODS:
        register_method(Method("kfac_sub", "curvature", _kfac_with(**KFAC_SUB), KFAC_DEFAULT_LRS))
