"""The exact GGN diagonal by backpropagating a factor of the loss Hessian: :func:`ggn_diagonal`.

For a network ``f`` and a loss with output Hessian ``H_n = S_n S_n^T`` (per sample, ``C x C``),
the GGN is ``G = sum_n J_n^T S_n S_n^T J_n``, so its diagonal is the sum over samples ``n`` and
columns ``c`` of the squared entries of ``J_n^T s_{n,c}``: ``C`` backward passes of the columns
of ``S`` give, at each linear layer ``z = W a + b``, the per-sample output gradients
``g_{n,c} = dz_n^T s_{n,c}``, and the entry of ``W_{oi}`` is ``sum_{n,c} g_{n,c,o}^2 a_{n,i}^2``
(``sum_{n,c} g_{n,c,o}^2`` for the bias). The ``C`` backward passes run as one batched pass
(``is_grads_batched``). Cost: about ``C`` gradients, independent of ``D``, against ``D``
products for :func:`~curvlens.estimators.exact_diagonal`. This is the DiagGGN of Dangel,
Kunstner & Hennig, "BackPACK: Packing more into backprop", ICLR 2020, written with hooks on
``nn.Linear`` modules.

Two routes give the same numbers. An ``nn.Sequential`` of ``nn.Linear`` layers and elementwise
activations (the structure :func:`~curvlens.estimators.diagonal_hessian.hessian_diagonal`
handles) goes through that module's curvature backpropagation with the residual terms off: one
forward without a graph and a backward of the ``(N, C, h)`` factors by plain matrix products
(no autograd; at most about ``(C + 1) / 3`` gradients' flops). Any other model goes through the hooks below.

Supported: models whose selected parameters all belong to ``nn.Linear`` modules applied once
per forward to ``(N, in)`` inputs, with a 2-D ``(N, C)`` output and a loss of the table.
Anything else raises a ValueError that names the parameter or module and points to
:func:`~curvlens.estimators.exact_diagonal`.
"""

from __future__ import annotations

import torch
from torch import nn

from curvlens.estimators.diagonal import DiagonalResult
from curvlens.estimators.diagonal_hessian import Unsupported, backprop_diagonal
from curvlens.problem.problem import call_model
from curvlens.results import RunTimer

__all__ = ["ggn_diagonal"]


def _linear_owners(model: nn.Module) -> dict[int, list[nn.Linear]]:
    owners: dict[int, list[nn.Linear]] = {}
    for mod in model.modules():
        if isinstance(mod, nn.Linear):
            for p in (mod.weight, mod.bias):
                if p is not None:
                    owners.setdefault(id(p), []).append(mod)
    return owners


def ggn_diagonal(op) -> DiagonalResult:
    """Exact ``diag(G)`` of a :class:`~curvlens.operators.GGNOperator` in about ``C`` gradients.

    Args:
        op: a :class:`~curvlens.operators.GGNOperator` whose selected parameters all belong to
            ``nn.Linear`` modules (see the module doc).

    Returns:
        :class:`~curvlens.estimators.diagonal.DiagonalResult` with ``method="backprop"``,
        ``stderr=None`` and ``num_matvecs=0`` (no products); ``info.status`` names the route.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from curvlens.operators import GGNOperator
        >>> from curvlens.estimators import exact_diagonal
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(20, 3, generator=g, dtype=torch.float64), torch.randint(0, 4, (20,), generator=g)
        >>> G = GGNOperator(nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)).double(), nn.CrossEntropyLoss(), (x, y))
        >>> bool(torch.allclose(ggn_diagonal(G).estimate, exact_diagonal(G).estimate, atol=1e-12))
        True
    """
    spec = getattr(op, "spec", None)
    problem = getattr(op, "problem", None)
    if spec is None or problem is None or type(op).__name__ != "GGNOperator":
        raise TypeError(f"op: expected a GGNOperator, got {type(op).__name__}; build GGNOperator(model, loss_fn, "
                        "data), or use exact_diagonal(op) for other operators")
    timer = RunTimer(op)
    if problem.loss_form != "model_batch":
        try:
            est = backprop_diagonal(problem, spec, residual=False)
        except Unsupported:
            est = None
        if est is not None:
            return _result(problem, est, timer, "curvature backpropagation, residual off")
    return _result(problem, _hooked(problem, spec), timer, "batched backward of the factor columns")


