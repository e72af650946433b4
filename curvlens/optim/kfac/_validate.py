"""Argument checks of the K-FAC entry points: one line each, naming argument, expectation and fix."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from curvlens.optim.kfac.fisher import FISHER_KINDS

INVERSE_KINDS = ("cholesky", "eigh", "triangular")
WEIGHT_SHARING_KINDS = ("expand", "reduce")


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_options(model: Any, *, damping: Any, factor_decay: Any, update_every: Any, inverse_every: Any,
                  fisher: Any, kl_clip: Any, lr: Any, ekfac: Any = False,
                  inverse: Any = "cholesky", weight_sharing: Any = "expand",
                  statistics_fraction: Any = 1.0) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}; pass the network itself")
    if not _num(damping) or damping < 0:
        raise ValueError(f"damping: expected a finite float >= 0, got {damping!r}; try damping=1e-3")
    if not _num(factor_decay) or not 0 <= factor_decay < 1:
        raise ValueError(f"factor_decay: expected a float in [0, 1), got {factor_decay!r}; try factor_decay=0.95")
    for name, v in (("update_every", update_every), ("inverse_every", inverse_every)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {v!r}; pass e.g. {name}=10")
    if fisher not in FISHER_KINDS:
        raise ValueError(f"fisher: expected one of {', '.join(map(repr, FISHER_KINDS))}, got {fisher!r}; "
                         "'mc' samples targets from the model (the true Fisher)")
    if kl_clip is not None and (not _num(kl_clip) or kl_clip <= 0):
        raise ValueError(f"kl_clip: expected a float > 0 or None, got {kl_clip!r}; pass kl_clip=None to disable")
    if not _num(lr) or lr <= 0:
        raise ValueError(f"lr: expected a float > 0, got {lr!r}; pass the base optimizer's learning rate")
    if not isinstance(ekfac, bool):
        raise TypeError(f"ekfac: expected True or False, got {ekfac!r}; pass ekfac=True for eigenvalue-corrected K-FAC")
    if inverse not in INVERSE_KINDS:
        raise ValueError(f"inverse: expected one of {', '.join(map(repr, INVERSE_KINDS))}, got {inverse!r}; "
                         "'cholesky' inverts the damped factors explicitly, 'triangular' keeps their "
                         "Cholesky factors, 'eigh' decomposes them")
    if weight_sharing not in WEIGHT_SHARING_KINDS:
        raise ValueError(f"weight_sharing: expected one of {', '.join(map(repr, WEIGHT_SHARING_KINDS))}, got "
                         f"{weight_sharing!r}; 'expand' makes every position a row, 'reduce' every sample")
    if ekfac and weight_sharing == "reduce":
        raise ValueError("weight_sharing: expected 'expand' with ekfac=True (the eigenvalue correction needs "
                         "per-position rows), got 'reduce'; pass weight_sharing='expand' or ekfac=False")
    if not _num(statistics_fraction) or not 0 < statistics_fraction <= 1:
        raise ValueError(f"statistics_fraction: expected a float in (0, 1], got {statistics_fraction!r}; "
                         "pass e.g. statistics_fraction=0.25 (1 takes the statistics from the whole batch)")
    if statistics_fraction < 1 and ekfac:
        raise ValueError(f"statistics_fraction: expected 1 with ekfac=True (the eigenvalue-corrected moments "
                         f"take every sample), got {statistics_fraction!r}; pass statistics_fraction=1 or ekfac=False")
