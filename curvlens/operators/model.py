"""Shared machinery of the operators built from (model, loss_fn, data).

One pass over the data at construction validates every batch (scalar, finite, differentiable
loss), counts samples and, while a memory budget allows, keeps each batch's differentiable
graph so that every later product costs one extra backward instead of a fresh
forward+backward+backward (the trick PyHessian uses for one batch, generalized to many).
Batches beyond the budget are recomputed on each product ("streamed").
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import Any, Callable

import torch
from torch import nn

from curvlens._memory import available_memory
from curvlens.errors import NonFiniteLossError
from curvlens.operators._data import batch_size, collect_batches, to_device
from curvlens.operators._params import ParamSpec, make_blocks, select_params
from curvlens.operators._state import check_mode, preserved_state
from curvlens.operators.base import CurvatureOperator

log = logging.getLogger("curvlens.operators")

DEFAULT_GRAPH_FRACTION = 0.25  # of available memory, for retained graphs
DEFAULT_GRAPH_CAP = 4 * 2**30


def default_graph_memory() -> int:
    """Retained-graph budget: 25% of available memory, at most 4 GiB."""
    return int(min(DEFAULT_GRAPH_CAP, available_memory() * DEFAULT_GRAPH_FRACTION))


def resolve_loss_form(loss_fn: Any, loss_form: str = "auto") -> str:
    """``"criterion"`` or ``"model_batch"``: how ``loss_fn`` is called (see :class:`ModelOperator`)."""
    if loss_form not in ("auto", "criterion", "model_batch"):
        raise ValueError(f"loss_form: expected 'auto', 'criterion' or 'model_batch', got {loss_form!r}")
    if not callable(loss_fn):
        raise TypeError(
            f"loss_fn: expected a criterion such as torch.nn.CrossEntropyLoss() or a function "
            f"loss_fn(model, batch) -> scalar, got {type(loss_fn).__name__}"
        )
    if loss_form != "auto":
        return loss_form
    if isinstance(loss_fn, nn.Module):
        return "criterion"
    try:
        first = next(iter(inspect.signature(loss_fn).parameters))
    except (TypeError, ValueError, StopIteration):
        return "criterion"
    return "model_batch" if first in ("model", "module", "net", "network") else "criterion"


def call_model(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


class ModelOperator(CurvatureOperator):
    """Base class of Hessian, GGN and Fisher operators of a model on a data set.

    Args:
        model: the network (``nn.Module``); never modified.
        loss_fn: a criterion ``loss_fn(outputs, targets) -> scalar`` (e.g.
            ``nn.CrossEntropyLoss()``), or ``loss_fn(model, batch) -> scalar`` for models whose
            output is not a tensor or whose loss is not ``criterion(model(x), y)``. Functions
            whose first parameter is called ``model`` are taken as the second form; force it
            with ``loss_form``.
        data: one ``(inputs, targets)`` batch or an iterable of batches (a DataLoader, a list).
            Batches are collected once, so the operator is one fixed matrix.
        params: which parameters (default: all with ``requires_grad``); see
            :func:`curvlens.operators._params.select_params`.
        reduction: ``"mean"`` (the per-batch loss is a mean over its samples; batches are
            weighted by size so the operator is that of the mean over all samples) or
            ``"sum"``. Default: the criterion's ``reduction`` attribute, else ``"mean"``.
        mode: ``"eval"`` (default, deterministic) or ``"train"`` (batch statistics; running
            statistics are never updated).
        allow_random: accept a random operator (active dropout in train mode).
        max_graph_memory: bytes of retained graphs to keep between products (default: 25% of
            available memory, at most 4 GiB); 0 recomputes every batch on every product.
        loss_form: ``"auto"``, ``"criterion"`` or ``"model_batch"``.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable,
        data: Any,
        *,
        params: ParamSpec = None,
        reduction: str | None = None,
        mode: str = "eval",
        allow_random: bool = False,
        max_graph_memory: int | None = None,
        loss_form: str = "auto",
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.loss_fn = loss_fn
        self.loss_form = resolve_loss_form(loss_fn, loss_form)
        if reduction is None:
            reduction = getattr(loss_fn, "reduction", "mean") if self.loss_form == "criterion" else "mean"
        if reduction not in ("mean", "sum"):
            raise ValueError(
                f"reduction: expected 'mean' or 'sum', got {reduction!r}; a loss with reduction='none' "
                "is not a scalar: reduce it with .mean() or .sum()"
            )
        self.reduction = reduction
        check_mode(model, mode, allow_random)
        self.mode = mode
        self.param_names, self.params = select_params(model, params)
        p0 = self.params[0]
        super().__init__(
            sum(p.numel() for p in self.params), p0.dtype, p0.device,
            param_shapes=[p.shape for p in self.params], blocks=make_blocks(self.param_names, self.params),
        )
        self._spec = (params, reduction, mode, allow_random, max_graph_memory, loss_form)
        self.batches = collect_batches(data)
        self.batch_sizes = [batch_size(b, i) for i, b in enumerate(self.batches)]
        self.num_samples = sum(self.batch_sizes)
        if self.num_samples == 0:
            raise ValueError("data: all batches are empty (0 samples); pass at least one sample")
        self.budget = default_graph_memory() if max_graph_memory is None else int(max_graph_memory)
        self._cache: dict[int, Any] = {}
        self.vjp_state: dict[str, dict] = {}  # per backward kind: batched or loop (see batched_vjp)
        self._prepare()

    # ------------------------------------------------------------------ construction
    def batch_weight(self, i: int) -> float:
        """Weight of batch ``i`` in the total loss: ``n_i / N`` (mean) or 1 (sum)."""
        return self.batch_sizes[i] / self.num_samples if self.reduction == "mean" else 1.0

    def _prepare(self) -> None:
        """Validate every batch; keep graphs in order until the first one that does not fit."""
        used, caching = 0, True
        for i in range(len(self.batches)):
            with _SavedBytes(self.params) as counter:
                entry = self._build(i)
            if i == 0:
                check_twice_differentiable(self._graph_roots(entry), type(self).__name__)
            caching = caching and used + counter.bytes <= self.budget
            if caching:
                self._cache[i] = entry
                used += counter.bytes
        self.graph_bytes = used
        log.debug("%s: %d/%d batches keep their graphs (%.1f MiB)", type(self).__name__,
                  len(self._cache), len(self.batches), used / 2**20)

    def _device_batch(self, i: int) -> Any:
        return to_device(self.batches[i], self.device, self.dtype)

    def _inputs_targets(self, batch: Any, i: int) -> tuple[Any, Any]:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(
                f"data: batch {i} must be an (inputs, targets) pair for a criterion loss_fn, got "
                f"{type(batch).__name__}{'' if not isinstance(batch, (tuple, list)) else f' of length {len(batch)}'}; "
                "for other batch structures pass loss_fn(model, batch)"
            )
        return batch[0], batch[1]

    def _batch_loss(self, i: int, batch: Any) -> tuple[torch.Tensor, Any, Any]:
        """(loss, outputs, targets) of batch ``i``; outputs/targets are None for model_batch."""
        out = y = None
        if self.loss_form == "criterion":
            x, y = self._inputs_targets(batch, i)
            out = call_model(self.model, x)
            loss = self.loss_fn(out, y)
        else:
            loss = self.loss_fn(self.model, batch)
        return self.check_loss(loss, i), out, y

    def gradient(self) -> list[torch.Tensor]:
        """Gradient of the total loss over all batches (weighted as the operator), with the
        model's state preserved; parameters that do not reach the loss get zeros."""
        acc = None
        with self.state_guard():
            for i in range(len(self.batches)):
                loss, _, _ = self._batch_loss(i, self._device_batch(i))
                g = torch.autograd.grad(loss * self.batch_weight(i), self.params, allow_unused=True)
                g = [torch.zeros_like(p) if t is None else t for t, p in zip(g, self.params)]
                acc = g if acc is None else [a.add_(b) for a, b in zip(acc, g)]
        return acc

    def check_loss(self, loss: Any, i: int) -> torch.Tensor:
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

    def _build(self, i: int) -> Any:
        """Differentiable state of batch ``i`` needed by :meth:`_apply_many` (subclasses)."""
        raise NotImplementedError

    def _graph_roots(self, entry: Any) -> list:
        """Tensors of :meth:`_build`'s entry whose graphs later products differentiate."""
        raise NotImplementedError

    def _apply_many(self, items: list[tuple[int, Any]], V: list[torch.Tensor]) -> list[torch.Tensor]:
        """Sum over ``(i, entry)`` items of batch ``i``'s weighted contribution to ``A V``, for
        parameter-shaped ``(k, *shape)`` directions ``V`` (subclasses; one backward call)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ products
    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        k = V.shape[1]
        Vt = V.T.contiguous()  # (k, D): every direction's slice of a parameter is contiguous
        Vp, start = [], 0
        for p in self.params:
            n = p.numel()
            Vp.append(Vt[:, start : start + n].reshape(k, *p.shape))
            start += n
        # all kept graphs in one backward call (autograd accumulates), then streamed batches
        cached = [(i, e) for i, e in sorted(self._cache.items())]
        acc = self._apply_many(cached, Vp) if cached else None
        for i in range(len(self.batches)):
            if i not in self._cache:
                part = self._apply_many([(i, self._build(i))], Vp)
                acc = part if acc is None else [a.add_(b) for a, b in zip(acc, part)]
        out = torch.cat([a.reshape(k, -1) for a in acc], dim=1).T
        # a sum is NaN/Inf when any entry is (one reduction, no D x k mask: the mask cost ~4%
        # of a product for k = 8 at D = 1M); only then is the entrywise check run
        if not bool(torch.isfinite(out.sum())) and not bool(torch.isfinite(out).all()):
            raise NonFiniteLossError(
                f"{type(self).__name__}: the product is not finite; check the model for overflow "
                "(e.g. use float64) or the direction for NaN/Inf"
            )
        return out

    def block(self, name: str) -> "ModelOperator":
        """The same operator restricted to one block's parameters (the exact diagonal block)."""
        b = self.get_block(name)
        params, reduction, mode, allow_random, budget, loss_form = self._spec
        return type(self)(
            self.model, self.loss_fn, self.batches if len(self.batches) > 1 else self.batches[0],
            params=list(b.param_names), **self._block_kwargs(reduction, mode, allow_random, budget, loss_form),
        )

    def _block_kwargs(self, reduction, mode, allow_random, budget, loss_form) -> dict:
        return dict(reduction=reduction, mode=mode, allow_random=allow_random,
                    max_graph_memory=budget, loss_form=loss_form)

    def state_guard(self):
        return preserved_state(self.model, self.mode, self.device)


