"""``Problem``: the one owner of model + loss + data + parameters.

Every computation that touches a model goes through a :class:`Problem`: the batch loop with
exact weighting (the mean over all samples, not the mean of batch means), device moves, the
state guard (train/eval flags, BatchNorm buffers, ``.grad`` and the global RNG are restored),
the loss and its gradient, per-sample gradients and the probe for second derivatives.
Curvature operators are built from a Problem (``HessianOperator(problem)``); an optimizer's
curvature mini-batch is ``problem.with_data(batch)``, a sibling that shares everything else.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterator

import torch
from torch import nn

from curvlens.distributed.group import all_reduce_sum, rank_and_size, resolve_group, unwrap_ddp
from curvlens.errors import NonFiniteLossError
from curvlens.problem.batches import batch_size, collect_batches, to_device
from curvlens.problem.params import Block, ParamSpec, flatten_like, make_blocks, select_params, unflatten_like
from curvlens.problem.state import check_mode, preserved_state

__all__ = ["Problem", "call_model", "resolve_loss_form"]

_MODEL_ARG_NAMES = ("model", "module", "net", "network")


def resolve_loss_form(loss_fn: Any, loss_form: str = "auto") -> str:
    """``"criterion"`` (``loss_fn(outputs, targets)``) or ``"model_batch"`` (``loss_fn(model, batch)``)."""
    if loss_form not in ("auto", "criterion", "model_batch"):
        raise ValueError(f"loss_form: expected 'auto', 'criterion' or 'model_batch', got {loss_form!r}")
    if not callable(loss_fn):
        raise TypeError(
            f"loss_fn: expected a criterion such as torch.nn.CrossEntropyLoss(), a loss name such as "
            f"'cross_entropy', or a function loss_fn(model, batch) -> scalar, got {type(loss_fn).__name__}"
        )
    if loss_form != "auto":
        return loss_form
    if isinstance(loss_fn, nn.Module):
        return "criterion"
    try:
        first = next(iter(inspect.signature(loss_fn).parameters))
    except (TypeError, ValueError, StopIteration):
        return "criterion"
    return "model_batch" if first in _MODEL_ARG_NAMES else "criterion"


def call_model(model: nn.Module, inputs: Any) -> Any:
    """``model(inputs)``; a dict is passed as keywords, a tuple/list as positional arguments."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _resolve_loss(loss_fn: Any, reduction: str | None) -> Any:
    if isinstance(loss_fn, str):
        from curvlens.problem.losses import resolve_loss

        return resolve_loss(loss_fn, reduction=reduction or "mean")
    return loss_fn


