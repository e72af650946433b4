"""Figures of one analysis: spectral density, sharpness against ``2/lr``, per-layer curvature.

Every ``figure_*`` function takes an ``AnalysisResult`` (or any object with the same
attributes) and returns a :class:`matplotlib.figure.Figure`, or ``None`` when the part it
draws was not measured. Figures are built without pyplot (see :mod:`curvlens.report._mpl`),
so they never change the user's matplotlib backend; save one with ``fig.savefig("x.png")``.
The noise figures are in :mod:`curvlens.report.figures_noise`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from curvlens.report._format import as_array, as_float, fmt, fmt_pm, part
from curvlens.report._mpl import COLORS, new_figure

__all__ = ["figure_density", "figure_sharpness", "figure_per_layer", "eigen_parts", "display_density"]

_MAX_BARS = 30


def eigen_parts(eig: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(eigenvalues, residuals, certified)`` of an EigenResult-like part (empty when None)."""
    vals = as_array(part(eig, "eigenvalues"))
    if vals is None:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=bool)
    vals = vals.reshape(-1)
    res = as_array(part(eig, "residuals"))
    res = res.reshape(-1) if res is not None and res.size == vals.size else np.full(vals.size, np.nan)
    conv = part(eig, "converged")
    conv = as_array(conv) if conv is not None else None
    cert = conv.reshape(-1).astype(bool) if conv is not None and conv.size == vals.size else np.zeros(vals.size, bool)
    return vals, res, cert


def _density_part(obj: Any) -> Any:
    return obj if part(obj, "grid") is not None and part(obj, "density") is not None else part(obj, "density")


def _mark_eigenvalues(ax: Any, vals: np.ndarray, cert: np.ndarray, color: str, what: str) -> None:
    for i, (v, c) in enumerate(zip(vals, cert)):
        if not math.isfinite(v):
            continue
        label = None
        if i == 0:
            label = f"{what} eigenvalue{'s' if vals.size > 1 else ''} ({int(cert.sum())}/{vals.size} certified)"
        ax.axvline(v, color=color, lw=1.1 if c else 1.0, ls="-" if c else ":", alpha=0.6, zorder=1, label=label)


def display_density(grid: np.ndarray, density: np.ndarray, sigma: float | None, *,
                    points: float = 80.0) -> tuple[np.ndarray, float]:
    """The density smoothed for display to a width of ``(grid[-1] - grid[0]) / points``.

    A density broadened by a Gaussian narrower than the spacing of its quadrature nodes draws as
    a comb of spikes; convolving it (on its uniform grid) with a second Gaussian of standard
    deviation ``sqrt(target**2 - sigma**2)`` gives the density broadened by ``target``, mass
    preserved. Returns ``(density, target)``, or ``(density, 0.0)`` unchanged when it is already
    that smooth or the grid is not uniform.

    Example:
        >>> g = np.linspace(-1, 1, 401)
        >>> comb = ((np.abs(g * 20 - np.round(g * 20)) < 1e-9) & (np.abs(g) < 0.9)).astype(float)
        >>> smooth, width = display_density(g, comb, 1e-3)
        >>> round(width, 3), bool(smooth.max() < comb.max()), round(float(smooth.sum() / comb.sum()), 2)
        (0.025, True, 1.0)
    """
    if grid.size < 3:
        return density, 0.0
    step = np.diff(grid)
    if not np.allclose(step, step[0], rtol=1e-6, atol=0):
        return density, 0.0
    target = float(grid[-1] - grid[0]) / points
    s = 0.0 if sigma is None or not math.isfinite(sigma) else float(sigma)
    if s >= target or target <= 0:
        return density, 0.0
    extra = math.sqrt(target**2 - s**2) / float(step[0])
    half = int(math.ceil(4 * extra))
    x = np.arange(-half, half + 1)
    kernel = np.exp(-0.5 * (x / extra) ** 2)
    kernel /= kernel.sum()
    return np.convolve(np.nan_to_num(density), kernel, mode="same"), target


