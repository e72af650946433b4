"""The exact Hessian diagonal of a feed-forward network by backpropagating curvature: :func:`hessian_diagonal`.

For ``nn.Sequential`` networks of ``nn.Linear`` layers and elementwise activations, the
Hessian of the loss with respect to each layer's output ``z_n`` (per sample ``n``; samples do
not interact) follows from the output's by the chain rule for second derivatives:

* through a linear layer ``z = W a + b``: ``H_a = W^T H_z W`` (a linear map has no second
  derivative of its own);
* through an activation ``a = phi(z)``: ``H_z = diag(phi'(z)) H_a diag(phi'(z)) +
  diag(phi''(z) * g_a)``, where ``g_a`` is the gradient of the loss with respect to ``a``.
  The first term is the Gauss-Newton part; the second, the *residual*, is what the GGN drops
  (zero for ReLU and LeakyReLU, which makes their Hessian diagonal equal the GGN's).

Since ``z`` is linear in ``W``, the diagonal entries are exact from ``diag(H_z)`` alone:
``H[W_oi, W_oi] = sum_n a_{n,i}^2 H_{z_n}[o, o]`` and ``H[b_o, b_o] = sum_n H_{z_n}[o, o]``.
``H_z`` travels as signed factors ``sum_j s_{nj} S_{nj} S_{nj}^T`` (the loss Hessian's
eigen-factors, then ``sqrt|residual|`` columns with the residual's signs), and as a dense
``(h, h)`` matrix per sample once that has fewer entries than the factors. This is the
DiagHessian of Dangel, Kunstner & Hennig, "BackPACK: Packing more into backprop", ICLR 2020
(Sec. 2 and App. A: the Hessian backpropagation of Mizutani & Dreyfus, 2008).

Cost: one forward without a graph and a backward of ``(N, m, h)`` factors per layer, with ``m``
at most ``C`` plus the widths of the later activation layers; independent of ``D``, against
``D`` products for :func:`~curvlens.estimators.exact_diagonal`.

Supported: the model is an ``nn.Sequential`` (nested ones are flattened); from the first
layer holding a selected parameter to the output, every module is ``nn.Linear`` (on ``(N,
in)`` inputs), ``nn.Tanh``, ``nn.Sigmoid``, ``nn.ReLU``, ``nn.LeakyReLU``, ``nn.Identity`` or
``nn.Dropout`` in eval mode (modules before it only run forward: a frozen feature extractor is
fine); the output is ``(N, C)`` and the loss a criterion of the loss table. Anything else
raises a ValueError that names the module and the fallback.

The same backpropagation without the residual terms gives the GGN diagonal: :func:`ggn_diagonal
<curvlens.estimators.ggn_diagonal.ggn_diagonal>` routes the models above through it
(:func:`backprop_diagonal` with ``residual=False``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from curvlens.estimators.diagonal import DiagonalResult
from curvlens.problem.losses import LossSpec, identify_loss
from curvlens.results import RunTimer

__all__ = ["hessian_diagonal", "SUPPORTED_MODULES"]


class Unsupported(ValueError):
    """The model or data is outside the structure the curvature backpropagation handles."""

_ACTIVATIONS = (nn.Tanh, nn.Sigmoid, nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout)
#: module types :func:`hessian_diagonal` backpropagates through
SUPPORTED_MODULES = (nn.Linear, *_ACTIVATIONS)
_FALLBACK = ("use exact_diagonal(op) (D products), or ggn_diagonal(GGNOperator(...)) for the GGN diagonal "
             "(Linear layers, any activations)")
_CHUNK_ELEMENTS = 2**24  # factor entries per sample chunk (128 MiB in float64)


def _flat(model: nn.Module) -> list[tuple[str, nn.Module]]:
    out = []  # the modules in the order Sequential.forward runs them (named_children() drops repeats)
    for name, mod in model._modules.items():
        if isinstance(mod, nn.Sequential) and type(mod).forward is nn.Sequential.forward:
            out += [(f"{name}.{n}", m) for n, m in _flat(mod)]
        else:
            out.append((name, mod))
    return out


def _layers(problem) -> tuple[list[tuple[str, nn.Module]], int]:
    """The flattened modules and the index of the first one holding a selected parameter."""
    model = problem.model
    if not isinstance(model, nn.Sequential) or type(model).forward is not nn.Sequential.forward:
        raise Unsupported(f"op: hessian_diagonal backpropagates through an nn.Sequential of Linear layers and "
                         f"elementwise activations, got a {type(model).__name__} with its own forward; {_FALLBACK}")
    mods = _flat(model)
    owner: dict[int, list[int]] = {}
    for i, (_, m) in enumerate(mods):
        for p in m.parameters(recurse=True):
            owner.setdefault(id(p), []).append(i)
    first = None
    for name, p in zip(problem.param_names, problem.params):
        if id(p) not in owner:
            raise Unsupported(f"op: parameter {name!r} is not in a module of the Sequential; {_FALLBACK}")
        if len(owner[id(p)]) > 1:
            raise Unsupported(f"op: parameter {name!r} is used by {len(owner[id(p)])} layers of the Sequential "
                              f"(shared weights); {_FALLBACK}")
        first = owner[id(p)][0] if first is None else min(first, owner[id(p)][0])
    for name, m in mods[first:]:
        if not isinstance(m, SUPPORTED_MODULES):
            kinds = ", ".join(t.__name__ for t in SUPPORTED_MODULES)
            raise Unsupported(f"op: module {name!r} ({type(m).__name__}) is not supported by hessian_diagonal (from the "
                             f"first selected layer on it supports {kinds}); {_FALLBACK}")
        if isinstance(m, nn.Dropout) and m.training:
            raise Unsupported(f"op: module {name!r} (Dropout) is in train mode, so the loss is random; build the "
                             f"operator with mode='eval', or {_FALLBACK}")
    return mods, first


def _derivatives(m: nn.Module, z: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(phi'(z), phi''(z))`` of an activation (None: identically 1 / 0)."""
    if isinstance(m, nn.Tanh):
        d1 = 1 - a * a
        return d1, -2 * a * d1
    if isinstance(m, nn.Sigmoid):
        d1 = a * (1 - a)
        return d1, d1 * (1 - 2 * a)
    if isinstance(m, nn.ReLU):
        return (z > 0).to(z.dtype), None
    if isinstance(m, nn.LeakyReLU):
        return torch.where(z > 0, torch.ones_like(z), torch.full_like(z, m.negative_slope)), None
    return None, None  # Identity, Dropout in eval mode


