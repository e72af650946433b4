"""The figure of a recommendation's trial runs: full-data loss against CPU seconds.

One colour per candidate; its best learning rate of the bracket solid, the others dashed,
diverged runs ending in a cross. :func:`trial_section` is the HTML section of the report.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from curvlens.report._mpl import COLORS, new_figure, png_bytes

__all__ = ["figure_trials", "trial_section"]

CAPTION = ("Trial runs of the top candidates from the same weights: full-data loss against CPU seconds spent in "
           "optimizer steps, each candidate over a learning-rate bracket around its advice (solid: the best lr, "
           "dashed: the others, x: diverged). Candidates are re-ranked by loss decrease per second.")


def figure_trials(trials: Sequence[Any]) -> Any:
    """A Figure of the trial curves, or None when there are no trials.

    Example:
        >>> figure_trials(()) is None
        True
    """
    trials = list(trials or ())
    if not trials:
        return None
    fig, (ax,) = new_figure()
    for k, t in enumerate(trials):
        color = COLORS[k % len(COLORS)]
        for i, lr in enumerate(np.asarray(t.lrs)):
            sel = np.asarray(t.run_index) == i
            x, y = np.asarray(t.seconds)[sel], np.asarray(t.losses)[sel]
            best = float(lr) == float(t.best_lr)
            ax.plot(x, y, color=color, linestyle="-" if best else "--", linewidth=2.0 if best else 1.0,
                    alpha=1.0 if best else 0.6, label=f"{t.label} lr={float(lr):.3g}" + (" (best)" if best else ""))
            if bool(np.asarray(t.diverged)[i]) and x.size:
                ax.plot(x[-1:], np.minimum(y[-1:], np.nanmax(y[np.isfinite(y)]) if np.isfinite(y).any() else 1.0),
                        "x", color=color)
    finite = np.concatenate([np.asarray(t.losses)[np.isfinite(t.losses)] for t in trials])
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 20:
        ax.set_yscale("log")
    ax.set_xlabel("CPU seconds in optimizer steps")
    ax.set_ylabel("full-data loss")
    ax.set_title("Trial runs")
    ax.legend(fontsize=7, ncol=2)
    return fig


def trial_section(trials: Sequence[Any]) -> str:
    """The report's HTML for the trial runs (``""`` when there are none)."""
    fig = figure_trials(trials)
    if fig is None:
        return ""
    from curvlens.report import _html_parts as H

    rows = [[t.label, f"{t.best_lr:.3g}", f"{t.rate:.3g}", str(t.steps),
             ", ".join("diverged" if d else f"{r:.3g}" for r, d in zip(t.rates, t.diverged))] for t in trials]
    return ('<h2 id="trials">Trial runs</h2>' + H.img(png_bytes(fig), "Trial runs")
            + f'<p class="caption">{H.esc(CAPTION)}</p>'
            + H.table(["candidate", "best lr", "loss decrease / s", "steps per run", "per lr"], rows))
