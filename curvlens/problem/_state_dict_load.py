"""Build the model for a weights-only checkpoint and load its state_dict, matching keys and shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from curvlens.errors import CheckpointError

_PREFIXES = ("module.", "_orig_mod.", "model.")


def _build_model(model: Any, p: Path) -> tuple[nn.Module, str]:
    if model is None:
        raise CheckpointError(
            f"checkpoint {str(p)!r} holds only weights, not the architecture; pass "
            "model='pkg.module:factory' or model='path/to/file.py:factory' that builds it"
        )
    if isinstance(model, nn.Module):
        return model, type(model).__name__
    from curvlens.problem.factory import call_factory

    if not (isinstance(model, str) or callable(model)):
        raise TypeError(f"model: expected an nn.Module, a factory spec 'pkg.module:factory' or a callable, "
                        f"got {type(model).__name__}")
    built = call_factory(model, what="model")
    label = model if isinstance(model, str) else getattr(model, "__qualname__", "model factory")
    if not isinstance(built, nn.Module):
        raise CheckpointError(f"factory {label!r} returned a {type(built).__name__}, expected a torch.nn.Module")
    return built, str(label)


def _align_prefixes(sd: dict[str, Any], expected: set[str]) -> tuple[dict[str, Any], list[str]]:
    notes = []
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if sd and all(k.startswith(prefix) for k in sd):
                stripped = {k[len(prefix):]: v for k, v in sd.items()}
                if len(expected & stripped.keys()) > len(expected & sd.keys()):
                    sd, changed = stripped, True
                    notes.append(f"stripped key prefix {prefix!r}")
    return sd, notes


def _names(items: list[str], limit: int = 5) -> str:
    head = ", ".join(items[:limit])
    return head + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def _load_state_dict(m: nn.Module, label: str, sd: dict[str, Any], p: Path, strict: bool) -> list[str]:
    expected = m.state_dict()
    sd, notes = _align_prefixes(dict(sd), set(expected))
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [k for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys: {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_names(unexpected)}")
        if mismatched:
            parts.append("shape mismatches: " + _names(
                [f"{k} checkpoint {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}" for k in mismatched], 3))
        msg = f"checkpoint {str(p)!r} does not match the model built by {label!r}: " + "; ".join(parts)
        if strict:
            raise CheckpointError(msg + "; check that model= builds the same architecture (or load with strict=False)")
        notes.append(msg)
        sd = {k: v for k, v in sd.items() if k not in mismatched and k not in unexpected}
    m.load_state_dict(sd, strict=False)
    return notes