class _Curvature:
    """Per-sample ``H_z`` of a chunk of samples: signed factor blocks ``[(S (n, m, h), sgn (n, m)), ...]``
    (``H_z = sum S^T diag(sgn) S``; factors as rows, so going back through a linear layer is one
    ``(n m, out) @ (out, in)`` matrix product) plus a pending diagonal ``r (n, h)``, or a dense
    ``(n, h, h)`` matrix."""

    def __init__(self, S: torch.Tensor, sgn: torch.Tensor | None):
        self.blocks, self.r, self.H = [(S, sgn)], None, None

    def _densify(self) -> None:
        H = None if self.r is None else torch.diag_embed(self.r)
        for S, sgn in self.blocks:
            St = S.transpose(1, 2)
            part = torch.matmul(St if sgn is None else St * sgn[:, None, :], S)
            H = part if H is None else H + part
        self.H, self.blocks, self.r = H, [], None

    def linear_back(self, W: torch.Tensor | None) -> torch.Tensor:
        """``diag(H_z)`` (n, h); then ``H_z <- W^T H_z W`` unless ``W`` is None (the first layer).
        The old factors are squared in place: nothing needs them afterwards."""
        if W is not None and self.H is None:
            m = sum(S.shape[1] for S, _ in self.blocks) + (0 if self.r is None else W.shape[0])
            if m > sum(W.shape):  # a dense (in, in) matrix is cheaper from here on
                self._densify()
        if self.H is not None:
            d = torch.diagonal(self.H, dim1=1, dim2=2)
            if W is not None:
                self.H = torch.matmul(torch.matmul(W.T, self.H), W)
            return d
        old, d = self.blocks, self.r
        self.blocks, self.r = [], None
        if W is not None:
            self.blocks = [(torch.matmul(S, W), sgn) for S, sgn in old]
            if d is not None:  # W^T diag(r) W = (diag(sqrt|r|) W)^T diag(sign r) (diag(sqrt|r|) W)
                self.blocks.append((W.unsqueeze(0) * d.abs().sqrt().unsqueeze(2), torch.sign(d)))
        for S, sgn in old:
            sq = S.square_()
            part = sq.sum(1) if sgn is None else torch.matmul(sgn.unsqueeze(1), sq).squeeze(1)
            d = part if d is None else d + part
        return d

    def activation_back(self, d1: torch.Tensor | None, d2g: torch.Tensor | None) -> None:
        if d1 is not None:
            if self.H is not None:
                self.H = d1[:, :, None] * self.H * d1[:, None, :]
            else:
                for S, _ in self.blocks:  # the blocks are this object's own tensors
                    S.mul_(d1[:, None, :])
                if self.r is not None:
                    self.r = self.r * d1 * d1
        if d2g is None:
            return
        if self.H is not None:
            self.H = self.H + torch.diag_embed(d2g)
        else:
            self.r = d2g if self.r is None else self.r + d2g