def grads(outputs, inputs, grad_outputs, *, batched: bool, create_graph: bool = False,
          retain_graph: bool = True) -> list[torch.Tensor]:
    """``torch.autograd.grad`` with unused inputs as zeros (batched: leading dim k)."""
    outs = [o for o, g in zip(outputs, grad_outputs) if o.requires_grad]
    gos = [g for o, g in zip(outputs, grad_outputs) if o.requires_grad]
    if not outs:
        return [None] * len(inputs)
    res = torch.autograd.grad(outs, inputs, gos, retain_graph=retain_graph, create_graph=create_graph,
                              allow_unused=True, is_grads_batched=batched)
    return list(res)


def batched_vjp(outputs, inputs, grad_outputs, k: int, state: dict) -> list[torch.Tensor]:
    """Vector-Jacobian products of ``k`` stacked directions (leading dim ``k``).

    One batched backward (``is_grads_batched``, vmap over the backward graph) is usually
    faster than ``k`` backwards, but not always: some operations (e.g. convolution backward)
    have slow batching rules or none. The first few calls with ``k > 1`` time one direction
    alone against the others batched; then ``state`` keeps the faster way.
    """
    mode = state.get("mode")
    if k == 1 or mode == "loop":
        return _loop_vjp(outputs, inputs, grad_outputs, range(k))
    if mode == "batched":
        return _batched(outputs, inputs, grad_outputs, k, state)
    t0 = time.perf_counter()
    first = _loop_vjp(outputs, inputs, grad_outputs, range(1))
    t1 = time.perf_counter()
    rest = _batched(outputs, inputs, [g[1:] for g in grad_outputs], k - 1, state)
    t2 = time.perf_counter()
    if state.get("mode") != "loop":  # batching worked: keep it only if it is faster per vector
        loop_t, batch_t = state.setdefault("loop_s", []), state.setdefault("batched_s", [])
        loop_t.append(t1 - t0)
        batch_t.append((t2 - t1) / (k - 1))
        if len(loop_t) >= DECIDE_AFTER:  # best of a few calls: first calls pay warm-up costs
            state["mode"] = "batched" if min(batch_t) < min(loop_t) else "loop"
            log.debug("batched backward %.3g s/vector vs loop %.3g s: using %s", min(batch_t), min(loop_t),
                      state["mode"])
    return [torch.cat([a, b]) for a, b in zip(first, rest)]


