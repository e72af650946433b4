"""K-FAC as a gradient preconditioner for any training loop and any base optimizer.

Kronecker-factored approximate curvature (Martens & Grosse 2015; Grosse & Martens 2016 for
convolutions): forward hooks collect each layer's input statistics, backward hooks its output
gradients, and :meth:`KFACPreconditioner.step` replaces every supported layer's ``.grad`` by
``(F_layer + damping I)^{-1} grad`` with ``F_layer`` the Kronecker-factored Fisher block.

How the Fisher's output gradients are obtained (``fisher=``): ``"empirical"`` reuses the
gradients of the user's own backward; ``"mc"`` (the default, the true Fisher) and ``"type2"``
(the exact GGN factors) need the loss, given at construction: a forward hook on the model keeps
its output, and when the user's ``loss.backward()`` reaches that output, the preconditioner
backpropagates sampled (``"mc"``) or exact (``"type2"``, one backward per output coordinate)
output-space directions down to the layers' outputs through the still-intact graph, without
touching any ``.grad``. No ``retain_graph`` is needed and the pattern is the same for all kinds.

With ``ekfac=True`` the Linear and convolution blocks are eigenvalue-corrected (George et al.
2018): the same output gradients, paired with the layer inputs sample by sample, give the
second moments of the per-sample gradients in the Kronecker eigenbasis (moving-averaged like
the factors, restarted whenever the eigenbasis is recomputed), which replace the products of
the factors' eigenvalues (:mod:`curvlens.optim.kfac.ekfac`).
"""

from __future__ import annotations

import logging
import math
import weakref
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn

from curvlens._rng import resolve_generator
from curvlens.optim.kfac._distributed import group_sync
from curvlens.optim.kfac._select import select_blocks
from curvlens.optim.kfac._validate import check_options
from curvlens.optim.kfac._weak_hook import WeakHook
from curvlens.optim.kfac.fisher import loss_scale, loss_spec, output_directions

