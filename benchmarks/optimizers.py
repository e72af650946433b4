"""Optimizer benchmark: CPU time to a target loss, and the loss at equal CPU time.

Every registered method (``_opt_methods.py``) runs on every registered problem
(``_opt_problems.py``) over its hyper-parameter grid and several seeds; the tuned setting is the
one with the smallest median time to target (see ``_opt_harness.py``). Times are CPU seconds
(``time.process_time``) with ``torch.set_num_threads(1)``, because the machine is shared;
evaluations of the full training loss are not counted.

Usage::

    python benchmarks/optimizers.py                 # full run (3 seeds), results in benchmarks/results/
    python benchmarks/optimizers.py --quick         # tiny budget, 1 seed (smoke run)
    python benchmarks/optimizers.py --problems pinn --methods adam,newton_cg --out /tmp/bench

Writes ``optimizers.md`` (the table), ``optimizers.json`` (the medians per grid value and seed)
and ``optimizers.png`` (median loss of each tuned method against CPU time).
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _opt_harness as H  # noqa: E402
import _opt_methods as M  # noqa: E402
import _opt_problems as P  # noqa: E402


def _fmt(x: float, spec: str = ".3g") -> str:
    return "not reached" if x == math.inf else format(x, spec)


def summarize(problem, runs: dict) -> dict:
    """A JSON-able dict for one problem (the table is rendered from it by :func:`rows`)."""
    out = {"description": problem.description, "target": problem.target, "budget_s": problem.budget,
           "info": list(problem.info), "plot_offset": problem.plot_offset, "methods": {}}
    grid = torch.linspace(0, problem.budget, 200)
    for name, rs in runs.items():
        h = H.tuned(rs)
        out["methods"][name] = {"kind": rs.kind, "hparam": rs.hparam_name, "tuned": h, "tuned_stats": rs.stats(h),
                                "tuned_edge": H.grid_edge(list(rs.curves), h),
                                "grid": {str(k): rs.stats(k) for k in rs.curves}, "budget_s": rs.budget,
                                "median_curve": {"t": grid.tolist(), "loss": H.median_curve(rs.curves[h], grid)},
                                "measured_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    return out


def _t(x) -> float:
    return math.inf if x is None else float(x)


def _ratios(pjs: dict) -> None:
    """Add, per method, the ratios of its tuned time to target to the best first-order and the best
    baseline time; where no first-order method reached the target within its budget, the ratio is
    only bounded: ``< time / budget`` (the time a first-order method would need exceeds its budget)."""
    ms = pjs["methods"]
    fo = [k for k, v in ms.items() if v["kind"] == "first_order"]
    base = [k for k, v in ms.items() if v["kind"] in ("first_order", "quasi_newton")]
    t_fo = min((_t(ms[k]["tuned_stats"]["time_to_target"]) for k in fo), default=math.inf)
    t_base = min((_t(ms[k]["tuned_stats"]["time_to_target"]) for k in base), default=math.inf)
    fo_budget = min((ms[k].get("budget_s", pjs["budget_s"]) for k in fo), default=None)
    for v in ms.values():
        t = _t(v["tuned_stats"]["time_to_target"])
        v["ratio_vs_best_first_order"] = t / t_fo if math.isfinite(t) and math.isfinite(t_fo) else math.inf
        v["ratio_vs_best_baseline"] = t / t_base if math.isfinite(t) and math.isfinite(t_base) else math.inf
        v["ratio_bound_vs_best_first_order"] = (t / fo_budget if math.isfinite(t) and not math.isfinite(t_fo)
                                                and fo_budget else None)


def rows(name: str, pjs: dict) -> list[str]:
    """Markdown rows for one problem from its JSON dict."""
    _ratios(pjs)
    out = [f"### {name}: {pjs['description']}", "",
           f"target loss {pjs['target']:.6g}, budget {pjs['budget_s']:g} CPU s per run"
           + (", " + "; ".join(pjs["info"]) if pjs["info"] else ""), "",
           "| method | tuned | median steps | time to target (s) | x best first-order | x best baseline "
           "| loss at budget | metrics at budget |", "|---|---|---|---|---|---|---|---|"]
    for m, v in pjs["methods"].items():
        st = v["tuned_stats"]
        t = _t(st["time_to_target"])
        bound = v.get("ratio_bound_vs_best_first_order")
        r_fo = f"< {bound:.2f} (bound)" if bound is not None else _fmt(v["ratio_vs_best_first_order"], ".2f")
        mets = ", ".join(f"{k}={_t(x):.3e}" for k, x in st["metrics_at_budget"].items())
        note = "" if v.get("measured_utc") else " (earlier run)"  # rows kept by --merge from an older file
        edge = v.get("tuned_edge", H.grid_edge([float(k) for k in v.get("grid", {})], v["tuned"]))
        mark = f" (edge: {edge})" if edge else ""
        out.append(f"| {m}{note} | {v['hparam']}={v['tuned']:g}{mark} | {st['steps']:.0f} | {_fmt(t)} | {r_fo} "
                   f"| {_fmt(v['ratio_vs_best_baseline'], '.2f')} | {_t(st['loss_at_budget']):.4e} | {mets} |")
    out.append("")
    return out


def plot(js: dict, path: pathlib.Path) -> None:
    """Median loss of each tuned method against CPU time, one panel per problem (methods whose
    JSON entry has no stored curve, i.e. from an earlier run without one, are left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probs = list(js["problems"].items())
    fig, axes = plt.subplots(1, len(probs), figsize=(5 * len(probs), 3.8), squeeze=False)
    for ax, (pn, pj) in zip(axes[0], probs):
        off = pj.get("plot_offset", 0.0) or 0.0
        for name, v in pj["methods"].items():
            c = v.get("median_curve")
            if not c:
                continue
            ys = [_t(y) - off for y in c["loss"]]
            ax.plot(c["t"], [y if y > 0 and math.isfinite(y) else float("nan") for y in ys],
                    label=f"{name} ({v['hparam']}={v['tuned']:g})")
        ax.axhline(pj["target"] - off, color="k", ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("CPU seconds (1 thread)")
        ax.set_ylabel("loss - f*" if off else "training loss")
        ax.set_title(pn)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny budget, 1 seed (smoke run)")
    ap.add_argument("--problems", default="", help="comma-separated subset of the registered problems")
    ap.add_argument("--methods", default="", help="comma-separated subset of the registered methods")
    ap.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3, --quick 1)")
    ap.add_argument("--budget-scale", type=float, default=1.0, help="multiply every problem's budget")
    ap.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parent / "results"))
    ap.add_argument("--merge", action="store_true",
                    help="keep the problems and methods of OUT/optimizers.json that this run does not measure "
                         "(marked 'earlier run' in the table; the plot shows only the methods run now)")
    ap.add_argument("--render", action="store_true",
                    help="only re-render OUT/optimizers.md and .png from OUT/optimizers.json (runs nothing)")
    ap.add_argument("--no-cache", action="store_true",
                    help="do not reuse finished runs stored under OUT/runs/ (they make an interrupted run resumable)")
    args = ap.parse_args(argv)
    if args.render:
        js = json.loads((pathlib.Path(args.out) / "optimizers.json").read_text())
        write(js, pathlib.Path(args.out))
        return js
    torch.set_num_threads(1)
    P.register_defaults()
    M.register_defaults()
    pnames = [s for s in args.problems.split(",") if s] or list(P.PROBLEMS)
    mnames = [s for s in args.methods.split(",") if s] or list(M.METHODS)
    for n, reg in [(n, P.PROBLEMS) for n in pnames] + [(n, M.METHODS) for n in mnames]:
        if n not in reg:
            raise SystemExit(f"unknown name {n!r}; registered: {sorted(reg)}")
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"CPU time (time.process_time), torch.set_num_threads(1); seeds {seeds}; "
          f"{'quick' if args.quick else 'full'} budgets")
    t0 = time.perf_counter()
    problems, all_runs, js = [], {}, {"seeds": seeds, "quick": args.quick, "problems": {}}
    old_path = out / "optimizers.json"
    if args.merge and old_path.exists():
        js = json.loads(old_path.read_text())
        js["seeds"], js["quick"] = seeds, args.quick
    for pn in pnames:
        p = P.PROBLEMS[pn]
        budget = (p.quick_budget if args.quick else p.budget) * args.budget_scale
        p = type(p)(**{**p.__dict__, "budget": budget})
        problems.append(p)
        print(f"{p.name}: {p.description}; target {p.target:.6g}; " + "; ".join(p.info))
        cache = None if args.no_cache else out / "runs"
        all_runs[p.name] = {mn: H.run_grid(p, M.METHODS[mn], seeds, budget, cache_dir=cache) for mn in mnames}
        fresh = summarize(p, all_runs[p.name])
        if p.name in js["problems"]:  # merge: the methods measured now replace their earlier rows
            js["problems"][p.name]["methods"].update(fresh.pop("methods"))
            js["problems"][p.name].update(fresh)
        else:
            js["problems"][p.name] = fresh
        print("\n".join(rows(p.name, js["problems"][p.name])))
    write(js, out)
    print(f"wrote {out}/optimizers.md, optimizers.json, optimizers.png in {time.perf_counter() - t0:.0f} s wall")
    return js


