"""Report of the recommender validation suite (benchmarks/recommender_suite.py): the per-problem
detail, the table with its strict and unresolved-set lr columns, and the markdown file."""

from __future__ import annotations

import math
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _fmt_t(t):
    return "never" if not math.isfinite(t) else f"{t:.2f}s"


def _detail(row):
    out = [f"## {row['name']} ({row['kind']}), target loss {row['target']:.4g}"
           + (f" (stale ground truth: {', '.join(row['stale'])})" if row["stale"] else "")]
    for f in row["ranking"]:
        s = row["stats"][f]
        eq = [x for x in s.get("equal_lrs", []) if x != s["best_lr"]]
        out.append(f"   {f:20s} time-to-target {_fmt_t(s['time']):>7s}  best lr {s['best_lr']:<8.3g} "
                   f"final {s['final']:.4g}" + (f"  (not resolved from: {', '.join(f'{x:g}' for x in eq)})"
                                               if eq else ""))
    for tag in ("plain", "trial"):
        if tag in row:
            r = row[tag]
            ratios = ", ".join(f"{f} {v:.2g}" for f, v in r["family_lr_ratio"].items())
            out.append(f"   recommender ({tag}): picks {r['picks']}, top lr {_lr(r['lr'])}; in best two: "
                       f"{r['in_top2']}; lr ratio {_lr(r['ratio'])} (against the nearest unresolved value: "
                       f"{_lr(r.get('ratio_resolved'))}); diverged: {r['diverged']}; "
                       f"suggested/best lr: {ratios}")
    return out


def _print_row(row):
    print("\n" + "\n".join(_detail(row)), flush=True)


def _table(rows):
    lines = ["| problem | measured ranking (time to target) | top pick, no trial (lr) | in best 2 | lr / best lr |"
             " lr / nearest unresolved | diverged | top pick, trial (lr) | in best 2 | lr / best lr |"
             " lr / nearest unresolved |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    ok = dict.fromkeys(("plain", "plain_lr", "plain_res", "trial", "trial_lr", "trial_res"), 0)
    for r in rows:
        pl, tr = r.get("plain", {}), r.get("trial", {})
        for tag, x in (("plain", pl), ("trial", tr)):
            ok[tag] += bool(x.get("in_top2"))
            ok[tag + "_lr"] += bool(x.get("lr_ok")) and not x.get("diverged")
            ok[tag + "_res"] += bool(x.get("lr_ok_resolved")) and not x.get("diverged")
        rank = ", ".join(f"{f} {_fmt_t(r['stats'][f]['time'])}" for f in r["ranking"][:3])
        lines.append(f"| {r['name']} | {rank} | {pl.get('top')} ({_lr(pl.get('lr'))}) | {_yn(pl.get('in_top2'))} | "
                     f"{_lr(pl.get('ratio'))} | {_lr(pl.get('ratio_resolved'))} | {_yn(pl.get('diverged'))} | "
                     f"{tr.get('top')} ({_lr(tr.get('lr'))}) | {_yn(tr.get('in_top2'))} | {_lr(tr.get('ratio'))} | "
                     f"{_lr(tr.get('ratio_resolved'))} |")
    n = len(rows)
    lines.append(f"\nno trial: top pick in best two on {ok['plain']}/{n}; lr within 3x of the best grid value and not "
                 f"diverged on {ok['plain_lr']}/{n} (of a value the measurement does not tell from the best: "
                 f"{ok['plain_res']}/{n}). with trial: top pick in best two on {ok['trial']}/{n}; lr within 3x and not "
                 f"diverged on {ok['trial_lr']}/{n} (unresolved set: {ok['trial_res']}/{n}).")
    return lines


def _write_md(rows, lines, header):
    text = ["# Recommender validation suite", "", f"`benchmarks/recommender_suite.py`: {header}.", "",
            "Measured ranking: CPU time of each family's best grid value to the target loss (median of 3 seeds). "
            "lr / best lr: the top pick's suggested lr over that family's best grid value (target: within 3x). "
            "lr / nearest unresolved: over the nearest grid value that the measurement does not tell apart from the "
            "best (median time to target within the best value's seed spread or the 0.02 s recording interval; "
            "when no value reaches the target, median final loss within the best value's seed range); the strict "
            "column is the target. "
            "Diverged: the top pick, trained with all its suggested hyperparameters on 3 seeds, exceeds 1.5x the "
            "initial loss.", ""] + lines + ["", "## Per problem", "", "```"]
    for r in rows:
        text += _detail(r) + [""]
    text.append("```")
    (RESULTS / "recommender_suite.md").write_text("\n".join(text) + "\n")


def _yn(v):
    return "n/a" if v is None else ("yes" if v else "no")


def _lr(v):
    return "n/a" if v is None else f"{v:.3g}"
