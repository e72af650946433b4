"""Figures of the batch-size studies: curvature noise and gradient noise versus batch size.

``figure_noise`` draws the relative standard error of single-minibatch curvature estimates
(``lambda_max``, trace, ...) against the batch size ``B`` on log-log axes, with the fitted law
``variance(B) = a + b / B``, the target relative error, and the critical batch sizes (where
the fitted error falls below the target). ``figure_gradient_noise`` draws the gradient
noise-to-signal ratio ``B_simple / B`` and the steps / examples trade-off of McCandlish et al.,
"An empirical model of large-batch training", arXiv:1812.06162 (2018).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from curvlens.report._format import as_array, as_float, fmt, part
from curvlens.report._mpl import COLORS, new_figure

__all__ = ["figure_noise", "figure_gradient_noise", "fitted_rstderr"]


def fitted_rstderr(a: float, b: float, full: float, batch: np.ndarray) -> np.ndarray:
    """Relative standard error of the fitted law: ``sqrt(max(a + b/B, 0)) / |full|``.

    ``a + b/B`` is the fitted variance of a single-minibatch estimate across minibatches
    of size ``B`` and ``full`` the full-data value (NaN when it is 0 or not finite).
    """
    batch = np.asarray(batch, dtype=np.float64)
    if not (math.isfinite(a) and math.isfinite(b) and math.isfinite(full)) or full == 0:
        return np.full(batch.shape, np.nan)
    return np.sqrt(np.clip(a + b / batch, 0.0, None)) / abs(full)


def figure_noise(analysis: Any) -> Any:
    """Relative error of minibatch curvature estimates versus batch size, with the fitted law.

    Points are the measured ``std / |full-data value|`` over ``num_draws`` independent
    minibatches per size (error bars: the sampling error of a standard deviation,
    ``rstderr / sqrt(2 (num_draws - 1))``); lines are the fitted ``a + b/B`` law; the dashed
    horizontal line is the target relative error and the dotted vertical lines the critical
    batch sizes (omitted, and said so in the legend, when the target is never reached).

    Returns:
        A Figure, or None when no batch-size study was measured.
    """
    nz = part(analysis, "noise")
    batch = as_array(part(nz, "batch_sizes"))
    rse = as_array(part(nz, "rstderr"))
    names = part(nz, "quantities")
    if batch is None or rse is None or not names or batch.size == 0:
        return None
    batch = batch.reshape(-1)
    rse = rse.reshape(len(names), -1) if rse.size == len(names) * batch.size else None
    if rse is None:
        return None
    q = len(names)
    full, fa, fb, crit = (_vec(part(nz, k), q) for k in ("full_values", "fit_a", "fit_b", "critical_batch"))
    draws = part(nz, "num_draws")
    draws = int(draws) if isinstance(draws, (int, np.integer)) and not isinstance(draws, bool) else 0
    target = as_float(part(nz, "target_rstderr"))
    fig, (ax,) = new_figure(7.0, 4.4)
    finite_crit = [c for c in crit if math.isfinite(c) and c > 0]
    lo, hi = float(batch.min()), float(batch.max())
    hi_plot = max([hi, *finite_crit])
    fine = np.geomspace(max(lo / 1.5, 1e-12), hi_plot * 1.5, 200)
    for i, name in enumerate(names):
        color = COLORS[i % len(COLORS)]
        y = rse[i]
        ok = np.isfinite(y) & (y > 0)
        yerr = y[ok] / math.sqrt(2 * (draws - 1)) if draws > 1 else None
        ax.errorbar(batch[ok], y[ok], yerr=yerr, fmt="o", color=color, capsize=2, ms=4,
                    label=f"{name} (measured)")
        fit = fitted_rstderr(fa[i], fb[i], full[i], fine)
        if np.isfinite(fit).any() and (fit > 0).any():
            ax.plot(fine, np.where(fit > 0, fit, np.nan), color=color, lw=1.2, alpha=0.8,
                    label=f"{name} fit: var = {fmt(fa[i], 3)} + {fmt(fb[i], 3)}/B")
        c = crit[i]
        if math.isfinite(c) and c > 0:
            ax.axvline(c, color=color, ls=":", lw=1.3, label=f"critical batch ({name}) = {fmt(c, 3)}")
        elif target is not None:
            ax.plot([], [], " ", label=f"{name}: target not reached (critical batch {fmt(c)})")
    if target is not None and math.isfinite(target) and target > 0:
        ax.axhline(target, color="0.3", ls="--", lw=1.0, label=f"target relative error = {fmt(target, 3)}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size B")
    ax.set_ylabel("relative std. error of a minibatch estimate")
    notes = f" ({draws} minibatches per size)" if draws else ""
    ax.set_title("Curvature noise versus batch size" + notes)
    ax.legend(loc="best", fontsize=7)
    return fig


def _vec(x: Any, n: int) -> list[float]:
    a = as_array(x)
    if a is None or a.size != n:
        return [math.nan] * n
    return [float(v) for v in a.reshape(-1)]


def figure_gradient_noise(analysis: Any) -> Any:
    """Gradient noise scale: noise-to-signal ratio and the steps / examples trade-off.

    With per-example gradient covariance ``Sigma`` and full gradient ``G``, a minibatch of
    size ``B`` has noise-to-signal ratio ``tr(Sigma) / (B |G|^2) = B_simple / B``. The left panel
    draws it (it crosses 1 at ``B_simple``); the right panel the predicted relative number of
    steps ``1 + B_simple/B`` and of examples ``1 + B/B_simple`` to reach a given loss
    (McCandlish et al. 2018): below ``B_simple`` larger batches save steps almost for free,
    above it they mostly cost examples.

    Returns:
        A Figure, or None when the gradient noise was not measured (or is not finite and > 0).
    """
    gn = part(analysis, "gradient_noise")
    b = as_float(part(gn, "b_simple"))
    if b is None or not math.isfinite(b) or b <= 0:
        return None
    batch = as_array(part(part(analysis, "noise"), "batch_sizes"))
    pts = [b] + ([float(v) for v in batch.reshape(-1) if v > 0] if batch is not None else [])
    lo, hi = min(min(pts), b / 30), max(max(pts), b * 30)
    n = part(analysis, "num_samples")
    if isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0:
        hi = min(hi, max(float(n), b * 2))
    lo = max(lo, 1.0) if hi > 2 else lo
    x = np.geomspace(lo, hi, 200)
    fig, axes = new_figure(10.0, 4.0, ncols=2)
    ax = axes[0]
    ax.plot(x, b / x, color=COLORS[0], lw=1.6, label="tr(Σ) / (B |G|²) = B_simple / B")
    ax.axhline(1.0, color="0.4", ls="--", lw=0.9)
    ax.axvline(b, color=COLORS[1], ls=":", lw=1.4, label=f"B_simple = {fmt(b, 3)}")
    if batch is not None and batch.size:
        ok = batch.reshape(-1)
        ok = ok[(ok >= lo) & (ok <= hi)]
        ax.plot(ok, b / ok, "o", color=COLORS[0], ms=4, label="batch sizes of the curvature study")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size B")
    ax.set_ylabel("gradient noise-to-signal ratio")
    method = part(gn, "method")
    ax.set_title("Gradient noise" + (f" ({method})" if isinstance(method, str) and method else ""))
    ax.legend(loc="best", fontsize=8)
    ax = axes[1]
    ax.plot(x, 1 + b / x, color=COLORS[0], lw=1.6, label="steps / min steps = 1 + B_simple/B")
    ax.plot(x, 1 + x / b, color=COLORS[2], lw=1.6, label="examples / min examples = 1 + B/B_simple")
    ax.axvline(b, color=COLORS[1], ls=":", lw=1.4, label="B_simple (both 2x)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size B")
    ax.set_ylabel("relative cost")
    ax.set_title("Steps / examples trade-off (McCandlish et al. 2018)")
    ax.legend(loc="best", fontsize=8)
    tr_sigma, g2 = as_float(part(gn, "trace_sigma")), as_float(part(gn, "grad_norm_sq"))
    if tr_sigma is not None and g2 is not None:
        fig.suptitle(f"tr(Σ) = {fmt(tr_sigma, 3)},  |G|² = {fmt(g2, 3)}", fontsize=9)
    return fig
