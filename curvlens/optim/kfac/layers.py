"""Per-layer K-FAC blocks: statistics from hooks, moving-average factors, damped solves.

Three kinds of block:
- :class:`KroneckerBlock` (Linear, Conv1d, Conv2d with ``groups=1`` and zero padding): dense
  ``A`` over input rows (bias as a constant input) and dense ``G`` over output rows, with shared
  positions expanded into rows or reduced to one row per sample; optionally
  eigenvalue-corrected (EKFAC, :mod:`curvlens.optim.kfac.ekfac`).
- :class:`EmbeddingBlock`: the input factor of one-hot lookups is exactly diagonal (row
  frequencies); ``G`` is dense over the embedding dimension.
- :class:`NormBlock` (LayerNorm, BatchNorm, GroupNorm affine parameters): the Fisher block of
  ``(weight, bias)`` from per-sample gradients, dense when small, else diagonal.
"""

from __future__ import annotations

import torch
from torch import nn

from curvlens.optim.kfac import factors as fx
from curvlens.optim.kfac.ekfac import ekfac_quad, projected_second_moments
from curvlens.optim.kfac.explicit import inverse_solve, kron_inverses
from curvlens.optim.kfac.inverse import Eigh, eigh_factor, kron_denominator, kron_solve

__all__ = ["KroneckerBlock", "EmbeddingBlock", "NormBlock", "make_block", "NORM_DENSE_MAX"]

#: Normalization blocks with at most this many parameters get a dense Fisher block.
NORM_DENSE_MAX = 512


class _Block:
    """Shared bookkeeping: batch sums, exponential moving averages, state round trip."""

    kind = ""

    def __init__(self, name: str, module: nn.Module):
        self.name, self.module = name, module
        self.params = [p for p in (getattr(module, "weight", None), getattr(module, "bias", None))
                       if isinstance(p, nn.Parameter) and p.requires_grad]
        self.factors: dict[str, torch.Tensor] = {}
        self.explicit = False  # inverse="cholesky": explicit damped inverses of the factors in snap
        self.triangular = False  # inverse="triangular": their Cholesky factors instead, for solves
        self.snap: tuple[torch.Tensor, torch.Tensor] | None = None
        self.reset_batch()

    @property
    def ready(self) -> bool:
        """Whether an inverse (eigendecompositions, or factors to invert explicitly) is in place."""
        return getattr(self, "eig", None) is not None or self.snap is not None

    def update_inverse(self, damping: float | None = None) -> int:
        """Decompose ``(A, G)`` (or, explicitly, keep them and invert them for ``damping``)."""
        if self.explicit:
            self.eig, self.snap, self._inv = None, (self.factors["A"], self.factors["G"]), None
            return 0 if damping is None else sum(int(i.fallback) for i in self._inverses(damping))
        ea, eg = eigh_factor(self.factors["A"]), eigh_factor(self.factors["G"])
        self.eig = (ea, eg)
        return int(ea.fallback) + int(eg.fallback)

    def _inverses(self, damping: float):
        """The damped inverses of :attr:`snap`, kept until the snapshot or the damping change."""
        cached = getattr(self, "_inv", None)
        if cached is None or cached[0] != damping:
            cached = self._inv = (damping, kron_inverses(*self.snap, damping, self.triangular))
        return cached[1]

    def subset_stats(self, x: torch.Tensor, idx: torch.Tensor):
        """:meth:`forward_stats` of the samples ``idx`` of the batch ``x`` (dimension 0)."""
        return self.forward_stats(x.index_select(0, idx))

    def reset_batch(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, float] = {}

    def _add(self, key: str, value: torch.Tensor, count: float) -> None:
        if key in self._sums:
            self._sums[key] = self._sums[key] + value
            self._counts[key] += count
        else:
            self._sums[key], self._counts[key] = value, count

    @property
    def has_batch(self) -> bool:
        return all(k in self._sums for k in self.factor_keys)

    def update_factors(self, decay: float) -> bool:
        """Fold this step's statistics into the moving averages; False when none were captured."""
        if not self.has_batch:
            self.reset_batch()
            return False
        for key in self.factor_keys:
            count = max(self._counts[key], 1.0)
            old = self.factors.get(key)
            # out of place: the explicit inverses' snapshot may hold the old factor
            self.factors[key] = (self._sums[key] / count if old is None
                                 else torch.mul(old, decay).add_(self._sums[key], alpha=(1.0 - decay) / count))
        self.reset_batch()
        return True

    def grads_present(self) -> bool:
        return bool(self.params) and all(p.grad is not None for p in self.params)

    def _denominator(self, damping: float) -> torch.Tensor:
        """The damped Kronecker eigenvalues, kept until the eigendecompositions or the damping change."""
        cached = getattr(self, "_denom", None)
        if cached is None or cached[0] != damping or cached[1] is not self.eig:
            ea, eg = self.eig
            cached = (damping, self.eig, kron_denominator(eg, ea, damping))
            self._denom = cached
        return cached[2]

    def precondition_dot(self, damping: float) -> tuple[list[torch.Tensor], torch.Tensor]:
        """:meth:`precondition` with ``<P g, g>`` as a 0-dim tensor: the KL clip's sum, and a
        finiteness probe (``inf * 0`` and ``inf - inf`` are NaN, so it is non-finite whenever a
        new entry is, and when the products overflow)."""
        news = self.precondition(damping)
        return news, torch.stack([torch.vdot(n.reshape(-1), p.grad.reshape(-1)) for n, p in zip(news, self.params)]).sum()

    def _eigs(self) -> list[Eigh]:
        e = getattr(self, "eig", None)
        return [] if e is None else ([e] if isinstance(e, Eigh) else list(e))

    def state(self) -> dict:
        """Factors and the eigendecompositions in use (so a resumed run is bit-identical)."""
        eigs = [{"values": e.values.clone(), "vectors": None if e.vectors is None else e.vectors.clone(),
                 "fallback": e.fallback} for e in self._eigs()]
        scales = getattr(self, "scales", None)
        return {"factors": {k: v.clone() for k, v in self.factors.items()}, "eig": eigs,
                "scales": None if scales is None else scales.clone(),
                "snap": None if self.snap is None else [t.clone() for t in self.snap]}

    def load(self, state: dict) -> None:
        ref = self.params[0]

        def cast(t):
            return None if t is None else t.to(device=ref.device, dtype=ref.dtype).clone()

        self.factors = {k: cast(v) for k, v in state["factors"].items()}
        eigs = [Eigh(cast(e["values"]), cast(e["vectors"]), bool(e["fallback"])) for e in state["eig"]]
        if not eigs:
            self.eig = None
        else:
            self.eig = eigs[0] if isinstance(self, NormBlock) else tuple(eigs)
        if hasattr(self, "scales"):
            self.scales = cast(state.get("scales"))
        snap = state.get("snap")
        self.snap, self._inv = (None if snap is None else tuple(cast(t) for t in snap)), None


