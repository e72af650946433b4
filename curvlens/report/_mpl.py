"""Matplotlib access without touching the user's backend.

Figures are created as plain :class:`matplotlib.figure.Figure` objects attached to an Agg
canvas: no pyplot, no ``matplotlib.use``, no global figure registry. So importing or using
:mod:`curvlens.report` never changes the backend a user chose, works on machines without a
display, and leaks no figures (a figure is freed when the last reference to it goes).
Matplotlib itself is imported lazily, on the first figure, not when curvlens is imported.
"""

from __future__ import annotations

import io
from typing import Any

__all__ = ["new_figure", "png_bytes", "PNG_SIGNATURE", "COLORS"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: colorblind-friendly palette (Okabe & Ito)
COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")


def new_figure(width: float = 7.0, height: float = 4.2, *, ncols: int = 1) -> tuple[Any, list]:
    """A Figure on an Agg canvas with ``ncols`` axes side by side: ``(fig, [ax, ...])``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    for ax in axes:
        ax.grid(True, which="major", alpha=0.3)
    return fig, axes


def png_bytes(fig: Any, *, dpi: int = 110) -> bytes:
    """Render ``fig`` to PNG bytes (in memory)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    data = buf.getvalue()
    if not data.startswith(PNG_SIGNATURE):  # pragma: no cover - matplotlib always writes PNG here
        raise RuntimeError("png_bytes: matplotlib did not produce a PNG")
    return data
