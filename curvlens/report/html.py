"""The self-contained HTML report of one analysis, plus one PNG per figure.

``report.html`` embeds every figure as a base64 PNG data URI and uses inline CSS only, so it
opens offline, from an e-mail attachment or an artifact store, with nothing beside it. All
text taken from the analysis (layer names, statuses, notes, recommendation reasons) is
HTML-escaped.
"""

from __future__ import annotations

import datetime
import logging
import os
from pathlib import Path
from typing import Any, Callable

from curvlens.io.atomic import atomic_write
from curvlens.report import _html_parts as H
from curvlens.report._format import part
from curvlens.report._mpl import png_bytes
from curvlens.report.figures import figure_density, figure_per_layer, figure_sharpness
from curvlens.report.figures_noise import figure_gradient_noise, figure_noise
from curvlens.report.figures_trials import trial_section
from curvlens.report.text import headline_rows
from curvlens.report.wording import Words, analysis_words, translate_all

__all__ = ["write_report", "render_report", "FIGURES", "REPORT_FILE"]

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"

#: (key, PNG file name, section title, caption, figure function)
FIGURES: tuple[tuple[str, str, str, str, Callable[[Any], Any]], ...] = (
    ("density", "density.png", "Spectral density",
     "Estimated eigenvalue density (|density|, log scale) with ± 1 standard error across probes; top "
     "(orange) and bottom (green) eigenvalues marked, solid when certified.", figure_density),
    ("sharpness", "sharpness.png", "Sharpness against the stability threshold",
     "Top eigenvalues (error bars: residual ||Av - λv||) against 2/lr (or (2+2·momentum)/lr); gradient "
     "descent is unstable along directions above the dashed line.", figure_sharpness),
    ("per_layer", "per_layer.png", "Curvature per layer",
     "Trace of each layer's diagonal block (± standard error, share of the total) and its largest "
     "eigenvalue.", figure_per_layer),
    ("noise", "noise.png", "Curvature noise versus batch size",
     "Relative standard error of curvature estimates from one minibatch of size B, the fitted law "
     "variance = a + b/B, the target error (dashed) and the critical batch sizes (dotted).", figure_noise),
    ("gradient_noise", "gradient_noise.png", "Gradient noise versus batch size",
     "Gradient noise-to-signal ratio B_simple/B and the predicted steps / examples trade-off "
     "(McCandlish et al. 2018).", figure_gradient_noise),
)

_PART_OF = {"density": "density", "sharpness": "sharpness", "per_layer": "per_layer", "noise": "noise",
            "gradient_noise": "gradient_noise"}


def _check_inputs(analysis: Any, recommendation: Any, title: Any) -> None:
    if not H.is_result_like(analysis):
        raise TypeError(
            f"analysis: expected an AnalysisResult (from curvlens.diagnostics.analyze or load_result), got "
            f"{type(analysis).__name__}; pass the analysis result itself"
        )
    if recommendation is not None and not (callable(getattr(recommendation, "to_dict", None))
                                           or isinstance(recommendation, dict)):
        raise TypeError(
            f"recommendation: expected a Recommendation (from curvlens.recommend.recommend), its to_dict() or "
            f"None, got {type(recommendation).__name__}; pass recommendation=recommend(analysis)"
        )
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title: expected a str or None, got {type(title).__name__}; pass e.g. title='run 3'")


def render_figures(analysis: Any) -> dict[str, bytes]:
    """PNG bytes of every figure whose part was measured, keyed as in :data:`FIGURES`."""
    out: dict[str, bytes] = {}
    for key, _, _, _, fn in FIGURES:
        fig = fn(analysis)
        if fig is not None:
            out[key] = png_bytes(fig)
    return out


