"""Advice along a run (a monitor's series), the CLI's --trial and series paths, the trial figure."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from curvlens.recommend import RecommendationContext, advise_run, recommend
from tests.recommend.test_build_and_trials import SUMMARY, _problem


def _series(lmax, optimizer="SGD"):
    from curvlens.io.series import CurvatureSeries

    n = len(lmax)
    return CurvatureSeries(steps=np.arange(n) * 100, columns={"lambda_max": np.array(lmax, dtype=float),
                                                               "lr": np.full(n, 0.05)},
                           alert_steps=np.zeros(0, dtype=np.int64), alert_kinds=np.array([], dtype=object),
                           alert_messages=np.array([], dtype=object), meta={"optimizer": optimizer})


def test_series_growth_sets_the_sgd_margin_and_the_switch_waits_for_settled_curvature():
    ctx = RecommendationContext(batch_size=32, dataset_size=1000, layer_types="linear")
    moving = advise_run(_series([2.0, 4.0, 8.0, 16.0]), ctx)
    assert not moving.switch_now and moving.current == "sgd_momentum"
    assert moving.summary["lambda_max_growth"] == 8.0
    sgd = next(c for c in moving.recommendation.candidates if c.optimizer == "sgd_momentum")
    assert sgd.hyperparameters["lr"] == pytest.approx(0.5 * 3.8 / 16.0 / 8.0)  # measured margin 8
    assert any("lambda_max grew 8x over the recorded run" in r for r in sgd.reasons)
    settled = advise_run(_series([2.0, 16.0, 16.2, 16.1], optimizer="adam"), ctx)
    assert any("settled" in r for r in settled.reasons)
    assert settled.switch_now == (settled.switch_to != "adamw" and settled.recommendation.top.confidence >= 0.4)
    unstable = advise_run(_series([30.0, 90.0, 91.0]), ctx)
    assert any("above the stability threshold" in r and "lower the lr now" in r for r in unstable.reasons)
    with pytest.raises(ValueError, match=r"^series: expected at least one record"):
        advise_run(_series([]))
    with pytest.raises(TypeError, match=r"^series: expected a CurvatureSeries"):
        advise_run({"lambda_max": 1.0})


def test_cli_reads_a_monitor_series(tmp_path):
    from curvlens.io.series import SeriesWriter
    from curvlens_cli.main import cli

    w = SeriesWriter(tmp_path / "run.h5", meta={"optimizer": "sgd"})
    for i, lm in enumerate([3.0, 6.0, 6.1, 6.05]):
        w.append(i * 10, {"lambda_max": lm, "lr": 0.1})
    res = CliRunner().invoke(cli, ["recommend", str(tmp_path / "run.h5"), "--batch-size", "32", "--format", "json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["step"] == 30 and d["current"] == "sgd_momentum" and isinstance(d["switch_now"], bool)
    assert any("lambda_max went from 3 to 6.05" in r for r in d["reasons"])


def test_cli_prints_the_python_that_builds_each_candidate_and_runs_trials(tmp_path):
    from curvlens_cli.main import cli

    path = tmp_path / "summary.json"
    path.write_text(json.dumps(SUMMARY))
    res = CliRunner().invoke(cli, ["recommend", str(path), "--batch-size", "64"])
    assert res.exit_code == 0, res.output
    assert ">>> import torch" in res.output and ">>> opt = torch.optim.LBFGS(model.parameters(), lr=1" in res.output
    bad = CliRunner().invoke(cli, ["recommend", str(path), "--trial", "30s"])
    assert bad.exit_code == 2 and "--trial: expected the problem to run on, got neither --demo nor" in bad.output
    bad = CliRunner().invoke(cli, ["recommend", str(path), "--trial", "soon"])
    assert bad.exit_code == 2 and "expected a duration like" in bad.output
    ok = CliRunner().invoke(cli, ["recommend", str(path), "--demo", "--trial", "1s", "--format", "json"])
    assert ok.exit_code == 0, ok.output
    d = json.loads(ok.output)
    assert len(d["trials"]) >= 1 and d["candidates"][0]["reasons"][0].startswith("trial: ")


def test_trial_figure_goes_into_the_report():
    from curvlens.report.figures_trials import figure_trials, trial_section

    model, loss_fn, data = _problem()
    rec = recommend(SUMMARY, RecommendationContext(batch_size=64), model=model, loss_fn=loss_fn, data=data,
                    trial=0.5, trial_candidates=2)
    fig = figure_trials(rec.trials)
    assert len(fig.axes[0].lines) >= 4  # two candidates, their lr brackets
    html = trial_section(rec.trials)
    assert html.startswith('<h2 id="trials">Trial runs</h2><img src="data:image/png;base64,')
    assert trial_section(()) == ""
    torch.testing.assert_close(torch.tensor(0.0), torch.tensor(0.0))