def figure_density(analysis: Any, *, floor: float = 1e-7) -> Any:
    """Estimated spectral density on a log y-axis with the top/bottom eigenvalues marked.

    The smoothed density (and its across-probe standard error band) is drawn as ``|density|``
    on a logarithmic y-axis clipped at ``floor * max|density|``, so isolated outliers and
    the negative part of an indefinite Hessian stay visible next to the bulk. Certified
    eigenvalues (residual within tolerance) are solid lines, uncertified ones dotted.

    Args:
        analysis: an ``AnalysisResult`` (uses ``.density``, ``.top``, ``.bottom``) or a
            ``DensityResult``.
        floor: lowest density shown, relative to the peak.

    Returns:
        A Figure, or None when no density was measured.

    Example::

        fig = figure_density(analysis)
        fig.savefig("density.png")
    """
    dens = _density_part(analysis)
    grid, d = as_array(part(dens, "grid")), as_array(part(dens, "density"))
    if grid is None or d is None or grid.size < 2 or grid.size != d.size:
        return None
    se = as_array(part(dens, "density_stderr"))
    sigma = as_float(part(dens, "sigma"))
    d, smooth = display_density(grid, d, sigma)
    if smooth and se is not None and se.size == d.size:
        se = display_density(grid, se, sigma)[0]
    fig, (ax,) = new_figure(7.5, 4.4)
    d = np.abs(d)
    peak = float(np.nanmax(d)) if np.isfinite(d).any() and np.nanmax(d) > 0 else 1.0
    lo = peak * floor
    if se is not None and se.size == d.size and np.isfinite(se).any():
        ax.fill_between(grid, np.clip(d - se, lo, None), np.clip(d + se, lo, None), color=COLORS[0],
                        alpha=0.2, lw=0, label="± 1 standard error (probes)")
    ax.plot(grid, np.clip(d, lo, None), color=COLORS[0], lw=1.4, label="density", zorder=3)
    ax.set_yscale("log")
    ax.set_ylim(lo, peak * 3)
    top_v, _, top_c = eigen_parts(part(analysis, "top"))
    bot_v, _, bot_c = eigen_parts(part(analysis, "bottom"))
    _mark_eigenvalues(ax, top_v, top_c, COLORS[1], "top")
    _mark_eigenvalues(ax, bot_v, bot_c, COLORS[2], "bottom")
    xs = [grid[0], grid[-1], *[v for v in np.concatenate([top_v, bot_v]) if math.isfinite(v)]]
    x0, x1 = min(xs), max(xs)
    pad = 0.03 * (x1 - x0 if x1 > x0 else 1.0)
    ax.set_xlim(x0 - pad, x1 + pad)
    if x0 < 0 < x1:
        ax.axvline(0.0, color="0.4", lw=0.8, ls="--")
    nodes = as_array(part(dens, "nodes"))
    method = str(part(dens, "method") or "").upper()
    probes = nodes.shape[0] if nodes is not None and nodes.ndim == 2 else None
    pilot = "deflation pilot" in str(part(part(dens, "info"), "status") or "")
    probe_text = (f"{probes + 1} probes: 1 deflation pilot + {probes} averaged" if probes and pilot
                  else f"{probes} probes" if probes else "")
    sigma_text = f"σ = {fmt(sigma, 3)}" if sigma else ""
    if smooth:
        sigma_text = f"σ = {fmt(sigma, 3)}, shown smoothed to {fmt(smooth, 3)}"
    bits = [b for b in (method, probe_text, sigma_text) if b]
    ax.set_title("Spectral density" + (f" ({', '.join(bits)})" if bits else ""))
    ax.set_xlabel("eigenvalue λ")
    ax.set_ylabel("density (log scale)")
    neg = _negative_fraction(dens)
    if neg is not None:
        ax.text(0.01, 0.97, f"fraction of negative eigenvalues: {neg}", transform=ax.transAxes, va="top",
                fontsize=8, bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8, "lw": 0.3})
    fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    return fig


def _negative_fraction(dens: Any) -> str | None:
    fn = getattr(dens, "fraction_below", None)
    if not callable(fn):
        return None
    try:
        est = fn(0.0)
    except Exception:  # noqa: BLE001 - a label is not worth failing the figure
        return None
    return fmt_pm(est, getattr(est, "stderr", None), 3)


def _sharpness_numbers(analysis: Any) -> dict[str, Any]:
    sh = part(analysis, "sharpness")
    lr = as_float(part(sh, "lr"))
    lr = lr if lr is not None else as_float(part(analysis, "lr"))
    mom = as_float(part(sh, "momentum"))
    mom = mom if mom is not None else as_float(part(analysis, "momentum"))
    thr = as_float(part(sh, "threshold"))
    if thr is None and lr is not None and lr > 0:
        thr = (2.0 + 2.0 * (mom or 0.0)) / lr
    return {"lr": lr, "momentum": mom, "threshold": thr, "ratio": as_float(part(sh, "ratio")),
            "stable": part(sh, "stable"), "lambda_max": as_float(part(sh, "lambda_max"))}


