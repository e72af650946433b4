"""Figures and reports of curvature analyses.

* :func:`write_report` writes a self-contained ``report.html`` (figures embedded as base64
  PNGs, readable offline) and one PNG per figure, atomically.
* ``figure_*`` functions return :class:`matplotlib.figure.Figure` objects (or None when the
  part was not measured). They never import pyplot nor change the matplotlib backend;
  matplotlib is imported on the first figure, not with curvlens.
* :func:`summary_table` is the plain-text headline table for a terminal.
* :func:`compare_figure`, :func:`comparison_table`, :func:`write_comparison` compare several
  analyses (checkpoints along a run).
"""

from curvlens.report.compare import compare_figure, comparison_rows, comparison_table, write_comparison
from curvlens.report.figures import figure_density, figure_per_layer, figure_sharpness
from curvlens.report.figures_noise import figure_gradient_noise, figure_noise, fitted_rstderr
from curvlens.report.html import FIGURES, REPORT_FILE, render_report, write_report
from curvlens.report.text import headline_rows, summary_table

__all__ = [
    "write_report", "render_report", "summary_table", "headline_rows",
    "figure_density", "figure_sharpness", "figure_per_layer", "figure_noise", "figure_gradient_noise",
    "fitted_rstderr", "compare_figure", "comparison_table", "comparison_rows", "write_comparison",
    "FIGURES", "REPORT_FILE",
]
