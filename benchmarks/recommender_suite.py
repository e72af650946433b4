"""Validation suite of the optimizer recommender: does its advice hold on problems of different kinds?

For each of 8 small problems (ill-conditioned convex, classification at mini- and full batch,
autoencoder, regression, fine-tuning, CNN, recurrent) every available optimizer family is
trained over a learning-rate grid (>= 4 values) and 3 seeds for a fixed CPU-time budget. The
measured ranking is by the CPU time each family's best grid value needs to reach a target loss
(90% of the log-decrease of the best run; median over seeds, a family that does not reach it
on 2 of 3 seeds ranks by its final loss after every family that does). Then the recommender is
asked, from ``analyze`` plus the model (no trials), and again with ``trial=`` seconds, and the
table says whether its top pick is among the best two families, whether its learning rate is
within 3x of that family's best grid value, and whether the suggested rate diverges.

CPU time (time.process_time) with torch.set_num_threads(1): the machine is loaded.
Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/recommender_suite.py [--budget 0.6] [--trial 6]``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import statistics
import sys
import time
import warnings

import torch
from torch import nn

from curvlens.recommend import RecommendationContext, recommend

for _mod in ("curvlens.optim.kfac", "curvlens.optim.saddle_free", "curvlens.optim.newton_cg"):
    try:  # make curvlens' optimizers available to the benchmark and to the recommender
        importlib.import_module(_mod)
    except ImportError:
        pass

GRIDS = {
    "sgd_momentum": [3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0],
    "adamw": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
    "lbfgs": [0.1, 0.3, 1.0, 3.0],
    "kfac": [0.01, 0.03, 0.1, 0.3],
    "newton_cg": [0.1, 0.3, 1.0, 2.0],
    "saddle_free_newton": [0.1, 0.3, 1.0, 2.0],
}
SEEDS = (0, 1, 2)


# ----------------------------------------------------------------------------- problems
def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    X = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    return X, y


def _init(seed, build):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build()


class GRUClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(8, 24, batch_first=True)
        self.head = nn.Linear(24, 10)

    def forward(self, x):
        out, _ = self.rnn(x.view(-1, 8, 8))
        return self.head(out[:, -1])


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.head = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        h = torch.relu(self.conv(x.view(-1, 1, 8, 8)))
        return self.head(nn.functional.max_pool2d(h, 2).flatten(1))


def problems():
    """name -> dict(model, loss, data, batch, phase, layers, kind)."""
    X, y = _digits()
    out = {}
    g = torch.Generator().manual_seed(0)
    # 1. ill-conditioned convex: logistic regression on features scaled over 3 decades
    scales = torch.logspace(0, -2, 64)
    Xs = X * scales
    out["logreg-illcond"] = dict(model=_init(0, lambda: nn.Linear(64, 10)), loss=nn.CrossEntropyLoss(),
                                 data=(Xs, y), batch=None, phase="early", layers="linear", kind="convex")
    mlp = lambda: nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))  # noqa: E731
    out["mlp-minibatch"] = dict(model=_init(1, mlp), loss=nn.CrossEntropyLoss(), data=(X, y), batch=32,
                                phase="early", layers="linear,tanh", kind="classification, batch 32")
    out["mlp-fullbatch"] = dict(model=_init(2, mlp), loss=nn.CrossEntropyLoss(), data=(X[:512], y[:512]),
                                batch=None, phase="early", layers="linear,tanh", kind="classification, full batch")
    ae = lambda: nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 64))  # noqa: E731
    out["autoencoder"] = dict(model=_init(3, ae), loss=nn.MSELoss(), data=(X[:512], X[:512]), batch=None,
                              phase="early", layers="linear,tanh", kind="autoencoder, full batch")
    t = torch.linspace(-3, 3, 256).unsqueeze(1)
    f = torch.sin(2 * t) + 0.3 * t
    reg = lambda: nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1))  # noqa
    out["regression"] = dict(model=_init(4, reg), loss=nn.MSELoss(), data=(t, f), batch=None, phase="early",
                             layers="linear,tanh", kind="regression, full batch")
    # fine-tuning: a network trained on digits 0-4 (deterministically), tuned on 5-9
    base = _init(5, mlp)
    lo = y < 5
    opt = torch.optim.Adam(base.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(base(X[lo]), y[lo]).backward()
        opt.step()
    hi = ~lo
    out["fine-tuning"] = dict(model=base, loss=nn.CrossEntropyLoss(), data=(X[hi], y[hi]), batch=64,
                              phase="fine-tuning", layers="linear,tanh", kind="fine-tuning, batch 64")
    out["cnn"] = dict(model=_init(6, ConvNet), loss=nn.CrossEntropyLoss(), data=(X[:512], y[:512]), batch=64,
                      phase="early", layers="conv2d,relu,maxpool2d,linear", kind="CNN, batch 64")
    out["gru"] = dict(model=_init(7, GRUClassifier), loss=nn.CrossEntropyLoss(), data=(X[:512], y[:512]),
                      batch=None, phase="early", layers="gru,linear", kind="recurrent, full batch")
    del g
    return out


# ----------------------------------------------------------------------------- training
def _full_loss(model, loss_fn, data):
    with torch.no_grad():
        return float(loss_fn(model(data[0]), data[1]))


def train(p, family, lr, seed, budget):
    """[(cpu_seconds, full_loss)] of one run; losses recorded every budget/30 s (not timed)."""
    import copy

    from curvlens.recommend.build import build

    model = copy.deepcopy(p["model"])
    loss_fn, (X, Y), bs = p["loss"], p["data"], p["batch"]
    hp = {"lr": lr, "momentum": 0.9, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0,
          "history_size": 10, "line_search_fn": "strong_wolfe", "max_iter": 1}
    if family == "kfac":
        hp = {"lr": lr, "momentum": 0.9, "damping": 1e-3}
    elif family in ("newton_cg", "saddle_free_newton"):
        hp = {"lr": lr}
    opt = build(family, hp, model, loss_fn, generator=seed)
    gen = torch.Generator().manual_seed(seed)
    curvlens_opt = hasattr(opt, "last_step")
    l0 = _full_loss(model, loss_fn, (X, Y))
    curve, spent, last = [(0.0, l0)], 0.0, 0.0
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        while spent < budget:
            if bs is not None:
                idx = torch.randint(X.shape[0], (bs,), generator=gen)
                xb, yb = X[idx], Y[idx]
            else:
                xb, yb = X, Y
            t0 = time.process_time()
            try:
                if curvlens_opt:
                    opt.step((xb, yb))
                else:
                    def closure():
                        opt.zero_grad(set_to_none=True)
                        loss = loss_fn(model(xb), yb)
                        loss.backward()
                        return loss

                    opt.step(closure)
            except (RuntimeError, ValueError):
                curve.append((spent, math.inf))
                break
            spent += time.process_time() - t0
            if spent - last >= budget / 30 or spent >= budget:
                last = spent
                full = _full_loss(model, loss_fn, (X, Y))
                curve.append((spent, full if math.isfinite(full) else math.inf))
                if not math.isfinite(full) or full > 3 * l0:
                    break
    return curve


def time_to(curve, target):
    for t, loss in curve:
        if loss <= target:
            return t
    return math.inf


def measure(p, families, budget, log):
    runs = {}
    for fam in families:
        for lr in GRIDS[fam]:
            for s in SEEDS:
                runs[(fam, lr, s)] = train(p, fam, lr, s, budget)
    l0 = runs[next(iter(runs))][0][1]
    best = min(min(v for _, v in c) for c in runs.values())
    target = best * (l0 / best) ** 0.1 if best > 0 else best + 0.1 * (l0 - best)
    fam_stats = {}
    for fam in families:
        per_lr = []
        for lr in GRIDS[fam]:
            times = sorted(time_to(runs[(fam, lr, s)], target) for s in SEEDS)
            finals = [runs[(fam, lr, s)][-1][1] for s in SEEDS]
            per_lr.append((times[1], statistics.median(finals), lr))  # median of 3
        t, fin, lr = min(per_lr)
        fam_stats[fam] = dict(time=t, final=fin, best_lr=lr)
    ranking = sorted(families, key=lambda f: (fam_stats[f]["time"], fam_stats[f]["final"]))
    return target, fam_stats, ranking


def diverges(p, family, lr, budget):
    if family not in GRIDS or lr is None:
        return False
    l0 = _full_loss(p["model"], p["loss"], p["data"])
    for s in SEEDS:
        c = train(p, family, lr, s, budget)
        if any(not math.isfinite(v) or v > 1.5 * l0 for _, v in c):
            return True
    return False


def advise(p, trial):
    from curvlens.diagnostics import analyze

    n = int(p["data"][0].shape[0])
    ctx = RecommendationContext(batch_size=p["batch"] or n, dataset_size=n, phase=p["phase"],
                                layer_types=p["layers"], memory_bytes="4GB")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = analyze(p["model"], p["loss"], p["data"], generator=0, budget=200)
        kw = dict(model=p["model"], loss_fn=p["loss"], data=p["data"])
        rec = recommend(a, ctx, **kw)
        rec_t = recommend(a, ctx, **kw, trial=trial) if trial else None
    return rec, rec_t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=0.6, help="CPU seconds per training run")
    ap.add_argument("--trial", type=float, default=6.0, help="CPU seconds of trials per problem (0: none)")
    ap.add_argument("--only", default=None, help="comma list of problem names")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    logging.getLogger("curvlens").setLevel(logging.ERROR)  # K-FAC notes unsupported layers once per build
    from curvlens.recommend.build import runnable

    families = [f for f in GRIDS if runnable(f)[0]]
    print(f"# recommender suite: CPU time (process_time), torch threads 1 (machine loaded); budget "
          f"{args.budget}s per run, {len(SEEDS)} seeds, families {', '.join(families)}", flush=True)
    rows = []
    t_start = time.process_time()
    for name, p in problems().items():
        if args.only and name not in args.only.split(","):
            continue
        t0 = time.process_time()
        target, stats, ranking = measure(p, families, args.budget, print)
        rec, rec_t = advise(p, args.trial)
        row = dict(name=name, kind=p["kind"], ranking=ranking, stats=stats, target=target)
        for tag, r in (("plain", rec), ("trial", rec_t)):
            if r is None:
                continue
            top = r.top
            lr = top.hyperparameters.get("lr")
            best_lr = stats.get(top.optimizer, {}).get("best_lr")
            row[tag] = dict(top=top.optimizer, lr=lr, in_top2=top.optimizer in ranking[:2],
                            lr_ok=(lr is not None and best_lr is not None and best_lr / 3 <= lr <= best_lr * 3),
                            diverged=diverges(p, top.optimizer, lr, args.budget),
                            picks=[c.optimizer for c in r.candidates if c.runnable][:3])
        rows.append(row)
        _print_row(row)
        print(f"#   ({time.process_time() - t0:.0f} s CPU)", flush=True)
    _print_table(rows)
    print(f"# total {time.process_time() - t_start:.0f} s CPU")


def _fmt_t(t):
    return "never" if not math.isfinite(t) else f"{t:.2f}s"


def _print_row(row):
    print(f"\n## {row['name']} ({row['kind']}), target loss {row['target']:.4g}")
    for f in row["ranking"]:
        s = row["stats"][f]
        print(f"   {f:20s} time-to-target {_fmt_t(s['time']):>7s}  best lr {s['best_lr']:<8.3g} final {s['final']:.4g}")
    for tag in ("plain", "trial"):
        if tag in row:
            r = row[tag]
            print(f"   recommender ({tag}): picks {r['picks']}, top lr {_lr(r['lr'])}"
                  f"; in best two: {r['in_top2']}; lr within 3x: {r['lr_ok']}; diverged: {r['diverged']}")


def _print_table(rows):
    print("\n| problem | measured ranking (best two) | top pick (no trial) | in best 2 | lr within 3x | diverged |"
          " top pick (trial) | in best 2 |")
    print("|---|---|---|---|---|---|---|---|")
    ok_plain = ok_lr = ok_trial = 0
    for r in rows:
        pl, tr = r.get("plain", {}), r.get("trial", {})
        ok_plain += bool(pl.get("in_top2"))
        ok_lr += bool(pl.get("lr_ok")) and not pl.get("diverged")
        ok_trial += bool(tr.get("in_top2"))
        print(f"| {r['name']} | {', '.join(r['ranking'][:2])} | {pl.get('top')} (lr {_lr(pl.get('lr'))}) | "
              f"{pl.get('in_top2')} | {pl.get('lr_ok')} | {pl.get('diverged')} | {tr.get('top')} | {tr.get('in_top2')} |")
    n = len(rows)
    print(f"\nno trial: top pick in best two on {ok_plain}/{n}; lr within 3x and not diverged on {ok_lr}/{n}; "
          f"with trial: {ok_trial}/{n}")


def _lr(v):
    return "n/a" if v is None else f"{v:.3g}"


if __name__ == "__main__":
    sys.exit(main())
