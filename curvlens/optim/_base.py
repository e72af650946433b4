"""The contract every curvlens optimizer shares: ``loss = opt.step(batch)``.

:class:`CurvatureOptimizer` is a :class:`torch.optim.Optimizer` over a model's trainable
parameters that evaluates its loss, gradient and curvature through a
:class:`~curvlens.Problem` built on the batch it is given (so the model's mode, BatchNorm
statistics, ``.grad`` and the global RNG are left as they were). It provides what every
second-order step needs: a snapshot of the weights and an exact restore, a finite check, a
curvature sub-batch drawn from its own generator, global state that survives
``state_dict()`` (with the generator's state, so a resumed run continues bit-identically),
and a registry by name that the recommender uses to build optimizers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from curvlens._rng import resolve_generator
from curvlens.distributed.group import resolve_group, unwrap_ddp
from curvlens.problem import Problem, resolve_loss_form
from curvlens.problem.batches import batch_size, collect_batches, subset_batch
from curvlens.problem.params import select_params

__all__ = ["CurvatureOptimizer", "StepRecord", "OPTIMIZERS", "register_optimizer", "build_optimizer"]

#: registry name -> optimizer class (filled by :func:`register_optimizer`)
OPTIMIZERS: dict[str, type] = {}


def register_optimizer(name: str) -> Callable[[type], type]:
    """Class decorator: make an optimizer buildable by name (``build_optimizer(name, ...)``)."""

    def deco(cls: type) -> type:
        if name in OPTIMIZERS and OPTIMIZERS[name] is not cls:
            raise ValueError(f"register_optimizer: name {name!r} is already used by {OPTIMIZERS[name].__name__}")
        OPTIMIZERS[name] = cls
        cls.registry_name = name
        return cls

    return deco


def build_optimizer(name: str, model: nn.Module, loss_fn: Any, **kwargs) -> torch.optim.Optimizer:
    """Build a registered curvlens optimizer by name, e.g. ``build_optimizer("newton_cg", model, loss_fn)``."""
    if name not in OPTIMIZERS:
        raise ValueError(f"name: expected one of {sorted(OPTIMIZERS)}, got {name!r}; import curvlens.optim first")
    return OPTIMIZERS[name](model, loss_fn, **kwargs)


@dataclass(frozen=True)
class StepRecord:
    """What one ``step`` did (optimizers extend it with their own fields).

    Attributes:
        step: the step's index (0 for the first step).
        loss_before: the loss on the batch before the step.
        loss_after: the loss on the batch after the step (None when not evaluated).
        accepted: whether the weights were changed.
        status: one sentence; says why a step was rejected.
    """

    step: int
    loss_before: float
    loss_after: float | None
    accepted: bool
    status: str


def _check_number(value: Any, name: str, *, low: float, strict: bool, fix: str) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    v = float(value) if ok else None
    if not ok or v != v or v in (float("inf"), float("-inf")) or (v <= low if strict else v < low):
        rel = ">" if strict else ">="
        raise ValueError(f"{name}: expected a finite number {rel} {low:g}, got {value!r}; {fix}")
    return v


class CurvatureOptimizer(torch.optim.Optimizer):
    """Base class: a torch optimizer over ``model``'s trainable parameters with ``step(batch)``.

    Args:
        model: the network whose parameters are optimized (those with ``requires_grad``,
            or the selection ``params``).
        loss_fn: a criterion ``loss_fn(outputs, targets)``, a loss name (``"cross_entropy"``,
            ...) or ``loss_fn(model, batch)``; as for :class:`~curvlens.Problem`.
        defaults: per-group hyper-parameters (``torch.optim.Optimizer`` semantics).
        params: which parameters (default: all with ``requires_grad``).
        generator: draws of the curvature sub-batch and of random probes (a Generator or an
            int seed); never the global RNG. On a process group pass the same seed on every rank.
        process_group: None (this process alone), ``"world"`` or a ``torch.distributed`` process
            group (as for :class:`~curvlens.Problem`): each rank steps on its own shard of every
            batch, and :meth:`problem` and :meth:`curvature_subset` give the single-process
            values over the union of the shards (see :mod:`curvlens.optim._distributed`).
    """

    registry_name: ClassVar[str] = ""

    def __init__(self, model: nn.Module, loss_fn: Any, defaults: dict, *, params: Any = None,
                 generator: torch.Generator | int | None = None, process_group: Any = None):
        who = type(self).__name__
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}; pass the network itself")
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError(
                f"model: {who} needs trainable parameters, got a {type(model).__name__} with none that require "
                "grad; unfreeze some (p.requires_grad_(True)) or pass another model"
            )
        if loss_fn is None or not (callable(loss_fn) or isinstance(loss_fn, str)):
            raise TypeError(
                f"loss_fn: expected a criterion (e.g. torch.nn.CrossEntropyLoss()), a loss name or "
                f"loss_fn(model, batch), got {type(loss_fn).__name__}"
            )
        if not isinstance(loss_fn, str):
            resolve_loss_form(loss_fn)
        self.process_group = resolve_group(process_group)
        names, plist = select_params(unwrap_ddp(model), params)  # the names a Problem of the model uses
        super().__init__([{"params": plist}], defaults)
        self.model, self.loss_fn = model, loss_fn
        self.param_names = names
        self._gen = resolve_generator(generator)
        self.seed = int(self._gen.initial_seed())
        self.last_step: StepRecord | None = None
        self.global_state.setdefault("step", 0)

    # ------------------------------------------------------------------ global state
    @property
    def global_state(self) -> dict:
        """State that belongs to the whole optimizer (damping, step count); kept in ``state``
        under the key ``"global"`` so ``state_dict()`` round-trips it."""
        return self.state["global"]

    @property
    def params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self) -> dict:
        self.global_state["generator_state"] = self._gen.get_state()
        return super().state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        gs = self.global_state.get("generator_state")
        if gs is not None:
            self._gen.set_state(gs)

    # ------------------------------------------------------------------ problems
    def problem(self, batch: Any) -> Problem:
        """The :class:`~curvlens.Problem` of ``batch`` in the model's current mode (train mode
        uses batch statistics without updating running statistics)."""
        mode = "train" if self.model.training else "eval"
        return Problem(self.model, self.loss_fn, batch, params=self.param_names, mode=mode, allow_random=True,
                       process_group=self.process_group)

    def curvature_subset(self, batch: Any, fraction: float) -> Any:
        """A random ``fraction`` of the samples of ``batch`` (drawn from the optimizer's generator),
        at least one sample; the whole batch when ``fraction >= 1``. On a process group
        ``batch`` is this rank's shard and the draws are those of one process on the union of
        the shards (a collective)."""
        if fraction >= 1.0:
            return batch
        if self.process_group is not None:
            from curvlens.optim._distributed import group_curvature_subset

            return group_curvature_subset(batch, fraction, self._gen, self.process_group, self.params[0].device)
        batches = collect_batches(batch)
        out = []
        for b in batches:
            n = batch_size(b, 0)
            m = max(1, int(round(fraction * n)))
            idx = torch.randperm(n, generator=self._gen)[:m].sort().values
            out.append(subset_batch(b, idx))
        return out[0] if len(out) == 1 else out

    # ------------------------------------------------------------------ weights
    def flat_params(self) -> torch.Tensor:
        """A detached copy of the parameters as one flat vector."""
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    def snapshot(self) -> list[torch.Tensor]:
        """Exact copies of the parameters, for :meth:`restore`."""
        return [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def restore(self, snap: list[torch.Tensor]) -> None:
        """Put the parameters back exactly (bit for bit) as in ``snap``."""
        for p, s in zip(self.params, snap):
            p.copy_(s)

    @torch.no_grad()
    def add_to_params(self, direction: torch.Tensor, alpha: float = 1.0) -> None:
        """``theta += alpha * direction`` for a flat ``direction``."""
        i = 0
        for p in self.params:
            n = p.numel()
            p.add_(direction[i : i + n].view_as(p), alpha=alpha)
            i += n

    def params_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.params)

    # ------------------------------------------------------------------ the step
    def step(self, batch: Any = None, closure: Callable | None = None, **kwargs):  # noqa: D401
        raise NotImplementedError

    @staticmethod
    def check_number(value: Any, name: str, *, low: float = 0.0, strict: bool = True, fix: str = "") -> float:
        """Validate a finite scalar hyper-parameter (one-line error naming ``name``)."""
        return _check_number(value, name, low=low, strict=strict, fix=fix)
