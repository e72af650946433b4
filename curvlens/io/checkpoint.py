"""Find out what a checkpoint file holds, and turn it into an ``nn.Module``.

Supported (detected from the file's bytes, not its name):

* ``torch.save`` of a ``state_dict``, bare or nested under ``model``/``state_dict``/
  ``model_state_dict``/... with DDP ``module.``, ``torch.compile`` ``_orig_mod.`` or Lightning
  ``model.`` prefixes; the architecture comes from ``model=`` (``--model pkg.module:factory``).
  Always read with ``weights_only=True``.
* TorchScript archives (``torch.jit.save``) and ``torch.export`` programs (``torch.export.save``):
  self-contained, no ``model=`` needed. Hessian-vector products need double backward through
  them; :func:`check_double_backward` probes it on an example input.
* ``.safetensors`` files (loading needs the optional ``safetensors`` package; inspecting does not).
* Fully pickled modules (``torch.save(model)``): unpickling runs arbitrary code, so they are
  refused unless ``trust=True`` (``--trust-checkpoint``).

Example:
    >>> import torch, tempfile, os
    >>> from curvlens.data.demo import demo_model
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
    >>> torch.save({"epoch": 3, "model": demo_model().state_dict()}, path)
    >>> inspect_checkpoint(path).num_parameters
    1317
    >>> ckpt = load_checkpoint(path, model="curvlens.data.demo:demo_model")
    >>> ckpt.format, ckpt.state_dict_key
    ('state_dict', 'model')
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from curvlens.errors import CheckpointError

__all__ = [
    "CheckpointSummary",
    "LoadedCheckpoint",
    "inspect_checkpoint",
    "load_checkpoint",
    "check_double_backward",
    "sniff_format",
]

_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
_PREFIXES = ("module.", "_orig_mod.", "model.")


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
            raise CheckpointError(f"{str(p)!r} is a NumPy .npz archive, not a model checkpoint; pass data files with --data")
        raise CheckpointError(f"{str(p)!r} is a zip archive but not a torch checkpoint (no data.pkl inside)")
    if head.startswith(b"\x89HDF"):
        raise CheckpointError(
            f"{str(p)!r} is an HDF5 file, not a model checkpoint (a curvlens result or a data file? "
            "pass data with --data)"
        )
    if head[:1] == b"\x80":
        return "torch_legacy"
    if size >= 10:
        n = int.from_bytes(head[:8], "little")
        if 2 <= n <= size - 8 and head[8:9] == b"{":
            return "safetensors"
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


@dataclass(frozen=True)
class CheckpointSummary:
    """What a checkpoint holds, found without running its code.

    Attributes:
        path: the file.
        format: ``"state_dict"``, ``"torchscript"``, ``"torch_export"``, ``"safetensors"`` or
            ``"pickled_module"``.
        size_bytes: file size.
        entries: top-level ``(key, description)`` pairs (e.g. ``("epoch", "int 3")``).
        state_dict_key: the key the weights were found under (None: bare or not a dict).
        tensors: ``(name, shape, dtype)`` of every weight tensor.
        num_parameters: elements of the trainable-looking tensors (BatchNorm running
            statistics excluded); None when unknown without unpickling.
        num_elements: elements of all tensors (None when unknown).
        needs_model: the file has no architecture: loading it needs ``model=`` / ``--model``.
        needs_trust: loading it needs ``trust=True`` / ``--trust-checkpoint``.
        notes: further facts (classes a pickle refers to, input shapes of an export, ...).
    """

    path: str
    format: str
    size_bytes: int
    entries: tuple[tuple[str, str], ...]
    state_dict_key: str | None
    tensors: tuple[tuple[str, tuple[int, ...], str], ...]
    num_parameters: int | None
    num_elements: int | None
    needs_model: bool
    needs_trust: bool
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (shapes as lists)."""
        return {
            "path": self.path, "format": self.format, "size_bytes": self.size_bytes,
            "entries": [list(e) for e in self.entries], "state_dict_key": self.state_dict_key,
            "tensors": [{"name": n, "shape": list(s), "dtype": d} for n, s, d in self.tensors],
            "num_tensors": len(self.tensors), "num_parameters": self.num_parameters,
            "num_elements": self.num_elements, "needs_model": self.needs_model,
            "needs_trust": self.needs_trust, "notes": list(self.notes),
        }


