"""K-FAC as a complete optimizer: ``loss = opt.step((inputs, targets))``.

One step: forward and backward on the batch, the K-FAC preconditioned gradient
(:class:`~curvlens.optim.kfac.KFACPreconditioner`), weight decay, heavy-ball momentum, and an
update applied only when it is finite. Optionally the damping follows the
Levenberg-Marquardt rule of Martens & Grosse (2015, section 6.5): every ``adapt_every`` steps
the reduction ratio ``rho = (L(theta + d) - L(theta)) / (g^T d + d^T (F + lambda) d / 2)`` of
the quadratic model with the K-FAC Fisher is measured on the batch, and
``lambda *= omega`` when ``rho > 3/4``, ``lambda /= omega`` when ``rho < 1/4``, with
``omega = (19/20)^adapt_every``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from curvlens.optim._base import CurvatureOptimizer, StepRecord, register_optimizer
from curvlens.optim.kfac._distributed import reduce_loss, synchronized_backward
from curvlens.optim.kfac.preconditioner import KFACPreconditioner

__all__ = ["KFAC", "KFACStep"]

_DAMPING_RANGE = (1e-8, 1e4)
_DEFAULT_MOMENTUM = 0.5


def _norm_total(tensors: list[torch.Tensor]) -> float:
    """The sum of the tensors' norms (one fused reduction, one synchronization): non-finite when
    any entry is, or when the norms overflow."""
    norms = torch._foreach_norm(tensors)
    if len({n.dtype for n in norms}) > 1:
        norms = [n.double() for n in norms]
    return float(torch.stack(norms).sum())


@dataclass(frozen=True)
class KFACStep(StepRecord):
    """A :class:`~curvlens.optim._base.StepRecord` with K-FAC's own numbers.

    Attributes:
        damping: the damping used for this step.
        kl_scale: the KL-clip factor applied.
        rho: the reduction ratio when the damping was adapted at this step, else None.
        factors_updated, inverses_updated: what the preconditioner refreshed.
    """

    damping: float = 0.0
    kl_scale: float = 1.0
    rho: float | None = None
    factors_updated: bool = False
    inverses_updated: bool = False


@register_optimizer("kfac")
class KFAC(CurvatureOptimizer):
    """K-FAC with momentum (Martens & Grosse 2015) as a ``torch.optim.Optimizer``.

    Args:
        model: the network (``model(inputs)`` returns the outputs the loss takes).
        loss_fn: ``loss_fn(outputs, targets)``: an ``nn`` criterion, functional or name of the
            loss table (cross-entropy, NLL, MSE, BCE).
        lr: learning rate (``1 - momentum`` gives a unit natural-gradient step).
        momentum: heavy-ball momentum.
        weight_decay: L2 coefficient added to the preconditioned gradient.
        damping, factor_decay, update_every, inverse_every, fisher, kl_clip, layers, ekfac, inverse,
            weight_sharing, statistics_fraction: as for :class:`~curvlens.optim.kfac.KFACPreconditioner`
            (``ekfac=True``: the eigenvalue-corrected K-FAC of George et al. 2018;
            ``weight_sharing="reduce"``: K-FAC-reduce factors for convolutions;
            ``statistics_fraction < 1``: factors from a random sub-batch).
        adapt_damping: adapt the damping from the reduction ratio (one extra forward every
            ``adapt_every`` steps).
        generator: Monte-Carlo targets (a Generator or an int seed).
        process_group: None, ``"world"`` or a process group (as for :class:`~curvlens.Problem`):
            each rank steps on its own shard; one all-reduce per step (factors, gradients unless
            the model is ``DistributedDataParallel``, loss) keeps every rank identical.

    Parameters of modules K-FAC does not support get momentum SGD on their raw gradient.
    The defaults (momentum 0.5, and those of the preconditioner) are the best of a grid on the
    digits autoencoder and CNN; there ``lr`` about 0.5 (= 1 - momentum) was best. For short runs
    on convolutional networks (the digits CNN reaches its target in ~40 steps) refresh the
    inverses more often and take the statistics from a sub-batch: ``inverse_every=10``,
    ``inverse="triangular"``, ``statistics_fraction=0.25`` needed 0.86x the steps of the defaults
    there at 0.9x their step cost (``benchmarks/results/kfac_training.md``).

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> opt = KFAC(model, nn.CrossEntropyLoss(), lr=0.1, generator=0)
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)
        >>> losses = [opt.step((x, y)) for _ in range(3)]
        >>> opt.last_step.accepted
        True
    """

    def __init__(self, model: nn.Module, loss_fn: Any, *, lr: float, momentum: float = 0.5,
                 weight_decay: float = 0.0, damping: float = 1e-2, factor_decay: float = 0.95,
                 update_every: int = 5, inverse_every: int = 25, fisher: str = "mc",
                 kl_clip: float | None = 1e-2, layers: Any = None, adapt_damping: bool = False,
                 adapt_every: int = 5, ekfac: bool = False, inverse: str = "cholesky",
                 weight_sharing: str = "expand", statistics_fraction: float = 1.0,
                 generator: torch.Generator | int | None = None, process_group: Any = None):
        lr = self.check_number(lr, "lr", fix="try lr=0.5 (= 1 - momentum)")
        momentum = self.check_number(momentum, "momentum", strict=False, fix="use 0 <= momentum < 1")
        if momentum >= 1:
            raise ValueError(f"momentum: expected a number in [0, 1), got {momentum!r}; try momentum=0.5")
        weight_decay = self.check_number(weight_decay, "weight_decay", strict=False, fix="use weight_decay=0")
        if not isinstance(adapt_every, int) or isinstance(adapt_every, bool) or adapt_every < 1:
            raise ValueError(f"adapt_every: expected an int >= 1, got {adapt_every!r}; try adapt_every=5")
        super().__init__(model, loss_fn, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay},
                         generator=generator, process_group=process_group)
        if isinstance(loss_fn, str):
            from curvlens.problem.losses import resolve_loss
            self.loss_fn = resolve_loss(loss_fn)
        self.pre = KFACPreconditioner(model, loss_fn=self.loss_fn, damping=damping, factor_decay=factor_decay,
                                      update_every=update_every, inverse_every=inverse_every, fisher=fisher,
                                      kl_clip=kl_clip, lr=lr, layers=layers, ekfac=ekfac, inverse=inverse,
                                      weight_sharing=weight_sharing, statistics_fraction=statistics_fraction,
                                      generator=self._gen, process_group=self.process_group)
        self.unsupported = self.pre.unsupported
        self.adapt_damping, self.adapt_every = bool(adapt_damping), adapt_every
        self.settings_notes: tuple[str, ...] = ()

    # ------------------------------------------------------------------ the step
    def _forward_loss(self, batch: Any) -> torch.Tensor:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise TypeError(f"batch: expected (inputs, targets), got {type(batch).__name__}; "
                            "call opt.step((x, y))")
        x, y = batch
        return self.loss_fn(self.model(x), y)

    def step(self, batch: Any = None, closure: Any = None, **kwargs) -> float:
        """One K-FAC step on ``batch = (inputs, targets)``; returns the loss before the step."""
        if batch is None:
            raise TypeError("batch: expected (inputs, targets), got None; call opt.step((x, y))")
        k = int(self.global_state["step"])
        group = self.param_groups[0]
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        saved = [p.grad for p in self.params]
        for p in self.params:
            p.grad = None
        try:
            record = self._step(batch, k, lr, mu, wd)
        finally:
            for p, g in zip(self.params, saved):
                p.grad = g
        self.global_state["step"] = k + 1
        self.last_step = record
        return record.loss_before

    def _step(self, batch, k, lr, mu, wd) -> KFACStep:
        with torch.enable_grad():
            loss = self._forward_loss(batch)
            value = float(loss.detach())
            if self.process_group is not None:  # backward, then one all-reduce of statistics, gradients, loss
                value = synchronized_backward(self.pre, loss, value)
            if not math.isfinite(value):
                self.pre._outputs, self.pre._pending = [], []
                return KFACStep(k, value, None, False, "non-finite loss; weights unchanged", self.pre.damping)
            if self.process_group is None:
                loss.backward()
        adapt = self.adapt_damping and k % self.adapt_every == 0
        raw = {p: p.grad.clone() for p in self.params if p.grad is not None} if adapt else {}
        info = self.pre.step(lr=lr)
        with torch.no_grad():
            ps = [p for p in self.params if p.grad is not None]
            ds = [p.grad for p in ps]
            if wd:
                ds = torch._foreach_add(ds, ps, alpha=wd)
            olds = [self.state[p].get("momentum_buffer") for p in ps]
            if all(b is not None for b in olds):  # out of place: the old buffers stay intact
                bufs = torch._foreach_add(ds, olds, alpha=mu) if ps else []
            else:
                bufs = [d.clone() if b is None else torch.add(d, b, alpha=mu) for d, b in zip(ds, olds)]
            # one synchronization: a norm is non-finite when an entry is (overflow: also refused)
            if bufs and not math.isfinite(_norm_total(bufs)):
                return KFACStep(k, value, None, False, "non-finite update; weights unchanged", self.pre.damping,
                                info.kl_scale, None, info.factors_updated, info.inverses_updated)
            snap = self.snapshot() if adapt else None
            for p, buf in zip(ps, bufs):
                self.state[p]["momentum_buffer"] = buf
            if ps:
                torch._foreach_add_(ps, bufs, alpha=-lr)
            deltas = {p: torch.mul(buf, -lr) for p, buf in zip(ps, bufs)} if adapt else {}
        rho, after = None, None
        if adapt:
            rho, after = self._adapt(batch, value, raw, deltas, snap)
        with torch.no_grad():
            probe = _norm_total(self.params) if self.params else 0.0
        if not math.isfinite(probe) and not self.params_finite():  # pragma: no cover - guarded above
            self.restore(snap or [p.detach() for p in self.params])
        return KFACStep(k, value, after, True, "ok", self.pre.damping, info.kl_scale, rho,
                        info.factors_updated, info.inverses_updated)

    @torch.no_grad()
    def _adapt(self, batch, before, raw, deltas, snap) -> tuple[float | None, float | None]:
        buffers = {n: b.clone() for n, b in self.model.named_buffers()}
        after = float(self._forward_loss(batch))
        if self.process_group is not None:
            after = reduce_loss(self.pre, after)
        for n, b in self.model.named_buffers():
            b.copy_(buffers[n])
        lam = self.pre.damping
        lin = sum(float((raw[p] * d).sum()) for p, d in deltas.items() if p in raw)
        quad = self.pre.quad(deltas) + lam * sum(float((d * d).sum()) for d in deltas.values())
        q = lin + 0.5 * quad
        if not math.isfinite(after) or q >= 0:
            rho = -math.inf if not math.isfinite(after) else None
        else:
            rho = (after - before) / q
        omega = (19 / 20) ** self.adapt_every
        if rho is not None and rho > 0.75:
            lam *= omega
        elif rho is not None and rho < 0.25:
            lam /= omega
        self.pre.damping = min(max(lam, _DAMPING_RANGE[0]), _DAMPING_RANGE[1])
        if not math.isfinite(after):
            self.restore(snap)
        return rho, after if math.isfinite(after) else None

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        self.global_state["kfac"] = self.pre.state_dict()
        return super().state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.pre.load_state_dict(self.global_state["kfac"])
        if self.process_group is None:  # on a group the Monte-Carlo stream is the rank's own
            self.pre.generator = self._gen

    # ------------------------------------------------------------------ from measurements
    @classmethod
    def from_analysis(cls, result: Any, model: nn.Module, loss_fn: Any, **overrides) -> "KFAC":
        """K-FAC with damping and learning rate set from an :class:`~curvlens.AnalysisResult`.

        - damping ``= lambda_max / 1e3``: bounds the condition number of the damped curvature
          by 1e3 (K-FAC's Fisher is PSD, so negative Hessian eigenvalues need no margin);
          1e-3 when ``lambda_max`` was not measured;
        - ``lr = 1 - momentum``: a unit natural-gradient step in the steady state of momentum;
          halved when the curvature was measured as strongly indefinite (the Fisher ignores the
          negative directions, so the quadratic model is less trustworthy).

        The reasons are kept in ``opt.settings_notes``; ``overrides`` win over both.
        """
        s = result.summary()
        notes = []
        momentum = float(overrides.get("momentum", _DEFAULT_MOMENTUM))
        lmax = s.get("lambda_max")
        if lmax is not None and lmax > 0:
            damping = float(lmax) / 1e3
            notes.append(f"damping {damping:.3g} = lambda_max {float(lmax):.3g} / 1e3 (damped condition <= 1e3)")
        else:
            damping = 1e-3
            notes.append("damping 1e-3: lambda_max not measured")
        lr = 1.0 - momentum
        why = f"lr {lr:.3g} = 1 - momentum {momentum:.3g} (unit natural-gradient step)"
        if s.get("saddle_verdict") == "strongly_indefinite":
            lr *= 0.5
            why += ", halved: curvature strongly indefinite"
        notes.append(why)
        kwargs = {"lr": lr, "momentum": momentum, "damping": damping}
        for key in ("lr", "damping"):
            if key in overrides:
                notes.append(f"{key} {overrides[key]!r} given explicitly")
        kwargs.update(overrides)
        opt = cls(model, loss_fn, **kwargs)
        opt.settings_notes = tuple(notes)
        return opt
