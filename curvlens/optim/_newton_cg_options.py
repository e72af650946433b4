"""Argument checks of :class:`~curvlens.optim.NewtonCG` (each bad value raises one line naming the
argument, what was expected, what was got and the fix)."""

from __future__ import annotations

from typing import Any

from curvlens.optim._base import CurvatureOptimizer
from curvlens.optim._newton_cg_damping import DampingRule
from curvlens.optim._newton_cg_precond import PRECONDITIONERS
from curvlens.optim._newton_cg_product import PRODUCTS
from curvlens.problem import resolve_loss_form

__all__ = ["CURVATURES", "check_options"]

CURVATURES = ("ggn", "hessian", "fisher", "empirical_fisher")


def check_options(loss_fn: Any, *, curvature, lr, damping, damping_rule, curvature_fraction, preconditioner,
                  precond_exponent, precond_probes, cg_maxiter, cg_rtol, cg_progress_tol, warm_start, backtrack_rho,
                  armijo_c, ls_shrink, ls_low, ls_max, weight_decay, product, max_jacobian_entries) -> dict:
    """The checked options (numbers as floats); raises ValueError / TypeError on a bad one."""
    num = CurvatureOptimizer.check_number
    lr = num(lr, "lr", low=0.0, strict=True, fix="pass e.g. lr=1.0 (the full Newton step)")
    damping = num(damping, "damping", low=0.0, strict=False, fix="pass e.g. damping=1.0 (0 is undamped)")
    if curvature not in CURVATURES:
        raise ValueError(f"curvature: expected one of {', '.join(map(repr, CURVATURES))}, got {curvature!r}; "
                         "pass curvature='ggn' (positive semi-definite, the default)")
    if preconditioner not in PRECONDITIONERS:
        raise ValueError(f"preconditioner: expected one of {PRECONDITIONERS}, got {preconditioner!r}; pass "
                         "preconditioner='auto' (the default) or None")
    if product not in PRODUCTS:
        raise ValueError(f"product: expected one of {PRODUCTS}, got {product!r}; pass product='auto' (the "
                         "Jacobian route for small GGN problems, autograd otherwise)")
    if isinstance(max_jacobian_entries, bool) or not isinstance(max_jacobian_entries, int) \
            or max_jacobian_entries < 1:
        raise ValueError(f"max_jacobian_entries: expected a positive integer, got {max_jacobian_entries!r}; "
                         "pass e.g. max_jacobian_entries=2**22")
    curvature_fraction = num(curvature_fraction, "curvature_fraction", low=0.0, strict=True,
                             fix="pass a fraction in (0, 1], e.g. 0.5")
    if curvature_fraction > 1:
        raise ValueError(f"curvature_fraction: expected a fraction in (0, 1], got {curvature_fraction!r}; "
                         "pass e.g. 0.5 (1 uses the whole batch)")
    precond_exponent = num(precond_exponent, "precond_exponent", low=0.0, strict=False, fix="Martens uses 0.75")
    warm_start = num(warm_start, "warm_start", low=0.0, strict=False, fix="pass a decay in [0, 1], e.g. 0.95")
    armijo_c = num(armijo_c, "armijo_c", low=0.0, strict=True, fix="pass e.g. armijo_c=1e-2")
    ls_shrink = num(ls_shrink, "ls_shrink", low=0.0, strict=True, fix="pass e.g. ls_shrink=0.8")
    if ls_low is not None:
        ls_low = num(ls_low, "ls_low", low=0.0, strict=True, fix="pass e.g. ls_low=0.1 (None: constant shrink)")
        if ls_low > ls_shrink:
            raise ValueError(f"ls_low: expected a value <= ls_shrink={ls_shrink:g}, got {ls_low!r}; pass e.g. "
                             "ls_low=0.1")
    if backtrack_rho is not None:
        backtrack_rho = num(backtrack_rho, "backtrack_rho", low=0.0, strict=True,
                            fix="pass e.g. backtrack_rho=0.5 (None: always walk back)")
    for name, v, hi in (("precond_exponent", precond_exponent, 1.0), ("warm_start", warm_start, 1.0),
                        ("armijo_c", armijo_c, 0.5), ("ls_shrink", ls_shrink, 0.999)):
        if v > hi:
            raise ValueError(f"{name}: expected a value <= {hi:g}, got {v!r}; see the NewtonCG docstring")
    weight_decay = num(weight_decay, "weight_decay", low=0.0, strict=False, fix="pass e.g. weight_decay=1e-4")
    cg_rtol = num(cg_rtol, "cg_rtol", low=0.0, strict=False, fix="pass e.g. cg_rtol=1e-10")
    if cg_progress_tol is not None:
        cg_progress_tol = num(cg_progress_tol, "cg_progress_tol", low=0.0, strict=True,
                              fix="Martens uses 5e-4; None turns the progress stop off")
    for name, v in (("cg_maxiter", cg_maxiter), ("precond_probes", precond_probes), ("ls_max", ls_max)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected a positive integer, got {v!r}; pass e.g. {name}=10")
    if damping_rule is not None and not isinstance(damping_rule, DampingRule):
        raise TypeError(f"damping_rule: expected a curvlens.optim.newton_cg.DampingRule or None, got "
                        f"{type(damping_rule).__name__}; pass DampingRule(boost=1.5, drop=2/3)")
    if curvature in ("ggn", "fisher") and callable(loss_fn) and not isinstance(loss_fn, str) \
            and resolve_loss_form(loss_fn) == "model_batch":
        raise ValueError(f"loss_fn: curvature={curvature!r} needs a criterion applied to the model output, got "
                         "a loss_fn(model, batch); pass curvature='hessian' or 'empirical_fisher'")
    return dict(curvature=curvature, lr=lr, damping=damping, damping_rule=damping_rule,
                curvature_fraction=curvature_fraction, preconditioner=preconditioner,
                precond_exponent=precond_exponent, precond_probes=precond_probes, cg_maxiter=cg_maxiter,
                cg_rtol=cg_rtol, cg_progress_tol=cg_progress_tol, warm_start=warm_start,
                backtrack_rho=backtrack_rho, armijo_c=armijo_c, ls_shrink=ls_shrink, ls_low=ls_low, ls_max=ls_max,
                weight_decay=weight_decay, product=product, max_jacobian_entries=max_jacobian_entries)
