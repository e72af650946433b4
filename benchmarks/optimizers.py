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


def summarize(problem, runs: dict) -> tuple[list[str], dict]:
    """Markdown rows and a JSON-able dict for one problem."""
    out = {"description": problem.description, "target": problem.target, "budget_s": problem.budget,
           "info": list(problem.info), "methods": {}}
    best = {}
    for name, rs in runs.items():
        h = H.tuned(rs)
        st = rs.stats(h)
        best[name] = (h, st)
        out["methods"][name] = {"kind": rs.kind, "hparam": rs.hparam_name, "tuned": h, "tuned_stats": st,
                                "grid": {str(k): rs.stats(k) for k in rs.curves}}
    base = {k: v for k, v in best.items() if runs[k].kind in ("first_order", "quasi_newton")}
    fo = {k: v for k, v in best.items() if runs[k].kind == "first_order"}
    t_fo = min((v[1]["time_to_target"] for v in fo.values()), default=math.inf)
    t_base = min((v[1]["time_to_target"] for v in base.values()), default=math.inf)
    rows = [f"### {problem.name}: {problem.description}", "",
            f"target loss {problem.target:.6g}, budget {problem.budget:g} CPU s per run"
            + (", " + "; ".join(problem.info) if problem.info else ""), "",
            "| method | tuned | median steps | time to target (s) | x best first-order | x best baseline "
            "| loss at budget | metrics at budget |", "|---|---|---|---|---|---|---|---|"]
    for name, (h, st) in best.items():
        t = st["time_to_target"]
        r_fo = t / t_fo if math.isfinite(t) and math.isfinite(t_fo) else math.inf
        r_b = t / t_base if math.isfinite(t) and math.isfinite(t_base) else math.inf
        mets = ", ".join(f"{k}={v:.3e}" for k, v in st["metrics_at_budget"].items())
        rows.append(f"| {name} | {runs[name].hparam_name}={h:g} | {st['steps']:.0f} | {_fmt(t)} | {_fmt(r_fo, '.2f')} "
                    f"| {_fmt(r_b, '.2f')} | {st['loss_at_budget']:.4e} | {mets} |")
        out["methods"][name]["ratio_vs_best_first_order"] = r_fo
        out["methods"][name]["ratio_vs_best_baseline"] = r_b
    rows.append("")
    return rows, out


def plot(problems, all_runs, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(problems), figsize=(5 * len(problems), 3.8), squeeze=False)
    for ax, p in zip(axes[0], problems):
        grid = torch.linspace(0, p.budget, 200)
        for name, rs in all_runs[p.name].items():
            h = H.tuned(rs)
            ys = [y - p.plot_offset for y in H.median_curve(rs.curves[h], grid)]
            ax.plot(grid.tolist(), [y if y > 0 and math.isfinite(y) else float("nan") for y in ys],
                    label=f"{name} ({rs.hparam_name}={h:g})")
        ax.axhline(p.target - p.plot_offset, color="k", ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("CPU seconds (1 thread)")
        ax.set_ylabel("loss - f*" if p.plot_offset else "training loss")
        ax.set_title(p.name)
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
    ap.add_argument("--no-cache", action="store_true",
                    help="do not reuse finished runs stored under OUT/runs/ (they make an interrupted run resumable)")
    args = ap.parse_args(argv)
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
    problems, all_runs, md, js = [], {}, [], {"seeds": seeds, "quick": args.quick, "problems": {}}
    for pn in pnames:
        p = P.PROBLEMS[pn]
        budget = (p.quick_budget if args.quick else p.budget) * args.budget_scale
        p = type(p)(**{**p.__dict__, "budget": budget})
        problems.append(p)
        print(f"{p.name}: {p.description}; target {p.target:.6g}; " + "; ".join(p.info))
        cache = None if args.no_cache else out / "runs"
        all_runs[p.name] = {mn: H.run_grid(p, M.METHODS[mn], seeds, budget, cache_dir=cache) for mn in mnames}
        rows, js["problems"][p.name] = summarize(p, all_runs[p.name])
        md += rows
        print("\n".join(rows))
    header = ["# Optimizer benchmark", "",
              f"CPU time (time.process_time) with torch.set_num_threads(1); median over seeds {seeds}; tuned = "
              "grid value with the smallest median time to target. 'x best first-order' divides by the best tuned "
              "Adam / SGD-momentum time, 'x best baseline' by the best of Adam, SGD-momentum and L-BFGS.", ""]
    (out / "optimizers.md").write_text("\n".join(header + md) + "\n")
    (out / "optimizers.json").write_text(json.dumps(js, indent=1, default=lambda o: None if o == math.inf else o))
    plot(problems, all_runs, out / "optimizers.png")
    print(f"wrote {out}/optimizers.md, optimizers.json, optimizers.png in {time.perf_counter() - t0:.0f} s wall")
    return js


if __name__ == "__main__":
    main()
