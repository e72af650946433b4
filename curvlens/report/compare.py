"""Side-by-side comparison of several analyses (e.g. checkpoints along a training run).

:func:`comparison_table` gives a plain-text table (one column per run), :func:`compare_figure`
overlays the spectral densities and tracks ``lambda_max`` and the trace across runs, and
:func:`write_comparison` writes ``comparison.html`` (self-contained), ``comparison.png`` and
``comparison.json`` atomically. The ``curvlens compare A.h5 B.h5 ...`` command is a thin shell
over these.
"""

from __future__ import annotations

import datetime
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from curvlens.io.atomic import atomic_write, write_json_atomic
from curvlens.report import _html_parts as H
from curvlens.report._format import as_array, as_float, fmt, part, summary_dict
from curvlens.report._mpl import COLORS, new_figure, png_bytes
from curvlens.report.figures import eigen_parts
from curvlens.report.html import _prepare_dir
from curvlens.report.text import headline_rows

__all__ = ["compare_figure", "comparison_rows", "comparison_table", "comparison_warnings", "write_comparison"]


def _check(analyses: Any, labels: Any) -> tuple[list[Any], list[str]]:
    if isinstance(analyses, (str, bytes)) or not isinstance(analyses, Sequence) or len(analyses) == 0:
        raise ValueError(
            f"analyses: expected a non-empty list of AnalysisResult, got {type(analyses).__name__}"
            f"{' of length 0' if isinstance(analyses, Sequence) else ''}; load them with load_result(path)"
        )
    bad = [i for i, a in enumerate(analyses) if not H.is_result_like(a)]
    if bad:
        raise TypeError(f"analyses[{bad[0]}]: expected an AnalysisResult, got {type(analyses[bad[0]]).__name__}; "
                        "pass results of analyze(...) or load_result(path)")
    if labels is None:
        labels = [f"run {i + 1}" for i in range(len(analyses))]
    if isinstance(labels, str) or not isinstance(labels, Sequence) or len(labels) != len(analyses):
        n = len(labels) if isinstance(labels, Sequence) and not isinstance(labels, str) else type(labels).__name__
        raise ValueError(f"labels: expected one label per analysis ({len(analyses)}), got {n}; "
                         "pass e.g. labels=['step 1000', 'step 2000'] or labels=None")
    return list(analyses), [str(x) for x in labels]