#: losses whose table Hessian is the Hessian of the loss itself (for ``nll`` the table holds the
#: softmax Hessian, the GGN's choice, while the Hessian of ``-out[y]`` is zero)
_EXACT_LOSSES = ("cross_entropy", "mse", "bce_with_logits")


def _output_factors(spec: LossSpec, out: torch.Tensor, y: Any, weight: float, psd: bool
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Factors ``S (N, m, C)`` (rows), signs ``(N, m)`` (None: all +1) of the per-sample loss Hessians:
    closed forms for cross-entropy with class-index targets (rows ``diag(sqrt p) - sqrt(p) p^T``) and
    MSE (a multiple of the identity), an eigendecomposition otherwise (negative eigenvalues
    clamped to zero when ``psd``, as the GGN of a convex loss has them only from rounding)."""
    N, C = out.shape
    c = weight * spec.scale(out, y)
    if spec.kind == "cross_entropy" and not y.is_floating_point() and bool((y != spec.ignore_index).all()):
        p = torch.softmax(out, dim=1)
        q = p.sqrt()
        return c**0.5 * (torch.diag_embed(q) - q.unsqueeze(2) * p.unsqueeze(1)), None
    if spec.kind == "mse":
        eye = torch.eye(C, dtype=out.dtype, device=out.device)
        return ((2 * c) ** 0.5 * eye).expand(N, C, C).contiguous(), None
    eye = torch.eye(C, dtype=out.dtype, device=out.device)
    HW = weight * spec.hessian_vp(out, y, eye[:, None, :].expand(C, N, C).contiguous())
    Hn = HW.permute(1, 2, 0)
    Hn = 0.5 * (Hn + Hn.transpose(1, 2))
    evals, evecs = torch.linalg.eigh(Hn.double())
    if psd:
        return (evecs * evals.clamp_min(0.0).sqrt()[:, None, :]).transpose(1, 2).to(out.dtype).contiguous(), None
    S = (evecs * evals.abs().sqrt()[:, None, :]).transpose(1, 2).to(out.dtype).contiguous()
    return S, torch.sign(evals).to(out.dtype)


def hessian_diagonal(op) -> DiagonalResult:
    """Exact ``diag(H)`` of a :class:`~curvlens.operators.HessianOperator` by backpropagating curvature.

    Args:
        op: a :class:`~curvlens.operators.HessianOperator` of an ``nn.Sequential`` network of
            Linear layers and elementwise activations with a criterion loss (see the module doc).

    Returns:
        :class:`~curvlens.estimators.diagonal.DiagonalResult` with ``method="backprop"``,
        ``stderr=None`` and ``num_matvecs=0`` (no products).

    Raises:
        TypeError: ``op`` is not a HessianOperator.
        ValueError: a module or parameter outside the supported structure (the message names
            it and the fallback), or a loss outside the loss table.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from curvlens.operators import HessianOperator
        >>> from curvlens.estimators import exact_diagonal
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(20, 3, generator=g, dtype=torch.float64), torch.randint(0, 4, (20,), generator=g)
        >>> H = HessianOperator(nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)).double(), nn.CrossEntropyLoss(), (x, y))
        >>> bool(torch.allclose(hessian_diagonal(H).estimate, exact_diagonal(H).estimate, atol=1e-12))
        True
    """
    problem = getattr(op, "problem", None)
    if problem is None or type(op).__name__ != "HessianOperator":
        raise TypeError(f"op: expected a HessianOperator, got {type(op).__name__}; build HessianOperator(model, "
                        "loss_fn, data), use ggn_diagonal(op) for a GGNOperator, or exact_diagonal(op) for others")
    if problem.loss_form == "model_batch":
        raise ValueError(f"op: hessian_diagonal needs a criterion loss applied to the model output (e.g. "
                         f"nn.CrossEntropyLoss()), got a loss_fn(model, batch); {_FALLBACK}")
    spec = problem.loss_fn if isinstance(problem.loss_fn, LossSpec) else \
        identify_loss(problem.loss_fn, problem.reduction, purpose="hessian_diagonal")
    if spec.kind not in _EXACT_LOSSES:
        raise ValueError(f"loss_fn: hessian_diagonal supports {', '.join(_EXACT_LOSSES)}, got {spec.kind!r} (its "
                         f"output curvature in the loss table is the GGN's, not the Hessian's); {_FALLBACK}")
    timer = RunTimer(op)
    est = problem.reduce_(backprop_diagonal(problem, spec, residual=True), "hessian diagonal")
    return DiagonalResult(
        estimate=est, stderr=None, num_matvecs=0, num_probes=0, probe="none", method="backprop",
        info=timer.info(True, f"exact Hessian diagonal by backpropagating curvature ({len(problem.batches)} batch(es))"),
    )


def backprop_diagonal(problem, spec: LossSpec, *, residual: bool) -> torch.Tensor:
    """The ``(D,)`` float64 diagonal of ``problem`` (this process's shards, not yet reduced):
    the Hessian's with ``residual=True``, the GGN's with ``residual=False``.

    Raises:
        Unsupported: the model or data is outside the supported structure (the message names it).
    """
    acc = {id(p): torch.zeros(p.shape, dtype=torch.float64, device=p.device) for p in problem.params}
    with problem.state_guard(), torch.no_grad():
        mods, first = _layers(problem)
        for i in range(len(problem.batches)):
            x, y = problem.inputs_targets(problem.device_batch(i), i)
            _batch(spec, mods, first, x, y, problem.batch_weight(i), acc, i, residual)
    return torch.cat([acc[id(p)].reshape(-1) for p in problem.params])


def _batch(spec, mods, first, x, y, weight, acc, i, residual) -> None:
    if not isinstance(x, torch.Tensor):
        raise Unsupported(f"data: batch {i} inputs must be one tensor for hessian_diagonal, got {type(x).__name__}; "
                         f"{_FALLBACK}")
    inputs = []
    h = x
    for k, (name, m) in enumerate(mods):
        if k >= first:
            if isinstance(m, nn.Linear) and h.ndim != 2:
                raise Unsupported(f"op: module {name!r} (Linear) got inputs of shape {tuple(h.shape)}; "
                                 f"hessian_diagonal needs (N, in) inputs; {_FALLBACK}")
            inputs.append(h)
        h = m(h)
    out = h
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise Unsupported(f"op: expected a model output of shape (N, C), got {getattr(out, 'shape', type(out))}; "
                         f"{_FALLBACK}")
    g = None
    if residual:
        with torch.enable_grad():
            o = out.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(weight * spec(o, y), o)
    S0, sgn0 = _output_factors(spec, out, y, weight, psd=not residual)
    N = out.shape[0]
    width = max([out.shape[1]] + [t.shape[1] for t in inputs if t.ndim == 2])
    # per sample: the residual factors can grow to a dense (h, h); without them, C factors of width h
    per_sample = width * (width + out.shape[1]) if residual else width * out.shape[1]
    step = max(1, min(N, _CHUNK_ELEMENTS // max(1, per_sample)))
    for s in range(0, N, step):
        sl = slice(s, min(N, s + step))
        cur, grad = _Curvature(S0[sl], None if sgn0 is None else sgn0[sl]), None if g is None else g[sl]
        for k in range(len(mods) - 1, first - 1, -1):
            m, z = mods[k][1], inputs[k - first][sl]
            if isinstance(m, nn.Linear):
                d = cur.linear_back(None if k == first else m.weight)
                if id(m.weight) in acc:  # the products in the model's dtype, the sums over chunks in float64
                    acc[id(m.weight)] += (d.T @ (z * z)).double()
                if m.bias is not None and id(m.bias) in acc:
                    acc[id(m.bias)] += d.sum(0).double()
                if k == first:
                    break
                if grad is not None:
                    grad = grad @ m.weight
            else:
                a = inputs[k + 1 - first][sl] if k + 1 < len(mods) else out[sl]
                d1, d2 = _derivatives(m, z, a)
                cur.activation_back(d1, None if d2 is None or grad is None else d2 * grad)
                if d1 is not None and grad is not None:
                    grad = grad * d1