def render_report(analysis: Any, *, recommendation: Any = None, title: str | None = None,
                  figures: dict[str, bytes] | None = None, words: Words | None = None) -> str:
    """The report as one HTML string (figures rendered unless ``figures`` is given).

    Args:
        analysis: an ``AnalysisResult``.
        recommendation: a ``Recommendation`` (or its ``to_dict()``) or None.
        title: page title; default ``"curvlens report"``.
        figures: PNG bytes per figure key (from :func:`render_figures`), or None to render them.
        words: rewrites every note, status and hint into the caller's interface (default
            :func:`~curvlens.report.wording.analysis_words`: ``analyze``'s arguments).
    """
    _check_inputs(analysis, recommendation, title)
    words = analysis_words if words is None else words
    trials_html = trial_section(getattr(recommendation, "trials", ()))  # figure of the trial runs, if any
    if recommendation is not None:
        d = recommendation.to_dict() if callable(getattr(recommendation, "to_dict", None)) else dict(recommendation)
        recommendation = translate_all(d, words)
    figs = render_figures(analysis) if figures is None else figures
    from curvlens.io.hdf5 import run_metadata

    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    title = title or "curvlens report"
    sub = " · ".join(x for x in (
        str(part(analysis, "curvature") or ""),
        f"{part(analysis, 'num_params'):,} parameters" if isinstance(part(analysis, "num_params"), int) else "",
        f"{part(analysis, 'num_samples'):,} samples" if isinstance(part(analysis, "num_samples"), int) else "",
        f"created {created}") if x)
    body = [f"<h1>{H.esc(title)}</h1>", f'<p class="sub">{H.esc(sub)}</p>', "<h2>Headline numbers</h2>",
            H.table(["quantity", "value", "note"], [[r[1], r[2], r[3]] for r in headline_rows(analysis, words=words)],
                    num_cols=(1,))]
    notes = [words(str(n)) for n in (part(analysis, "notes") or ())]
    unconverged = [f"{name}: {words(str(part(part(p, 'info'), 'status')))}" for name in H.PART_NAMES
                   if (p := part(analysis, name)) is not None and part(part(p, "info"), "converged") is False]
    if notes or unconverged:
        body.append("<h2>Notes</h2>" + H.ul(notes) + (H.ul(unconverged, "warn") if unconverged else ""))
    body.append("<h2>Recommendation</h2>")
    body.append(H.recommendation_html(recommendation) if recommendation is not None
                else '<p class="missing">No recommendation was computed (run curvlens recommend).</p>')
    body.append(trials_html)
    for key, fname, section, caption, _ in FIGURES:
        body.append(f'<h2 id="{key}">{H.esc(section)}</h2>')
        if key in figs:
            body.append(H.img(figs[key], section))
            body.append(f'<p class="caption">{H.esc(caption)} (also saved as <code>{H.esc(fname)}</code>)</p>')
        else:
            body.append(f'<p class="missing">{H.esc(section)}: not measured.</p>')
        p = part(analysis, _PART_OF[key])
        if key == "per_layer" and p is not None:
            body.append(H.per_layer_table(p))
        if key == "noise" and p is not None:
            body.append(H.noise_table(p))
    body.append("<h2>Run metadata</h2>")
    body.append(H.metadata_html(analysis, run_metadata(), created, words=words))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{H.esc(title)}</title>"
            f"<style>{H.CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(analysis: Any, out_dir: str | os.PathLike, *, recommendation: Any = None,
                 title: str | None = None, words: Words | None = None) -> dict[str, Path]:
    """Write ``report.html`` (figures embedded) and one PNG per measured figure into ``out_dir``.

    Everything is rendered in memory first; only then is each file written atomically
    (temporary file, fsync, rename), so a failure while plotting leaves every old file
    untouched and no file is ever half-written. PNGs of a previous report whose part was not
    measured this time are removed after the new report is in place, so the folder never
    mixes figures of two runs.

    Args:
        analysis: an ``AnalysisResult`` (parts that are None are reported as "not measured").
        out_dir: output folder; created (with parents) when missing.
        recommendation: a ``Recommendation`` (from :func:`curvlens.recommend.recommend`), its
            ``to_dict()``, or None.
        title: page title; default ``"curvlens report"``.
        words: rewrites every note and hint into the caller's interface (see :func:`render_report`).

    Returns:
        ``{"html": Path("out/report.html"), "density": Path("out/density.png"), ...}``: the
        report and each PNG written.

    Raises:
        TypeError: ``analysis``, ``recommendation``, ``title`` or ``out_dir`` has a wrong type.
        NotADirectoryError: ``out_dir`` exists and is not a folder.

    Example (``analysis`` from :func:`curvlens.analyze`)::

        paths = write_report(analysis, "runs/ckpt10", recommendation=rec)
        sorted(paths)  # ['density', 'html', 'sharpness']

    A :class:`~curvlens.io.series.CurvatureSeries` (a monitor's ``run.h5``) is drawn by
    :func:`curvlens.report.figures_series.write_series_report` instead.
    """
    from curvlens.report.figures_series import is_series, write_series_report

    if is_series(analysis):
        return write_series_report(analysis, out_dir, title=title)
    _check_inputs(analysis, recommendation, title)
    out = _prepare_dir(out_dir)
    figs = render_figures(analysis)
    page = render_report(analysis, recommendation=recommendation, title=title, figures=figs, words=words)
    written: dict[str, Path] = {}
    for key, fname, *_ in FIGURES:
        if key in figs:
            with atomic_write(out / fname, "wb") as f:
                f.write(figs[key])
            written[key] = out / fname
    with atomic_write(out / REPORT_FILE, "w", encoding="utf-8") as f:
        f.write(page)
    written["html"] = out / REPORT_FILE
    for key, fname, *_ in FIGURES:
        if key not in figs and (out / fname).is_file():
            (out / fname).unlink()
            logger.info("write_report: removed stale %s (not measured in this analysis)", out / fname)
    return written


def _prepare_dir(out_dir: Any) -> Path:
    if not isinstance(out_dir, (str, os.PathLike)) or str(out_dir) == "":
        raise TypeError(f"out_dir: expected a folder path (str or os.PathLike), got {out_dir!r}; "
                        "pass e.g. out_dir='runs/report'")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out_dir: {str(out)!r} exists and is not a folder; pass a folder path")
    out.mkdir(parents=True, exist_ok=True)
    return out