@dataclass(frozen=True, eq=False)
class LoadedCheckpoint:
    """A model ready for analysis.

    Attributes:
        model: the module (in eval mode unless ``eval_mode=False``).
        format: as in :class:`CheckpointSummary`.
        source: the checkpoint path.
        state_dict_key: where the weights were found in a nested dict (None otherwise).
        example_inputs: inputs stored with a ``torch.export`` program, else None.
        double_backward: True/False when probed, None when not checked.
        notes: what was done (prefixes stripped, ``model=`` ignored, ...).
    """

    model: nn.Module
    format: str
    source: str
    state_dict_key: str | None = None
    example_inputs: tuple | None = None
    double_backward: bool | None = None
    notes: tuple[str, ...] = ()


def _check_path(path: str | os.PathLike) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path, got {type(path).__name__}")
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist; check the path")
    if p.is_dir():
        raise CheckpointError(f"checkpoint {str(p)!r} is a directory; pass the checkpoint file inside it")
    return p


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


def _summary(p: Path, fmt: str, **kw: Any) -> CheckpointSummary:
    kw.setdefault("entries", ())
    kw.setdefault("state_dict_key", None)
    kw.setdefault("needs_model", False)
    kw.setdefault("needs_trust", False)
    kw["notes"] = tuple(kw.get("notes", ()))
    return CheckpointSummary(path=str(p), format=fmt, size_bytes=p.stat().st_size, **kw)


def inspect_checkpoint(path: str | os.PathLike) -> CheckpointSummary:
    """Describe a checkpoint: format, keys, tensor shapes, parameter count.

    Runs no model code and never unpickles arbitrary objects (pickles are read with
    ``weights_only=True``; a pickled module is only scanned for the classes it names).

    Raises:
        CheckpointError: missing, corrupt or truncated file, or not a checkpoint.
    """
    p = _check_path(path)
    fmt = sniff_format(p)
    if fmt == "torchscript":
        m = _load_script(p)
        sd = dict(m.named_parameters())
        rows = _tensor_rows({**sd, **dict(m.named_buffers())})
        n = sum(v.numel() for v in sd.values())
        return _summary(p, fmt, tensors=rows, num_parameters=n,
                        num_elements=sum(_row_numel(r) for r in rows),
                        notes=[f"TorchScript module {getattr(m, 'original_name', type(m).__name__)}"])
    if fmt == "torch_export":
        ep = _load_export(p)
        shapes = _export_input_shapes(ep)
        params, elems = _count(ep.state_dict)
        return _summary(p, fmt, tensors=_tensor_rows(ep.state_dict), num_parameters=params,
                        num_elements=elems, notes=[f"input shapes: {', '.join(shapes) or '(none)'}"])
    if fmt == "safetensors":
        header = read_safetensors_header(p)
        rows = tuple((k, tuple(v["shape"]), v["dtype"]) for k, v in header.items() if k != "__metadata__")
        params = sum(_row_numel(r) for r in rows if r[2].startswith(("F", "BF")) and not r[0].endswith(_BUFFER_SUFFIXES))
        notes = [f"metadata: {json.dumps(header['__metadata__'])}"] if "__metadata__" in header else []
        return _summary(p, fmt, tensors=rows, num_parameters=params,
                        num_elements=sum(_row_numel(r) for r in rows), needs_model=True, notes=notes)
    obj, unsafe = torch_load_safe(p, mmap=(fmt == "torch_zip"))
    if unsafe is not None:
        return _summary(p, "pickled_module", tensors=(), num_parameters=None, num_elements=None,
                        needs_trust=True, notes=[f"refers to: {', '.join(unsafe) or '(unknown classes)'}"])
    key, sd = find_state_dict(obj)
    entries = tuple((str(k), describe_value(v)) for k, v in obj.items()) if isinstance(obj, dict) and key else ()
    if sd is None:
        raise CheckpointError(
            f"{str(p)!r} is a torch file holding {describe_value(obj)} but no tensors of a model; "
            "expected a state_dict (a dict of parameter name -> tensor)"
        )
    params, elems = _count(sd)
    return _summary(p, "state_dict", entries=entries, state_dict_key=key, tensors=_tensor_rows(sd),
                    num_parameters=params, num_elements=elems, needs_model=True)