def _result(problem, est: torch.Tensor, timer: RunTimer, route: str) -> DiagonalResult:
    est = problem.reduce_(est, "ggn diagonal")
    return DiagonalResult(
        estimate=est, stderr=None, num_matvecs=0, num_probes=0, probe="none", method="backprop",
        info=timer.info(True, f"exact GGN diagonal by backpropagating the loss-Hessian factor ({route}; "
                              f"{len(problem.batches)} batch(es))"),
    )


def _hooked(problem, spec) -> torch.Tensor:
    """The route for any model: hooks on the linear layers and one batched autograd backward."""
    owners = _linear_owners(problem.model)
    mods: dict[int, nn.Linear] = {}
    for name, p in zip(problem.param_names, problem.params):
        if id(p) not in owners:
            raise ValueError(f"op: parameter {name!r} does not belong to an nn.Linear module; ggn_diagonal "
                             "backpropagates through linear layers only: use exact_diagonal(op) (D products), or "
                             "select the linear layers with params=")
        if len(owners[id(p)]) > 1:
            raise ValueError(f"op: parameter {name!r} is shared by {len(owners[id(p)])} nn.Linear modules; "
                             "ggn_diagonal needs each parameter in one layer: use exact_diagonal(op)")
        mods[id(owners[id(p)][0])] = owners[id(p)][0]
    acc = {id(p): torch.zeros(p.shape, dtype=torch.float64, device=p.device) for p in problem.params}
    with problem.state_guard():
        for i in range(len(problem.batches)):
            seen: dict[int, list] = {k: [] for k in mods}

            def hook(mod, inputs, output):
                seen[id(mod)].append((inputs[0].detach(), output))

            handles = [m.register_forward_hook(hook) for m in mods.values()]
            try:
                x, y = problem.inputs_targets(problem.device_batch(i), i)
                with torch.enable_grad():
                    out = call_model(problem.model, x)
            finally:
                for h in handles:
                    h.remove()
            if not isinstance(out, torch.Tensor) or out.ndim != 2:
                raise ValueError(f"op: expected a model output of shape (N, C), got "
                                 f"{getattr(out, 'shape', type(out).__name__)}; use exact_diagonal(op)")
            for k, calls in seen.items():
                if len(calls) != 1 or calls[0][0].ndim != 2:
                    raise ValueError(f"op: module {mods[k]} ran {len(calls)} time(s) on inputs of "
                                     f"{[tuple(a.shape) for a, _ in calls]} in one forward; ggn_diagonal needs each "
                                     "linear layer applied once to (N, in) inputs: use exact_diagonal(op)")
            N, C = out.shape
            eye = torch.eye(C, dtype=out.dtype, device=out.device)
            W = eye[:, None, :].expand(C, N, C).contiguous()
            HW = problem.batch_weight(i) * spec.hessian_vp(out, y, W)  # HW[c, n] = H_n e_c
            Hn = HW.permute(1, 2, 0).double()
            Hn = 0.5 * (Hn + Hn.transpose(1, 2))
            evals, evecs = torch.linalg.eigh(Hn)
            S = evecs * evals.clamp_min(0.0).sqrt()[:, None, :]  # H_n = S_n S_n^T
            G = S.permute(2, 0, 1).to(out.dtype).contiguous()  # G[c, n] = column c of S_n
            keys = list(mods)
            outs = [seen[k][0][1] for k in keys]
            grads = torch.autograd.grad(out, outs, grad_outputs=G, is_grads_batched=True, allow_unused=True)
            for k, g in zip(keys, grads):
                mod, a = mods[k], seen[k][0][0]
                if g is None:  # the layer does not reach the output
                    continue
                g2 = (g * g).sum(0)  # the products in the model's dtype, the sums over batches in float64
                if id(mod.weight) in acc:
                    acc[id(mod.weight)] += (g2.T @ (a * a)).double()
                if mod.bias is not None and id(mod.bias) in acc:
                    acc[id(mod.bias)] += g2.sum(0).double()
    return torch.cat([acc[id(p)].reshape(-1) for p in problem.params])