class KroneckerBlock(_Block):
    """Linear / Conv1d / Conv2d: ``[W, b]`` preconditioned by ``(A (x) G + lambda)^{-1}``, or with
    ``ekfac=True`` by ``(Q diag(S) Q^T + lambda)^{-1}`` in the eigenbasis ``Q = Q_G (x) Q_A``."""

    factor_keys = ("A", "G")

    def __init__(self, name: str, module: nn.Module, ekfac: bool = False, inverse: str = "eigh",
                 weight_sharing: str = "expand"):
        super().__init__(name, module)
        self.kind = type(module).__name__
        self.reduce = weight_sharing == "reduce"  # K-FAC-reduce rows: one per sample (factors.py)
        self.eig: tuple[Eigh, Eigh] | None = None
        self.ekfac = ekfac
        self.explicit = inverse in ("cholesky", "triangular") and not ekfac  # EKFAC needs the eigenbasis
        self.triangular = self.explicit and inverse == "triangular"
        self.scales: torch.Tensor | None = None  # EKFAC second moments in the eigenbasis
        self._pairs: list = []
        # looked up once (nn.Module attribute access is slow on the per-step path)
        self._w, self._b = module.weight, module.bias
        self._rows, self._flat = module.weight.shape[0], module.weight.dim() == 2

    def forward_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, int] | None:
        x = x.to(self.params[0].dtype)
        if not self.ekfac:
            self._add("A", *fx.input_gram(self.module, x, self.reduce))
            return None
        rows = fx.input_rows(self.module, x)
        self._add("A", fx.gram(rows), rows.shape[0])
        return rows, (int(x.shape[0]) if x.dim() > 1 else 1)

    def grad_stats(self, ctx: tuple[torch.Tensor, int] | None, gz: torch.Tensor, weight: float) -> None:
        rows = fx.output_rows(self.module, gz.to(self.params[0].dtype), self.reduce)
        self._add("G", weight * fx.gram(rows), 0.0)
        if ctx is not None:
            self._pairs.append((ctx[0], rows, ctx[1], weight))

    def update_scales(self, decay: float, rebased: bool) -> None:
        """Fold this step's projected second moments into :attr:`scales` (EKFAC).

        The first estimate is this step's. After the eigenbasis was recomputed (``rebased``) the
        old moments belong to another basis; the moving average then continues from the diagonal
        of the moving-averaged ``A (x) G`` in the new basis (the products of the factors'
        eigenvalues), so that one noisy batch never replaces the whole history.
        """
        pairs, self._pairs = self._pairs, []
        if not pairs or self.eig is None:
            return
        ea, eg = self.eig
        batch = sum(projected_second_moments(eg, ea, a, g, n, w) for a, g, n, w in pairs)
        if self.scales is None:
            self.scales = batch
            return
        old = torch.outer(eg.values, ea.values) if rebased else self.scales
        self.scales = decay * old + (1.0 - decay) * batch

    def _ekfac_scales(self) -> torch.Tensor:
        if self.scales is not None:
            return self.scales
        ea, eg = self.eig  # no moments measured yet: K-FAC's own diagonal in its eigenbasis
        return torch.outer(eg.values, ea.values)

    def grad_matrix(self) -> torch.Tensor:
        w, b = self.module.weight, self.module.bias
        gw = w.grad if w.grad is not None else torch.zeros_like(w)
        m = gw.reshape(w.shape[0], -1)
        if b is not None:
            gb = b.grad if b.grad is not None else torch.zeros_like(b)
            m = torch.cat([m, gb.reshape(-1, 1)], dim=1)
        return m

    def _solve(self, damping: float, v: torch.Tensor) -> torch.Tensor:
        if self.explicit:
            return inverse_solve(*self._inverses(damping), v)
        ea, eg = self.eig
        if self.ekfac:
            return kron_solve(eg, ea, v, damping, scales=self._ekfac_scales())
        return kron_solve(eg, ea, v, damping, denom=self._denominator(damping))

    def _split(self, p: torch.Tensor) -> list[torch.Tensor]:
        w, b = self._w, self._b
        pw = p if b is None else p[:, :-1]
        if not self._flat:
            pw = pw.reshape(w.shape)
        return [pw] if b is None else [pw, p[:, -1]]

    def precondition_dot(self, damping: float) -> tuple[list[torch.Tensor], torch.Tensor]:
        # on the gradient matrix [W, b] at once: two products and one reduction per layer
        w, b = self._w, self._b
        if w.grad is None or (b is not None and b.grad is None):
            v = self.grad_matrix()
        elif b is None:
            v = w.grad if self._flat else w.grad.reshape(self._rows, -1)
        else:
            v = torch.cat([w.grad if self._flat else w.grad.reshape(self._rows, -1), b.grad.unsqueeze(1)], 1)
        if self.explicit:
            ia, ig = self._inverses(damping)
            p = inverse_solve(ia, ig, v)
        else:
            p = self._solve(damping, v)
        return self._split(p), torch.vdot(p.reshape(-1), v.reshape(-1))

    def precondition(self, damping: float) -> list[torch.Tensor]:
        return self._split(self._solve(damping, self.grad_matrix()))

    def quad(self, deltas: list[torch.Tensor]) -> float:
        """``vec(D)^T (A (x) G) vec(D)`` (EKFAC: ``vec(D)^T Q diag(S) Q^T vec(D)``) for the update
        ``D`` of ``[W, b]``."""
        m = deltas[0].reshape(deltas[0].shape[0], -1)
        if len(deltas) == 2:
            m = torch.cat([m, deltas[1].reshape(-1, 1)], dim=1)
        if self.ekfac and self.eig is not None:
            return ekfac_quad(self.eig[1], self.eig[0], self._ekfac_scales(), m)
        return float(((self.factors["G"] @ m) * (m @ self.factors["A"])).sum())