def _row_numel(row: tuple[str, tuple[int, ...], str]) -> int:
    n = 1
    for s in row[1]:
        n *= int(s)
    return n


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


def check_double_backward(model: nn.Module, example_inputs: tuple | torch.Tensor) -> str | None:
    """Probe whether a Hessian-vector product can be taken through ``model``.

    Runs one forward on ``example_inputs``, a first backward with ``create_graph=True`` of
    ``sum(outputs**2)`` and a second backward of ``<grad, 1>``: no randomness, a few products.

    Returns:
        None when both backwards work, else one line saying what failed.
    """
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    named = [(n, q) for n, q in model.named_parameters() if q.requires_grad]
    if not named:
        return "the model has no parameters that require grad"
    names, params = [n for n, _ in named], [q for _, q in named]
    try:
        out = model(*inputs)
    except Exception as e:
        shapes = ", ".join(str(tuple(t.shape)) for t in inputs if isinstance(t, torch.Tensor))
        hint = ("; the program was exported with a fixed input shape: re-export with "
                "torch.export.export(..., dynamic_shapes=...) marking the batch dimension dynamic"
                if "Guard failed" in str(e) else "")
        return f"forward on inputs of shape {shapes} failed: {_first(e)}{hint}"
    outs = [o for o in (out if isinstance(out, (tuple, list)) else [out]) if isinstance(o, torch.Tensor) and o.is_floating_point()]
    try:
        scalar = sum(o.pow(2).sum() for o in outs)
        grads = torch.autograd.grad(scalar, params, create_graph=True, allow_unused=True)
        dot = sum(g.sum() for g in grads if g is not None and g.requires_grad)
        if not isinstance(dot, torch.Tensor):
            return "the first backward produced no graph, so no second derivative can be taken"
        second = torch.autograd.grad(dot, params, allow_unused=True)
    except Exception as e:
        return f"double backward failed: {_first(e)}"
    # every parameter that reaches the output has a non-zero Hessian block of sum(out**2), so a
    # missing second derivative means the graph was cut (e.g. a non-differentiable backward)
    cut = [n for n, g1, g2 in zip(names, grads, second) if g1 is not None and g2 is None]
    if cut:
        return ("double backward failed: the second derivative does not reach " + _names(cut, 3)
                + " (the graph is cut, e.g. by a custom autograd.Function with a non-differentiable backward)")
    return None