def write(js: dict, out: pathlib.Path) -> None:
    """``optimizers.md`` (rendered from ``js``), ``optimizers.json`` and ``optimizers.png`` under ``out``."""
    md = [line for pn, pj in js["problems"].items() for line in rows(pn, pj)]
    header = ["# Optimizer benchmark", "",
              f"CPU time (time.process_time) with torch.set_num_threads(1); median over seeds {js['seeds']}; tuned = "
              "grid value with the smallest median time to target. 'x best first-order' divides by the best tuned "
              "Adam / SGD-momentum time, 'x best baseline' by the best of Adam, SGD-momentum and L-BFGS. Where no "
              "first-order method reaches the target within its budget, the ratio is bounded by time / budget. "
              "Time to target is the CPU time at the end of the first step after which the full training loss is "
              "<= target (the loss is evaluated after every step while steps are longer than budget/150; "
              "evaluations are not timed). '(edge: low/high)' marks a tuned value at the smallest/largest value of "
              "its grid (the grids are widened per problem where that happened). Rows marked 'earlier run' were kept by --merge from an earlier "
              "session; the others carry their measurement time (measured_utc) in optimizers.json.", ""]
    (out / "optimizers.md").write_text("\n".join(header + md) + "\n")
    (out / "optimizers.json").write_text(json.dumps(js, indent=1, default=lambda o: None if o == math.inf else o))
    plot(js, out / "optimizers.png")


if __name__ == "__main__":
    main()