class EmbeddingBlock(_Block):
    """Embedding: diagonal ``A`` (lookup frequencies) times dense ``G`` over the embedding."""

    kind = "Embedding"
    factor_keys = ("A", "G")

    def __init__(self, name: str, module: nn.Embedding, inverse: str = "eigh"):
        super().__init__(name, module)
        self.eig: tuple[Eigh, Eigh] | None = None
        self.explicit = inverse in ("cholesky", "triangular")
        self.triangular = inverse == "triangular"

    def forward_stats(self, idx: torch.Tensor) -> None:
        self._add("A", fx.embedding_counts(self.module, idx, self.params[0].dtype), idx.numel())

    def grad_stats(self, ctx: None, gz: torch.Tensor, weight: float) -> None:
        rows = gz.detach().to(self.params[0].dtype).reshape(-1, self.module.embedding_dim)
        self._add("G", weight * fx.gram(rows), 0.0)

    def precondition(self, damping: float) -> list[torch.Tensor]:
        w = self.module.weight
        gw = w.grad if w.grad is not None else torch.zeros_like(w)
        if self.explicit:
            return [inverse_solve(*self._inverses(damping), gw.T).T.contiguous()]
        ea, eg = self.eig
        return [kron_solve(eg, ea, gw.T, damping, denom=self._denominator(damping)).T.contiguous()]

    def quad(self, deltas: list[torch.Tensor]) -> float:
        m = deltas[0].T
        return float(((self.factors["G"] @ m) * (m * self.factors["A"])).sum())


