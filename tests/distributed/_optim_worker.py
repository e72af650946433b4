"""The optimizers and analyze's minibatch studies on two ranks (run by ``tests.distributed._worker``).

Every scenario is a function ``f(pg, rank)``: with ``pg=None`` it runs in one process on the
union of the shards (the reference, computed by the test), with ``pg="world"`` on this rank's
shard of a process group that ``_worker`` has initialized.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from tests.distributed._worker import SHARDS, make_data, make_model

STEPS = 3
EVEN = {0: [(0, 11)], 1: [(11, 22)]}
EMPTY = {0: [(0, 8), (8, 15), (15, 23)], 1: []}  # rank 1 holds no sample  # equal shards: DDP's unweighted average is then the mean over the union


def batches(pg, rank, shards=SHARDS, *, poison: bool = False) -> list:
    x, y = make_data()
    if poison:  # a NaN in sample 20: on rank 1's shard only
        x = x.clone()
        x[20, 0] = float("nan")
    ranks = [rank] if pg is not None else sorted(shards)
    return [(x[a:b], y[a:b]) for r in ranks for a, b in shards[r]]


def one_batch(pg, rank, shards=SHARDS, *, poison: bool = False) -> tuple:
    bs = batches(pg, rank, shards, poison=poison)
    if not bs:  # an empty shard: a batch of 0 samples
        x, y = make_data()
        return x[:0], y[:0]
    return torch.cat([b[0] for b in bs]), torch.cat([b[1] for b in bs])


def flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _trajectory(opt, model, data, fields=()) -> dict:
    weights, losses, recs = [], [], []
    for _ in range(STEPS):
        losses.append(float(opt.step(data)))
        weights.append(flat(model))
        recs.append([getattr(opt.last_step, f) for f in fields])
    return {"weights": torch.stack(weights), "losses": torch.tensor(losses), "records": recs}


NCG_FIELDS = ("damping", "next_damping", "rho", "cg_iterations", "alpha", "accepted", "curvature_samples")


class _NoVmap(nn.Module):
    """The identity, through a data-dependent branch that ``vmap`` refuses (per-sample gradients fail)."""

    def forward(self, x):
        return x if float(x.abs().sum()) >= 0 else -x


def _newton_cg(pg, rank, model, net=None, **kw) -> dict:
    from curvlens.optim import NewtonCG

    opt = NewtonCG(net or model, nn.CrossEntropyLoss(), curvature_fraction=0.5, damping=0.5, generator=0,
                   process_group=pg, **kw)
    return _trajectory(opt, model, batches(pg, rank), NCG_FIELDS)


def newton_cg(pg, rank) -> dict:
    """Martens' empirical-Fisher preconditioner from per-sample gradients, autograd products."""
    return _newton_cg(pg, rank, make_model(), preconditioner="empirical_fisher", product="autograd")


def newton_cg_defaults(pg, rank) -> dict:
    """The default settings (the product route and preconditioner NewtonCG picks), a DDP-wrapped model."""
    model = make_model()
    return _newton_cg(pg, rank, model, nn.parallel.DistributedDataParallel(model) if pg is not None else None)


def newton_cg_sample_loop(pg, rank) -> dict:
    """No vmap: the empirical-Fisher diagonal loops over samples of each local batch."""
    model = nn.Sequential(_NoVmap(), make_model())
    return _newton_cg(pg, rank, model, preconditioner="empirical_fisher", product="autograd")


def newton_cg_fisher(pg, rank) -> dict:
    """MC Fisher curvature, Hutchinson preconditioner: identical on every rank (not a single-process match)."""
    from curvlens.optim import NewtonCG

    model = make_model()
    opt = NewtonCG(model, nn.CrossEntropyLoss(), curvature="fisher", preconditioner="hutchinson",
                   curvature_fraction=0.5, generator=0, process_group=pg)
    return _trajectory(opt, model, batches(pg, rank), ("damping", "cg_iterations", "accepted"))


def saddle_free(pg, rank) -> dict:
    from curvlens.optim import SaddleFreeNewton

    model = make_model()
    opt = SaddleFreeNewton(model, nn.CrossEntropyLoss(), subspace=4, generator=0, process_group=pg)
    return _trajectory(opt, model, batches(pg, rank), ("damping", "accepted"))


def _kfac(pg, rank, fisher, *, ddp=False, shards=SHARDS) -> dict:
    from curvlens.optim import KFAC

    model = make_model()
    net = nn.parallel.DistributedDataParallel(model) if ddp else model
    opt = KFAC(net, nn.CrossEntropyLoss(), lr=0.1, fisher=fisher, update_every=1, inverse_every=1, adapt_damping=True,
               adapt_every=1, generator=0, process_group=pg)
    out = _trajectory(opt, model, one_batch(pg, rank, shards), ("damping", "rho", "kl_scale"))
    out["factors"] = {f"{n.removeprefix('module.')}.{k}": v  # a DDP model's layers are named module.*
                      for n, b in opt.pre.blocks.items() for k, v in b.factors.items()}
    return out


