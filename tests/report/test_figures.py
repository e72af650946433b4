"""Every figure from synthetic but realistic results; what is drawn is checked, not just drawn."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest
import torch

from curvlens.operators import DenseOperator
from curvlens.estimators.density import spectral_density
from curvlens.report import (compare_figure, figure_density, figure_gradient_noise, figure_noise,
                             figure_per_layer, figure_sharpness, fitted_rstderr)
from curvlens.report._mpl import PNG_SIGNATURE, png_bytes
from tests.report._fixtures import empty_analysis, full_analysis, noise_study


def _vlines(ax) -> list[float]:
    return [float(line.get_xdata()[0]) for line in ax.lines
            if len(line.get_xdata()) == 2 and line.get_xdata()[0] == line.get_xdata()[1]]


def _hlines(ax) -> list[float]:
    return [float(line.get_ydata()[0]) for line in ax.lines
            if len(line.get_ydata()) == 2 and line.get_ydata()[0] == line.get_ydata()[1]]


def test_density_log_scale_indefinite_spectrum_with_eigenvalues_marked():
    a = full_analysis()
    assert float(a.density.nodes.min()) < 0  # indefinite: negative nodes
    fig = figure_density(a)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    curve = next(line for line in ax.lines if line.get_label() == "density")
    y = np.asarray(curve.get_ydata())
    assert np.all(y > 0) and np.all(np.isfinite(y))  # |density| clipped at the floor: drawable on log axes
    np.testing.assert_allclose(curve.get_xdata(), a.density.grid.numpy())
    lo, hi = ax.get_ylim()
    from curvlens.report.figures import display_density

    shown, _ = display_density(a.density.grid.numpy(), a.density.density.numpy(), a.density.sigma)
    assert lo == pytest.approx(1e-7 * float(np.abs(shown).max())) and hi > y.max()
    marks = _vlines(ax)
    for v in torch.cat([a.top.eigenvalues, a.bottom.eigenvalues]).tolist():
        assert any(abs(m - v) < 1e-12 for m in marks), v
    assert 0.0 in marks  # zero marked on an indefinite spectrum
    x0, x1 = ax.get_xlim()
    assert x0 < float(a.bottom.eigenvalues[0]) and x1 > float(a.top.eigenvalues[0])
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "top eigenvalues (3/3 certified)" in labels and "bottom eigenvalues (2/2 certified)" in labels
    assert png_bytes(fig).startswith(PNG_SIGNATURE)


def test_density_from_a_density_result_and_degenerate_densities():
    op = DenseOperator(torch.diag(torch.tensor([-2.0, -1.0, 0.0, 0.0, 3.0], dtype=torch.float64)))
    dens = spectral_density(op, num_probes=3, num_steps=5, generator=1)
    fig = figure_density(dens)  # a DensityResult directly, no eigenvalues to mark
    assert fig.axes[0].get_yscale() == "log"
    zero = replace(dens, density=torch.zeros_like(dens.density), density_stderr=torch.zeros_like(dens.density))
    png_bytes(figure_density(zero))  # all-zero density: no crash, no log of 0
    negative = replace(dens, density=-dens.density)  # |density| is plotted
    line = next(x for x in figure_density(negative).axes[0].lines if x.get_label() == "density")
    assert np.all(np.asarray(line.get_ydata()) > 0)


def test_sharpness_threshold_and_ratio():
    a = full_analysis(lr=0.05)
    ax = figure_sharpness(a).axes[0]
    assert 40.0 in _hlines(ax)  # 2 / lr
    assert "1.25 (UNSTABLE)" in ax.get_title()
    stable = figure_sharpness(full_analysis(lr=0.001, momentum=0.9)).axes[0]
    thr = (2 + 2 * 0.9) / 0.001
    assert any(abs(h - thr) < 1e-9 for h in _hlines(stable))
    assert "(stable)" in stable.get_title()
    assert stable.get_yscale() == "log"  # threshold 3800 >> 50 would squash the points


def test_sharpness_without_lr_and_without_anything():
    a = replace(full_analysis(), sharpness=None, lr=None, momentum=None)
    ax = figure_sharpness(a).axes[0]
    assert "no learning rate" in ax.get_title() and _hlines(ax) == []
    assert figure_sharpness(empty_analysis()) is None


def test_per_layer_bars_sorted_with_errors():
    a = full_analysis()
    fig = figure_per_layer(a)
    left, right = fig.axes[:2]
    widths = [p.get_width() for p in left.patches]
    assert widths == [2.0, 3.0, 36.0, 40.0]  # sorted by |trace|, largest on top
    assert [t.get_text() for t in left.get_yticklabels()] == ["fc.bias", "conv1.bias", "fc<script>.weight",
                                                              "conv1.weight"]
    assert [p.get_width() for p in right.patches] == [1.5, 2.0, 25.0, 30.0]
    shares = sorted(t.get_text() for t in left.texts)
    assert shares == ["2.5%", "3.7%", "44.4%", "49.4%"]
    few = figure_per_layer(a, max_bars=2)
    assert len(few.axes[0].patches) == 2 and "2 more" in few._suptitle.get_text()


def test_per_layer_without_block_eigenvalues_has_one_panel():
    pl = full_analysis().per_layer
    nan = torch.full_like(pl.lambda_max, math.nan)
    fig = figure_per_layer(replace(full_analysis(), per_layer=replace(pl, lambda_max=nan)))
    assert len(fig.axes) == 1


def test_noise_points_fit_and_critical_batches():
    a = full_analysis()
    nz = a.noise
    ax = figure_noise(a).axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    fit = next(line for line in ax.lines if line.get_label().startswith("lambda_max fit"))
    x, y = np.asarray(fit.get_xdata()), np.asarray(fit.get_ydata())
    np.testing.assert_allclose(y, np.sqrt(0.5 + 2000.0 / x) / 50.0, rtol=1e-12)  # var = a + b/B, / |full|
    crit = nz.critical_batch.tolist()
    assert crit[0] == pytest.approx(2000.0 / (25.0 - 0.5))  # where the fit crosses the target
    np.testing.assert_allclose(fitted_rstderr(0.5, 2000.0, 50.0, np.array([crit[0]])), [0.1], rtol=1e-12)
    marks = _vlines(ax)
    assert all(any(abs(m - c) < 1e-9 for m in marks) for c in crit)
    assert 0.1 in _hlines(ax)
    assert x.max() >= max(crit)  # the fit is drawn up to the critical batch sizes


def test_noise_target_never_reached_and_degenerate_inputs():
    nz = noise_study(a=(0.5, 400.0))  # trace: a > (0.1 * 82)^2 = 67 -> never below target
    assert math.isinf(float(nz.critical_batch[1]))
    ax = figure_noise(replace(full_analysis(), noise=nz)).axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("trace: target not reached" in s for s in labels)
    bad = replace(nz, fit_a=torch.full((2,), math.nan, dtype=torch.float64),
                  rstderr=torch.zeros_like(nz.rstderr))  # nothing drawable: still a figure
    png_bytes(figure_noise(replace(full_analysis(), noise=bad)))
    assert figure_noise(empty_analysis()) is None
    assert np.isnan(fitted_rstderr(1.0, 1.0, 0.0, np.array([4.0]))).all()


def test_gradient_noise_law():
    a = full_analysis()
    fig = figure_gradient_noise(a)
    ax = fig.axes[0]
    law = ax.lines[0]
    x, y = np.asarray(law.get_xdata()), np.asarray(law.get_ydata())
    np.testing.assert_allclose(y, 96.0 / x)
    assert 96.0 in _vlines(ax) and 1.0 in _hlines(ax)
    steps, examples = fig.axes[1].lines[:2]
    i = np.argmin(np.abs(np.asarray(steps.get_xdata()) - 96.0))
    assert steps.get_ydata()[i] == pytest.approx(2.0, rel=0.05) and examples.get_ydata()[i] == pytest.approx(2, rel=0.05)
    for b in (math.nan, math.inf, 0.0):
        assert figure_gradient_noise(replace(a, gradient_noise=replace(a.gradient_noise, b_simple=b))) is None
    assert figure_gradient_noise(empty_analysis()) is None


@pytest.mark.parametrize("fn", [figure_density, figure_per_layer, figure_noise, figure_gradient_noise,
                                figure_sharpness])
def test_no_crash_on_missing_parts(fn):
    assert fn(empty_analysis()) is None
    assert fn(object()) is None


def test_compare_figure_overlays_densities():
    runs = [full_analysis(), empty_analysis(), full_analysis(lr=0.01)]
    fig = compare_figure(runs, ["a", "b", "c"])
    ax, ax2 = fig.axes[:2]
    assert [line.get_label() for line in ax.lines] == ["a", "c"]  # b has no density
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax2.get_xticklabels()] == ["a", "b", "c"]
    only_empty = compare_figure([empty_analysis()], None)
    assert "not measured" in only_empty.axes[0].get_title()


def test_importing_and_plotting_leaves_the_backend_alone():
    code = textwrap.dedent("""
        import sys, matplotlib
        matplotlib.use("pdf")
        import curvlens.report as r
        assert "matplotlib.pyplot" not in sys.modules
        from tests.report._fixtures import empty_analysis
        import dataclasses, torch
        from curvlens.diagnostics.sharpness import sharpness
        fig = r.figure_sharpness(dataclasses.replace(empty_analysis(), sharpness=sharpness(3.0, lr=0.1)))
        fig.savefig(sys.argv[1])
        assert matplotlib.get_backend() == "pdf", matplotlib.get_backend()
        assert "matplotlib.pyplot" not in sys.modules
        print("ok")
    """)
    import tempfile
    import os
    out = os.path.join(tempfile.mkdtemp(), "s.png")
    r = subprocess.run([sys.executable, "-c", code, out], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "ok"
    with open(out, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE


def test_density_of_spikes_is_shown_smoothed_with_mass_kept_and_every_probe_counted():
    from curvlens.report.figures import display_density

    grid = np.linspace(-2.0, 2.0, 801)
    comb = np.zeros_like(grid)
    comb[100:701:25] = 1.0  # isolated spikes 0.125 apart: what a too-narrow broadening draws
    shown, width = display_density(grid, comb, 1e-4)
    assert width == pytest.approx(4.0 / 80)
    assert shown.sum() == pytest.approx(comb.sum(), rel=1e-9)  # mass preserved
    assert shown.max() < 0.2 * comb.max() and shown[100:701].min() > 0.05 * shown.max()  # no comb left
    same, none = display_density(grid, comb, 1.0)  # already broad enough: unchanged
    assert none == 0.0 and same is comb
    a = full_analysis()
    title = figure_density(a).axes[0].get_title()
    pilot = "deflation pilot" in a.density.info.status
    n = a.density.nodes.shape[0]
    assert (f"{n + 1} probes: 1 deflation pilot + {n} averaged" if pilot else f"{n} probes") in title
