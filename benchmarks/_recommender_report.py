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
    if row.get("unresolved"):
        out.append(f"   families not resolved from the best two: {', '.join(row['unresolved'])}")
    for tag in ("plain", "trial"):
        if tag in row:
            r = row[tag]
            ratios = ", ".join(f"{f} {v:.2g}" for f, v in r["family_lr_ratio"].items())
            out.append(f"   recommender ({tag}): picks {r['picks']}, top lr {_lr(r['lr'])}; in best two: "
                       f"{r['in_top2']}; lr ratio {_lr(r['ratio'])} (against the nearest unresolved value: "
                       f"{_lr(r.get('ratio_resolved'))}); diverged: {r['diverged']}; "
                       f"suggested/best lr: {ratios}")
            if tag == "trial":
                for seed, x in list(row.get("trial_seeds", {}).items())[1:]:
                    out.append(f"   recommender (trial seed {seed}): top {x['top']} lr {_lr(x['lr'])}; in best two: "
                               f"{x['in_top2']}; lr ratio {_lr(x['ratio'])} (nearest unresolved "
                               f"{_lr(x.get('ratio_resolved'))}); advice as given ranks {x.get('advice_rank')}")
            if r.get("advice_rank") is not None:
                out.append(f"   advice as given ({tag}; all its hyperparameters, every"
                           f" seed): time to target {_fmt_t(r['advice_time'])}, final {r['advice_final']:.4g}; "
                           f"would rank {r['advice_rank']} of {len(row['ranking'])} among the other families")
    return out


def _print_row(row):
    print("\n" + "\n".join(_detail(row)), flush=True)


def _table(rows):
    lines = ["| problem | measured ranking (time to target) | top pick, no trial (lr) | in best 2 (unresolved) |"
             " lr / best lr | lr / nearest unresolved | advice as given ranks | diverged | top pick, trial (lr) |"
             " in best 2 (unresolved) | lr / best lr | lr / nearest unresolved | advice as given ranks |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    ok = dict.fromkeys(("plain", "plain_fam", "plain_lr", "plain_res", "plain_adv",
                        "trial", "trial_fam", "trial_lr", "trial_res", "trial_adv"), 0)
    for r in rows:
        pl, tr = r.get("plain", {}), r.get("trial", {})
        for tag, x in (("plain", pl), ("trial", tr)):
            ok[tag] += bool(x.get("in_top2"))
            ok[tag + "_fam"] += bool(x.get("in_top2_resolved"))
            ok[tag + "_lr"] += bool(x.get("lr_ok")) and not x.get("diverged")
            ok[tag + "_res"] += bool(x.get("lr_ok_resolved")) and not x.get("diverged")
            ok[tag + "_adv"] += x.get("advice_rank") is not None and x["advice_rank"] <= 2
        rank = ", ".join(f"{f} {_fmt_t(r['stats'][f]['time'])}" for f in r["ranking"][:3])
        cells = [r["name"], rank]
        for x in (pl, tr):
            cells += [f"{x.get('top')} ({_lr(x.get('lr'))})",
                      f"{_yn(x.get('in_top2'))} ({_yn(x.get('in_top2_resolved'))})", _lr(x.get("ratio")),
                      _lr(x.get("ratio_resolved")), "n/a" if x.get("advice_rank") is None else str(x["advice_rank"])]
            if x is pl:
                cells.append(_yn(pl.get("diverged")))
        lines.append("| " + " | ".join(cells) + " |")
    n = len(rows)
    for tag, name in (("plain", "no trial"), ("trial", "with trial")):
        lines.append(f"\n{name}: top pick in best two on {ok[tag]}/{n} (among the families the measurement does not "
                     f"tell from the best two: {ok[tag + '_fam']}/{n}); lr within 3x of the best grid value and not "
                     f"diverged on {ok[tag + '_lr']}/{n} (of a value the measurement does not tell from the best: "
                     f"{ok[tag + '_res']}/{n}); the advice as given (all its hyperparameters) ranks first or second on "
                     f"{ok[tag + '_adv']}/{n}.")
    seeds = list(rows[0].get("trial_seeds", {})) if rows else []
    if len(seeds) > 1:
        per = []
        for s in seeds:
            xs = [r["trial_seeds"][s] for r in rows if s in r.get("trial_seeds", {})]
            per.append(f"seed {s}: best two {sum(bool(x['in_top2']) for x in xs)}/{n}, lr within 3x "
                       f"{sum(bool(x['lr_ok']) and not x['diverged'] for x in xs)}/{n} (unresolved set "
                       f"{sum(bool(x['lr_ok_resolved']) and not x['diverged'] for x in xs)}/{n}), advice as given first "
                       f"or second {sum(x.get('advice_rank') is not None and x['advice_rank'] <= 2 for x in xs)}/{n}")
        lines.append("with trial, per trial seed (the table shows the first): " + "; ".join(per) + ".")
    return lines


def _write_md(rows, lines, header):
    text = ["# Recommender validation suite", "", f"`benchmarks/recommender_suite.py`: {header}.", "",
            "Measured ranking: CPU time of each family's best grid value to the target loss (median of 5 seeds). "
            "lr / best lr: the top pick's suggested lr over that family's best grid value (target: within 3x). "
            "lr / nearest unresolved: over the nearest grid value that the measurement does not tell apart from the "
            "best (median time to target within the best value's seed spread or the 0.02 s recording interval; "
            "when no value reaches the target, median final loss within the best value's seed range); the strict "
            "column is the target. "
            "In best 2 (unresolved): the strict column is the target; in brackets, whether the pick is among the "
            "families whose median time to target lies within the second best's resolution (its seed spread or the "
            "recording interval). Advice as given ranks: the top pick trained with all its suggested "
            "hyperparameters (K-FAC's damping, say, not the grid's fixed settings) on 5 seeds, its median time to "
            "target placed among the other families' best grid values (1: faster than every other family). "
            "Diverged: that run exceeds 1.5x the initial loss on a seed.", ""] + lines + ["", "## Per problem", "", "```"]
    for r in rows:
        text += _detail(r) + [""]
    text.append("```")
    (RESULTS / "recommender_suite.md").write_text("\n".join(text) + "\n")


def _yn(v):
    return "n/a" if v is None else ("yes" if v else "no")


def _lr(v):
    return "n/a" if v is None else f"{v:.3g}"
