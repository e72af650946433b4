"""Validation suite of the optimizer recommender: does its advice hold on problems of different kinds?

For each of 8 small problems (ill-conditioned convex, classification at mini- and full batch,
autoencoder, regression, fine-tuning, CNN, recurrent) every available optimizer family is
trained over a learning-rate grid (>= 4 values) and 5 seeds for a fixed CPU-time budget. The
measured ranking is by the CPU time each family's best grid value needs to reach a target loss
(90% of the log-decrease of the best run, or with ``--target-from median`` of the best seed
median of one family and lr; median over seeds, a family that does not reach it on 3 of 5 seeds
ranks by its final loss after every family that does). Then the recommender is
asked, from ``analyze`` plus the model (no trials), and again with ``trial=`` seconds, and the
table says whether its top pick is among the best two families, whether its learning rate is
within 3x of that family's best grid value, and whether the suggested advice diverges (the top
pick trained with all its suggested hyperparameters, 5 seeds; where that advice ranks among the
other families is reported too).

The ground truth (every family over its grid) and the analysis do not depend on the
recommender: both are cached in ``benchmarks/results/recommender_ground_truth.json`` and
``recommender_analysis.json``, keyed by problem and method settings (family, fixed settings,
grid, seeds, budget; analyze's seed and budget). Each family's entry records a fingerprint of
the optimizer's source and the machine speed it was measured at (the median time of one plain
gradient of the problem: a CPU-second budget buys fewer steps on a loaded machine, and trials
timed at another speed would be judged against another horizon); a stale entry is reported, and
``--refresh all|stale|FAMILY,...`` reruns it.
So the recommender's rules can be iterated on cheaply (``--trial 0`` skips the trials).

CPU time (time.process_time) with torch.set_num_threads(1): the machine is loaded.
Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/recommender_suite.py [--budget 0.6] [--trial 9]``;
writes ``benchmarks/results/recommender_suite.md``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib
import json
import logging
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from curvlens.recommend import RecommendationContext, recommend

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _recommender_report import _print_row, _table, _write_md  # noqa: E402

for _mod in ("curvlens.optim.kfac", "curvlens.optim.saddle_free", "curvlens.optim.newton_cg"):
    try:  # make curvlens' optimizers available to the benchmark and to the recommender
        importlib.import_module(_mod)
    except ImportError:
        pass

GRIDS = {
    "sgd_momentum": [3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0],
    "adamw": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1],
    # 10: with [0.1, ..., 3] L-BFGS's best first trial step sat at the top edge on mlp-fullbatch (5 seeds)
    "lbfgs": [0.1, 0.3, 1.0, 3.0, 10.0],
    # 0.003: with [0.01, ..., 1] K-FAC's best value sat at the grid's lower edge on 4 of 8 problems; 0.001:
    # with [0.003, ...] still on 2 (mlp-minibatch, fine-tuning); 3 and 10: with [..., 1] the best sat at the top edge
    # on logreg-illcond and cnn (5 seeds; the KL clip bounds K-FAC's update, so a large lr need not diverge)
    "kfac": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0],
    "newton_cg": [0.1, 0.3, 1.0, 2.0],
    "saddle_free_newton": [0.1, 0.3, 1.0, 2.0],
}
#: 5 seeds (3 until session 9): with 3 the best two families of mlp-minibatch lay within one seed spread
SEEDS = (0, 1, 2, 3, 4)
#: fixed settings of every family in the ground truth (its lr comes from the grid)
TRAIN_SETTINGS = {
    "sgd_momentum": {"momentum": 0.9},
    "adamw": {"betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0},
    # max_eval: torch.optim.LBFGS allows int(1.25 * max_iter) evaluations per .step() by default, i.e. one at
    # max_iter=1: its strong-Wolfe search then stops after the first trial step and keeps t=lr or t=0
    "lbfgs": {"history_size": 10, "line_search_fn": "strong_wolfe", "max_iter": 5, "max_eval": 30},
    "kfac": {"momentum": 0.9, "damping": 1e-3},
    "newton_cg": {},
    "saddle_free_newton": {},
}
ANALYZE_SETTINGS = {"generator": 0, "budget": 200}
#: keys the recommender's probe adds (measured again when a cached summary lacks one)
PROBE_KEYS = ("gradient_seconds", "gradient_l1", "gradient_norm", "sign_curvature", "sequential_hvp_cost")
RESULTS = Path(__file__).resolve().parent / "results"
#: the lowest mean cross-entropy float32 resolves: it is logsumexp(z) - z_y with |z| ~ 10-30, whose rounding
#: error is ~eps32 |z| ~ 1e-6 per sample. Measured on the suite's deepest runs, the float32 loss against the
#: float64 loss of the same weights: mlp-fullbatch saddle-free Newton 1.19e-8 vs 2.12e-8 (44% off), L-BFGS
#: 2.421e-7 vs 2.448e-7 (1.1%), cnn K-FAC 0 vs 7.6e-13; so a best loss below this floor is raised to it. MSE
#: problems have no such floor (regression, Newton-CG: 2.316e-7 in both, 1e-4 apart)
CE_LOSS_FLOOR = 1e-6
#: timed gradients of the machine-speed reference, and the speed ratio beyond which a cached entry is stale
REFERENCE_WARMUP, REFERENCE_REPEATS, SPEED_TOLERANCE = 10, 41, 1.5
GROUND_TRUTH_PATH = RESULTS / "recommender_ground_truth.json"
ANALYSIS_PATH = RESULTS / "recommender_analysis.json"
_OPT_MODULES = {"kfac": "curvlens.optim.kfac", "newton_cg": "curvlens.optim.newton_cg",
                "saddle_free_newton": "curvlens.optim.saddle_free"}


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


# ----------------------------------------------------------------------------- caches
def _load(path):
    return json.loads(path.read_text()) if path.exists() else {}


def _save(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=float))
    os.replace(tmp, path)


def source_fingerprint(family):
    """sha1 of the optimizer's source (module or package) or the torch version: a cached ground
    truth with another fingerprint was measured with other optimizer code."""
    if family not in _OPT_MODULES:
        return f"torch {torch.__version__}"
    mod = importlib.import_module(_OPT_MODULES[family])
    root = Path(mod.__file__)
    files = sorted(root.parent.rglob("*.py")) if root.name == "__init__.py" else [root]
    h = hashlib.sha1()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def gt_key(name, family, budget):
    """Cache key of one family's ground truth on one problem (its runs are keyed by lr and seed,
    so extending a grid trains only the new values)."""
    return (f"{name}|{family}|{json.dumps(TRAIN_SETTINGS[family], sort_keys=True)}|"
            f"seeds={','.join(map(str, SEEDS))}|budget={budget:g}")


# ----------------------------------------------------------------------------- training
def _full_loss(model, loss_fn, data):
    with torch.no_grad():
        return float(loss_fn(model(data[0]), data[1]))


def train(p, family, lr, seed, budget, hp=None):
    """[(cpu_seconds, full_loss)] of one run; losses recorded every budget/30 s (not timed).
    ``hp``: every hyperparameter (default: the grid's ``lr`` and :data:`TRAIN_SETTINGS`)."""
    from curvlens.recommend.build import build

    model = copy.deepcopy(p["model"])
    loss_fn, (X, Y), bs = p["loss"], p["data"], p["batch"]
    hp = dict(hp) if hp is not None else {"lr": lr, **TRAIN_SETTINGS[family]}
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


def gradient_seconds(p, repeats=REFERENCE_REPEATS):
    """Median CPU seconds of one plain gradient of the problem at its training batch size (the
    machine-speed reference of its ground truth: a CPU-second budget buys fewer steps on a loaded
    machine, so a cached ground truth is only comparable to trials timed at the same speed)."""
    model = copy.deepcopy(p["model"])
    X, Y = p["data"]
    bs = p["batch"] or X.shape[0]
    xb, yb = X[:bs], Y[:bs]
    times = []
    for k in range(REFERENCE_WARMUP + repeats):  # the first calls create kernels (convolutions: 1.4x slower)
        t0 = time.process_time()
        model.zero_grad(set_to_none=True)
        p["loss"](model(xb), yb).backward()
        if k >= REFERENCE_WARMUP:
            times.append(time.process_time() - t0)
    return statistics.median(times)


def speed_ratio(entry, t_grad):
    """The recorded gradient time of a cached entry over the current one (None when not recorded)."""
    old = entry.get("gradient_seconds")
    return None if not old or not t_grad else old / t_grad


def ground_truth(name, p, families, budget, refresh=(), log=print):
    """``{(family, lr, seed): curve}`` from the cache, training what is missing or refreshed; and
    the families whose cached entry is stale: measured with other optimizer code, or at another
    machine speed (its recorded gradient time differs from the current one by more than
    :data:`SPEED_TOLERANCE`, or was not recorded)."""
    cache = _load(GROUND_TRUTH_PATH)
    runs, stale = {}, []
    t_grad = gradient_seconds(p)
    for fam in families:
        key, fp = gt_key(name, fam, budget), source_fingerprint(fam)
        entry = cache.get(key)
        r = None if entry is None else speed_ratio(entry, t_grad)
        out_of_date = entry is not None and (entry["fingerprint"] != fp or r is None
                                             or not 1 / SPEED_TOLERANCE <= r <= SPEED_TOLERANCE)
        fresh = entry is None or fam in refresh or "all" in refresh or ("stale" in refresh and out_of_date)
        if fresh:
            entry = {"fingerprint": fp, "runs": {}, "gradient_seconds": t_grad}
        todo = [(lr, s) for lr in GRIDS[fam] for s in SEEDS if f"{lr:g}|{s}" not in entry["runs"]]
        if todo:
            t0 = time.process_time()
            new = {f"{lr:g}|{s}": train(p, fam, lr, s, budget) for lr, s in todo}
            log(f"#   ground truth {name} / {fam}: {len(todo)} runs, {time.process_time() - t0:.0f} s CPU", flush=True)
            cache = _load(GROUND_TRUTH_PATH)  # another run may have written meanwhile
            if not fresh and cache.get(key, {}).get("fingerprint") == entry["fingerprint"]:
                entry = cache[key]  # merge into what another run may have added meanwhile
            entry["runs"].update(new)
            entry["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            entry["load_average"] = round(os.getloadavg()[0], 2)
            cache[key] = entry
            _save(GROUND_TRUTH_PATH, cache)
        r = speed_ratio(entry, t_grad)
        if entry["fingerprint"] != fp:
            stale.append(fam)
        elif r is None or not 1 / SPEED_TOLERANCE <= r <= SPEED_TOLERANCE:
            stale.append(f"{fam} (machine speed {'unrecorded' if r is None else f'x{r:.2f}'})")
        for lr in GRIDS[fam]:
            for s in SEEDS:
                runs[(fam, lr, s)] = [(t, math.inf if v is None or not math.isfinite(v) else v)
                                      for t, v in entry["runs"][f"{lr:g}|{s}"]]
    return runs, stale


def unresolved_lrs(per_lr, seeds, best_lr, budget):
    """The grid values the measurement does not tell apart from the best one.

    When the best value reaches the target, those whose median time to it lies within the
    resolution of the best one's: the spread of its seeds (max - min) or the curves' recording
    interval (``budget / 30``: a time to target is known to one interval), whichever is larger. When
    it does not (ranked by final loss), those whose median final loss lies within the range of the
    best value's seeds. The strict best value is always in the set."""
    times, finals = seeds[best_lr]
    t_best = times[len(times) // 2]
    out = []
    for t, fin, lr in per_lr:
        if math.isfinite(t_best):
            res = max(times[-1] - times[0], budget / 30)
            ok = math.isfinite(t) and t - t_best <= res + 1e-12
        else:
            ok = not math.isfinite(t) and finals[0] <= fin <= finals[-1]
        if ok or lr == best_lr:
            out.append(lr)
    return out


def measure(runs, families, budget=0.6, target_from="run", floor=0.0):
    """Target loss, per-family statistics of the best grid value (and the values not resolved from
    it, :func:`unresolved_lrs`), and the ranking. ``target_from``: ``"run"`` takes the lowest loss of
    any single run, ``"median"`` the lowest median over the seeds of one (family, lr). ``floor``: the
    lowest loss the problem's dtype resolves (:data:`CE_LOSS_FLOOR`); a lower best loss is raised to it,
    so that the target is not a race through rounding noise."""
    l0 = runs[next(iter(runs))][0][1]
    if target_from == "median":
        keys = {(f, lr) for f, lr, _ in runs}
        best = min(statistics.median(min(v for _, v in runs[(f, lr, s)]) for s in SEEDS) for f, lr in keys)
    else:
        best = min(min(v for _, v in c) for c in runs.values())
    best = max(best, floor)
    target = best * (l0 / best) ** 0.1 if best > 0 else best + 0.1 * (l0 - best)
    fam_stats = {}
    for fam in families:
        per_lr, seeds = [], {}
        for lr in GRIDS[fam]:
            times = sorted(time_to(runs[(fam, lr, s)], target) for s in SEEDS)
            finals = [runs[(fam, lr, s)][-1][1] for s in SEEDS]
            per_lr.append((times[len(times) // 2], statistics.median(finals), lr))  # the seeds' median
            seeds[lr] = (times, sorted(finals))
        t, fin, lr = min(per_lr)
        fam_stats[fam] = dict(time=t, final=fin, best_lr=lr, per_lr={x: (tt, ff) for tt, ff, x in per_lr},
                              equal_lrs=unresolved_lrs(per_lr, seeds, lr, budget))
    ranking = sorted(families, key=lambda f: (fam_stats[f]["time"], fam_stats[f]["final"]))
    return target, fam_stats, ranking


def advice_runs(name, p, candidate, budget):
    """The top pick trained with all its suggested hyperparameters (not only its lr: K-FAC's damping, say)
    on every seed for the budget (cached): ``(diverged, curves)``; diverged on a seed is > 1.5x the initial
    loss or non-finite, and the remaining seeds are not trained then (curves has fewer than 3)."""
    from curvlens.recommend.build import constructor_kwargs

    if candidate.optimizer not in GRIDS:
        return False, []
    hp = constructor_kwargs(candidate.optimizer, candidate.hyperparameters)
    key = f"advice|{name}|{candidate.optimizer}|{json.dumps(hp, sort_keys=True, default=str)}|budget={budget:g}"
    cache = _load(GROUND_TRUTH_PATH)
    t_grad = gradient_seconds(p)
    hit = cache.get(key)
    if hit and hit["fingerprint"] == source_fingerprint(candidate.optimizer):
        r = speed_ratio(hit, t_grad)
        if r is not None and 1 / SPEED_TOLERANCE <= r <= SPEED_TOLERANCE:
            return hit["diverged"], [[(t, math.inf if v is None else v) for t, v in c] for c in hit["curves"]]
    l0 = _full_loss(p["model"], p["loss"], p["data"])
    out, curves = False, []
    for s in SEEDS:
        c = train(p, candidate.optimizer, None, s, budget, hp=hp)
        curves.append(c)
        if any(not math.isfinite(v) or v > 1.5 * l0 for _, v in c):
            out = True
            break
    cache = _load(GROUND_TRUTH_PATH)
    cache[key] = {"fingerprint": source_fingerprint(candidate.optimizer), "diverged": out, "gradient_seconds": t_grad,
                  "curves": [[(t, v if math.isfinite(v) else None) for t, v in c] for c in curves]}
    _save(GROUND_TRUTH_PATH, cache)
    return out, curves


def advice_rank(curves, target, stats, ranking, family):
    """Where the advice as given would rank among the other families' best grid values: its median time to
    the target and median final loss over the seeds (a diverged seed counts as never, with an infinite
    final), and its 1-based position by (time, final) among the families of ``ranking`` but its own
    ``family`` (whose grid ran with other fixed settings)."""
    times = sorted([time_to(c, target) for c in curves] + [math.inf] * (len(SEEDS) - len(curves)))
    finals = sorted([c[-1][1] for c in curves] + [math.inf] * (len(SEEDS) - len(curves)))
    t, fin = times[len(times) // 2], finals[len(finals) // 2]
    rank = 1 + sum((stats[f]["time"], stats[f]["final"]) < (t, fin) for f in ranking if f != family)
    return t, fin, rank


def family_unresolved(runs, stats, ranking, target, budget):
    """The families the measurement does not tell apart from the second best: median time to the target
    within the second best's resolution (its seed spread at its best lr or the recording interval, whichever
    is larger); when the second best never reaches the target, median final loss within its seed range.
    The best two are always in the set (the family analogue of :func:`unresolved_lrs`)."""
    if len(ranking) < 2:
        return list(ranking)
    second = ranking[1]
    lr2 = stats[second]["best_lr"]
    times = sorted(time_to(runs[(second, lr2, s)], target) for s in SEEDS)
    finals = sorted(runs[(second, lr2, s)][-1][1] for s in SEEDS)
    t2 = stats[second]["time"]
    out = []
    for f in ranking:
        t, fin = stats[f]["time"], stats[f]["final"]
        if math.isfinite(t2):
            ok = math.isfinite(t) and t - t2 <= max(times[-1] - times[0], budget / 30) + 1e-12
        else:
            ok = not math.isfinite(t) and fin <= finals[-1]
        if ok or f in ranking[:2]:
            out.append(f)
    return out


def context(p):
    n = int(p["data"][0].shape[0])
    return RecommendationContext(batch_size=p["batch"] or n, dataset_size=n, phase=p["phase"],
                                 layer_types=p["layers"], memory_bytes="4GB")


def analysis_summary(name, p, refresh=False):
    """analyze(...).summary() plus the recommender's probe measurements, cached by problem and
    analyze's settings (neither depends on the recommender's rules)."""
    from curvlens.diagnostics import analyze
    from curvlens.recommend.engine import as_summary
    from curvlens.recommend.probe import probe_measurements

    key = f"{name}|{json.dumps(ANALYZE_SETTINGS, sort_keys=True)}|torch {torch.__version__}"
    cache = _load(ANALYSIS_PATH)
    if key in cache and not refresh:
        summary = cache[key]
        if all(k in summary for k in PROBE_KEYS):
            return summary
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            summary = as_summary(analyze(p["model"], p["loss"], p["data"], **ANALYZE_SETTINGS))
    summary.update(probe_measurements(p["model"], p["loss"], p["data"]))
    cache = _load(ANALYSIS_PATH)
    cache[key] = summary
    _save(ANALYSIS_PATH, cache)
    return summary


def advise(p, summary, trial, trial_seeds=(0,)):
    """The recommendation without trials, and with trials for each of ``trial_seeds`` (a list); all get
    the model, so the recommender measures what the summary lacks (its probe, and one step of every
    candidate). The trials plan their steps from measured CPU time, so two runs differ even at one
    seed; several seeds show how much the pick moves."""
    kw = dict(model=p["model"], loss_fn=p["loss"], data=p["data"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = recommend(dict(summary), context(p), **kw)
        recs_t = [recommend(dict(summary), context(p), **kw, trial=trial, seed=s) for s in trial_seeds] \
            if trial else []
    return rec, recs_t


def evaluate(name, p, rec, stats, ranking, budget, target=None, unresolved=()):
    top = rec.top
    diverged, curves = advice_runs(name, p, top, budget)
    a_time, a_final, a_rank = advice_rank(curves, target, stats, ranking, top.optimizer) if target is not None and curves \
        else (math.inf, math.inf, None)
    lr = top.hyperparameters.get("lr")
    best_lr = stats.get(top.optimizer, {}).get("best_lr")
    ratio = lr / best_lr if lr is not None and best_lr is not None else None
    equal = stats.get(top.optimizer, {}).get("equal_lrs") or []
    near = min(equal, key=lambda x: abs(math.log(lr / x))) if lr is not None and lr > 0 and equal else None
    lrs = {c.optimizer: (c.hyperparameters.get("lr"), stats[c.optimizer]["best_lr"]) for c in rec.candidates
           if c.optimizer in stats and c.hyperparameters.get("lr") is not None}
    return dict(top=top.optimizer, lr=lr, in_top2=top.optimizer in ranking[:2], ratio=ratio,
                in_top2_resolved=top.optimizer in unresolved, advice_time=a_time, advice_final=a_final,
                advice_rank=a_rank, lr_ok=ratio is not None and 1 / 3 <= ratio <= 3, diverged=diverged,
                ratio_resolved=None if near is None else lr / near,
                lr_ok_resolved=near is not None and 1 / 3 <= lr / near <= 3,
                picks=[c.optimizer for c in rec.candidates if c.runnable][:3], family_lr_ratio={
                    f: a / b for f, (a, b) in lrs.items()})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=0.6, help="CPU seconds per training run")
    ap.add_argument("--trial", type=float, default=9.0,
                    help="CPU seconds of trials per problem (0: none); 9 = 3 candidates x (3 + 2 extension) runs x the "
                         "0.6 s budget: each trial run as long as a ground-truth run")
    ap.add_argument("--trial-seeds", default="0,1,2",
                    help="comma list of trial seeds (the table shows the first; the summary counts each)")
    ap.add_argument("--only", default=None, help="comma list of problem names")
    ap.add_argument("--refresh", default="", help="rerun the ground truth of these families ('all', 'stale': measured with other optimizer code "
                         "or at another machine speed, or a comma list)")
    ap.add_argument("--refresh-analysis", action="store_true", help="rerun analyze (cached otherwise)")
    ap.add_argument("--ground-truth-only", action="store_true", help="fill the caches, ask no recommendation")
    ap.add_argument("--no-write", action="store_true", help="do not write recommender_suite.md")
    ap.add_argument("--target-from", choices=("run", "median"), default="run",
                    help="target loss from the lowest loss of one run (default) or the lowest seed median")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    logging.getLogger("curvlens").setLevel(logging.ERROR)  # K-FAC notes unsupported layers once per build
    from curvlens.recommend.build import runnable

    families = [f for f in GRIDS if runnable(f)[0]]
    refresh = tuple(x for x in args.refresh.split(",") if x)
    trial_seeds = [int(x) for x in args.trial_seeds.split(",") if x.strip()] or [0]
    header = (f"CPU time (process_time), torch threads 1, load average {os.getloadavg()[0]:.2f}; budget {args.budget:g} s per run, "
              f"{len(SEEDS)} seeds, trials {args.trial:g} s (trial seeds {', '.join(map(str, trial_seeds))}); families {', '.join(families)}")
    print("# recommender suite: " + header, flush=True)
    rows = []
    t_start = time.process_time()
    for name, p in problems().items():
        if args.only and name not in args.only.split(","):
            continue
        t0 = time.process_time()
        runs, stale = ground_truth(name, p, families, args.budget, refresh)
        target, stats, ranking = measure(runs, families, args.budget, args.target_from,
                                         CE_LOSS_FLOOR if isinstance(p["loss"], nn.CrossEntropyLoss) else 0.0)
        summary = analysis_summary(name, p, args.refresh_analysis)
        if args.ground_truth_only:
            continue
        rec, recs_t = advise(p, summary, args.trial, trial_seeds)
        rec_t = recs_t[0] if recs_t else None
        unresolved = family_unresolved(runs, stats, ranking, target, args.budget)
        row = dict(name=name, kind=p["kind"], ranking=ranking, stats=stats, target=target, stale=stale,
                   unresolved=unresolved)
        for tag, r in (("plain", rec), ("trial", rec_t)):
            if r is not None:
                row[tag] = evaluate(name, p, r, stats, ranking, args.budget, target, unresolved)
        row["trial_seeds"] = {s: row["trial"] if k == 0 else evaluate(name, p, r, stats, ranking, args.budget,
                                                                      target, unresolved)
                              for k, (s, r) in enumerate(zip(trial_seeds, recs_t))}
        rows.append(row)
        _print_row(row)
        print(f"#   ({time.process_time() - t0:.0f} s CPU)", flush=True)
    if not rows:
        return 0
    lines = _table(rows)
    print("\n".join(lines))
    print(f"# total {time.process_time() - t_start:.0f} s CPU")
    if not args.no_write and not args.only:
        _write_md(rows, lines, header)
    return 0


if __name__ == "__main__":
    sys.exit(main())