def kfac_type2(pg, rank) -> dict:
    return _kfac(pg, rank, "type2")


def kfac_empirical_ddp(pg, rank) -> dict:
    return _kfac(pg, rank, "empirical", ddp=pg is not None, shards=EVEN)


def kfac_mc(pg, rank) -> dict:
    return _kfac(pg, rank, "mc")


def kfac_preconditioner(pg, rank) -> dict:
    """KFACPreconditioner + SGD in a user's loop (no DDP: the preconditioner reduces the gradients);
    counts the all-reduces of each step."""
    from curvlens.optim import KFACPreconditioner

    model = make_model()
    pre = KFACPreconditioner(model, loss_fn=nn.CrossEntropyLoss(), fisher="empirical", update_every=2,
                             inverse_every=1, kl_clip=None, process_group=pg)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = one_batch(pg, rank)
    calls, real = [0], dist.all_reduce

    def counting(*a, **k):
        calls[0] += 1
        return real(*a, **k)

    weights, per_step, sent = [], [], []
    dist.all_reduce = counting
    try:
        for _ in range(STEPS):
            sgd.zero_grad()
            before = calls[0]
            nn.functional.cross_entropy(model(x), y).backward()
            pre.step()
            per_step.append(calls[0] - before)
            sent.append(pre._sync.reduced_bytes - sum(sent) if pg is not None else 0)
            sgd.step()
            weights.append(flat(model))
    finally:
        dist.all_reduce = real
    out = {"weights": torch.stack(weights), "all_reduces_per_step": per_step}
    if pg is not None:
        out["bytes_per_step"] = sent
    return out


def analyze_noise(pg, rank) -> dict:
    import curvlens

    problem = curvlens.Problem(make_model(), nn.CrossEntropyLoss(), batches(pg, rank), process_group=pg)
    res = curvlens.analyze(problem, budget=400, generator=0, which=["noise", "gradient_noise"])
    s = res.summary()
    keep = {k: v for k, v in s.items() if "cost" not in k and "time" not in k and "second" not in k}
    n = res.noise
    keep["noise_means"], keep["noise_stds"] = n.means, n.stds
    keep["gns_trace_sigma"] = res.gradient_noise.trace_sigma
    keep["notes"] = list(res.notes) if hasattr(res, "notes") else []
    return keep


def empty_shard(pg, rank) -> dict:
    """Rank 1 holds no sample: Newton-CG and K-FAC step as one process on rank 0's data."""
    from curvlens.optim import KFAC, NewtonCG

    model = make_model()
    ncg = NewtonCG(model, nn.CrossEntropyLoss(), damping=0.5, preconditioner="empirical_fisher", generator=0,
                   process_group=pg)
    out = {"newton_cg": _trajectory(ncg, model, batches(pg, rank, EMPTY), NCG_FIELDS)}
    model = make_model()
    kfac = KFAC(model, nn.CrossEntropyLoss(), lr=0.1, fisher="type2", adapt_damping=True, adapt_every=1, generator=0,
                process_group=pg)
    out["kfac"] = _trajectory(kfac, model, one_batch(pg, rank, EMPTY), ("accepted", "damping", "rho"))
    return out


def nonfinite_shard(pg, rank) -> dict:
    """A NaN on one rank's shard: every rank rejects the step the same way (nobody waits for a collective)."""
    from curvlens.optim import KFAC, NewtonCG

    model = make_model()
    ncg = NewtonCG(model, nn.CrossEntropyLoss(), damping=0.5, generator=0, process_group=pg)
    out = {"newton_cg": _trajectory(ncg, model, batches(pg, rank, poison=True), ("accepted", "next_damping"))}
    model = make_model()
    kfac = KFAC(model, nn.CrossEntropyLoss(), lr=0.1, fisher="type2", generator=0, process_group=pg)
    out["kfac"] = _trajectory(kfac, model, one_batch(pg, rank, poison=True), ("accepted", "status"))
    return out


def bad_arguments(pg, rank) -> dict:
    from curvlens.optim import KFAC, KFACPreconditioner, NewtonCG

    out = {}
    for key, call in (("string", lambda: NewtonCG(make_model(), "cross_entropy", process_group="wrld")),
                      ("type", lambda: KFAC(make_model(), nn.CrossEntropyLoss(), lr=0.1, process_group=3)),
                      ("ekfac", lambda: KFACPreconditioner(make_model(), loss_fn=nn.CrossEntropyLoss(), ekfac=True,
                                                           process_group="world"))):
        try:
            call()
            out[key] = "no error"
        except (TypeError, ValueError) as e:
            out[key] = f"{type(e).__name__}: {e}"
    return out


SCENARIOS = {f.__name__: f for f in (newton_cg, newton_cg_defaults, newton_cg_sample_loop, newton_cg_fisher,
                                     saddle_free, kfac_type2, kfac_empirical_ddp, kfac_mc, kfac_preconditioner,
                                     analyze_noise, empty_shard, nonfinite_shard, bad_arguments)}
