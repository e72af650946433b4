"""Turn a candidate's suggested hyperparameters into a ready optimizer.

First-order methods and L-BFGS are ``torch.optim`` classes. Newton-CG, K-FAC and saddle-free
Newton are curvlens' own optimizers, looked up by name in the registry that
:mod:`curvlens.optim` fills (``register_optimizer``): the recommender never imports their
modules, so it works with whichever of them are installed. A candidate whose optimizer is
not registered is reported as not runnable, with why.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import torch

__all__ = ["TORCH_BUILDERS", "REGISTRY_NAMES", "runnable", "constructor_kwargs", "build", "code_lines"]

#: candidate id -> torch.optim class name and the hyperparameters it takes
TORCH_BUILDERS = {
    "sgd_momentum": ("SGD", ("lr", "momentum")),
    "adamw": ("AdamW", ("lr", "betas", "eps", "weight_decay")),
    "lbfgs": ("LBFGS", ("lr", "history_size", "line_search_fn", "max_iter", "max_eval")),
}
#: candidate id -> name in curvlens.optim's registry, and hyperparameter -> constructor argument
REGISTRY_NAMES = {
    "newton_cg": ("newton_cg", {"cg_max_iters": ("cg_maxiter", "max_cg_iters", "cg_max_iters", "maxiter"),
                                "cg_rtol": ("cg_rtol", "rtol"), "curvature": ("curvature",)}),
    "kfac": ("kfac", {"inverse_update_interval": ("inverse_every",)}),
    "saddle_free_newton": ("saddle_free_newton", {}),
}
#: hyperparameters that describe the advice, never constructor arguments
_ADVICE_ONLY = frozenset({"lr_stability_limit", "lr_model_step", "min_batch_size"})


def _registry() -> dict[str, type]:
    try:
        base = importlib.import_module("curvlens.optim._base")
        importlib.import_module("curvlens.optim")  # its __init__ imports (and so registers) the optimizers
    except ImportError:  # pragma: no cover - curvlens.optim is part of the package
        return {}
    return dict(base.OPTIMIZERS)


def runnable(optimizer: str) -> tuple[bool, str]:
    """``(True, how)`` when curvlens can build ``optimizer``, else ``(False, why not)``."""
    if optimizer in TORCH_BUILDERS:
        return True, f"torch.optim.{TORCH_BUILDERS[optimizer][0]}"
    if optimizer in REGISTRY_NAMES:
        name = REGISTRY_NAMES[optimizer][0]
        reg = _registry()
        if name in reg:
            return True, f"curvlens.optim registry {name!r} ({reg[name].__name__})"
        return False, (f"not runnable: no optimizer {name!r} is registered in curvlens.optim (registered: "
                       f"{', '.join(sorted(reg)) or 'none'})")
    return False, "not runnable: curvlens has no implementation of this method (use an external package)"


def constructor_kwargs(optimizer: str, hyperparameters: dict) -> dict[str, Any]:
    """The keyword arguments the optimizer's constructor accepts, from the suggested hyperparameters."""
    hp = {k: v for k, v in hyperparameters.items() if v is not None and k not in _ADVICE_ONLY}
    if optimizer in TORCH_BUILDERS:
        keys = TORCH_BUILDERS[optimizer][1]
        out = {k: hp[k] for k in keys if k in hp}
        if "betas" in out:
            out["betas"] = tuple(out["betas"])
        return out
    if optimizer not in REGISTRY_NAMES:
        raise ValueError(f"optimizer: {optimizer!r} cannot be built; {runnable(optimizer)[1]}")
    name, aliases = REGISTRY_NAMES[optimizer]
    reg = _registry()
    if name not in reg:
        raise ValueError(f"optimizer: {optimizer!r} cannot be built; {runnable(optimizer)[1]}")
    accepted = set(inspect.signature(reg[name].__init__).parameters) - {"self", "model", "loss_fn"}
    out = {}
    for k, v in hp.items():
        for target in aliases.get(k, (k,)):
            if target in accepted:
                out[target] = v
                break
    return out


def build(optimizer: str, hyperparameters: dict, model: torch.nn.Module, loss_fn: Any = None, *,
          overrides: dict | None = None, generator: Any = None) -> torch.optim.Optimizer:
    """A ready optimizer over ``model``'s trainable parameters.

    Args:
        optimizer: candidate id.
        hyperparameters: the candidate's suggested values.
        model: the network.
        loss_fn: the loss (needed by curvlens' own optimizers, which evaluate it themselves).
        overrides: values that replace suggested ones (e.g. ``{"lr": 0.01}``).
        generator: seed or Generator for curvlens optimizers that draw random numbers.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}; pass the network to train")
    ok, why = runnable(optimizer)
    if not ok:
        raise ValueError(f"optimizer: {optimizer!r} cannot be built; {why}")
    kwargs = constructor_kwargs(optimizer, {**hyperparameters, **(overrides or {})})
    if optimizer in TORCH_BUILDERS:
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("model: expected trainable parameters, got none that require grad; unfreeze some")
        return getattr(torch.optim, TORCH_BUILDERS[optimizer][0])(params, **kwargs)
    if loss_fn is None:
        raise TypeError(f"loss_fn: expected the loss for {optimizer} (it evaluates the loss itself), got None; "
                        "pass candidate.build(model, loss_fn)")
    name = REGISTRY_NAMES[optimizer][0]
    cls = _registry()[name]
    if generator is not None and "generator" in inspect.signature(cls.__init__).parameters:
        kwargs["generator"] = generator
    base = importlib.import_module("curvlens.optim._base")
    return base.build_optimizer(name, model, loss_fn, **kwargs)


def _lit(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(_lit(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return repr(v)


def code_lines(optimizer: str, hyperparameters: dict) -> tuple[str, ...]:
    """The two lines of Python that build the candidate (empty when it is not runnable)."""
    if not runnable(optimizer)[0]:
        return ()
    kwargs = constructor_kwargs(optimizer, hyperparameters)
    args = ", ".join(f"{k}={_lit(v)}" for k, v in kwargs.items())
    if optimizer in TORCH_BUILDERS:
        return ("import torch",
                f"opt = torch.optim.{TORCH_BUILDERS[optimizer][0]}(model.parameters(){', ' + args if args else ''})")
    name = REGISTRY_NAMES[optimizer][0]
    return ("from curvlens.optim._base import build_optimizer",
            f"opt = build_optimizer({name!r}, model, loss_fn{', ' + args if args else ''})")
