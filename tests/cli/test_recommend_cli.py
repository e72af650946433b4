"""``curvlens recommend`` through click's CliRunner and as a real subprocess, on summary.json files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from curvlens_cli.main import cli

SUMMARY = {"num_params": 50, "num_samples": 500, "curvature": "hessian", "lambda_max": 1e3, "lambda_min": 1e-3,
           "condition_number": 1e6, "negative_mass": 0.0, "hvp_cost": 1.3}
VISION = {"num_params": 11_000_000, "num_samples": 50_000, "lambda_max": 40.0, "lambda_min": -0.5,
          "effective_condition_number": 60.0, "negative_mass": 0.02, "critical_batch_lambda_max": 2000,
          "gradient_noise_scale": 4000.0, "hvp_cost": 1.5}


@pytest.fixture
def summary_path(tmp_path):
    p = tmp_path / "summary.json"
    p.write_text(json.dumps(SUMMARY))
    return p


def run(*args):
    return CliRunner().invoke(cli, ["recommend", *map(str, args)])


def test_text_output(summary_path):
    r = run(summary_path, "--batch-size", 500, "--memory", "1GB", "--phase", "mid")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].startswith("Optimizer recommendation (confidence")
    assert lines[1].startswith(" 1. L-BFGS")
    assert "condition number 1e+06 > 1e+04 (ill-conditioned)" in r.output


def test_json_output_shape_and_ranking(tmp_path):
    p = tmp_path / "summary.json"  # a summary.json document as written by curvlens.io.hdf5.save_summary
    p.write_text(json.dumps({"curvlens-kind": "analysis", "summary": VISION}))
    r = run(p, "--batch-size", 128, "--lr", 0.05, "--momentum", 0.9, "--optimizer", "sgd", "--phase", "mid",
            "--memory", "16GB", "--layers", "conv2d,linear,relu", "--time-budget", "2h", "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert set(d) >= {"candidates", "warnings", "rejected"}
    assert d["candidates"][0]["optimizer"] == "sgd_momentum"
    assert [c["score"] for c in d["candidates"]] == sorted((c["score"] for c in d["candidates"]), reverse=True)
    c0 = d["candidates"][0]
    assert set(c0) >= {"optimizer", "score", "hyperparameters", "cost_per_step", "confidence", "reasons"}
    # a margin of 2 for progressive sharpening, times the noise factor 1/(1 + B_noise/B) at B = 128
    assert c0["hyperparameters"]["lr"] == pytest.approx(0.5 * 3.8 / 40.0 / 2 / (1 + 4000.0 / 128))
    assert all(set(x) >= {"optimizer", "reasons"} for x in d["rejected"])


BAD = [
    (["--momentum", "1.5"], 2, "--momentum: expected a value in [0, 1), got 1.5"),
    (["--lr", "-1"], 2, "--lr: expected a positive finite learning rate, got -1.0"),
    (["--lr", "nan"], 2, "Invalid value for '--lr': expected a finite number"),
    (["--memory", "8XB"], 2, "Invalid value for '--memory': expected a size like '8GB'"),
    (["--phase", "late"], 2, "Invalid value for '--phase'"),
    (["--batch-size", "0"], 2, "Invalid value for '--batch-size'"),
    (["--batch-size", "600", "--dataset-size", "500"], 2, "--batch-size: expected at most --dataset-size"),
    (["--time-budget", "soon"], 2, "Invalid value for '--time-budget'"),
    (["--format", "xml"], 2, "Invalid value for '--format'"),
]


@pytest.mark.parametrize("args,code,msg", BAD)
def test_bad_options_exit_2_with_one_message(summary_path, args, code, msg):
    r = run(summary_path, *args)
    assert r.exit_code == code and msg in r.output, r.output
    assert "Traceback" not in r.output


def test_unreadable_files_exit_1(tmp_path):
    missing = run(tmp_path / "nope.json")
    assert missing.exit_code == 1 and "cannot read" in missing.output and "no such file" in missing.output
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = run(bad)
    assert r.exit_code == 1 and "not valid JSON" in r.output
    arr = tmp_path / "list.json"
    arr.write_text("[1, 2]")
    r = run(arr)
    assert r.exit_code == 1 and "expected a JSON object of summary keys, got list" in r.output
    junk = tmp_path / "results.h5"
    junk.write_bytes(b"not hdf5 at all")
    r = run(junk)
    assert r.exit_code == 1 and "cannot read" in r.output and "Traceback" not in r.output


def test_empty_summary_still_recommends_and_says_what_to_measure(tmp_path):
    p = tmp_path / "summary.json"
    p.write_text("{}")
    r = run(p)
    assert r.exit_code == 0 and "To raise confidence:" in r.output and "measure lambda_max" in r.output


def test_real_subprocess(summary_path):
    out = subprocess.run([sys.executable, "-m", "curvlens_cli.main", "recommend", str(summary_path),
                          "--batch-size", "500", "--format", "json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["candidates"][0]["optimizer"] == "lbfgs"
    bad = subprocess.run([sys.executable, "-m", "curvlens_cli.main", "recommend", str(summary_path),
                          "--momentum", "2"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--momentum: expected a value in [0, 1)" in bad.stderr


def test_results_h5_with_a_summary_method(tmp_path):
    from dataclasses import dataclass

    from curvlens.io.hdf5 import save_result
    from curvlens.results import RunInfo, register_result

    @register_result("test_recommend_cli_fake_analysis")
    @dataclass(frozen=True)
    class FakeAnalysis:  # stands in for AnalysisResult until diagnostics lands
        lambda_max: float
        lambda_min: float
        condition_number: float
        num_samples: int
        info: RunInfo

        def summary(self):
            return {k: getattr(self, k) for k in ("lambda_max", "lambda_min", "condition_number", "num_samples")}

    path = tmp_path / "results.h5"
    save_result(FakeAnalysis(1e3, 1e-3, 1e6, 500, RunInfo(None, 0, 0.0, True, "ok")), path)
    r = run(path, "--batch-size", 500, "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["candidates"][0]["optimizer"] == "lbfgs"
    assert any("condition number 1e+06" in s for s in d["candidates"][0]["reasons"])


def test_text_names_the_options_of_this_command(summary_path):
    r = run(summary_path)  # no context at all: every missing value is named as a flag of `curvlens recommend`
    assert r.exit_code == 0, r.output
    assert "in the context" not in r.output
    assert "pass --batch-size" in r.output or "pass --memory" in r.output, r.output
