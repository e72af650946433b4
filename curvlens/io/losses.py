"""Turn a loss name (``cross_entropy``, ``mse``, ``nll``, ``bce``) or spec into a criterion.

Example:
    >>> from curvlens.io.losses import resolve_loss
    >>> resolve_loss("cross_entropy")
    CrossEntropyLoss()
    >>> resolve_loss("mse", reduction="sum")
    MSELoss()
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

from curvlens.errors import CheckpointError
from curvlens.io.factory import import_object, is_factory_spec

__all__ = ["LOSSES", "resolve_loss", "loss_name"]

#: canonical name -> (criterion class, one-line description)
LOSSES: dict[str, tuple[type[nn.Module], str]] = {
    "cross_entropy": (nn.CrossEntropyLoss, "softmax cross-entropy on logits, integer class targets"),
    "nll": (nn.NLLLoss, "negative log-likelihood on log-probabilities, integer class targets"),
    "mse": (nn.MSELoss, "mean squared error, targets shaped like the outputs"),
    "bce": (nn.BCEWithLogitsLoss, "binary cross-entropy on logits (sigmoid inside), float targets in [0, 1]"),
    "bce_probs": (nn.BCELoss, "binary cross-entropy on probabilities (outputs already in [0, 1])"),
}

_ALIASES = {
    "ce": "cross_entropy",
    "crossentropy": "cross_entropy",
    "cross-entropy": "cross_entropy",
    "xent": "cross_entropy",
    "l2": "mse",
    "bce_logits": "bce",
    "bce_with_logits": "bce",
}

_REDUCTIONS = ("mean", "sum")


def _canonical(name: str) -> str | None:
    key = name.strip().lower().replace(" ", "_")
    key = _ALIASES.get(key, key)
    return key if key in LOSSES else None


def loss_name(loss: Any) -> str | None:
    """The canonical name of a built-in criterion instance (``"cross_entropy"`` ...), else None."""
    for name, (cls, _) in LOSSES.items():
        if type(loss) is cls:
            return name
    return None


def resolve_loss(spec: str | nn.Module | Callable[..., Any], *, reduction: str = "mean") -> Any:
    """Return a loss callable for a name, a ``'module:function'`` spec, or a callable.

    Args:
        spec: one of ``cross_entropy`` (aliases ``ce``, ``xent``), ``mse``, ``nll``, ``bce``
            (logits: ``BCEWithLogitsLoss``), ``bce_probs`` (``BCELoss`` on probabilities);
            or ``'pkg.module:name'`` / ``'file.py:name'`` naming a criterion instance, a
            criterion class (instantiated without arguments) or a function
            ``loss(outputs, targets)`` or ``loss(model, batch)``; or such a callable directly.
        reduction: ``"mean"`` or ``"sum"`` for the built-in names (user callables keep their own).

    Returns:
        A callable: an ``nn.Module`` criterion for names, the user object otherwise.

    Raises:
        ValueError: unknown name or bad ``reduction``.
        TypeError: ``spec`` is neither a string nor callable.
        CheckpointError: the spec could not be imported, or does not name a callable.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(
            f"reduction: expected one of {', '.join(_REDUCTIONS)}, got {reduction!r}; pass reduction='mean'"
        )
    if isinstance(spec, str):
        name = _canonical(spec)
        if name is not None:
            return LOSSES[name][0](reduction=reduction)
        if not is_factory_spec(spec):
            raise ValueError(
                f"loss: unknown loss {spec!r}; expected one of {', '.join(LOSSES)} "
                "or 'pkg.module:function' / 'path/to/file.py:function'"
            )
        obj = import_object(spec)
        if inspect.isclass(obj):
            try:
                obj = obj()
            except Exception as e:
                raise CheckpointError(
                    f"loss {spec!r}: instantiating {obj.__name__}() raised {type(e).__name__}: {e}; "
                    "point the spec at an instance or a function instead"
                ) from e
        if not callable(obj):
            raise CheckpointError(
                f"loss {spec!r}: expected a callable loss(outputs, targets) or loss(model, batch), "
                f"got {type(obj).__name__}"
            )
        return obj
    if callable(spec):
        return spec
    raise TypeError(
        f"loss: expected a loss name ({', '.join(LOSSES)}), a 'module:function' spec or a callable, "
        f"got {type(spec).__name__}"
    )