class NormBlock(_Block):
    """Affine parameters of LayerNorm / BatchNorm / GroupNorm: the Fisher block of
    ``(weight, bias)`` from per-sample gradients, ``(F + lambda)^{-1}`` by eigendecomposition."""

    factor_keys = ("F",)

    def __init__(self, name: str, module: nn.Module):
        super().__init__(name, module)
        self.kind = type(module).__name__
        self.size = sum(p.numel() for p in self.params)
        self.dense = self.size <= NORM_DENSE_MAX
        self.eig: Eigh | None = None

    def forward_stats(self, x: torch.Tensor) -> torch.Tensor:
        return fx.normalized_input(self.module, x.to(self.params[0].dtype))

    def subset_stats(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        # normalized with the whole batch's statistics (BatchNorm's forward uses them), then sliced
        return self.forward_stats(x).index_select(0, idx)

    def grad_stats(self, x_hat: torch.Tensor, gz: torch.Tensor, weight: float) -> None:
        u = fx.norm_sample_grads(self.module, x_hat, gz.to(x_hat.dtype))
        if self.module.bias is None:
            u = u[:, : u.shape[1] // 2]
        self._add("F", weight * (fx.gram(u) if self.dense else (u * u).sum(0)), 0.0)

    def update_inverse(self, damping: float | None = None) -> int:
        self.eig = eigh_factor(self.factors["F"])
        return int(self.eig.fallback)

    def _flat_grad(self) -> torch.Tensor:
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in self.params])

    def precondition(self, damping: float) -> list[torch.Tensor]:
        e, v = self.eig, self._flat_grad()
        if e.vectors is None:
            out = v / (e.values + damping).clamp_min(torch.finfo(v.dtype).tiny)
        else:
            out = e.vectors @ ((e.vectors.T @ v) / (e.values + damping).clamp_min(torch.finfo(v.dtype).tiny))
        return list(torch.split(out, [p.numel() for p in self.params]))

    def quad(self, deltas: list[torch.Tensor]) -> float:
        d = torch.cat([x.reshape(-1) for x in deltas])
        f = self.factors["F"]
        return float(d @ (f @ d)) if f.dim() == 2 else float((f * d * d).sum())

    def split_params(self, flat: list[torch.Tensor]) -> list[torch.Tensor]:
        return [t.reshape(p.shape) for t, p in zip(flat, self.params)]


_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def make_block(name: str, module: nn.Module, ekfac: bool = False, inverse: str = "eigh",
               weight_sharing: str = "expand") -> tuple[_Block | None, str]:
    """The block for ``module``, or ``(None, reason)`` when K-FAC does not support it; ``ekfac``
    and ``weight_sharing`` apply to Kronecker blocks, ``inverse="cholesky"`` and ``"triangular"`` to
    Kronecker blocks without EKFAC and to Embedding blocks (normalization blocks always use their
    eigendecomposition)."""
    t = type(module)
    if t in (nn.Linear, nn.Conv1d, nn.Conv2d):
        if t is not nn.Linear and (module.groups != 1 or module.padding_mode != "zeros"
                                   or isinstance(module.padding, str)):
            return None, f"{t.__name__} with groups={module.groups}, padding={module.padding!r}, " \
                         f"padding_mode={module.padding_mode!r} (only groups=1 with numeric zero padding)"
        return KroneckerBlock(name, module, ekfac, inverse, weight_sharing), ""
    if t is nn.Embedding:
        if module.max_norm is not None or module.sparse:
            return None, "Embedding with max_norm or sparse gradients"
        return EmbeddingBlock(name, module, inverse), ""
    if t in _NORMS:
        if getattr(module, "weight", None) is None:
            return None, ""  # no affine parameters: nothing to precondition
        return NormBlock(name, module), ""
    return None, f"{t.__name__} (no K-FAC block)"