DECIDE_AFTER = 3  # matmat calls timed before choosing batched or looped backward


def _batched(outputs, inputs, grad_outputs, k: int, state: dict) -> list[torch.Tensor]:
    try:
        res = grads(outputs, inputs, grad_outputs, batched=True)
    except RuntimeError as e:  # some operations have no batching rule for double backward
        log.info("batched backward unavailable (%s); falling back to a loop", str(e).splitlines()[0])
        state["mode"] = "loop"
        return _loop_vjp(outputs, inputs, grad_outputs, range(k))
    return [torch.zeros((k, *p.shape), dtype=p.dtype, device=p.device) if r is None else r
            for r, p in zip(res, inputs)]


def _loop_vjp(outputs, inputs, grad_outputs, cols) -> list[torch.Tensor]:
    cols = list(cols)
    if len(cols) == 1:  # no copy for a single direction
        r = grads(outputs, inputs, [g[cols[0]] for g in grad_outputs], batched=False)
        return [(torch.zeros_like(p) if x is None else x).unsqueeze(0) for x, p in zip(r, inputs)]
    out = []
    for j in cols:
        r = grads(outputs, inputs, [g[j] for g in grad_outputs], batched=False)
        out.append([torch.zeros_like(p) if x is None else x for x, p in zip(r, inputs)])
    return [torch.stack([c[n] for c in out]) for n in range(len(inputs))]