def figure_sharpness(analysis: Any) -> Any:
    """Top eigenvalues (with residual error bars) against the stability threshold ``2/lr``.

    Gradient descent with learning rate ``lr`` is stable on a quadratic only while
    ``lambda_max < 2/lr`` (heavy-ball momentum ``mu``: ``(2 + 2 mu)/lr``); Cohen et al.,
    "Gradient descent on neural networks typically occurs at the edge of stability", ICLR 2021.
    The region above the threshold is shaded.

    Returns:
        A Figure, or None when neither top eigenvalues nor a sharpness result were measured.
    """
    vals, res, cert = eigen_parts(part(analysis, "top"))
    n = _sharpness_numbers(analysis)
    if vals.size == 0 and n["lambda_max"] is not None:
        vals, res, cert = np.array([n["lambda_max"]]), np.array([np.nan]), np.array([False])
    if vals.size == 0:
        return None
    fig, (ax,) = new_figure(6.5, 4.2)
    idx = np.arange(1, vals.size + 1)
    err = np.where(np.isfinite(res), res, 0.0)
    for mask, label, mk in ((cert, "certified", "o"), (~cert, "not certified", "x")):
        if mask.any():
            ax.errorbar(idx[mask], vals[mask], yerr=err[mask], fmt=mk, color=COLORS[0], capsize=3,
                        label=f"top eigenvalues ({label})")
    thr = n["threshold"]
    finite = vals[np.isfinite(vals)]
    hi = max([*finite.tolist(), thr or 0.0, 1e-300])
    positive = finite.size > 0 and finite.min() > 0
    use_log = positive and thr is not None and thr > 0 and (thr / finite.max() > 20 or finite.max() / thr > 20)
    if thr is not None and math.isfinite(thr):
        mom = n["momentum"]
        what = "(2+2μ)/lr" if mom else "2/lr"
        ax.axhline(thr, color=COLORS[1], lw=1.6, ls="--", label=f"stability threshold {what} = {fmt(thr)}")
        ax.axhspan(thr, hi * (3 if use_log else 1.15), color=COLORS[1], alpha=0.08, lw=0)
        ratio = n["ratio"] if n["ratio"] is not None else (vals[0] / thr if thr else None)
        stable = n["stable"] if n["stable"] is not None else (ratio is not None and ratio < 1)
        ax.set_title(f"Sharpness: λmax / threshold = {fmt(ratio, 3)} ({'stable' if stable else 'UNSTABLE'})")
    else:
        ax.set_title("Sharpness (no learning rate given: no stability threshold)")
    if use_log:
        ax.set_yscale("log")
        ax.set_ylim(min(finite.min(), thr) / 2, hi * 3)
    else:
        low = min(0.0, float(finite.min()) * 1.1) if finite.size else 0.0
        ax.set_ylim(low, hi * 1.15 if hi > 0 else 1.0)
    ax.set_xticks(idx)
    ax.set_xlim(0.5, vals.size + 0.5)
    ax.set_xlabel("eigenvalue rank (1 = largest)")
    ax.set_ylabel("eigenvalue λ")
    ax.legend(loc="best", fontsize=8)
    return fig


def figure_per_layer(analysis: Any, *, max_bars: int = _MAX_BARS) -> Any:
    """Per-layer (per-block) trace with standard errors and per-layer largest eigenvalue.

    Left: the trace of each diagonal block (± standard error), annotated with its share of the
    total trace. Right: the largest eigenvalue of each diagonal block (± residual). Blocks are sorted by ``|trace|``; beyond ``max_bars`` the rest are summarized in the title.
    Bars are annotated with each block's share of the total.

    Returns:
        A Figure, or None when no per-layer result was measured.
    """
    pl = part(analysis, "per_layer")
    names = part(pl, "block_names")
    tr = as_array(part(pl, "traces"))
    if not names or tr is None or tr.size != len(names):
        return None
    names = [str(x) for x in names]
    se = _same_size(as_array(part(pl, "trace_stderr")), tr.size)
    lmax = _same_size(as_array(part(pl, "lambda_max")), tr.size)
    tshare = _same_size(as_array(part(pl, "trace_share")), tr.size)
    has_lmax = bool(np.isfinite(lmax).any())
    order = np.argsort(-np.nan_to_num(np.abs(tr), nan=-1.0), kind="stable")
    shown = order[: max(int(max_bars), 1)][::-1]
    fig, axes = new_figure(9.5 if has_lmax else 6.5, 1.4 + 0.3 * shown.size, ncols=2 if has_lmax else 1)
    y = np.arange(shown.size)
    labels = [names[i] if len(names[i]) <= 28 else "…" + names[i][-27:] for i in shown]
    ax = axes[0]
    ax.barh(y, np.nan_to_num(tr[shown]), xerr=np.nan_to_num(se[shown]), color=COLORS[0], capsize=2)
    for yi, i in zip(y, shown):
        if math.isfinite(tshare[i]) and math.isfinite(tr[i]):
            end = tr[i] + math.copysign(se[i] if math.isfinite(se[i]) else 0.0, tr[i])
            ax.annotate(f"{100 * tshare[i]:.1f}%", (end, yi), xytext=(4 if tr[i] >= 0 else -4, 0),
                        textcoords="offset points", va="center", ha="left" if tr[i] >= 0 else "right",
                        fontsize=7, color="0.15")
    ax.margins(x=0.12)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("trace (± standard error)")
    ax.axvline(0.0, color="0.4", lw=0.8)
    if has_lmax:
        lres = _same_size(as_array(part(pl, "lambda_max_residual")), tr.size)
        axes[1].barh(y, np.nan_to_num(lmax[shown]), xerr=np.nan_to_num(lres[shown]), color=COLORS[1], capsize=2)
        axes[1].set_yticks(y, [""] * y.size)
        axes[1].set_xlabel("largest eigenvalue of the block")
        axes[1].axvline(0.0, color="0.4", lw=0.8)
    more = len(names) - shown.size
    fig.suptitle("Curvature per layer" + (f" (top {shown.size} by |trace|; {more} more)" if more > 0 else ""))
    return fig


def _same_size(a: np.ndarray | None, n: int) -> np.ndarray:
    if a is None or a.size != n:
        return np.full(n, np.nan)
    return a.reshape(-1)
