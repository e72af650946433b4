"""Find out what a checkpoint file holds, and turn it into an ``nn.Module``.

Supported (detected from the file's bytes, not its name):

* ``torch.save`` of a ``state_dict``, bare or nested under ``model``/``state_dict``/
  ``model_state_dict``/... with DDP ``module.``, ``torch.compile`` ``_orig_mod.`` or Lightning
  ``model.`` prefixes; the architecture comes from ``model=`` (``'pkg.module:factory'``).
  Always read with ``weights_only=True``.
* TorchScript archives (``torch.jit.save``) and ``torch.export`` programs (``torch.export.save``):
  self-contained, no ``model=`` needed. Hessian-vector products need double backward through
  them; :func:`check_double_backward` probes it on an example input.
* ``.safetensors`` files (loading needs the optional ``safetensors`` package; inspecting does not).
* Fully pickled modules (``torch.save(model)``): unpickling runs arbitrary code, so they are
  refused unless ``trust=True``.

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
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from curvlens.errors import CheckpointError
from curvlens.problem._checkpoint_formats import (SAFETENSORS_HINT, _BUFFER_SUFFIXES, _count, _export_input_shapes,
                                             _first, _load_export, _load_script, _row_numel, _tensor_rows, describe_value,
                                             find_state_dict, read_safetensors_header, sniff_format, torch_load_safe)
from curvlens.problem._double_backward import check_double_backward, no_hvp_advice
from curvlens.problem._state_dict_load import _build_model, _load_state_dict, _names

__all__ = [
    "CheckpointSummary",
    "LoadedCheckpoint",
    "inspect_checkpoint",
    "load_checkpoint",
    "check_double_backward",
    "sniff_format",
]


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
        needs_model: the file has no architecture: loading it needs ``model=``.
        needs_trust: loading it needs ``trust=True``.
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


def _unpickle_trusted(p: Path, map_location: Any) -> Any:
    """``torch.load(weights_only=False)`` with the current folder and the checkpoint's folder on
    ``sys.path`` (as ``python script.py`` run there would have them), so that the classes of a
    pickled module defined in e.g. ``./mynets.py`` are found; ``sys.path`` is restored afterwards."""
    folders = [os.getcwd(), str(p.resolve().parent)]
    added = [f for f in dict.fromkeys(folders) if f not in sys.path]
    sys.path[:0] = added
    try:
        return torch.load(p, map_location=map_location, weights_only=False)
    except ModuleNotFoundError as e:
        raise CheckpointError(
            f"checkpoint {str(p)!r} is a pickled module whose classes live in module {e.name!r}, which is not "
            f"importable from {os.getcwd()!r} or the checkpoint's folder; run from the folder holding "
            f"{e.name}.py, add that folder to PYTHONPATH, or save the state_dict and load it with "
            "model='pkg.module:factory'"
        ) from e
    except AttributeError as e:
        raise CheckpointError(
            f"checkpoint {str(p)!r} is a pickled module whose class is no longer defined where it was saved "
            f"({_first(e)}); save the state_dict and load it with model='pkg.module:factory'"
        ) from e
    finally:
        for f in added:
            if f in sys.path:
                sys.path.remove(f)


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
                    "is refused: pass trust=True only if you trust its source, or "
                    "save model.state_dict() instead and load it with model='pkg.module:factory'"
                )
            obj = _unpickle_trusted(p, map_location)
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
            raise CheckpointError(f"{fmt} model {str(p)!r} cannot give Hessian-vector products: {problem}; "
                                  + no_hvp_advice(fmt))
        dbl = True
    elif fmt == "torchscript":
        notes.append("double backward not probed (no example input); it is checked at first use")
    return LoadedCheckpoint(model=m, format=fmt, source=str(p), state_dict_key=key,
                            example_inputs=stored_inputs, double_backward=dbl, notes=tuple(notes))