def comparison_rows(analyses: Sequence[Any], labels: Sequence[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)``: one row per headline number, one column per analysis.

    Rows where no analysis has a value are dropped.
    """
    analyses, labels = _check(analyses, labels)
    per_run = [headline_rows(a) for a in analyses]
    rows = []
    for i, (_, label, _, _) in enumerate(per_run[0]):
        values = [run[i][2] for run in per_run]
        if any(v != "not measured" for v in values):
            rows.append([label, *values])
    return ["quantity", *labels], rows


def _budget(analysis: Any) -> int | None:
    import re

    m = re.search(r"of budget (\d+)", str(part(part(analysis, "info"), "status") or ""))
    return int(m.group(1)) if m else None


def comparison_warnings(analyses: Sequence[Any], labels: Sequence[str] | None = None) -> list[str]:
    """What makes the runs hard to compare, one sentence each: different budgets, dtypes or
    curvatures; a saddle index the quadrature did not resolve; an infinite critical batch size.

    Example:
        >>> from types import SimpleNamespace as Run
        >>> runs = [Run(summary=lambda: {"critical_batch_trace": float("inf")}), Run(summary=lambda: {})]
        >>> print(comparison_warnings(runs, ["a", "b"])[0])
        a: critical batch size (trace) is inf: no batch size of the study reached the target error; pass larger batch_sizes= or read it as "larger than the data"
    """
    analyses, labels = _check(analyses, labels)
    out: list[str] = []
    for what, values in (("budgets", [_budget(a) for a in analyses]),
                         ("dtypes", [part(part(a, "info"), "dtype") for a in analyses]),
                         ("curvatures", [summary_dict(a).get("curvature") for a in analyses])):
        known = {v for v in values if v is not None}
        if len(known) > 1:
            pairs = ", ".join(f"{lab}: {v}" for lab, v in zip(labels, values) if v is not None)
            out.append(f"the runs were made with different {what} ({pairs}); numbers near their tolerance "
                       "differ for that reason alone: re-run with one setting")
    for lab, a in zip(labels, analyses):
        s = summary_dict(a)
        if s.get("saddle_index") is not None and s.get("saddle_index_resolved") is False:
            b = s.get("saddle_index_bounds")
            bounds = f" (quadrature bounds [{float(b[0]):.2f}, {float(b[1]):.2f}])" if b is not None else ""
            out.append(f"{lab}: saddle index {fmt(s['saddle_index'], 2)} NOT resolved{bounds}: compare the negative "
                       "mass instead")
        for key, name in (("critical_batch_lambda_max", "λmax"), ("critical_batch_trace", "trace")):
            v = as_float(s.get(key))
            if v is not None and math.isinf(v):
                out.append(f"{lab}: critical batch size ({name}) is inf: no batch size of the study reached the "
                           'target error; pass larger batch_sizes= or read it as "larger than the data"')
    return out


def comparison_table(analyses: Sequence[Any], labels: Sequence[str] | None = None) -> str:
    """Plain-text side-by-side table of the headline numbers (with uncertainties).

    Example::

        from curvlens.io import load_result
        runs = [load_result(p) for p in ("run/epoch1/results.h5", "run/epoch9/results.h5")]
        print(comparison_table(runs, ["epoch 1", "epoch 9"]))
    """
    header, rows = comparison_rows(analyses, labels)
    table = [header, *rows]
    widths = [max(len(r[j]) for r in table) for j in range(len(header))]
    text = "\n".join("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))).rstrip()
                     for r in table)
    flags = comparison_warnings(analyses, labels)
    return text + ("\n\nwarnings:\n" + "\n".join(f"  - {w}" for w in flags) if flags else "")


def compare_figure(analyses: Sequence[Any], labels: Sequence[str] | None = None, *, floor: float = 1e-7) -> Any:
    """Overlaid spectral densities (log scale) and ``lambda_max`` / trace across the runs.

    Args:
        analyses: ``AnalysisResult`` objects, e.g. checkpoints in training order.
        labels: one legend label per analysis (default ``"run 1"``, ...).
        floor: lowest density shown, relative to the highest peak.

    Returns:
        A Figure with two panels (densities of the runs that have one; ``lambda_max`` with
        residual error bars and the trace with standard errors per run).
    """
    analyses, labels = _check(analyses, labels)
    fig, (ax, ax2) = new_figure(11.0, 4.4, ncols=2)
    peak = 0.0
    for i, (a, lab) in enumerate(zip(analyses, labels)):
        dens = part(a, "density")
        g, d = as_array(part(dens, "grid")), as_array(part(dens, "density"))
        if g is None or d is None or g.size != d.size or g.size < 2:
            continue
        d = np.abs(d)
        peak = max(peak, float(np.nanmax(d)) if np.isfinite(d).any() else 0.0)
        ax.plot(g, d, color=COLORS[i % len(COLORS)], lw=1.3, label=lab)
    if peak > 0:
        ax.set_yscale("log")
        ax.set_ylim(peak * floor, peak * 3)
        ax.legend(fontsize=8)
        ax.set_title("Spectral densities")
    else:
        ax.text(0.5, 0.5, "no spectral density measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_title("Spectral densities (not measured)")
    ax.set_xlabel("eigenvalue λ")
    ax.set_ylabel("density (log scale)")
    x = np.arange(len(analyses))
    lmax, lerr, tr, terr = (np.full(len(analyses), np.nan) for _ in range(4))
    for i, a in enumerate(analyses):
        s = summary_dict(a)
        v, r, _ = eigen_parts(part(a, "top"))
        lmax[i] = _num(s.get("lambda_max"), v[0] if v.size else None)
        lerr[i] = r[0] if r.size and math.isfinite(r[0]) else 0.0
        tr[i] = _num(s.get("trace"), part(part(a, "trace"), "estimate"))
        terr[i] = _num(s.get("trace_stderr"), part(part(a, "trace"), "stderr"))
    if np.isfinite(lmax).any():
        ax2.errorbar(x, lmax, yerr=np.nan_to_num(lerr), fmt="o-", color=COLORS[1], capsize=3, label="λmax")
    ax2.set_ylabel("λmax (± residual)", color=COLORS[1])
    handles = list(ax2.get_legend_handles_labels()[0])
    if np.isfinite(tr).any():
        ax3 = ax2.twinx()
        ax3.errorbar(x, tr, yerr=np.nan_to_num(terr), fmt="s--", color=COLORS[0], capsize=3, label="trace")
        ax3.set_ylabel("trace (± stderr)", color=COLORS[0])
        handles += ax3.get_legend_handles_labels()[0]
    if handles:
        ax2.legend(handles=handles, fontsize=8, loc="best")
    ax2.set_xlim(-0.5, len(analyses) - 0.5)
    ax2.set_xticks(x, labels, rotation=30 if len(labels) > 4 else 0, fontsize=8)
    ax2.set_title("Largest eigenvalue and trace per run")
    return fig


def _num(*xs: Any) -> float:
    for x in xs:
        f = as_float(x)
        if f is not None:
            return f
    return math.nan


def write_comparison(analyses: Sequence[Any], labels: Sequence[str] | None, out_dir: str | os.PathLike, *,
                     title: str | None = None) -> dict[str, Path]:
    """Write ``comparison.html`` (figure embedded), ``comparison.png`` and ``comparison.json``.

    Everything is rendered in memory first and each file is written atomically.

    Args:
        analyses: ``AnalysisResult`` objects (e.g. ``[load_result(p) for p in paths]``).
        labels: one label per analysis, or None for ``"run 1"``, ...
        out_dir: output folder, created when missing.
        title: page title; default ``"curvlens comparison"``.

    Returns:
        ``{"html": ..., "figure": ..., "json": ...}`` paths; for curvature time series
        (:class:`~curvlens.io.series.CurvatureSeries`) the runs' series are overlaid instead
        (:func:`curvlens.report.figures_series.write_series_comparison`, no JSON).
    """
    from curvlens.report.figures_series import is_series, write_series_comparison

    if isinstance(analyses, (list, tuple)) and analyses and all(is_series(a) for a in analyses):
        return write_series_comparison(analyses, labels, out_dir, title=title)
    analyses, labels = _check(analyses, labels)
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title: expected a str or None, got {type(title).__name__}; pass e.g. title='run 3'")
    out = _prepare_dir(out_dir)
    png = png_bytes(compare_figure(analyses, labels))
    header, rows = comparison_rows(analyses, labels)
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    title = title or "curvlens comparison"
    body = [f"<h1>{H.esc(title)}</h1>", f'<p class="sub">{len(analyses)} runs · created {H.esc(created)}</p>',
            "<h2>Headline numbers</h2>", H.table(header, rows, num_cols=tuple(range(1, len(header)))),
            H.ul(comparison_warnings(analyses, labels), "warn"),
            "<h2>Spectral densities and sharpness</h2>", H.img(png, "comparison of the runs"),
            '<p class="caption">Left: spectral densities (|density|, log scale). Right: λmax (error bars: residual) '
            "and trace (± standard error) per run. Also saved as <code>comparison.png</code>.</p>"]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{H.esc(title)}</title><style>{H.CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    doc = {"created": created, "labels": labels, "warnings": comparison_warnings(analyses, labels),
           "summaries": [summary_dict(a) for a in analyses]}
    paths = {"figure": out / "comparison.png", "json": out / "comparison.json", "html": out / "comparison.html"}
    with atomic_write(paths["figure"], "wb") as f:
        f.write(png)
    write_json_atomic(doc, paths["json"])
    with atomic_write(paths["html"], "w", encoding="utf-8") as f:
        f.write(page)
    return paths