class Problem:
    """Model, loss and data (and which parameters): what every curvature quantity is of.

    Args:
        model: the network (``nn.Module``). Its weights are read live: after an optimizer
            changes them in place, every later loss, gradient or product answers for the new
            weights.
        loss_fn: a criterion ``loss_fn(outputs, targets) -> scalar`` (e.g.
            ``nn.CrossEntropyLoss()`` or a name from the loss table such as
            ``"cross_entropy"``), or ``loss_fn(model, batch) -> scalar`` for models whose
            output is not a tensor. Functions whose first parameter is called ``model`` are
            taken as the second form; force it with ``loss_form``.
        data: one ``(inputs, targets)`` batch or an iterable of batches (a DataLoader, a
            list). Batches are collected once, so the problem is one fixed function.
        params: which parameters (default: all with ``requires_grad``): names, modules,
            tensors, or a predicate ``fn(name, param) -> bool``.
        reduction: ``"mean"`` (the per-batch loss is a mean over its samples; batches are
            weighted by size so the total is the mean over all samples) or ``"sum"``.
            Default: the criterion's ``reduction`` attribute, else ``"mean"``.
        mode: ``"eval"`` (default, deterministic) or ``"train"`` (batch statistics; running
            statistics are never updated).
        allow_random: accept a random loss (active dropout in train mode).
        loss_form: ``"auto"``, ``"criterion"`` or ``"model_batch"``.
        source, notes: where the problem came from and remarks on loading (set by
            :func:`curvlens.load_problem`; shown in reports).
        process_group: None (this process alone, even when ``torch.distributed`` is
            initialized), ``"world"`` (the default group) or a ``torch.distributed`` process
            group. Then ``data`` is this rank's shard (possibly empty, uneven shards are fine),
            ``num_samples`` counts all shards, and the loss, gradient and every curvature
            product are summed over the ranks: each equals the single-process value over the
            union of the shards (see :mod:`curvlens.distributed`). Every rank must make the same
            calls (they are collective), and random probes need the same seed on every rank.

    Example:
        >>> model = nn.Linear(3, 1).double()
        >>> x = torch.randn(10, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> problem = Problem(model, nn.MSELoss(), [(x[:4], x[:4, :1]), (x[4:], x[4:, :1])])
        >>> problem.num_samples, problem.dim
        (10, 4)
        >>> g = problem.gradient(flat=True)
        >>> bool(torch.allclose(g, Problem(model, nn.MSELoss(), (x, x[:, :1])).gradient(flat=True)))
        True
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable | str,
        data: Any,
        *,
        params: ParamSpec = None,
        reduction: str | None = None,
        mode: str = "eval",
        allow_random: bool = False,
        loss_form: str = "auto",
        source: str = "",
        notes: tuple[str, ...] = (),
        process_group: Any = None,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        model = unwrap_ddp(model)  # DDP's hooks fire on backward(), not autograd.grad: reduce explicitly
        self.process_group = resolve_group(process_group)
        self.rank, self.world_size = rank_and_size(self.process_group)
        if reduction is not None and reduction not in ("mean", "sum"):
            raise ValueError(
                f"reduction: expected 'mean' or 'sum', got {reduction!r}; a loss with reduction='none' "
                "is not a scalar: reduce it with .mean() or .sum()"
            )
        self.model = model
        self.loss_fn = _resolve_loss(loss_fn, reduction)
        self.loss_form = resolve_loss_form(self.loss_fn, loss_form)
        if reduction is None:
            reduction = getattr(self.loss_fn, "reduction", "mean") if self.loss_form == "criterion" else "mean"
            if reduction not in ("mean", "sum"):
                raise ValueError(
                    f"reduction: expected 'mean' or 'sum', got {reduction!r} (the criterion's reduction); a loss "
                    "with reduction='none' is not a scalar: construct it with reduction='mean' (or 'sum')"
                )
        self.reduction = reduction
        check_mode(model, mode, allow_random)
        self.mode, self.allow_random = mode, bool(allow_random)
        self._params_spec = params
        self.param_names, self.params = select_params(model, params)
        p0 = self.params[0]
        self.dtype, self.device = p0.dtype, p0.device
        self.param_shapes = tuple(p.shape for p in self.params)
        self.dim = sum(p.numel() for p in self.params)
        self.blocks: tuple[Block, ...] = make_blocks(self.param_names, self.params)
        self.source, self.notes = str(source), tuple(notes)
        self._set_data(data)

    def _set_data(self, data: Any) -> None:
        empty_shard = self.process_group is not None and isinstance(data, (list, tuple)) and len(data) == 0
        self.batches = [] if empty_shard else collect_batches(data)
        self.batch_sizes = [batch_size(b, i) for i, b in enumerate(self.batches)]
        self.local_num_samples = sum(self.batch_sizes)
        if self.process_group is None:
            self.num_samples = self.local_num_samples
        else:
            count = torch.tensor([float(self.local_num_samples)], dtype=torch.float64)
            self.num_samples = int(all_reduce_sum(count, self.process_group, what="sample count").item())
        if self.num_samples == 0:
            raise ValueError("data: all batches are empty (0 samples); pass at least one sample")

    def __repr__(self) -> str:
        return (f"Problem(model={type(self.model).__name__}, loss={type(self.loss_fn).__name__}, D={self.dim}, "
                f"N={self.num_samples} in {len(self.batches)} batches, mode={self.mode!r}, dtype={self.dtype})")

    # ------------------------------------------------------------------ siblings
    def _sibling(self, data: Any, params: ParamSpec) -> "Problem":
        new = object.__new__(Problem)
        new.__dict__.update({k: v for k, v in self.__dict__.items()
                             if k not in ("batches", "batch_sizes", "num_samples", "local_num_samples")})
        if params is not self._params_spec:
            new._params_spec = params
            new.param_names, new.params = select_params(self.model, params)
            new.param_shapes = tuple(p.shape for p in new.params)
            new.dim = sum(p.numel() for p in new.params)
            new.blocks = make_blocks(new.param_names, new.params)
        if data is None:
            new.batches, new.batch_sizes = self.batches, self.batch_sizes
            new.num_samples, new.local_num_samples = self.num_samples, self.local_num_samples
        else:
            new._set_data(data)
        return new

    def with_data(self, data: Any) -> "Problem":
        """The same problem (model, loss, parameters, mode) on other data: one batch or an
        iterable of batches. Cheap: nothing is computed (an optimizer's curvature mini-batch).
        On a process group ``data`` is this rank's part and every rank must call it."""
        return self._sibling(data, self._params_spec)

    def with_params(self, params: ParamSpec) -> "Problem":
        """The same problem restricted to other parameters (e.g. one layer's ``param_names``)."""
        return self._sibling(None, list(params) if isinstance(params, tuple) else params)

    # ------------------------------------------------------------------ weights
    def param_versions(self) -> tuple:
        """A key that changes whenever a selected parameter is modified in place (its autograd
        version counter) or replaced (its storage). Writes through ``p.data`` bypass the version
        counter: call ``refresh()`` on operators after such writes."""
        return tuple((p._version, p.data_ptr()) for p in self.params)

    def flatten(self, tensors) -> torch.Tensor:
        """Concatenate parameter-shaped tensors into one flat vector."""
        return flatten_like(tensors, self.param_shapes, "tensors")

    def unflatten(self, v: torch.Tensor) -> list[torch.Tensor]:
        """Split a flat vector of length ``dim`` into tensors shaped like the parameters."""
        if not isinstance(v, torch.Tensor) or v.shape != (self.dim,):
            got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(f"v: expected a flat tensor of shape ({self.dim},), got {got}")
        return unflatten_like(v, self.param_shapes)

    def parameters_vector(self) -> torch.Tensor:
        """A detached copy of the selected parameters as one flat vector."""
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    # ------------------------------------------------------------------ the batch loop
    def state_guard(self):
        """Context restoring train/eval flags, buffers, ``.grad`` and the global RNG on exit."""
        return preserved_state(self.model, self.mode, self.device, grads=self.params)

    def batch_weight(self, i: int) -> float:
        """Weight of batch ``i`` in the total loss: ``n_i / N`` (mean) or 1 (sum)."""
        return self.batch_sizes[i] / self.num_samples if self.reduction == "mean" else 1.0

    def reduce_(self, tensor: torch.Tensor, what: str = "tensor") -> torch.Tensor:
        """Sum a partial result over the process group's ranks in place (no-op without a group);
        the bytes sent are counted in :attr:`reduced_bytes`."""
        if self.process_group is not None:
            self.reduced_bytes = getattr(self, "reduced_bytes", 0) + tensor.numel() * tensor.element_size()
        return all_reduce_sum(tensor, self.process_group, what=what)

    def device_batch(self, i: int) -> Any:
        """Batch ``i`` on the parameters' device, floating tensors in their dtype."""
        return to_device(self.batches[i], self.device, self.dtype)

    def inputs_targets(self, batch: Any, i: int) -> tuple[Any, Any]:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            got = type(batch).__name__ + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
            raise ValueError(
                f"data: batch {i} must be an (inputs, targets) pair for a criterion loss_fn, got {got}; "
                "for other batch structures pass loss_fn(model, batch)"
            )
        return batch[0], batch[1]

    def _raw_loss(self, i: int, batch: Any) -> tuple[Any, Any, Any]:
        batch = self.device_batch(i) if batch is None else batch
        if self.loss_form == "criterion":
            x, y = self.inputs_targets(batch, i)
            out = call_model(self.model, x)
            return self.loss_fn(out, y), out, y
        return self.loss_fn(self.model, batch), None, None

    def batch_loss(self, i: int, batch: Any = None) -> tuple[torch.Tensor, Any, Any]:
        """(loss, outputs, targets) of batch ``i`` (unweighted, differentiable; call inside
        :meth:`state_guard`); outputs and targets are None for ``loss_fn(model, batch)``."""
        loss, out, y = self._raw_loss(i, batch)
        return self.check_loss(loss, i), out, y

    def check_loss(self, loss: Any, i: int) -> torch.Tensor:
        """Validate one batch's loss: a finite scalar that depends on the parameters."""
        if not isinstance(loss, torch.Tensor):
            raise TypeError(f"loss_fn: expected a scalar tensor, got {type(loss).__name__} on batch {i}")
        if loss.numel() != 1:
            raise ValueError(
                f"loss_fn: expected a scalar loss, got shape {tuple(loss.shape)} on batch {i}; "
                "reduce it with reduction='mean' (or 'sum')"
            )
        if not loss.requires_grad:
            raise ValueError(
                f"loss_fn: the loss on batch {i} does not require grad, so it does not depend on the "
                "selected parameters; compute it from the model's outputs and make sure the parameters "
                "require grad (and no torch.no_grad() is active)"
            )
        if not bool(torch.isfinite(loss.detach()).all()):
            raise NonFiniteLossError(
                f"loss_fn: the loss is {float(loss.detach().reshape(())):.4g} on batch {i} (of "
                f"{len(self.batches)}); check the data and the model's parameters for NaN/Inf"
            )
        return loss.reshape(())

    def weighted_losses(self) -> Iterator[tuple[int, torch.Tensor]]:
        """``(i, w_i * loss_i)`` for every batch, differentiable; the total is their sum."""
        for i in range(len(self.batches)):
            loss, _, _ = self.batch_loss(i)
            yield i, loss * self.batch_weight(i)

    # ------------------------------------------------------------------ loss and gradient
    def loss(self) -> torch.Tensor:
        """The total loss over all batches (a detached scalar in the parameters' dtype)."""
        total = torch.zeros((), dtype=self.dtype, device=self.device)
        with self.state_guard(), torch.no_grad():
            for i in range(len(self.batches)):
                loss = self._raw_loss(i, None)[0]
                if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                    got = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
                    raise ValueError(f"loss_fn: expected a scalar loss tensor, got {got} on batch {i}")
                total += loss.reshape(()).to(self.dtype) * self.batch_weight(i)
        return self.reduce_(total, "loss")

    def loss_and_gradient(self, *, flat: bool = False) -> tuple[torch.Tensor, Any]:
        """The total loss (detached) and its gradient with respect to the selected parameters
        (parameters that do not reach the loss get zeros); ``flat=True`` returns one vector."""
        acc, total = None, torch.zeros((), dtype=self.dtype, device=self.device)
        with self.state_guard():
            for _, wl in self.weighted_losses():
                g = torch.autograd.grad(wl, self.params, allow_unused=True)
                g = [torch.zeros_like(p) if t is None else t for t, p in zip(g, self.params)]
                acc = g if acc is None else [a.add_(b) for a, b in zip(acc, g)]
                total += wl.detach()
        if acc is None:  # an empty shard of a process group
            acc = [torch.zeros_like(p) for p in self.params]
        if self.process_group is not None:  # one all-reduce of [gradient, loss]
            buf = self.reduce_(torch.cat([a.reshape(-1) for a in acc] + [total.reshape(1)]), "gradient")
            total, acc = buf[-1].clone(), [t.clone() for t in self.unflatten(buf[:-1])]
        return total, (torch.cat([a.reshape(-1) for a in acc]) if flat else acc)

    def gradient(self, *, flat: bool = False) -> Any:
        """Gradient of the total loss (list of parameter-shaped tensors, or flat)."""
        return self.loss_and_gradient(flat=flat)[1]

    def per_sample_gradients(self, *, chunk_size: int = 64) -> Iterator[torch.Tensor]:
        """Per-sample gradients of the per-sample losses as ``(n, D)`` chunks, in sample order.

        The loss of a one-sample batch is the per-sample loss (``torch.func.vmap`` of ``grad``);
        needs ``(inputs, targets)`` batches of tensors. Raises ``RuntimeError``/``TypeError``
        when the model has no batching rule (then use minibatch gradients instead). On a
        process group these are the rows of this rank's shard (nothing is reduced).
        """
        from curvlens.problem.per_sample import per_sample_gradients

        return per_sample_gradients(self, chunk_size)

    def check_twice_differentiable(self) -> None:
        """Raise a one-line ``ValueError`` when the loss cannot be differentiated twice
        (an ``@once_differentiable`` node in the graph of the first batch)."""
        from curvlens.problem.differentiable import check_twice_differentiable

        if not self.batches:  # an empty shard: nothing to probe on this rank
            return
        with self.state_guard():
            loss, _, _ = self.batch_loss(0)
            g = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
            check_twice_differentiable([t for t in g if t is not None], "Problem")