def _build_model(model: Any, p: Path) -> tuple[nn.Module, str]:
    if model is None:
        raise CheckpointError(
            f"checkpoint {str(p)!r} holds only weights, not the architecture; pass --model "
            "pkg.module:factory or --model path/to/file.py:factory (model=... in Python) that builds it"
        )
    if isinstance(model, nn.Module):
        return model, type(model).__name__
    from curvlens.io.factory import call_factory

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
            raise CheckpointError(msg + "; check that --model builds the same architecture (or load with strict=False)")
        notes.append(msg)
        sd = {k: v for k, v in sd.items() if k not in mismatched and k not in unexpected}
    m.load_state_dict(sd, strict=False)
    return notes


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module | str | Callable[[], nn.Module] | None = None,
    trust: bool = False,
    map_location: str | torch.device = "cpu",
    strict: bool = True,
    example_inputs: tuple | torch.Tensor | None = None,
    eval_mode: bool = True,
) -> LoadedCheckpoint:
    """Load a checkpoint as an ``nn.Module``.

    Args:
        path: the checkpoint file (format detected from its bytes).
        model: the architecture for weight-only files: an ``nn.Module`` (filled in place), a
            spec ``'pkg.module:factory'`` / ``'path/to/file.py:factory'`` or a callable, called
            without arguments. Ignored (with a note) for TorchScript / ``torch.export`` files.
        trust: allow unpickling a fully pickled module. Unpickling runs arbitrary code from the
            file: only for files from a source you trust.
        map_location: where tensors are loaded.
        strict: refuse missing/unexpected keys and shape mismatches (else load what matches).
        example_inputs: inputs to probe double backward with (TorchScript); a ``torch.export``
            program is probed with its stored sample inputs.
        eval_mode: put the model in eval mode (dropout off, BatchNorm running statistics), so
            that curvature is a deterministic function of the parameters.

    Raises:
        CheckpointError: missing/corrupt file, not a checkpoint, refused pickle, failing
            factory, state_dict mismatch (keys named), or a graph without double backward.
    """
    p = _check_path(path)
    fmt = sniff_format(p)
    notes: list[str] = []
    key = None
    stored_inputs = None
    if fmt in ("torchscript", "torch_export"):
        if model is not None:
            notes.append(f"model= ignored: the {fmt} archive holds its own architecture")
        if fmt == "torchscript":
            m = _load_script(p, map_location)
        else:
            ep = _load_export(p)
            stored_inputs = (ep.example_inputs or ((), {}))[0] or None
            m = ep.module()
            if map_location is not None:
                m = m.to(map_location)
    elif fmt == "safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise CheckpointError(f"reading safetensors file {str(p)!r} {SAFETENSORS_HINT}") from e
        sd = load_file(str(p), device=str(map_location))
        m, label = _build_model(model, p)
        notes += _load_state_dict(m, label, sd, p, strict)
    else:
        obj, unsafe = torch_load_safe(p)
        if unsafe is not None:
            if not trust:
                raise CheckpointError(
                    f"checkpoint {str(p)!r} is a pickled Python object referring to "
                    f"{_names(unsafe, 3) or 'classes outside torch'}; unpickling it runs code from the file, so it "
                    "is refused: pass --trust-checkpoint (trust=True) only if you trust its source, or "
                    "save model.state_dict() instead and load it with --model"
                )
            obj = torch.load(p, map_location=map_location, weights_only=False)
            fmt = "pickled_module"
            notes.append("unpickled with weights_only=False (trusted)")
        if isinstance(obj, dict) and not isinstance(find_state_dict(obj)[1], dict):
            mods = [(k, v) for k, v in obj.items() if isinstance(v, nn.Module)]
            obj, key = (mods[0][1], str(mods[0][0])) if mods else (obj, None)
        if isinstance(obj, nn.Module):
            m = obj
            if model is not None:
                notes.append("model= ignored: the file holds a whole module")
        else:
            key, sd = find_state_dict(obj)
            if sd is None:
                raise CheckpointError(f"{str(p)!r} holds {describe_value(obj)}, not a model or a state_dict")
            m, label = _build_model(model, p)
            notes += _load_state_dict(m, label, sd, p, strict)
            if fmt != "pickled_module":
                fmt = "state_dict"
    if eval_mode and fmt != "torch_export":
        m.eval()
    elif eval_mode:
        notes.append("torch.export program kept as exported (train/eval behaviour is fixed at export time)")
    probe_inputs = example_inputs if example_inputs is not None else stored_inputs
    dbl = None
    if probe_inputs is not None:
        problem = check_double_backward(m, probe_inputs)
        if problem is not None:
            raise CheckpointError(
                f"{fmt} model {str(p)!r} cannot give Hessian-vector products: {problem}; save the "
                "state_dict and load it with --model pkg.module:factory instead"
            )
        dbl = True
    elif fmt == "torchscript":
        notes.append("double backward not probed (no example input); it is checked at first use")
    return LoadedCheckpoint(model=m, format=fmt, source=str(p), state_dict_key=key,
                            example_inputs=stored_inputs, double_backward=dbl, notes=tuple(notes))