def check_twice_differentiable(tensors, who: str) -> None:
    """Refuse graphs that contain a first-derivative-only node (``@once_differentiable``).

    Differentiating through such a node must fail, but with unused-input handling autograd can
    drop its contribution silently, which would give a wrong curvature; so walk the graph once.
    """
    seen: set = set()
    stack = [t.grad_fn for t in tensors if isinstance(t, torch.Tensor) and t.grad_fn is not None]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if type(fn).__name__ in ("Error", "DelayedError"):
            raise ValueError(
                f"model: {who} needs second derivatives, but the model contains an operation that can "
                "only be differentiated once (a custom autograd.Function whose backward is marked "
                "@once_differentiable, or a non-differentiable op); make its backward differentiable "
                "or replace it by torch operations"
            )
        stack.extend(n for n, _ in fn.next_functions)


class _SavedBytes:
    """Context manager counting bytes of tensors autograd saves (excluding the parameters)."""

    def __init__(self, params):
        self.skip = {p.untyped_storage().data_ptr() for p in params}
        self.seen: set = set()
        self.bytes = 0

    def _pack(self, t):
        try:
            st = t.untyped_storage()
            key = (st.data_ptr(), st.nbytes())
            if key[0] not in self.skip and key not in self.seen:
                self.seen.add(key)
                self.bytes += key[1]
        except (RuntimeError, NotImplementedError):
            self.bytes += t.numel() * t.element_size()
        return t

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        return False

