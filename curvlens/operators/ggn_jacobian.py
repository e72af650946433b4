"""The GGN ``J^T H_out J`` of a small problem through its materialized output Jacobian.

When the number of output entries ``M`` times the number of parameters ``D`` is small (a
linear model, a small physics-informed network), the cheapest exact Gauss-Newton product
does no autograd at all: the Jacobian ``J`` (``M x D``) of the model outputs is built once for
the current weights, and with ``K = H_out J`` (the output Hessian applied to ``J``'s columns)
every product is ``G v = K^T (J v)``, two dense matrix-vector products; when ``D <= M`` the
matrix ``G = K^T J`` itself is formed and a product is one ``D x D`` matvec. The exact
diagonal ``sum_m J_m * K_m`` comes at no extra cost.

``J`` is built in one of three exact ways:

- ``"vmap"``: per sample with ``torch.func`` (``vmap`` of ``jacrev`` over the samples: about the
  cost of one batched backward);
- ``"batched"``: for models that ``torch.func`` cannot transform (a ``forward`` that calls
  ``torch.autograd.grad``, as physics-informed networks do), on sub-batches of a few samples:
  each sub-batch is run forward and its rows of ``J`` come from one backward pass vmapped over
  its one-hot output directions (``is_grads_batched``). A one-hot backward on the full batch
  carries all ``n`` samples' rows, so building ``J`` that way costs ``O(M^2)``; on sub-batches of
  ``c`` samples it costs ``O(M c)``;
- ``"backward"``: one-hot backward passes on the full batch's retained graph (exact for any model,
  including samples that interact).

When vmapping a backward fails (an operation without a batching rule), the directions are
done one at a time. ``"vmap"`` and ``"batched"`` assume that samples do not interact (no batch
statistics): ``verify=True`` checks one product against the double-backward
:class:`~curvlens.operators.GGNOperator` and raises otherwise. ``method="auto"`` tries ``"vmap"``,
then ``"batched"``, which it always verifies (rebuilding by ``"backward"`` when the check fails),
then ``"backward"``.

The operator is a snapshot: it answers for the weights it was built at (build a new one after
a step; :attr:`is_stale` says when the weights moved).

Reference: N. Schraudolph, "Fast curvature matrix-vector products for second-order gradient
descent", Neural Computation 14 (2002).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from curvlens.operators import GGNOperator
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(16, 3, generator=g, dtype=torch.float64)
    >>> y = torch.randint(0, 2, (16,), generator=g)
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    >>> J = JacobianGGNOperator(model, nn.CrossEntropyLoss(), (x, y))
    >>> bool(torch.allclose(J.to_dense(), GGNOperator(model, nn.CrossEntropyLoss(), (x, y)).to_dense()))
    True
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from curvlens.errors import NonFiniteLossError
from curvlens.operators.base import CurvatureOperator
from curvlens.operators.model import as_problem, call_model
from curvlens.problem import Problem
from curvlens.problem.losses import LossSpec, identify_loss

__all__ = ["JacobianGGNOperator", "DEFAULT_MAX_ENTRIES", "output_entries"]

log = logging.getLogger("curvlens.operators")

#: default ceiling on ``M * D`` (output entries x parameters) of the materialized Jacobian
DEFAULT_MAX_ENTRIES = 2**22
JACOBIAN_METHODS = ("auto", "vmap", "batched", "backward")
#: one-hot output directions per vmapped backward pass of the "batched" route
BATCHED_DIRECTIONS = 32


def output_entries(problem: Problem, per_sample: dict | None = None) -> int:
    """``M``: the number of model-output entries over the problem's batches (one sample of each
    batch is run forward without a graph to learn the per-sample output size).

    ``per_sample``, a dict kept by the caller, remembers the per-sample output size of tensor
    inputs by their per-sample shape and dtype, so that a later call on batches of the same
    shapes runs no forward pass (the model's output size must follow from its input's shape)."""
    total = 0
    with problem.state_guard(), torch.no_grad():
        for i in range(len(problem.batches)):
            x, _ = problem.inputs_targets(problem.device_batch(i), i)
            n = problem.batch_sizes[i]
            if n == 0:
                continue
            key = (tuple(x.shape[1:]), x.dtype) if isinstance(x, torch.Tensor) and x.ndim > 0 else None
            if per_sample is not None and key is not None and key in per_sample:
                total += per_sample[key] * n
                continue
            out = call_model(problem.model, x[:1])
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"model: the output on batch {i} is a {type(out).__name__}, expected a tensor")
            if per_sample is not None and key is not None:
                per_sample[key] = out.numel()
            total += out.numel() * n
    return total


class JacobianGGNOperator(CurvatureOperator):
    """``G = sum_b w_b J_b^T H_b J_b`` from the materialized output Jacobians (small problems).

    Args:
        model: a :class:`~curvlens.Problem`, or a model with ``loss_fn`` and ``data`` (and
            Problem keyword arguments) as for :class:`~curvlens.operators.GGNOperator`.
        max_entries: refuse a Jacobian with more than this many entries ``M * D``.
        method: ``"vmap"`` (per sample, ``torch.func``), ``"batched"`` (vmapped one-hot backward
            passes on sub-batches), ``"backward"`` (one-hot backward passes on the full batch's
            graph; exact for any model) or ``"auto"`` (vmap, else batched with a check, else
            backward).
        dense: form ``G`` (``D x D``); default when ``D <= M``.
        verify: when a per-sample route (vmap or batched) was used, check one product against
            :class:`~curvlens.operators.GGNOperator` (to ``verify_rtol``) and raise ValueError
            when they differ (samples that interact, e.g. through batch statistics).

    Attributes:
        method_used: ``"vmap"``, ``"batched"`` or ``"backward"`` (the most general one used on any
            batch); num_entries: ``M * D``;
        is_dense: whether ``G`` is formed.
    """

    is_psd = True

    def __init__(self, model: Any, loss_fn: Any = None, data: Any = None, *, max_entries: int = DEFAULT_MAX_ENTRIES,
                 method: str = "auto", dense: bool | None = None, verify: bool = False, verify_rtol: float | None = None,
                 **kwargs):
        who = type(self).__name__
        problem = as_problem(model, loss_fn, data, kwargs, who)
        if kwargs:
            raise TypeError(f"{who}: unexpected keyword argument(s) {', '.join(sorted(kwargs))}")
        if method not in JACOBIAN_METHODS:
            raise ValueError(f"method: expected one of {JACOBIAN_METHODS}, got {method!r}; pass method='auto'")
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries: expected a positive integer (M * D entries), got {max_entries!r}; "
                             f"pass e.g. max_entries={DEFAULT_MAX_ENTRIES}")
        if problem.loss_form != "criterion":
            raise ValueError(f"loss_fn: {who} needs a criterion applied to the model output, got a "
                             "loss_fn(model, batch); use HessianOperator for it")
        self.problem = problem
        self.spec: LossSpec = (problem.loss_fn if isinstance(problem.loss_fn, LossSpec)
                               else identify_loss(problem.loss_fn, problem.reduction, purpose=who))
        super().__init__(problem.dim, problem.dtype, problem.device,
                         param_shapes=problem.param_shapes, blocks=problem.blocks)
        self.max_entries = max_entries
        self._dense = dense
        self._versions = problem.param_versions()
        self._build(method)
        checked = method == "auto" and self.method_used == "batched"
        if checked and not self._agrees(verify_rtol)[0]:
            log.info("JacobianGGNOperator: the sub-batch Jacobian differs from the autograd GGN (samples "
                     "interact); building it by full-batch backward passes")
            self._build("backward")
        if verify and not checked and self.method_used != "backward":  # the backward route is exact for any model
            self._verify(verify_rtol)

    # ------------------------------------------------------------------ building
    def _build(self, method: str) -> None:
        pr = self.problem
        Js, Ks, Rs, used = [], [], [], set()
        self._loss = torch.zeros((), dtype=self.dtype, device=self.device)
        for i in range(len(pr.batches)):
            if pr.batch_sizes[i] == 0:
                continue
            J, K, R, how = self._batch_jacobian(i, method)
            Js.append(J)
            Ks.append(K)
            Rs.append(R)
            used.add(how)
        if not Js:
            z = torch.zeros(0, self.dim, dtype=self.dtype, device=self.device)
            Js, Ks, Rs = [z], [z], [z[:, 0]]
        self.J, self.K, self._dloss = torch.cat(Js), torch.cat(Ks), torch.cat(Rs)
        flags = torch.tensor([float("backward" in used), float("batched" in used)], dtype=torch.float64)
        if pr.process_group is not None:  # one answer on every rank (an empty shard builds nothing)
            pr.reduce_(flags, "Jacobian method")
        self.method_used = "backward" if float(flags[0]) > 0 else "batched" if float(flags[1]) > 0 else "vmap"
        self.num_entries = int(self.J.numel())
        self.G = None
        self.is_dense = (self.dim <= self.J.shape[0]) if self._dense is None else bool(self._dense)
        if self.is_dense:
            G = self.K.T @ self.J
            self.G = 0.5 * (G + G.T)

    def _batch_jacobian(self, i: int, method: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
        pr = self.problem
        x, y = pr.inputs_targets(pr.device_batch(i), i)
        with pr.state_guard():
            out = call_model(pr.model, x)
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"model: the output on batch {i} is a {type(out).__name__}, expected a tensor; "
                                "use HessianOperator with loss_fn(model, batch) for such models")
            pr.check_loss(self.spec(out, y), i)
            entries = out.numel() * self.dim
            if entries > self.max_entries:
                raise ValueError(f"max_entries: the Jacobian of batch {i} has {out.numel()} x {self.dim} = {entries} "
                                 f"entries, more than max_entries={self.max_entries}; use GGNOperator for this problem")
            J, how = None, "backward"
            per_sample = isinstance(x, torch.Tensor) and x.ndim > 0 and x.shape[0] == out.shape[0]
            if method in ("auto", "vmap") and isinstance(x, torch.Tensor):
                try:
                    J, how = self._vmap_jacobian(x, out), "vmap"
                except (RuntimeError, TypeError, ValueError, NotImplementedError) as exc:
                    if method == "vmap":
                        raise
                    log.debug("per-sample Jacobian by vmap failed (%s); trying sub-batches", exc)
            if J is None and method in ("auto", "batched"):
                if not per_sample:
                    if method == "batched":
                        raise ValueError(f"method: 'batched' needs tensor inputs whose first dimension indexes the "
                                         f"samples of the output, got {type(x).__name__} inputs on batch {i}; "
                                         "pass method='backward'")
                else:
                    try:
                        J, how = self._subbatch_jacobian(x, out), "batched"
                    except (RuntimeError, TypeError, ValueError) as exc:
                        if method == "batched":
                            raise
                        log.debug("sub-batch Jacobian failed (%s); using full-batch backward passes", exc)
            if J is None:
                J = self._backward_jacobian(out)
        out = out.detach()
        w = pr.batch_weight(i)
        with torch.enable_grad():  # the loss's output gradient, for the gradient J^T dl/df
            od = out.clone().requires_grad_(True)
            li = self.spec(od, y).reshape(())
            (dl,) = torch.autograd.grad(li, od)
        self._loss = self._loss + w * li.detach().to(self.dtype)
        R = (w * dl).reshape(-1)
        if not bool(torch.isfinite(J).all()):
            raise NonFiniteLossError(f"{type(self).__name__}: the Jacobian on batch {i} is not finite; check the "
                                     "model for overflow (e.g. use float64)")
        W = J.T.reshape(self.dim, *out.shape)
        K = pr.batch_weight(i) * self.spec.hessian_vp(out, y, W).reshape(self.dim, -1).T
        return J, K.contiguous(), R, how

    def _vmap_jacobian(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call, jacrev, vmap

        pr = self.problem
        names = pr.param_names
        base = tuple(p.detach() for p in pr.params)

        def one(pvals, xi):
            res = functional_call(pr.model, dict(zip(names, pvals)), (xi.unsqueeze(0),))
            return res.squeeze(0)

        n = x.shape[0]
        per = out.numel() // max(n, 1)
        chunk = int(max(1, min(n, 2**22 // max(per * self.dim, 1))))
        jac = vmap(jacrev(one), in_dims=(None, 0), chunk_size=None if chunk >= n else chunk)(base, x)
        return torch.cat([j.reshape(n * per, -1) for j in jac], dim=1).detach()

    def _subbatch_jacobian(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Rows of ``J`` from sub-batches of samples, each by vmapped one-hot backward passes on its
        own graph (``O(M c)`` instead of ``O(M^2)`` on the full batch's graph)."""
        n = x.shape[0]
        per = out.numel() // max(n, 1)
        c = max(1, BATCHED_DIRECTIONS // max(per, 1))
        if c >= n:
            return self._backward_jacobian(out)
        rows = []
        for s in range(0, n, c):
            sub = call_model(self.problem.model, x[s:s + c])
            if not isinstance(sub, torch.Tensor) or sub.numel() != per * min(c, n - s):
                raise ValueError(f"model: a sub-batch of {min(c, n - s)} samples gave an output of "
                                 f"{getattr(sub, 'shape', type(sub).__name__)}, expected {per} entries per sample; "
                                 "pass method='backward'")
            rows.append(self._backward_jacobian(sub, retain=False))
        return torch.cat(rows)

    def _backward_jacobian(self, out: torch.Tensor, retain: bool = True) -> torch.Tensor:
        params = self.problem.params
        M = out.numel()
        chunk = int(max(1, min(M, 2**22 // max(self.dim, 1))))
        rows = []
        for s in range(0, M, chunk):
            c = min(chunk, M - s)
            keep = retain or s + c < M
            E = torch.zeros(c, M, dtype=out.dtype, device=out.device)
            E[torch.arange(c), torch.arange(s, s + c)] = 1.0
            E = E.reshape(c, *out.shape)
            try:
                # the graph is kept through the vmapped pass, so that a failure can fall back
                gs = _batched_grad(out, params, E)
                rows.append(torch.cat([torch.zeros(c, p.numel(), dtype=p.dtype, device=p.device) if g is None
                                       else g.reshape(c, -1) for g, p in zip(gs, params)], dim=1))
            except RuntimeError:  # no batching rule for some backward: one direction at a time
                log.debug("vmapped backward failed; one output direction at a time")
                for j in range(c):
                    gs = torch.autograd.grad(out, params, E[j], retain_graph=keep or j + 1 < c, allow_unused=True)
                    rows.append(torch.cat([torch.zeros(p.numel(), dtype=p.dtype, device=p.device) if g is None
                                           else g.reshape(-1) for g, p in zip(gs, params)])[None])
        return torch.cat(rows).detach()

    def loss_and_gradient(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(total loss, flat gradient) at the weights the operator was built at, from what the
        build already holds: the gradient is ``J^T dl/df`` (chain rule through the materialized
        Jacobian; no backward pass), the loss that of the outputs the build ran forward.

        Example:
            >>> import torch
            >>> from torch import nn
            >>> x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
            >>> model = nn.Linear(2, 1).double()
            >>> op = JacobianGGNOperator(model, nn.MSELoss(), (x, x.sum(1, keepdim=True)))
            >>> loss, g = op.loss_and_gradient()
            >>> ref = op.problem.loss_and_gradient(flat=True)
            >>> bool(torch.allclose(g, ref[1])) and bool(torch.allclose(loss, ref[0]))
            True
        """
        buf = torch.cat([self.J.T @ self._dloss, self._loss.reshape(1)])
        self.problem.reduce_(buf, "gradient")
        return buf[-1].clone(), buf[:-1].clone()

    def _agrees(self, rtol: float | None) -> tuple[bool, float, float]:
        """Whether one product agrees with the autograd GGN: (ok, relative error, tolerance)."""
        from curvlens.operators.ggn import GGNOperator

        tol = rtol if rtol is not None else (1e-8 if self.dtype == torch.float64 else 1e-4)
        gen = torch.Generator(device="cpu").manual_seed(0)
        v = torch.randn(self.dim, generator=gen, dtype=torch.float64).to(self.dtype).to(self.device)
        ref = GGNOperator(self.problem) @ v
        err = float(torch.linalg.vector_norm(self._matmat(v[:, None])[:, 0] - ref))
        scale = max(float(torch.linalg.vector_norm(ref)), 1e-30)
        return err <= tol * scale, err / scale, tol

    def _verify(self, rtol: float | None) -> None:
        ok, rel, tol = self._agrees(rtol)
        if not ok:
            raise ValueError(f"model: the per-sample ({self.method_used}) Jacobian GGN differs from the autograd GGN "
                             f"by {rel:.3g} (relative; tolerance {tol:g}); the samples interact "
                             "(e.g. batch statistics): use GGNOperator or method='backward'")

    # ------------------------------------------------------------------ products
    @property
    def is_stale(self) -> bool:
        """True when a parameter changed since the Jacobian was built (build a new operator)."""
        return self.problem.param_versions() != self._versions

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        out = self.G @ V if self.G is not None else self.K.T @ (self.J @ V)
        self.problem.reduce_(out, "curvature product")
        if not bool(torch.isfinite(out.sum())):
            raise NonFiniteLossError(f"{type(self).__name__}: the product is not finite; check the direction "
                                     "for NaN/Inf")
        return out

    def diagonal(self) -> torch.Tensor:
        """The exact diagonal of ``G`` (no products)."""
        d = self.G.diagonal().clone() if self.G is not None else (self.J * self.K).sum(0)
        return self.problem.reduce_(d, "curvature diagonal")

    def to_dense(self, *, max_dim: int = 20_000, chunk: int = 64) -> torch.Tensor:
        if self.G is not None and self.problem.process_group is None:
            return self.G.clone()
        return super().to_dense(max_dim=max_dim, chunk=chunk)


def _batched_grad(out: torch.Tensor, params, E: torch.Tensor):
    """``torch.autograd.grad`` vmapped over the rows of ``E`` (one backward pass; the graph is kept)."""
    return torch.autograd.grad(out, params, E, retain_graph=True, allow_unused=True, is_grads_batched=True)
