"""Choosing the parameters an operator differentiates, and their per-layer blocks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn


@dataclass(frozen=True)
class Block:
    """A contiguous slice of the flat parameter vector (one layer, usually).

    Attributes:
        name: block name (a module name such as ``"0"`` or ``"encoder.fc1"``).
        start, stop: the slice ``[start, stop)`` of the flat vector.
        param_names: the parameter names that make up the block, in order.
    """

    name: str
    start: int
    stop: int
    param_names: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def slice(self) -> slice:
        return slice(self.start, self.stop)


ParamSpec = Any  # None | str | nn.Module | Tensor | callable | iterable of those


def select_params(model: nn.Module, params: ParamSpec) -> tuple[list[str], list[torch.Tensor]]:
    """Resolve ``params`` to (names, tensors) in the model's parameter order.

    Args:
        model: the network.
        params: None (all parameters with ``requires_grad``), a predicate
            ``fn(name, param) -> bool``, or a name / module / parameter, or an iterable of them.
            A name selects the parameter of that name or every parameter under a module of
            that name (``"encoder"`` selects ``encoder.*``).
    """
    named = [(n, p) for n, p in model.named_parameters()]
    if not named:
        raise ValueError("model: it has no parameters; curvature is taken with respect to parameters")
    if params is None:
        chosen = [(n, p) for n, p in named if p.requires_grad]
    elif callable(params) and not isinstance(params, (nn.Module, torch.Tensor)):
        chosen = [(n, p) for n, p in named if params(n, p)]
    else:
        specs = [params] if isinstance(params, (str, nn.Module, torch.Tensor)) else list(_iter(params))
        ids: set[int] = set()
        for spec in specs:
            ids |= _match(model, named, spec)
        chosen = [(n, p) for n, p in named if id(p) in ids]
    if not chosen:
        raise ValueError(
            f"params: no trainable parameters selected (params={params!r}); "
            "pass None for all parameters with requires_grad=True, or names/modules that exist in the model"
        )
    frozen = [n for n, p in chosen if not p.requires_grad]
    if frozen:
        raise ValueError(
            f"params: {frozen[:3]} have requires_grad=False; curvature needs differentiable parameters. "
            "Unfreeze them or leave them out of params"
        )
    dtypes = {p.dtype for _, p in chosen}
    devices = {p.device for _, p in chosen}
    if len(dtypes) > 1 or len(devices) > 1:
        raise ValueError(
            f"params: expected one dtype and device for all selected parameters, got dtypes "
            f"{sorted(map(str, dtypes))} on devices {sorted(map(str, devices))}; convert the model with "
            "model.to(dtype=..., device=...)"
        )
    if not next(iter(dtypes)).is_floating_point:
        raise ValueError(f"params: expected floating-point parameters, got {next(iter(dtypes))}")
    return [n for n, _ in chosen], [p for _, p in chosen]


def _iter(params: Any) -> Iterable:
    if isinstance(params, Iterable):
        return params
    raise TypeError(
        f"params: expected None, a predicate, a name, a module, a parameter or an iterable of these, "
        f"got {type(params).__name__}"
    )


def _match(model: nn.Module, named: list, spec: Any) -> set[int]:
    if isinstance(spec, str):
        hits = {id(p) for n, p in named if n == spec or n.startswith(spec + ".")}
        if not hits:
            names = [n for n, _ in named][:8]
            raise ValueError(f"params: no parameter or module named {spec!r}; parameters start with {names}")
        return hits
    if isinstance(spec, nn.Module):
        hits = {id(p) for p in spec.parameters()}
        if not hits or not hits <= {id(p) for _, p in named}:
            raise ValueError("params: the given module is not part of the model (or has no parameters)")
        return hits
    if isinstance(spec, torch.Tensor):
        if id(spec) not in {id(p) for _, p in named}:
            raise ValueError("params: the given tensor is not a parameter of the model")
        return {id(spec)}
    raise TypeError(f"params: expected names, modules or parameters, got an element of type {type(spec).__name__}")


def make_blocks(names: list[str], tensors: list[torch.Tensor]) -> tuple[Block, ...]:
    """Group consecutive parameters of the same module into one :class:`Block` each."""
    blocks: list[Block] = []
    start = 0
    cur_name, cur_params, cur_start = None, [], 0
    for n, t in zip(names, tensors):
        mod = n.rsplit(".", 1)[0] if "." in n else n
        if mod != cur_name and cur_params:
            blocks.append(Block(cur_name, cur_start, start, tuple(cur_params)))
            cur_params, cur_start = [], start
        cur_name = mod
        cur_params.append(n)
        start += t.numel()
    blocks.append(Block(cur_name, cur_start, start, tuple(cur_params)))
    seen: dict[str, int] = {}
    out = []
    for b in blocks:  # keep names unique if a module's parameters are not contiguous
        k = seen.get(b.name, 0)
        seen[b.name] = k + 1
        out.append(b if k == 0 else Block(f"{b.name}#{k}", b.start, b.stop, b.param_names))
    return tuple(out)


Predicate = Callable[[str, torch.Tensor], bool]


def flatten_like(tensors, shapes, name: str = "x") -> torch.Tensor:
    """Concatenate tensors of the given ``shapes`` into one flat vector (validated; errors name ``name``)."""
    tensors = list(tensors)
    if len(tensors) != len(shapes):
        raise ValueError(f"{name}: expected {len(shapes)} parameter-shaped tensors, got {len(tensors)}")
    for i, (t, s) in enumerate(zip(tensors, shapes)):
        if not isinstance(t, torch.Tensor) or t.shape != s:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name}[{i}]: expected shape {tuple(s)}, got {got}")
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten_like(v: torch.Tensor, shapes) -> list[torch.Tensor]:
    """Split a flat vector into views shaped like ``shapes``."""
    out, i = [], 0
    for s in shapes:
        n = torch.Size(s).numel()
        out.append(v[i : i + n].reshape(s))
        i += n
    return out