__all__ = ["KFACPreconditioner", "PreconditionInfo"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreconditionInfo:
    """What one :meth:`KFACPreconditioner.step` did.

    Attributes:
        step: index of the step (0-based).
        factors_updated: whether the factor moving averages took this step's statistics.
        inverses_updated: whether the eigendecompositions were recomputed.
        kl_scale: the KL-clip factor ``nu <= 1`` applied to the preconditioned gradients.
        layers: number of layers whose gradients were preconditioned.
        fallbacks: eigendecompositions that failed and used a factor's diagonal instead.
        skipped: why the gradients were left as they were (empty when they were preconditioned).
    """

    step: int
    factors_updated: bool
    inverses_updated: bool
    kl_scale: float
    layers: int
    fallbacks: int
    skipped: str = ""


class KFACPreconditioner:
    """Replace each supported layer's gradient by its K-FAC preconditioned gradient.

    Use it between ``loss.backward()`` and the base optimizer's ``step()``. Supported: Linear,
    Conv1d and Conv2d (``groups=1``, zero padding; full Kronecker factors, bias included as a
    constant input), Embedding (diagonal input factor), LayerNorm, BatchNorm and GroupNorm
    affine parameters (dense block up to 512 parameters, else diagonal). Other modules with
    parameters, and parameters tied across modules, are listed in :attr:`unsupported` (and one
    logging warning) and left to the base optimizer.

    Args:
        model: the network; hooks are registered on its layers until :meth:`remove`.
        loss_fn: the training loss (``nn`` criterion, functional or name); required for
            ``fisher="mc"`` and ``"type2"``; for ``"empirical"`` it sets the reduction scale
            (default: a mean over the batch).
        damping: Tikhonov damping ``lambda``, split between the two factors by the
            pi-correction (Martens & Grosse 2015, section 6.3).
        factor_decay: weight of the old factors in their exponential moving average.
        update_every: take statistics every this many steps.
        inverse_every: recompute the eigendecompositions every this many steps.
        fisher: ``"mc"``, ``"type2"`` or ``"empirical"`` (see the module docstring).
        kl_clip: scale the update so that ``lr^2 sum <P g, g> <= kl_clip`` (Ba et al. 2017);
            None disables it.
        lr: the base optimizer's learning rate, used by the KL clip (``step(lr=...)`` overrides).
        layers: names or modules to precondition (default: every supported layer).
        ekfac: eigenvalue-corrected K-FAC for the Linear and convolution layers; the damping
            is then added to the measured second moments directly (no pi-correction).
        inverse: ``"cholesky"`` (default) keeps explicit inverses of the damped factors
            (float64 Cholesky, recomputed when the damping changes; the eigendecomposition when
            Cholesky fails; :mod:`curvlens.optim.kfac.explicit`): two matrix products per layer
            and step. ``"triangular"`` keeps the float64 Cholesky factors themselves (the same
            map; an inversion costs a third of ``"cholesky"``'s, a step two triangular solves per
            factor instead of a product: the cheaper choice when inverses are refreshed often,
            e.g. ``inverse_every=5``). ``"eigh"`` keeps eigendecompositions (four products,
            damping changes for free). EKFAC and normalization layers always use
            eigendecompositions.
        weight_sharing: how the shared positions of a convolution (and the dimensions of a
            Linear layer's input between batch and features) enter the factors (Eschenhagen et
            al. 2023): ``"expand"`` (default) makes every position a row of the statistics;
            ``"reduce"`` makes every sample one row (its mean input, its summed output
            gradient), ``#positions`` times cheaper and still exact for Linear layers without
            shared dimensions (:mod:`curvlens.optim.kfac.factors`). Not with ``ekfac=True``.
            On the digits CNN benchmark ``"reduce"`` makes a step about 0.9x as costly but
            needs about 1.2x the steps to the target loss, so ``"expand"`` stays the default.
        statistics_fraction: take the factor statistics of each layer from a random
            ``round(fraction * N)`` of the ``N`` samples of its input (the same samples for every
            layer with the same batch size, drawn from ``generator`` at each statistics step),
            their output gradients weighted by ``N / round(fraction * N)``: unbiased estimates of
            the whole batch's factors at about ``fraction`` of the cost of the unfolds and Grams.
            The Monte-Carlo backward still runs through the whole batch (its graph is the
            user's). 1 (default) takes every sample and draws nothing. Not with ``ekfac=True``
            nor on a process group.
        generator: ``torch.Generator`` or int seed for the Monte-Carlo targets.
        process_group: None (this process alone), ``"world"`` or a ``torch.distributed``
            process group: each rank runs its own shard; the step's statistics, gradients (unless
            the model is ``DistributedDataParallel``) and loss are all-reduced in one bucket, so
            every rank's preconditioner is identical (:mod:`curvlens.optim.kfac._distributed`).

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> pre = KFACPreconditioner(model, loss_fn=nn.CrossEntropyLoss(), generator=0)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
        >>> nn.functional.cross_entropy(model(x), y).backward()
        >>> info = pre.step(); opt.step()
        >>> pre.last_info.layers
        2
    """

    def __init__(self, model: nn.Module, *, loss_fn: Any = None, damping: float = 1e-2,
                 factor_decay: float = 0.95, update_every: int = 5, inverse_every: int = 25,
                 fisher: str = "mc", kl_clip: float | None = 1e-2, lr: float = 1.0,
                 layers: Iterable[str | nn.Module] | None = None, ekfac: bool = False,
                 inverse: str = "cholesky", weight_sharing: str = "expand", statistics_fraction: float = 1.0,
                 generator: torch.Generator | int | None = None, process_group: Any = None):
        check_options(model, damping=damping, factor_decay=factor_decay, update_every=update_every,
                      inverse_every=inverse_every, fisher=fisher, kl_clip=kl_clip, lr=lr, ekfac=ekfac,
                      inverse=inverse, weight_sharing=weight_sharing, statistics_fraction=statistics_fraction)
        self.inverse, self.weight_sharing = inverse, weight_sharing
        self.statistics_fraction = float(statistics_fraction)
        self._subsets: dict[int, tuple[torch.Tensor, float] | None] = {}
        self.ekfac = ekfac
        self.model, self.fisher, self.spec = model, fisher, loss_spec(loss_fn, fisher)
        self.damping, self.factor_decay = float(damping), float(factor_decay)
        self.update_every, self.inverse_every = update_every, inverse_every
        self.kl_clip, self.lr = kl_clip, float(lr)
        self.generator = resolve_generator(generator)
        self.blocks, self.unsupported = select_blocks(model, layers, ekfac=ekfac, inverse=inverse,
                                                      weight_sharing=weight_sharing)
        if self.unsupported:
            logger.warning("K-FAC leaves these parameters to the base optimizer: %s", "; ".join(self.unsupported))
        self.steps = 0
        self._last_inverse: int | None = None
        self.last_info: PreconditionInfo | None = None
        self._scale = 1.0
        self._pending: list = []
        self._outputs: list = []
        # weak hooks: the model does not keep the preconditioner alive, and copies of the model
        # (deepcopy, torch.save) carry inert hooks instead of the preconditioner
        self._handles = []
        for b in self.blocks.values():
            self._handles.append(self._weak(b.module, "_on_layer", b))
        self._handles.append(self._weak(model, "_model_hook"))
        self.process_group, self._sync = group_sync(self, process_group)
        if self.process_group is not None and self.statistics_fraction < 1:
            self.remove()
            raise ValueError(f"statistics_fraction: expected 1 on a process group (the shards' sub-batches are "
                             f"not drawn jointly), got {statistics_fraction!r}; pass statistics_fraction=1")

    def _weak(self, module: nn.Module, method: str, *args):
        hook = WeakHook(self, method, *args)
        hook.handle = module.register_forward_hook(hook)
        return hook.handle

    # ------------------------------------------------------------------ hooks
    def _capturing(self) -> bool:
        return torch.is_grad_enabled() and self.steps % self.update_every == 0

    def _subset(self, x: torch.Tensor) -> tuple[torch.Tensor, float] | None:
        """(sorted sample indices, N / m) of this forward's statistics sub-batch for inputs of
        batch size ``N = x.shape[0]`` (one draw per batch size and forward), or None for all."""
        if self.statistics_fraction >= 1 or x.dim() == 0:
            return None
        n = int(x.shape[0])
        if n not in self._subsets:
            m = max(1, int(round(self.statistics_fraction * n)))
            g = self.generator
            idx = None if m >= n else torch.randperm(n, generator=g, device=g.device)[:m].sort().values
            self._subsets[n] = None if idx is None else (idx.to(x.device), n / m)
        return self._subsets[n]

    def _on_layer(self, block, module, inputs, output):
        if not self._capturing() or not inputs or not isinstance(inputs[0], torch.Tensor):
            return
        sub = self._subset(inputs[0])
        ctx = block.forward_stats(inputs[0]) if sub is None else block.subset_stats(inputs[0], sub[0])
        if not (isinstance(output, torch.Tensor) and output.requires_grad):
            return
        if self.fisher == "empirical":
            owner = weakref.ref(self)  # tensor hooks live in C++, where gc cannot see a cycle

            def on_grad(gz):
                me = owner()
                if me is not None:
                    if sub is None:
                        block.grad_stats(ctx, gz, 1.0 / me._scale)
                    else:
                        block.grad_stats(ctx, gz.index_select(0, sub[0]), sub[1] / me._scale)
            output.register_hook(on_grad)
        else:
            self._pending.append((block, ctx, output, sub))

    def _model_hook(self, module, inputs, output):
        self._subsets = {}  # the next forward draws its own sub-batches
        if not self._capturing():
            return
        if not isinstance(output, torch.Tensor):
            if self.fisher != "empirical":
                self._pending = []
                raise TypeError(f"model: fisher={self.fisher!r} needs the model to return one tensor of outputs, "
                                f"got {type(output).__name__}; wrap the model or use fisher='empirical'")
            x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            self._scale = 1.0 / max(1, x.shape[0]) if x is not None and x.dim() else 1.0
            return
        self._scale = loss_scale(self.spec, output)
        if self.fisher == "empirical" or not output.requires_grad:
            self._pending = []
            return
        index = len(self._outputs)
        self._outputs.append((output, self._pending, self._scale))
        self._pending = []
        owner = weakref.ref(self)  # tensor hooks live in C++, where gc cannot see a cycle

        def on_output_grad(g):
            me = owner()
            if me is not None:
                me._fisher_backward(index)
        output.register_hook(on_output_grad)

    def _fisher_backward(self, index: int) -> None:
        if index >= len(self._outputs) or self._outputs[index] is None:
            return
        out, pending, scale = self._outputs[index]
        self._outputs[index] = None
        if not pending:
            return
        zs = [z for _, _, z, _ in pending]
        for d in output_directions(self.spec, out, self.fisher, self.generator):
            grads = torch.autograd.grad(out, zs, grad_outputs=d.to(out.dtype), retain_graph=True,
                                        allow_unused=True)
            for (block, ctx, _, sub), gz in zip(pending, grads):
                if gz is None:
                    continue
                if sub is None:
                    block.grad_stats(ctx, gz, scale)
                else:
                    block.grad_stats(ctx, gz.index_select(0, sub[0]), scale * sub[1])

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self, *, lr: float | None = None) -> PreconditionInfo:
        """Precondition the current gradients in place (call after ``loss.backward()``).

        Args:
            lr: learning rate of the coming update, for the KL clip (default: ``self.lr``).

        Returns:
            A :class:`PreconditionInfo`, also kept as :attr:`last_info`.
        """
        lr = self.lr if lr is None else float(lr)
        if self._sync is not None:  # one all-reduce of this step's statistics and gradients (once per step)
            self._sync.synchronize()
        updated = inverted = False
        fallbacks = 0
        if self.steps % self.update_every == 0:
            got = [b.update_factors(self.factor_decay) for b in self.blocks.values()]
            updated = any(got)
            if not updated and any(b.grads_present() for b in self.blocks.values()):
                logger.warning("K-FAC: no layer statistics were captured for step %d; run the forward and "
                               "backward with gradients enabled before pre.step()", self.steps)
        rebased = set()
        # the first factor update at or after every inverse_every steps (also when update_every
        # does not divide inverse_every)
        due = updated and (self._last_inverse is None or self.steps - self._last_inverse >= self.inverse_every)
        if due:
            self._last_inverse = self.steps
        for name, b in self.blocks.items():
            if b.factors and (not b.ready or due):
                fallbacks += b.update_inverse(self.damping)
                inverted = True
                rebased.add(name)
        for name, b in self.blocks.items():
            if getattr(b, "ekfac", False):
                b.update_scales(self.factor_decay, name in rebased)
        news, dots, skipped = [], [], ""
        for b in self.blocks.values():
            if b.ready and b.grads_present():
                ns, dot = b.precondition_dot(self.damping)
                news.append((b, ns))
                dots.append(dot)
        # <P g, g> in one synchronization; non-finite when any new entry is (or when the
        # products overflow): then the gradients are left as they were
        if len({d.dtype for d in dots}) > 1:
            dots = [d.double() for d in dots]
        vg = float(torch.stack(dots).double().sum()) if dots else 0.0
        nu = 1.0
        if self.kl_clip is not None and vg > 0:
            nu = min(1.0, math.sqrt(self.kl_clip / (lr * lr * vg)))
        if not math.isfinite(vg):
            skipped, news = "non-finite preconditioned gradient; gradients left unchanged", []
            logger.warning("K-FAC step %d: %s", self.steps, skipped)
        if news:
            srcs = [n for _, ns in news for n in ns]
            grads = [p.grad for b, _ in news for p in b.params]
            torch._foreach_copy_(grads, srcs)
            if nu != 1.0:
                torch._foreach_mul_(grads, nu)
        self._outputs, self._pending, self._subsets = [], [], {}
        self.last_info = PreconditionInfo(self.steps, updated, inverted, nu, len(news), fallbacks, skipped)
        self.steps += 1
        return self.last_info

    # ------------------------------------------------------------------ lifecycle and state
    def remove(self) -> None:
        """Remove every hook; the model is left as it was before construction."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._outputs, self._pending = [], []

    def __enter__(self) -> "KFACPreconditioner":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def quad(self, deltas: dict[nn.Parameter, torch.Tensor]) -> float:
        """``d^T F_kfac d`` over the preconditioned layers for an update ``d`` (by parameter)."""
        return sum(b.quad([deltas[p] for p in b.params]) for b in self.blocks.values()
                   if b.factors and all(p in deltas for p in b.params))

    def state_dict(self) -> dict:
        """Factors, eigendecompositions in use, step counter, damping and generator state."""
        return {"steps": self.steps, "last_inverse": self._last_inverse, "damping": self.damping, "fisher": self.fisher,
                "weight_sharing": self.weight_sharing, "generator": self.generator.get_state(),
                "blocks": {n: b.state() for n, b in self.blocks.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` of a preconditioner built on the same architecture."""
        missing = set(self.blocks) ^ set(state["blocks"])
        if missing:
            raise ValueError(f"state: expected K-FAC blocks {sorted(self.blocks)}, got {sorted(state['blocks'])}; "
                             "load a state_dict saved from the same model and layers=")
        ws = state.get("weight_sharing", "expand")
        if ws != self.weight_sharing:
            raise ValueError(f"state: expected factors with weight_sharing={self.weight_sharing!r}, got {ws!r}; "
                             f"build the preconditioner with weight_sharing={ws!r} to resume this state")
        self.steps, self.damping = int(state["steps"]), float(state["damping"])
        last = state.get("last_inverse", self.steps - 1 - (self.steps - 1) % self.inverse_every)
        self._last_inverse = None if last is None or last < 0 else int(last)
        self.generator.set_state(state["generator"])
        for n, b in self.blocks.items():
            b.load(state["blocks"][n])

