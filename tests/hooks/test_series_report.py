"""Series drawn in the HTML report (write_report) and overlaid by write_comparison."""

import numpy as np
import pytest

from curvlens.io.series import SeriesWriter, load_series
from curvlens.report import write_comparison, write_report
from curvlens.report.figures_series import figure_series


def _series(tmp_path, name, scale, adam=False):
    w = SeriesWriter(tmp_path / name)
    for t in range(1, 6):
        v = {"lambda_max": scale * t, "threshold": 4.0, "eos_ratio": scale * t / 4.0, "trace": 10.0 * t,
             "trace_stderr": 0.5, "negative_mass": 0.01 * t, "negative_mass_stderr": 0.002,
             "layer_lambda_max:fc1": 0.5 * t}
        if adam:
            v.update(preconditioned_sharpness=30.0 * t, preconditioned_threshold=380.0)
        w.append(10 * t, v, [("edge_of_stability", "step 40: ratio 1.0 <b>")] if scale * t == 4.0 else [])
    return load_series(tmp_path / name)


def test_report_draws_the_series(tmp_path):
    s = _series(tmp_path, "run.h5", 1.0)
    paths = write_report(s, tmp_path / "rep")
    html = paths["html"].read_text()
    assert sorted(paths) == ["html", "series"] and paths["series"].read_bytes()[:4] == b"\x89PNG"
    assert "Curvature along training" in html and "data:image/png;base64," in html
    assert "ratio 1.0 &lt;b&gt;" in html  # alert text escaped
    fig = figure_series(s)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels[:2] == ["λmax", "2/lr"] and "fc1" in labels
    assert np.allclose(fig.axes[0].get_lines()[0].get_ydata(), s.columns["lambda_max"])
    adam = figure_series(_series(tmp_path, "adam.h5", 1.0, adam=True))
    assert "λmax(P⁻¹H)" in [line.get_label() for line in adam.axes[0].get_lines()]


def test_compare_overlays_two_runs(tmp_path):
    a, b = _series(tmp_path, "a.h5", 1.0), _series(tmp_path, "b.h5", 0.5)
    paths = write_comparison([a, b], ["lr 0.5", "lr 0.25"], tmp_path / "cmp")
    assert paths["figure"].read_bytes()[:4] == b"\x89PNG"
    html = paths["html"].read_text()
    assert "lr 0.5" in html and "lr 0.25" in html
    with pytest.raises(ValueError, match="labels: expected 2 labels"):
        write_comparison([a, b], ["x"], tmp_path / "cmp")
    with pytest.raises(TypeError, match="series: expected a CurvatureSeries"):
        figure_series(3)


def test_cli_report_and_compare_take_series(tmp_path):
    from click.testing import CliRunner

    from curvlens_cli.main import cli

    _series(tmp_path, "a.h5", 1.0)
    _series(tmp_path, "b.h5", 0.5)
    r = CliRunner().invoke(cli, ["report", str(tmp_path / "a.h5"), "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    assert "Curvature along training" in (tmp_path / "rep" / "report.html").read_text()
    r = CliRunner().invoke(cli, ["compare", str(tmp_path / "a.h5"), str(tmp_path / "b.h5"), "--out",
                                 str(tmp_path / "cmp")])
    assert r.exit_code == 0, r.output
    assert any(p.suffix == ".png" for p in (tmp_path / "cmp").iterdir())
