"""The one loss table: each loss name with its torch class and functional, its closed-form
output Hessian and its sampling of targets for the Monte-Carlo Fisher.

Every consumer goes through this table: ``resolve_loss`` (names and ``'module:function'``
specs to criteria; ``load_problem(loss=...)``), ``identify_loss`` (criteria to a :class:`LossSpec`
for the Gauss-Newton and Fisher operators) and ``loss_name``. A name means one loss everywhere.

For a batch loss ``L(f, y)`` of model outputs ``f`` the generalized Gauss-Newton matrix is
``J^T (d^2 L / d f^2) J`` (Schraudolph 2002; Martens 2020, "New insights and perspectives on
the natural gradient method"). For these losses ``d^2 L / d f^2`` is block diagonal and
positive semi-definite; for ``cross_entropy``, ``nll``, ``mse`` and ``bce_with_logits`` it does
not depend on the targets and equals the Fisher of the matching likelihood.

Conventions (PyTorch's definitions of the losses):

- ``cross_entropy``: logits ``(N, C)`` or ``(N, C, d1, ...)``; class-index or probability targets.
- ``nll``: the outputs are log-probabilities; the Hessian is that of cross-entropy with them as
  logits, exact because ``softmax(log_softmax(z)) = softmax(z)`` (NLL itself is linear in its
  input, so its literal output Hessian is zero).
- ``mse``: ``mean((f - y)^2)`` over all elements (or the sum).
- ``bce_with_logits``: ``BCEWithLogitsLoss``, outputs are logits (sigmoid inside the loss).
- ``bce_probs``: ``BCELoss``, outputs are probabilities in (0, 1); its Hessian depends on the
  targets and is positive for targets in [0, 1].

The name ``bce`` is refused: it meant logits in one place and probabilities in another.

Example:
    >>> resolve_loss("xent")
    CrossEntropyLoss()
    >>> loss_name(resolve_loss("bce_with_logits", reduction="sum"))
    'bce_with_logits'
    >>> identify_loss("mse", "sum", purpose="GGNOperator")
    LossSpec(kind='mse', reduction='sum', ignore_index=-100)
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from curvlens.errors import CheckpointError
from curvlens.problem._loss_curvature import (bernoulli_hessian, bernoulli_probs_hessian, identity, mse_hessian,
                                              sample_bernoulli, sample_bernoulli_probs, sample_categorical,
                                              sample_gaussian, softmax_hessian)

__all__ = ["LOSSES", "SUPPORTED", "LossKind", "LossSpec", "identify_loss", "loss_name", "resolve_loss"]


@dataclass(frozen=True)
class LossKind:
    """One row of the loss table.

    Attributes:
        name: the canonical name.
        module: the ``torch.nn`` criterion class.
        functional: the ``torch.nn.functional`` function.
        description: one line: what the outputs and targets are.
        probs: outputs -> predictive probabilities (identity for ``mse``).
        hessian: ``(probs, targets, W) -> (d^2 e / d f^2) W`` per term, before the reduction
            factor, for directions ``W`` shaped ``(k, *outputs.shape)``.
        sample: ``(probs, num_samples, generator) -> g``: gradients of the per-term negative
            log-likelihood at targets drawn from the model, shaped ``(S, *outputs.shape)``.
        classwise: one term per position with the classes along dimension 1 (softmax family).
        aliases: other accepted spellings.
    """

    name: str
    module: type
    functional: Callable[..., torch.Tensor]
    description: str
    probs: Callable[[torch.Tensor], torch.Tensor]
    hessian: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    sample: Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]
    classwise: bool = False
    aliases: tuple[str, ...] = ()


_ROWS = (
    LossKind("cross_entropy", nn.CrossEntropyLoss, F.cross_entropy,
             "softmax cross-entropy on logits, integer class (or probability) targets",
             lambda out: torch.softmax(out, dim=1), softmax_hessian, sample_categorical, True,
             ("ce", "crossentropy", "cross-entropy", "xent")),
    LossKind("nll", nn.NLLLoss, F.nll_loss,
             "negative log-likelihood on log-probabilities (log_softmax outputs), integer class targets",
             torch.exp, softmax_hessian, sample_categorical, True, ("nll_loss",)),
    LossKind("mse", nn.MSELoss, F.mse_loss, "mean squared error, targets shaped like the outputs",
             identity, mse_hessian, sample_gaussian, False, ("l2",)),
    LossKind("bce_with_logits", nn.BCEWithLogitsLoss, F.binary_cross_entropy_with_logits,
             "binary cross-entropy on logits (BCEWithLogitsLoss, sigmoid inside), float targets in [0, 1]",
             torch.sigmoid, bernoulli_hessian, sample_bernoulli, False, ("bce_logits",)),
    LossKind("bce_probs", nn.BCELoss, F.binary_cross_entropy,
             "binary cross-entropy on probabilities (BCELoss, outputs already in (0, 1)), float targets in [0, 1]",
             identity, bernoulli_probs_hessian, sample_bernoulli_probs, False, ()),
)

#: canonical name -> :class:`LossKind`
LOSSES: dict[str, LossKind] = {row.name: row for row in _ROWS}
#: the canonical names, in table order
SUPPORTED: tuple[str, ...] = tuple(LOSSES)

_BY_SPELLING = {s: row.name for row in _ROWS for s in (row.name, *row.aliases)}
_BY_CLASS = {row.module: row.name for row in _ROWS}
_BY_FUNCTION = {row.functional: row.name for row in _ROWS}
_AMBIGUOUS = {"bce", "binary_cross_entropy"}
_REDUCTIONS = ("mean", "sum")


def _ambiguous(arg: str, name: str) -> ValueError:
    return ValueError(
        f"{arg}: {name!r} is ambiguous (logits or probabilities?); use 'bce_with_logits' "
        "(BCEWithLogitsLoss, the model outputs logits) or 'bce_probs' (BCELoss, the model outputs probabilities)"
    )


def _canonical(name: str, arg: str) -> str | None:
    """The canonical name of a spelling, None when unknown; raises for the ambiguous ``bce``."""
    key = name.strip().lower().replace(" ", "_")
    if key in _AMBIGUOUS:
        raise _ambiguous(arg, name)
    return _BY_SPELLING.get(key)


@dataclass(frozen=True)
class LossSpec:
    """A table loss with its reduction: callable as the loss, and its output-space curvature.

    Attributes:
        kind: the canonical name (a key of :data:`LOSSES`).
        reduction: ``"mean"`` or ``"sum"``.
        ignore_index: class-index targets equal to it do not count (``cross_entropy``, ``nll``).
    """

    kind: str
    reduction: str = "mean"
    ignore_index: int = -100

    @property
    def row(self) -> LossKind:
        return LOSSES[self.kind]

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        kw = {"ignore_index": self.ignore_index} if self.row.classwise else {}
        return self.row.functional(out, y, reduction=self.reduction, **kw)

    def _mask(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """Positions that count (class-index targets may be ``ignore_index``), shaped like
        ``out`` without its class dimension; None when every position counts."""
        if self.row.classwise and not y.is_floating_point():
            m = y != self.ignore_index
            return None if bool(m.all()) else m
        return None

    def _masked(self, T: torch.Tensor, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mask = self._mask(out, y)
        return T if mask is None else T * mask.unsqueeze(0).unsqueeze(2).to(T.dtype)

    def scale(self, out: torch.Tensor, y: torch.Tensor) -> float:
        """The reduction factor: 1 for sum, 1 / (number of terms averaged) for mean."""
        if self.reduction == "sum":
            return 1.0
        if self.row.classwise:
            mask = self._mask(out, y)
            n = int(mask.sum()) if mask is not None else out.numel() // out.shape[1]
        else:
            n = out.numel()
        return 1.0 / max(n, 1)

    def probs(self, out: torch.Tensor) -> torch.Tensor:
        """The predictive probabilities of the outputs (the outputs themselves for ``mse``)."""
        return self.row.probs(out)

    def hessian_vp(self, out: torch.Tensor, y: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """``(d^2 L / d f^2) W`` for a batch of directions ``W`` shaped ``(k, *out.shape)``."""
        out = out.detach()
        HW = self.row.hessian(self.probs(out), y, W)
        return self.scale(out, y) * (self._masked(HW, out, y) if self.row.classwise else HW)

    def sampled_gradients(self, out: torch.Tensor, y: torch.Tensor, num_samples: int,
                          generator: torch.Generator) -> torch.Tensor:
        """Gradients ``g = d e / d f`` of the per-term negative log-likelihood ``e`` at targets
        sampled from the model's predictive distribution, shaped ``(S, *out.shape)``.

        ``E[g g^T] = d^2 e / d f^2`` per term (the Fisher identity), so
        ``scale * sum_terms J^T g g^T J`` is an unbiased estimate of the GGN.
        """
        out = out.detach()
        g = self.row.sample(self.probs(out), num_samples, generator)
        return self._masked(g, out, y) if self.row.classwise else g


def identify_loss(loss_fn: Any, reduction: str, *, purpose: str) -> LossSpec:
    """Map a criterion (``nn`` module, functional, name or :class:`LossSpec`) to a :class:`LossSpec`.

    Raises:
        ValueError: the loss is not in the table, is the ambiguous ``bce``, or has class weights
            (its output Hessian would depend on the targets); the message names ``purpose``.
    """
    kind = None
    if isinstance(loss_fn, LossSpec):
        return LossSpec(loss_fn.kind, reduction, loss_fn.ignore_index)
    if isinstance(loss_fn, nn.Module):
        kind = _BY_CLASS.get(type(loss_fn))
        if kind is not None:
            if getattr(loss_fn, "weight", None) is not None or getattr(loss_fn, "pos_weight", None) is not None:
                raise ValueError(
                    f"loss_fn: {type(loss_fn).__name__} with class weights is not supported by {purpose}; "
                    "its output Hessian depends on the targets. Use an unweighted loss or HessianOperator"
                )
            # label smoothing does not change d^2 L / d f^2, so it needs nothing here
            return LossSpec(kind, reduction, int(getattr(loss_fn, "ignore_index", -100)))
    elif isinstance(loss_fn, str):
        kind = _canonical(loss_fn, "loss_fn")
    elif callable(loss_fn):
        kind = _BY_FUNCTION.get(loss_fn)
    if kind is None:
        name = loss_fn if isinstance(loss_fn, str) else getattr(loss_fn, "__name__", type(loss_fn).__name__)
        raise ValueError(
            f"loss_fn: {purpose} supports {', '.join(SUPPORTED)} (as nn modules, torch.nn.functional "
            f"functions or names), got {name!r}; use HessianOperator for other losses"
        )
    return LossSpec(kind, reduction)


def loss_name(loss: Any) -> str | None:
    """The canonical name of a table criterion instance or :class:`LossSpec`, else None."""
    if isinstance(loss, LossSpec):
        return loss.kind
    return _BY_CLASS.get(type(loss))


def resolve_loss(spec: str | nn.Module | Callable[..., Any], *, reduction: str = "mean") -> Any:
    """Return a loss callable for a table name, a ``'module:function'`` spec, or a callable.

    Args:
        spec: a name of :data:`LOSSES` (``cross_entropy``, ``nll``, ``mse``,
            ``bce_with_logits``, ``bce_probs``) or an alias (``ce``, ``xent``, ``l2``,
            ``bce_logits``, ...); or ``'pkg.module:name'`` / ``'file.py:name'`` naming a
            criterion instance, a criterion class (instantiated without arguments) or a
            function ``loss(outputs, targets)`` or ``loss(model, batch)``; or such a callable.
        reduction: ``"mean"`` or ``"sum"`` for the table names (user callables keep their own).

    Returns:
        An ``nn.Module`` criterion for names, the user object otherwise.

    Raises:
        ValueError: unknown or ambiguous (``bce``) name, or bad ``reduction``.
        TypeError: ``spec`` is neither a string nor callable.
        CheckpointError: the spec could not be imported, or does not name a callable.
    """
    from curvlens.problem.factory import import_object, is_factory_spec

    if reduction not in _REDUCTIONS:
        raise ValueError(
            f"reduction: expected one of {', '.join(_REDUCTIONS)}, got {reduction!r}; pass reduction='mean'"
        )
    if isinstance(spec, str):
        name = _canonical(spec, "loss")
        if name is not None:
            return LOSSES[name].module(reduction=reduction)
        if not is_factory_spec(spec):
            raise ValueError(
                f"loss: unknown loss {spec!r}; expected one of {', '.join(SUPPORTED)} "
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
        f"loss: expected a loss name ({', '.join(SUPPORTED)}), a 'module:function' spec or a callable, "
        f"got {type(spec).__name__}"
    )
