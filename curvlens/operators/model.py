"""Shared machinery of the operators built from (model, loss_fn, data).

One pass over the data at construction validates every batch (scalar, finite, differentiable
loss), counts samples and, while a memory budget allows, keeps each batch's differentiable
graph so that every later product costs one extra backward instead of a fresh
forward+backward+backward (the trick PyHessian uses for one batch, generalized to many).
Batches beyond the budget are recomputed on each product ("streamed").
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import torch

from curvlens._memory import available_memory
from curvlens.errors import NonFiniteLossError
from curvlens.operators.base import CurvatureOperator
from curvlens.problem import Problem
from curvlens.problem.differentiable import check_twice_differentiable
from curvlens.problem.problem import call_model, resolve_loss_form  # noqa: F401  (re-exported)

log = logging.getLogger("curvlens.operators")

DEFAULT_GRAPH_FRACTION = 0.25  # of available memory, for retained graphs
DEFAULT_GRAPH_CAP = 4 * 2**30


def default_graph_memory() -> int:
    """Retained-graph budget: 25% of available memory, at most 4 GiB."""
    return int(min(DEFAULT_GRAPH_CAP, available_memory() * DEFAULT_GRAPH_FRACTION))


_PROBLEM_KWARGS = ("params", "reduction", "mode", "allow_random", "loss_form")


def as_problem(model: Any, loss_fn: Any, data: Any, kwargs: dict, who: str) -> Problem:
    """A :class:`Problem` from ``(problem)`` or ``(model, loss_fn, data, **problem kwargs)``;
    the problem-level keyword arguments are popped from ``kwargs``."""
    pk = {k: kwargs.pop(k) for k in _PROBLEM_KWARGS if k in kwargs}
    if isinstance(model, Problem):
        given = [n for n, v in (("loss_fn", loss_fn), ("data", data)) if v is not None] + sorted(pk)
        if given:
            raise TypeError(
                f"{who}: got a Problem and also {', '.join(given)}; these belong to the Problem: pass "
                f"{who}(problem) alone, or build the Problem with them (e.g. problem.with_data(batch))"
            )
        return model
    if loss_fn is None:
        raise TypeError(f"{who}: missing loss_fn; pass {who}(model, loss_fn, data) or {who}(problem)")
    return Problem(model, loss_fn, data, **pk)


class ModelOperator(CurvatureOperator):
    """Base class of Hessian, GGN and Fisher operators of a :class:`~curvlens.Problem`.

    Construct from a problem, ``HessianOperator(problem)``, or from its parts,
    ``HessianOperator(model, loss_fn, data, params=..., reduction=..., mode=...,
    allow_random=..., loss_form=...)`` (see :class:`~curvlens.Problem` for those arguments).

    The operator is **live**: it answers for the model's current weights. Retained graphs
    are rebuilt lazily at the next product once a selected parameter has changed in place
    (an optimizer step: its version counter moved) or been replaced; :meth:`refresh` forces
    it (needed only after writes through ``p.data``, which autograd does not see).

    Args:
        max_graph_memory: bytes of retained graphs to keep between products (default: 25% of
            available memory, at most 4 GiB); 0 recomputes every batch on every product.
            The bytes kept are in :attr:`graph_bytes`, the limit in :attr:`graph_memory_limit`.
    """

    def __init__(self, model: Any, loss_fn: Any = None, data: Any = None, *,
                 max_graph_memory: int | None = None, **kwargs):
        who = type(self).__name__
        problem = as_problem(model, loss_fn, data, kwargs, who)
        if kwargs:
            raise TypeError(f"{who}: unexpected keyword argument(s) {', '.join(sorted(kwargs))}")
        self.problem = problem
        super().__init__(problem.dim, problem.dtype, problem.device,
                         param_shapes=problem.param_shapes, blocks=problem.blocks)
        if max_graph_memory is not None and (isinstance(max_graph_memory, bool) or not isinstance(max_graph_memory, int)
                                             or max_graph_memory < 0):
            raise ValueError(
                f"max_graph_memory: expected a number of bytes >= 0 (or None for the default), got "
                f"{max_graph_memory!r}; pass e.g. max_graph_memory=2**30, or 0 to recompute every product"
            )
        self.graph_memory_limit = default_graph_memory() if max_graph_memory is None else int(max_graph_memory)
        self._max_graph_memory = max_graph_memory
        self._cache: dict[int, Any] = {}
        self.vjp_state: dict[str, dict] = {}  # per backward kind: batched or loop (see batched_vjp)
        self.num_refreshes = 0
        self._prepare(validate=True)

    # ------------------------------------------------------------------ the problem's parts
    model = property(lambda self: self.problem.model)
    loss_fn = property(lambda self: self.problem.loss_fn)
    loss_form = property(lambda self: self.problem.loss_form)
    reduction = property(lambda self: self.problem.reduction)
    mode = property(lambda self: self.problem.mode)
    params = property(lambda self: self.problem.params)
    param_names = property(lambda self: self.problem.param_names)
    batches = property(lambda self: self.problem.batches)
    batch_sizes = property(lambda self: self.problem.batch_sizes)
    num_samples = property(lambda self: self.problem.num_samples)

    def batch_weight(self, i: int) -> float:
        """Weight of batch ``i`` in the total loss: ``n_i / N`` (mean) or 1 (sum)."""
        return self.problem.batch_weight(i)

    def _device_batch(self, i: int) -> Any:
        return self.problem.device_batch(i)

    def _inputs_targets(self, batch: Any, i: int) -> tuple[Any, Any]:
        return self.problem.inputs_targets(batch, i)

    def _batch_loss(self, i: int, batch: Any) -> tuple[torch.Tensor, Any, Any]:
        return self.problem.batch_loss(i, batch)

    def check_loss(self, loss: Any, i: int) -> torch.Tensor:
        return self.problem.check_loss(loss, i)

    def gradient(self) -> list[torch.Tensor]:
        """Gradient of the total loss (see :meth:`curvlens.Problem.gradient`)."""
        return self.problem.gradient()

    def state_guard(self):
        return self.problem.state_guard()

    # ------------------------------------------------------------------ graphs, live
    def _prepare(self, *, validate: bool) -> None:
        """Build batches' graphs in order, keeping them until the first one that does not fit
        the memory limit; with ``validate``, every batch is built once (its loss checked)."""
        used, caching = 0, True
        self._cache = {}
        count = len(self.batches) if validate else self._num_cached
        for i in range(count):
            with _SavedBytes(self.params) as counter:
                entry = self._build(i)
            if i == 0 and validate:  # on the first batch; an empty shard has none
                check_twice_differentiable(self._graph_roots(entry), type(self).__name__)
            caching = caching and used + counter.bytes <= self.graph_memory_limit
            if caching:
                self._cache[i] = entry
                used += counter.bytes
        self.graph_bytes = used
        self._num_cached = len(self._cache)
        self._versions = self.problem.param_versions()
        log.debug("%s: %d/%d batches keep their graphs (%.1f MiB)", type(self).__name__,
                  len(self._cache), len(self.batches), used / 2**20)

    def refresh(self) -> None:
        """Rebuild the retained graphs for the current weights (automatic after in-place
        updates; call it after writing through ``p.data``)."""
        self._cache = {}
        self._prepare(validate=False)
        self.num_refreshes += 1

    @property
    def is_stale(self) -> bool:
        """True when a parameter changed since the graphs were built (the next product rebuilds them)."""
        return self.problem.param_versions() != self._versions

    def with_data(self, data: Any) -> "ModelOperator":
        """The same operator on other data (an optimizer's curvature mini-batch)."""
        return type(self)(self.problem.with_data(data), **self._op_kwargs())

    def _op_kwargs(self) -> dict:
        """Operator-level keyword arguments, to build a sibling (block, other data)."""
        return dict(max_graph_memory=self._max_graph_memory)

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
        if self.problem.param_versions() != self._versions:
            self.refresh()
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
        if acc is None:  # an empty shard of a process group contributes nothing
            acc = [torch.zeros_like(v) for v in Vp]
        out = torch.cat([a.reshape(k, -1) for a in acc], dim=1).T
        self.problem.reduce_(out, "curvature product")
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
        return type(self)(self.problem.with_params(list(b.param_names)), **self._op_kwargs())


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


def batched_vjp(outputs, inputs, grad_outputs, k: int, state: dict, *, clock: Callable[[], float] = time.perf_counter
                ) -> list[torch.Tensor]:
    """Vector-Jacobian products of ``k`` stacked directions (leading dim ``k``).

    One batched backward (``is_grads_batched``, vmap over the backward graph) is usually
    faster per vector than ``k`` backwards, but not always: some operations have slow batching
    rules or none, and the batched per-vector cost grows with ``k`` when the batched
    intermediates leave the cache. The choice is made from timings, per size class
    ``vjp_size_class(k)`` (powers of two), by :func:`choose_vjp_mode`: while a class is
    undecided, its calls alternate between a loop (per-vector cost of single products) and one
    batched call (per-vector cost at this ``k``); after ``DECIDE_AFTER`` timings of each, the
    class is batched only if its best batched per-vector time beats the best single-vector
    time. ``state`` keeps the timings and decisions; ``clock`` is the timer (injectable).
    """
    if k == 1 or state.get("mode") == "loop":  # "loop": batching raised (no batching rule)
        t0 = clock()
        out = _loop_vjp(outputs, inputs, grad_outputs, range(k))
        _record(state.setdefault("single_s", []), (clock() - t0) / k)
        return out
    decided = state.setdefault("decided", {})
    cls = vjp_size_class(k)
    if decided.get(cls) == "loop":
        return _loop_vjp(outputs, inputs, grad_outputs, range(k))
    if decided.get(cls) == "batched":
        return _batched(outputs, inputs, grad_outputs, k, state)
    single, batched = state.setdefault("single_s", []), state.setdefault("batched_s", {}).setdefault(cls, [])
    t0 = clock()
    if len(batched) < len(single):  # alternate, starting with single products
        out = _batched(outputs, inputs, grad_outputs, k, state)
        if state.get("mode") == "loop":
            return out
        _record(batched, (clock() - t0) / k)
    else:
        out = _loop_vjp(outputs, inputs, grad_outputs, range(k))
        _record(single, (clock() - t0) / k)
    mode = choose_vjp_mode(single, batched)
    if mode is not None:
        decided[cls] = mode
        log.debug("batched backward (k in class %d) %.3g s/vector vs single %.3g s/vector: using %s", cls,
                  min(batched), min(single), mode)
    return out


DECIDE_AFTER = 3  # timings of each kind (single, batched) before a size class is decided
_KEEP = 8  # single-vector timings kept


def vjp_size_class(k: int) -> int:
    """The power of two ``>= k`` under which batched-vs-loop decisions for ``k`` vectors are kept.

    Example:
        >>> [vjp_size_class(k) for k in (2, 3, 4, 5, 8, 9)]
        [2, 4, 4, 8, 8, 16]
    """
    return 1 << max(0, int(k) - 1).bit_length()


def choose_vjp_mode(single_s, batched_s, *, min_samples: int = DECIDE_AFTER) -> str | None:
    """``"batched"`` if the best batched per-vector time beats the best single-vector time,
    ``"loop"`` otherwise; None while either has fewer than ``min_samples`` timings (the best of
    a few, since first calls pay warm-up costs).

    Example:
        >>> choose_vjp_mode([1.86, 1.9, 1.87], [3.11, 3.2, 3.15]), choose_vjp_mode([1.0], [0.5])
        ('loop', None)
    """
    if len(single_s) < min_samples or len(batched_s) < min_samples:
        return None
    return "batched" if min(batched_s) < min(single_s) else "loop"


def _record(times: list, t: float) -> None:
    times.append(t)
    del times[:-_KEEP]


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

