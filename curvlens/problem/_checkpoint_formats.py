"""Checkpoint formats: detect a file's format from its bytes, read it without running its code, describe it.

``sniff_format`` tells ``torch.save`` (zip or legacy), TorchScript, ``torch.export`` and
``.safetensors`` files apart; ``read_safetensors_header`` needs no package; ``torch_load_safe``
only ever unpickles with ``weights_only=True``; ``find_state_dict`` locates the weights in what
was loaded. :mod:`curvlens.problem.checkpoint` builds ``inspect_checkpoint`` / ``load_checkpoint`` on these.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch

from curvlens.errors import CheckpointError

_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


SAFETENSORS_HINT = (
    "needs the optional package safetensors, which is not installed; "
    "install it with: pip install safetensors  (or pip install 'curvlens[safetensors]')"
)
_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "model_state", "net", "network",
                    "module", "weights", "params", "ema", "model_ema")


def sniff_format(path: str | os.PathLike) -> str:
    """Detect a checkpoint's format from its bytes.

    Returns:
        ``"torch_zip"`` (``torch.save``), ``"torch_legacy"`` (pre-1.6 ``torch.save``),
        ``"torchscript"``, ``"torch_export"`` or ``"safetensors"``.

    Raises:
        CheckpointError: empty, corrupt/truncated, or not a checkpoint (an HDF5 or ``.npz`` file,
            text, ...); the message names the file and what it seems to be.
    """
    p = Path(path)
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(16)
    if size == 0:
        raise CheckpointError(f"checkpoint {str(p)!r} is empty (0 bytes); the save was probably interrupted")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        try:
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise CheckpointError(
                f"checkpoint {str(p)!r} is a corrupt or truncated zip archive ({e}); re-save or re-download it"
            ) from e
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        if any(n.endswith(("/archive_format", "serialized_exported_program.json")) or "/models/" in n for n in names):
            return "torch_export"
        if any(n.endswith("data.pkl") for n in names):
            return "torch_zip"
        if names and all(n.endswith(".npy") for n in names):
            raise CheckpointError(f"{str(p)!r} is a NumPy .npz archive, not a model checkpoint; pass data files as data=")
        raise CheckpointError(f"{str(p)!r} is a zip archive but not a torch checkpoint (no data.pkl inside)")
    if head.startswith(b"\x89HDF"):
        raise CheckpointError(
            f"{str(p)!r} is an HDF5 file, not a model checkpoint (a curvlens result or a data file? "
            "pass data files as data=)"
        )
    if size >= 10:  # before the pickle check: a header length of 128..255 bytes starts with 0x80 too
        n = int.from_bytes(head[:8], "little")
        if 2 <= n <= size - 8 and head[8:9] == b"{":
            return "safetensors"
    if head[:1] == b"\x80":
        return "torch_legacy"
    raise CheckpointError(
        f"{str(p)!r} is not a checkpoint: expected a torch.save file, a TorchScript or torch.export "
        f"archive, or a .safetensors file, but it starts with {head[:8]!r}"
    )


def read_safetensors_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of a ``.safetensors`` file (names, dtypes, shapes); no package needed."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except ValueError as e:
        raise CheckpointError(f"safetensors file {str(path)!r} has a corrupt or truncated header: {e}") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"safetensors file {str(path)!r} has a corrupt header (not a JSON object)")
    return header


def describe_value(v: Any) -> str:
    """A short description: ``"Tensor(3, 4) float32"``, ``"dict (12 tensors)"``, ``"int 3"``."""
    if isinstance(v, torch.Tensor):
        return f"Tensor{tuple(v.shape)} {str(v.dtype).replace('torch.', '')}"
    if isinstance(v, Mapping):
        k = sum(isinstance(x, torch.Tensor) for x in v.values())
        return f"dict ({len(v)} entries, {k} tensors)" if k else f"dict ({len(v)} entries)"
    if isinstance(v, (list, tuple)):
        return f"{type(v).__name__} (length {len(v)})"
    if isinstance(v, (int, float, bool)) or v is None:
        return f"{type(v).__name__} {v!r}"
    if isinstance(v, str):
        return f"str {v[:40]!r}"
    return type(v).__name__


def _is_state_dict(v: Any) -> bool:
    if not isinstance(v, Mapping) or not v or not all(isinstance(k, str) for k in v):
        return False
    vals = list(v.values())
    return any(isinstance(x, torch.Tensor) for x in vals) and not any(isinstance(x, Mapping) for x in vals)


def find_state_dict(obj: Any) -> tuple[str | None, dict[str, Any] | None]:
    """Locate the weights in a loaded object: ``(key, state_dict)``; key None when bare.

    Looks at the object itself, then the common keys (``state_dict``, ``model_state_dict``,
    ``model``, ...), one level deeper, then the largest tensor dict among the values.
    """
    if _is_state_dict(obj):
        return None, dict(obj)
    if not isinstance(obj, Mapping):
        return None, None
    for k in _STATE_DICT_KEYS:
        if k in obj:
            if _is_state_dict(obj[k]):
                return k, dict(obj[k])
            inner_key, inner = find_state_dict(obj[k]) if isinstance(obj[k], Mapping) else (None, None)
            if inner is not None:
                return f"{k}/{inner_key}" if inner_key else k, inner
    best = [(sum(x.numel() for x in v.values() if isinstance(x, torch.Tensor)), str(k), v)
            for k, v in obj.items() if _is_state_dict(v)]
    if best:
        _, k, v = max(best, key=lambda t: t[0])
        return k, dict(v)
    return None, None


def torch_load_safe(p: Path, *, mmap: bool = False) -> tuple[Any, list[str] | None]:
    """``torch.load(weights_only=True)``; returns ``(obj, None)`` or ``(None, unsafe_globals)``
    when the file is a pickle that needs arbitrary classes (never unpickled here)."""
    try:
        return torch.load(p, map_location="cpu", weights_only=True, mmap=mmap or None), None
    except Exception as e:
        text = str(e)
        if "Weights only load failed" in text or "Unsupported global" in text:
            try:
                unsafe = list(torch.serialization.get_unsafe_globals_in_checkpoint(p))
            except Exception:
                unsafe = []
            return None, unsafe
        raise CheckpointError(
            f"checkpoint {str(p)!r} is corrupt or truncated and could not be read ({_first(e)}); "
            "re-save or re-download it"
        ) from e


def _first(e: BaseException) -> str:
    """First sentence of an exception message, for one-line errors."""
    text = str(e).strip()
    return text.splitlines()[0].split(". ")[0][:160] if text else type(e).__name__


def _load_script(p: Path, map_location: Any = "cpu"):
    try:
        return torch.jit.load(str(p), map_location=map_location)
    except Exception as e:
        raise CheckpointError(f"TorchScript archive {str(p)!r} is corrupt or truncated and could not be "
                              f"loaded ({_first(e)}); re-save or re-download it") from e


def _load_export(p: Path):
    try:
        return torch.export.load(str(p))
    except Exception as e:
        raise CheckpointError(f"torch.export program {str(p)!r} could not be loaded (corrupt, or saved by "
                              f"an incompatible torch version?): {_first(e)}") from e


def _export_input_shapes(ep) -> list[str]:
    user = {s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"}
    shapes = []
    for node in ep.graph.nodes:
        val = node.meta.get("val") if node.op == "placeholder" else None
        if node.name in user and isinstance(val, torch.Tensor):
            shapes.append("(" + ", ".join(str(d) for d in val.shape) + ")")
    return shapes


def _tensor_rows(sd: Mapping[str, Any]) -> tuple[tuple[str, tuple[int, ...], str], ...]:
    return tuple(
        (str(k), tuple(v.shape), str(v.dtype).replace("torch.", ""))
        for k, v in sd.items() if isinstance(v, torch.Tensor)
    )


def _count(sd: Mapping[str, Any]) -> tuple[int, int]:
    params = elems = 0
    for k, v in sd.items():
        if isinstance(v, torch.Tensor):
            elems += v.numel()
            if v.is_floating_point() and not str(k).endswith(_BUFFER_SUFFIXES):
                params += v.numel()
    return params, elems


def _row_numel(row: tuple[str, tuple[int, ...], str]) -> int:
    n = 1
    for s in row[1]:
        n *= int(s)
    return n
