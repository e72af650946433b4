"""Plateau exit: CPU time until the full loss first falls below half of a plateau's level.

Definition (stated in the output): a run *leaves* a plateau of loss level ``L_p`` at the CPU time
(``time.process_time``, one thread, evaluations excluded) at the end of the first step after which
the full training loss is ``<= L_p / 2``. The loss is evaluated after *every* step (untimed), so
the time has one-step resolution. Levels:

- ``deep_linear``: the exact critical levels of the three-layer linear student, the losses of the
  best rank-k fits (reduced-rank regression on the training set, k = 0, 1, 2, 3): ``k = 0`` is the
  origin saddle the runs start at, ``k >= 1`` the later plateaus. Also the target 1e-3.
- ``tanh_autoencoder``: the mean-prediction plateau it starts on (loss = the data's variance per
  entry); also ``0.9 L_p`` (the first departure) and the target 0.03.

Tuning: for every metric separately, each method's value is the grid value with the smallest
median time over the seeds (ties: the smaller median final loss); the grids have >= 4 values and
are widened where a tuned value sits at an edge. A run stops at its budget or once its loss is
below the lowest level. Each invocation adds its (problem, method) results to ``OUT.json`` and
rewrites ``OUT.md`` from all of them. Usage::

    python benchmarks/saddle_exit.py --problems deep_linear,tanh_autoencoder \
        --methods adam,sgd_m,saddle_free,saddle_free_retries,saddle_free_damping,newton_cg \
        --out benchmarks/results/saddle_exit
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import statistics
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _opt_methods as M  # noqa: E402
import _opt_problems as P  # noqa: E402

#: grid per (problem, method); the first-order deep-linear grids are the optimizer benchmark's
GRIDS = {
    "deep_linear": {"adam": M.DEEP_LINEAR_ADAM_LRS, "sgd_m": M.DEEP_LINEAR_SGD_LRS,
                    "saddle_free": (0.25, 0.5, 1.0, 2.0, 4.0, 8.0), "newton_cg": (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)},
    "tanh_autoencoder": {"adam": (3e-3, 1e-2, 3e-2, 1e-1, 3e-1), "sgd_m": (0.1, 0.3, 1.0, 3.0),
                         "saddle_free": (0.25, 0.5, 1.0, 2.0, 4.0, 8.0), "newton_cg": (1e-4, 1e-3, 1e-2, 1e-1)},
}
#: saddle-free Newton tuned over its initial damping instead, at a fixed initial trust radius per
#: problem (which eigenvalues get an escape step is decided by the relative ``negative_tol``, not by
#: the damping; the damping scales the steps along the other directions)
SFN_DAMPING_RADIUS = {"deep_linear": 1.0, "tanh_autoencoder": 4.0}
GRIDS["deep_linear"]["saddle_free_damping"] = (1e-8, 1e-7, 1e-6, 1e-5, 1e-4)
GRIDS["tanh_autoencoder"]["saddle_free_damping"] = (1e-8, 1e-7, 1e-6, 1e-5, 1e-4)
#: ``saddle_free`` with ``retries=4``: a rejected try is re-solved on the same basis (a loss
#: evaluation) instead of ending the step (the next step would rebuild the same basis); same grid
GRIDS["deep_linear"]["saddle_free_retries"] = GRIDS["deep_linear"]["saddle_free"]
GRIDS["tanh_autoencoder"]["saddle_free_retries"] = GRIDS["tanh_autoencoder"]["saddle_free"]
SFN_RETRIES = 4


def _saddle_free_damping(inst, damping, seed):
    return M._saddle_free(inst, SFN_DAMPING_RADIUS[inst.problem], seed, damping=damping)


def _saddle_free_retries(inst, radius, seed):
    return M._saddle_free(inst, radius, seed, retries=SFN_RETRIES)


def _register_local() -> None:
    if "saddle_free_damping" not in M.METHODS:
        M.register_method(M.Method("saddle_free_damping", "curvature", _saddle_free_damping, (1e-6,),
                                   hparam="damping"))
    if "saddle_free_retries" not in M.METHODS:
        M.register_method(M.Method("saddle_free_retries", "curvature", _saddle_free_retries, (1.0,),
                                   hparam="trust_radius"))


#: CPU seconds per run (Newton-CG's steps cost ~0.4 s on the deep linear net)
BUDGETS = {"deep_linear": {"newton_cg": 3.0, "sgd_m": 3.0, "default": 1.0},
           "tanh_autoencoder": {"newton_cg": 4.0, "default": 3.0}}


def _rank_k_levels(X: torch.Tensor, Y: torch.Tensor, ks) -> list[float]:
    """MSE of the best rank-k linear map X -> Y (reduced-rank regression): the saddle levels."""
    W = torch.linalg.lstsq(X, Y).solution
    F = X @ W
    _, _, Vh = torch.linalg.svd(F, full_matrices=False)
    out = []
    for k in ks:
        Fk = F @ Vh[:k].T @ Vh[:k] if k > 0 else torch.zeros_like(F)
        out.append(float(((Y - Fk) ** 2).mean()))
    return out


def levels(problem: str, inst) -> list[tuple[str, float]]:
    """(name, threshold) pairs: the loss at or below which a run counts as past that point."""
    X, Y = inst.data
    if problem == "deep_linear":
        lv = _rank_k_levels(X, Y, range(4))
        names = ["origin saddle", "plateau 1", "plateau 2", "plateau 3"]
        out = [(f"{n} ({v:.3g}) / 2", v / 2) for n, v in zip(names, lv)]
        return sorted(out + [("target 1e-3", 1e-3)], key=lambda t: -t[1])
    if problem == "tanh_autoencoder":
        lp = float(((Y - Y.mean(0)) ** 2).mean())
        return [(f"plateau ({lp:.4g}) x 0.9", 0.9 * lp), (f"plateau ({lp:.4g}) / 2", lp / 2),
                ("target 0.03", 0.03)]
    raise ValueError(f"problem: expected deep_linear or tanh_autoencoder, got {problem!r}")


def run(problem, method, h: float, seed: int, budget: float, floor: float) -> dict:
    inst = problem.make(seed)
    inst.problem = problem.name
    step = method.build(inst, h, seed)
    times, losses = [0.0], [float(inst.eval_loss(inst.model))]
    used = 0.0
    while used < budget and losses[-1] > floor:
        t0 = time.process_time()
        step(inst.data)
        used += time.process_time() - t0
        loss = float(inst.eval_loss(inst.model))
        times.append(used)
        losses.append(loss if math.isfinite(loss) else math.inf)
        if not math.isfinite(loss):
            break
    return {"times": times, "losses": losses}


def first_below(c: dict, thr: float) -> float:
    return next((t for t, v in zip(c["times"], c["losses"]) if v <= thr), math.inf)


def _med(xs):
    return float(statistics.median(xs))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default="deep_linear,tanh_autoencoder")
    ap.add_argument("--methods", default="adam,sgd_m,saddle_free,newton_cg")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="benchmarks/results/saddle_exit")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    P.register_defaults()
    M.register_defaults()
    _register_local()
    seeds = [int(s) for s in args.seeds.split(",")]
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {}
    for pname in args.problems.split(","):
        problem = P.PROBLEMS[pname]
        lv = levels(pname, problem.make(0))
        floor = min(v for _, v in lv)
        pres = result.setdefault(pname, {"levels": lv, "methods": {}})
        pres["levels"] = lv
        for mname in args.methods.split(","):
            method = M.METHODS[mname]
            budget = BUDGETS[pname].get(mname, BUDGETS[pname]["default"])
            runs = {}
            for h in GRIDS[pname][mname]:
                runs[h] = [run(problem, method, h, s, budget, floor) for s in seeds]
                print(f"{pname} {mname} {h:g}: " + " ".join(
                    f"{first_below(c, lv[0][1]):.3g}/{c['losses'][-1]:.2e}" for c in runs[h]), flush=True)
            per_metric = {}
            for name, thr in lv:
                stats = {h: ([first_below(c, thr) for c in cs], _med([c["losses"][-1] for c in cs]))
                         for h, cs in runs.items()}
                best = min(stats, key=lambda h: (_med(stats[h][0]), stats[h][1]))
                grid = sorted(stats)
                edge = "low" if best == grid[0] else "high" if best == grid[-1] else None
                steps = [next((i for i, v in enumerate(c["losses"]) if v <= thr), None) for c in runs[best]]
                per_metric[name] = {"tuned": best, "edge": edge, "median_time": _med(stats[best][0]),
                                    "per_seed_time": stats[best][0], "per_seed_steps": steps,
                                    "all": {f"{h:g}": _med(stats[h][0]) for h in grid}}
            pres["methods"][mname] = {"hparam": method.hparam, "budget_s": budget, "grid": list(GRIDS[pname][mname]),
                                      "metrics": per_metric, "measured_utc": time.strftime("%Y-%m-%d %H:%M",
                                                                                           time.gmtime())}
            out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def _fmt(t: float) -> str:
    return "not reached" if not math.isfinite(t) else f"{t:.3g}"


def markdown(result: dict) -> str:
    lines = ["# Plateau exit", "",
             "CPU time (time.process_time, torch.set_num_threads(1), loaded shared machine; evaluations untimed) at "
             "the end of the first step after which the full training loss is <= the level; the loss is evaluated "
             "after every step. Levels: half of each plateau's loss (deep_linear: the best rank-k fits, k = 0 the "
             "origin saddle; tanh_autoencoder: the mean-prediction plateau, also x 0.9), and the targets. Per metric "
             "each method is tuned separately (grid value with the smallest median time over the seeds); "
             "'x best first-order' divides by the best of Adam and SGD-momentum for that metric."]
    for pname, pres in result.items():
        lines.append(f"\n#### {pname}\n")
        lines.append("| metric: first time loss <= | method | tuned | median CPU s | per seed (s) | steps per seed |"
                     " x best first-order |")
        lines.append("|---|---|---|---|---|---|---|")
        for name, _ in pres["levels"]:
            fo = [m["metrics"][name]["median_time"] for k, m in pres["methods"].items() if k in ("adam", "sgd_m")]
            best_fo = min(fo) if fo else math.inf
            for mname, m in pres["methods"].items():
                r = m["metrics"][name]
                edge = f" ({r['edge']} edge)" if r["edge"] else ""
                ratio = r["median_time"] / best_fo if math.isfinite(best_fo) and math.isfinite(r["median_time"]) \
                    else math.inf
                lines.append(f"| {name} | {mname} | {m['hparam']}={r['tuned']:g}{edge} | {_fmt(r['median_time'])} | "
                             f"{', '.join(_fmt(t) for t in r['per_seed_time'])} | "
                             f"{', '.join(str(s) for s in r['per_seed_steps'])} | "
                             f"{'-' if not math.isfinite(ratio) else f'{ratio:.2f}'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
