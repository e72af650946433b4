"""Which layers of a model get a K-FAC block, and why the others do not."""

from __future__ import annotations

from typing import Iterable

from torch import nn

from curvlens.optim.kfac.layers import make_block

__all__ = ["tied_parameters", "select_blocks"]


def tied_parameters(model: nn.Module) -> dict[str, str]:
    """Module name -> reason, for every module owning a parameter that another module shares."""
    owners: dict[int, list[str]] = {}
    for name, mod in model.named_modules():
        for p in mod.parameters(recurse=False):
            owners.setdefault(id(p), []).append(name or "<model>")
    out: dict[str, str] = {}
    for names in owners.values():
        if len(names) > 1:
            for n in names:
                out[n] = "tied weight shared with " + ", ".join(m for m in names if m != n)
    return out


def select_blocks(model: nn.Module, layers: Iterable[str | nn.Module] | None, *,
                  ekfac: bool = False, inverse: str = "eigh",
                  weight_sharing: str = "expand") -> tuple[dict, tuple[str, ...]]:
    """The K-FAC blocks of ``model`` by module name, and one line per parameterized module left out."""
    names = {m: n for n, m in model.named_modules()}
    wanted = None
    if layers is not None:
        wanted = set()
        for item in layers:
            if isinstance(item, nn.Module) and item in names:
                wanted.add(names[item])
            elif isinstance(item, str) and item in names.values():
                wanted.add(item)
            else:
                raise ValueError(f"layers: expected names or submodules of model, got {item!r}; "
                                 "see [n for n, _ in model.named_modules()]")
    tied, blocks, unsupported = tied_parameters(model), {}, []
    for name, mod in model.named_modules():
        if not any(p.requires_grad for p in mod.parameters(recurse=False)):
            continue
        label = name or "<model>"
        if label in tied:
            unsupported.append(f"{label}: {type(mod).__name__} ({tied[label]})")
            continue
        if wanted is not None and name not in wanted:
            unsupported.append(f"{label}: {type(mod).__name__} (not in layers=)")
            continue
        block, reason = make_block(label, mod, ekfac, inverse, weight_sharing)
        if block is None:
            if reason:
                unsupported.append(f"{label}: {reason}")
            continue
        blocks[label] = block
    return blocks, tuple(unsupported)
