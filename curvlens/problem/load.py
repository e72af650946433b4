"""``load_problem``: a :class:`~curvlens.problem.Problem` from files (checkpoint, data, loss name).

Loading checks, in this order, that the pieces fit, and explains the first mismatch in one
line naming the argument to change: the data file (keys, lengths), the checkpoint (format,
architecture, trust), the loss, a few samples through model and loss (shapes, targets, NaN),
and a double-backward probe (Hessian-vector products need second derivatives through the
model, which some TorchScript / custom autograd models lack).

Example:
    >>> import os, tempfile, torch
    >>> from curvlens.data.demo import demo_model
    >>> folder = tempfile.mkdtemp()
    >>> torch.save(demo_model().state_dict(), os.path.join(folder, "net.pt"))
    >>> g = torch.Generator().manual_seed(0)
    >>> torch.save({"inputs": torch.randn(20, 2, generator=g), "targets": torch.randint(0, 3, (20,), generator=g)},
    ...            os.path.join(folder, "val.pt"))
    >>> problem = load_problem(os.path.join(folder, "net.pt"), model="curvlens.data.demo:demo_model",
    ...                        data=os.path.join(folder, "val.pt"), batch_size=8)
    >>> problem.num_samples, len(problem.batches), problem.source
    (20, 3, 'net.pt (state_dict)')
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import torch
from torch import nn

from curvlens.errors import CheckpointError
from curvlens.problem._double_backward import attention_note, no_hvp_advice
from curvlens.problem._fit_checks import check_fits, first_inputs
from curvlens.problem.checkpoint import check_double_backward, load_checkpoint
from curvlens.problem.datafiles import parse_data_keys, read_data
from curvlens.problem.losses import resolve_loss
from curvlens.problem.problem import Problem

__all__ = ["load_problem"]

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}


def _dtype(dtype: Any) -> torch.dtype | None:
    if dtype is None:
        return None
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    raise ValueError(
        f"dtype: expected None, a floating torch.dtype or one of {', '.join(map(repr, _DTYPES))}, got {dtype!r}; "
        "pass dtype='float64' for exact curvature"
    )


def _device(device: Any) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device: expected 'cpu', 'cuda', 'cuda:1', ... or a torch.device, got {device!r}") from e


def _label(loss: Any) -> str:
    return repr(loss) if isinstance(loss, str) else getattr(loss, "__name__", type(loss).__name__)


def load_problem(
    checkpoint: str | os.PathLike,
    *,
    model: nn.Module | str | Callable[[], nn.Module] | None = None,
    data: str | os.PathLike,
    data_keys: str | Sequence[str] | None = None,
    loss: str | Callable[..., Any] = "cross_entropy",
    batch_size: int | None = None,
    num_samples: int | None = None,
    trust: bool = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
) -> Problem:
    """Build a :class:`~curvlens.problem.Problem` from a checkpoint, a data file and a loss.

    Args:
        checkpoint: a ``torch.save`` state_dict (bare or nested), TorchScript archive,
            ``torch.export`` program, ``.safetensors`` file or (with ``trust=True``) a pickled
            module; see :func:`curvlens.problem.checkpoint.load_checkpoint`.
        model: the architecture for weights-only files: an ``nn.Module``, a callable, or
            ``'pkg.module:factory'`` / ``'path/to/file.py:factory'``.
        data: a ``.pt``/``.npz``/``.h5`` file of inputs and targets, or a factory spec
            returning tensors, a dataset, a loader or an iterable of batches.
        data_keys: the inputs and targets keys in the data file, ``'images,labels'`` or
            ``('images', 'labels')`` (default: ``inputs``/``targets``, ``x``/``y``, ...).
        loss: a name of the loss table (:data:`curvlens.problem.losses.LOSSES`), a
            ``'module:function'`` spec or a callable.
        batch_size: split tensor data into batches of this size (and batch a map-style
            dataset returned by a factory); default one batch.
        num_samples: use only the first ``num_samples`` samples.
        trust: allow unpickling a fully pickled module (runs code from the file: only for
            files you trust).
        device: where the model and batches live.
        dtype: convert the model and floating data (``torch.float64`` or ``'float64'``);
            default: as saved.

    Returns:
        The problem, with :attr:`~Problem.source` (file name and format) and
        :attr:`~Problem.notes` (what loading did: prefixes stripped, ``model=`` ignored, ...).

    Raises:
        CheckpointError: a file is missing, corrupt or refused, or model, data and loss do not
            fit together; the message names the argument to change.
        ValueError, TypeError: a bad argument (named in the message).
    """
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint: expected a file path, got {type(checkpoint).__name__}")
    if not isinstance(trust, bool):
        raise TypeError(f"trust: expected True or False, got {type(trust).__name__}")
    dt, dev = _dtype(dtype), _device(device)
    keys = parse_data_keys(data_keys, arg="data_keys")
    inputs = read_data(data, keys, num_samples, batch_size, dt, keys_arg="data_keys")
    loaded = load_checkpoint(checkpoint, model=model, trust=trust, map_location="cpu")
    net = loaded.model if dt is None else loaded.model.to(dtype=dt)
    net = net.to(dev)
    loss_fn = resolve_loss(loss)
    if isinstance(inputs, tuple) and batch_size:
        x, y = inputs
        inputs = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(y), batch_size)]
    elif not isinstance(inputs, tuple):
        inputs = list(inputs)  # a loader or a one-shot iterable: read once, checked and kept as is
    # the double-backward probe comes after check_fits, so that inputs the model cannot take are
    # reported as a data/model mismatch rather than as a model without Hessian-vector products
    check_fits(net, loss_fn, inputs, _label(loss))
    example = first_inputs(inputs)
    if example is not None:
        example = tuple(t.to(dev) for t in example)
        problem = check_double_backward(net, example)
        if problem is not None:
            raise CheckpointError(f"{loaded.format} model {str(checkpoint)!r} cannot give Hessian-vector products: "
                                  f"{problem}; " + no_hvp_advice(loaded.format))
    notes = list(loaded.notes)
    attention = attention_note(net, example)
    if attention is not None:
        notes.append(attention)
    source = f"{os.path.basename(str(checkpoint))} ({loaded.format})"
    return Problem(net, loss_fn, inputs, source=source, notes=tuple(notes))
