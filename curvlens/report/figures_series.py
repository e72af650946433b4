"""Figures and HTML pages of curvature time series (:class:`~curvlens.io.series.CurvatureSeries`).

* :func:`figure_series`: three panels against the training step: ``lambda_max`` against the
  stability threshold (``2/lr``; the preconditioned sharpness against its threshold for Adam-like
  optimizers; per-layer top eigenvalues as thin lines), the trace with ± one standard error, and
  the negative mass. Alerts are marked as vertical dotted lines.
* :func:`compare_series_figure`: the same panels with several runs overlaid.
* :func:`write_series_report` / :func:`write_series_comparison`: self-contained HTML pages
  (figures embedded) plus the PNGs, written atomically.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from curvlens.io.atomic import atomic_write
from curvlens.report import _html_parts as H
from curvlens.report._mpl import COLORS, new_figure, png_bytes

__all__ = ["figure_series", "compare_series_figure", "write_series_report", "write_series_comparison",
           "is_series"]


def is_series(x: Any) -> bool:
    """True for a :class:`~curvlens.io.series.CurvatureSeries`."""
    return getattr(type(x), "__curvlens_kind__", None) == "curvature_series"


def _col(s: Any, name: str) -> np.ndarray:
    return np.asarray(s.columns.get(name, np.full(len(s.steps), np.nan)), dtype=np.float64)


def _has(s: Any, name: str) -> bool:
    return name in s.columns and bool(np.isfinite(s.columns[name]).any())


def _draw(axes, s: Any, color: str, label: str, *, layers: bool) -> None:
    x = np.asarray(s.steps)
    ax1, ax2, ax3 = axes
    pre = _has(s, "preconditioned_sharpness")
    if _has(s, "lambda_max"):
        ax1.plot(x, _col(s, "lambda_max"), "-o", ms=3, color=color, label=f"{label} λmax".strip())
    if _has(s, "threshold") and not pre:
        ax1.plot(x, _col(s, "threshold"), "--", color=color, alpha=0.7, label=f"{label} 2/lr".strip())
    if pre:
        ax1.plot(x, _col(s, "preconditioned_sharpness"), "-s", ms=3, color=color, alpha=0.8,
                 label=f"{label} λmax(P⁻¹H)".strip())
        ax1.plot(x, _col(s, "preconditioned_threshold"), ":", color=color, label=f"{label} (2+2β₁)/((1-β₁)lr)".strip())
    if layers:
        for k in sorted(c for c in s.columns if c.startswith("layer_lambda_max:")):
            ax1.plot(x, _col(s, k), "-", lw=0.8, alpha=0.6, label=k.split(":", 1)[1])
    if _has(s, "trace"):
        t, se = _col(s, "trace"), np.nan_to_num(_col(s, "trace_stderr"))
        ax2.plot(x, t, "-o", ms=3, color=color, label=label or "trace")
        ax2.fill_between(x, t - se, t + se, color=color, alpha=0.2)
    if _has(s, "negative_mass"):
        m, se = _col(s, "negative_mass"), np.nan_to_num(_col(s, "negative_mass_stderr"))
        ax3.plot(x, m, "-o", ms=3, color=color, label=label or "negative mass")
        ax3.fill_between(x, m - se, m + se, color=color, alpha=0.2)
    for st in np.asarray(s.alert_steps):
        for ax in axes:
            ax.axvline(float(st), color=color, ls=":", lw=0.8, alpha=0.6)


def _finish(fig, axes) -> Any:
    titles = ("Sharpness and stability threshold", "Trace (± stderr)", "Negative mass (± stderr)")
    for ax, t in zip(axes, titles):
        ax.set_title(t, fontsize=10)
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return fig


def figure_series(series: Any) -> Any:
    """The three panels of one series (a matplotlib Figure), or None when it has no records."""
    if not is_series(series):
        raise TypeError(f"series: expected a CurvatureSeries (load_series(path)), got {type(series).__name__}")
    if len(series.steps) == 0:
        return None
    fig, axes = new_figure(13.0, 4.0, ncols=3)
    _draw(axes, series, COLORS[0], "", layers=True)
    return _finish(fig, axes)


def compare_series_figure(series: Sequence[Any], labels: Sequence[str]) -> Any:
    """The three panels with every run overlaid (one color per run)."""
    fig, axes = new_figure(13.0, 4.0, ncols=3)
    for i, (s, lab) in enumerate(zip(series, labels)):
        _draw(axes, s, COLORS[i % len(COLORS)], lab, layers=False)
    return _finish(fig, axes)


def _rows(s: Any) -> list[list[str]]:
    names = ("lambda_max", "threshold", "eos_ratio", "preconditioned_sharpness", "trace", "negative_mass", "loss")
    out = [["records", str(len(s.steps))], ["steps", f"{int(s.steps[0])} … {int(s.steps[-1])}" if len(s.steps) else "—"],
           ["alerts", str(len(s.alert_steps))]]
    for n in names:
        if _has(s, n):
            v = _col(s, n)
            out.append([f"{n} (last / max)", f"{v[-1]:.4g} / {np.nanmax(v):.4g}"])
    return out


def _page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{H.esc(title)}</title><style>{H.CSS}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")


def _prepare(out_dir: Any) -> Path:
    if not isinstance(out_dir, (str, os.PathLike)) or str(out_dir) == "":
        raise TypeError(f"out_dir: expected a folder path (str or os.PathLike), got {out_dir!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out_dir: {str(out)!r} exists and is not a folder; pass a folder path")
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_series_report(series: Any, out_dir: str | os.PathLike, *, title: str | None = None) -> dict[str, Path]:
    """Write ``report.html`` (figure embedded) and ``series.png`` for one series.

    Returns:
        ``{"html": ..., "series": ...}`` (no ``"series"`` when the series is empty).
    """
    fig = figure_series(series)
    out = _prepare(out_dir)
    title = title or "curvlens training curvature"
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    body = [f"<h1>{H.esc(title)}</h1>", f'<p class="sub">created {H.esc(created)}</p>', "<h2>Headline numbers</h2>",
            H.table(["quantity", "value"], _rows(series), num_cols=(1,)), "<h2>Curvature along training</h2>"]
    paths: dict[str, Path] = {}
    if fig is None:
        body.append('<p class="missing">The series has no records yet.</p>')
    else:
        png = png_bytes(fig)
        body += [H.img(png, "curvature time series"),
                 '<p class="caption">λmax against the stability threshold (dashed; for Adam-like optimizers the '
                 "preconditioned sharpness against (2+2β₁)/((1-β₁)lr)), per-layer λmax (thin), trace and negative "
                 "mass with ± one standard error; dotted verticals: alerts. Also saved as <code>series.png</code>."
                 "</p>"]
        with atomic_write(out / "series.png", "wb") as f:
            f.write(png)
        paths["series"] = out / "series.png"
    if len(series.alert_steps):
        body += ["<h2>Alerts</h2>", H.table(["step", "kind", "message"], [
            [str(int(s)), str(k), str(m)] for s, k, m in zip(series.alert_steps, series.alert_kinds,
                                                             series.alert_messages)], num_cols=(0,))]
    with atomic_write(out / "report.html", "w", encoding="utf-8") as f:
        f.write(_page(title, body))
    paths["html"] = out / "report.html"
    return paths


def write_series_comparison(series: Sequence[Any], labels: Sequence[str] | None, out_dir: str | os.PathLike, *,
                            title: str | None = None) -> dict[str, Path]:
    """Write ``comparison.html`` and ``comparison.png`` with the runs' series overlaid."""
    series = list(series)
    if len(series) < 2 or not all(is_series(s) for s in series):
        raise TypeError("series: expected two or more CurvatureSeries (load_series(path) for each run), got "
                        f"{[type(s).__name__ for s in series]}")
    labels = list(labels) if labels is not None else [f"run {i + 1}" for i in range(len(series))]
    if len(labels) != len(series):
        raise ValueError(f"labels: expected {len(series)} labels (one per series), got {len(labels)}")
    out = _prepare(out_dir)
    png = png_bytes(compare_series_figure(series, labels))
    title = title or "curvlens comparison"
    rows = [[lab] + [r[1] for r in _rows(s)[:3]] + [f"{np.nanmax(_col(s, 'lambda_max')):.4g}"
                                                     if _has(s, "lambda_max") else "—"]
            for s, lab in zip(series, labels)]
    body = [f"<h1>{H.esc(title)}</h1>", H.table(["run", "records", "steps", "alerts", "max λmax"], rows,
                                                num_cols=(1, 3, 4)),
            "<h2>Curvature along training</h2>", H.img(png, "comparison of the runs"),
            '<p class="caption">Runs overlaid (one color each). Also saved as <code>comparison.png</code>.</p>']
    with atomic_write(out / "comparison.png", "wb") as f:
        f.write(png)
    with atomic_write(out / "comparison.html", "w", encoding="utf-8") as f:
        f.write(_page(title, body))
    return {"figure": out / "comparison.png", "html": out / "comparison.html"}

