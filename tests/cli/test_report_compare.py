"""`curvlens report` (rebuild the report from results.h5) and `curvlens compare` (runs side by side),
on two tiny analyses written by `curvlens analyze` once per module."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from tests.cli.conftest import MODEL_FILE_SPEC


@pytest.fixture(scope="module")
def runs(tmp_path_factory, files, run_cli):
    """runs/e1 (weights seed 3) and runs/e2 (seed 5): results.h5, summary.json, report; plus analyze's stdout."""
    root = tmp_path_factory.mktemp("runs")
    tables = {}
    for name, ckpt in (("e1", "bare.pt"), ("e2", "other.pt")):
        r = run_cli("analyze", files / ckpt, "--model", MODEL_FILE_SPEC, "--data", files / "data.pt",
                    "--only", "conditioning,trace,density", "--budget", "150", "--seed", "0", "-q",
                    "--out", root / name)
        assert r.exit_code == 0, r
        tables[name] = r.stdout
    return root, tables


def _summary(path):
    return json.loads(path.read_text())


# --- report -----------------------------------------------------------------------------------


def test_report_rebuilds_the_same_table_and_figures(runs, run_cli, tmp_path):
    root, tables = runs
    out = tmp_path / "rebuilt"
    r = run_cli("report", root / "e1" / "results.h5", "--out", out, "-q")
    assert r.exit_code == 0, r
    assert r.stdout == tables["e1"]  # the HDF5 round trip loses nothing shown in the table
    pngs = [p.name for p in (root / "e1").glob("*.png")]
    assert "density.png" in pngs
    assert sorted(p.name for p in out.iterdir()) == sorted([*pngs, "report.html"])
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<title>curvlens report</title>" in html and "data:image/png;base64," in html
    lam = _summary(root / "e1" / "summary.json")["lambda_max"]
    assert f"{lam:.6g}"[:6] in html


def test_report_default_out_is_the_results_folder(runs, run_cli, tmp_path):
    root, _ = runs
    shutil.copy(root / "e2" / "results.h5", tmp_path / "results.h5")
    r = run_cli("report", tmp_path / "results.h5", "--title", "epoch <2> & more")
    assert r.exit_code == 0, r
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<title>epoch &lt;2&gt; &amp; more</title>" in html
    assert "density.png" in r.stdout and f"to {tmp_path}/" in r.stdout
    assert (tmp_path / "density.png").is_file()


def test_report_batch_size_reaches_the_recommendation(runs, run_cli, tmp_path):
    root, _ = runs
    r = run_cli("report", root / "e1" / "results.h5", "--out", tmp_path, "--batch-size", 32, "-q")
    assert r.exit_code == 0, r
    assert "<h2>Recommendation</h2>" in (tmp_path / "report.html").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def eigen_h5(runs, tmp_path_factory):
    """A curvlens results file that holds an eigensolver result, not an analysis."""
    from curvlens.io.hdf5 import load_result, save_result

    root, _ = runs
    path = tmp_path_factory.mktemp("eigen") / "top.h5"
    save_result(load_result(root / "e1" / "results.h5").top, path)
    return path


def test_report_failures(runs, run_cli, files, eigen_h5, tmp_path):
    cases = [
        (tmp_path / "missing.h5", r"results file not found: .*missing\.h5$"),
        (files / "notes.txt", r"'.*notes\.txt' is not a readable HDF5 file .*: it is truncated, corrupt or not "
                              r"written by curvlens; regenerate it"),
        (files / "data.h5", r"'.*data\.h5' is an HDF5 file but not a curvlens results file"),
        (eigen_h5, r".*top\.h5 holds a EigenResult, not an analysis; write one with `curvlens analyze`$"),
    ]
    for path, message in cases:
        r = run_cli("report", path, "--out", tmp_path / "out")
        assert r.exit_code == 1, r
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and re.match("Error: " + message, lines[0]), r
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    ([], r"Missing argument 'RESULTS'"),
    (["x.h5", "--batch-size", "0"], r"Invalid value for '--batch-size': 0 is not in the range x>=1"),
])
def test_report_bad_options(run_cli, args, message):
    r = run_cli("report", *args)
    assert r.exit_code == 2, r
    assert re.search(message, r.stderr) and "Try 'curvlens report --help' for help." in r.stderr


# --- compare ----------------------------------------------------------------------------------


def test_compare_two_runs(runs, run_cli, tmp_path):
    root, _ = runs
    out = tmp_path / "cmp"
    r = run_cli("compare", root / "e1" / "results.h5", root / "e2" / "results.h5", "--out", out)
    assert r.exit_code == 0, r
    lines = r.stdout.splitlines()
    assert re.fullmatch(r"quantity\s+e1\s+e2", lines[0])  # both files are results.h5: labelled by folder
    s1, s2 = (_summary(root / n / "summary.json") for n in ("e1", "e2"))
    assert s1["lambda_max"] != pytest.approx(s2["lambda_max"], rel=1e-3)  # two different checkpoints
    row = next(ln for ln in lines if ln.startswith("largest eigenvalue"))
    assert f"{s1['lambda_max']:.4g}"[:5] in row and f"{s2['lambda_max']:.4g}"[:5] in row
    assert sorted(p.name for p in out.iterdir()) == ["comparison.html", "comparison.json", "comparison.png"]
    doc = _summary(out / "comparison.json")
    assert doc["labels"] == ["e1", "e2"]
    for got, want in zip(doc["summaries"], (s1, s2)):
        assert got["lambda_max"] == pytest.approx(want["lambda_max"], rel=1e-12)
        assert got["trace"] == pytest.approx(want["trace"], rel=1e-12)
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert "data:image/png;base64," in (out / "comparison.html").read_text(encoding="utf-8")
    assert "wrote comparison.html, comparison.json, comparison.png to" in r.stdout


def test_compare_labels_and_distinct_names(runs, run_cli, tmp_path):
    root, _ = runs
    shutil.copy(root / "e1" / "results.h5", tmp_path / "early.h5")
    shutil.copy(root / "e2" / "results.h5", tmp_path / "late.h5")
    r = run_cli("compare", tmp_path / "early.h5", tmp_path / "late.h5", "--out", tmp_path / "a", "-q")
    assert r.exit_code == 0, r
    assert re.fullmatch(r"quantity\s+early\.h5\s+late\.h5", r.stdout.splitlines()[0])
    assert "wrote" not in r.stdout
    r = run_cli("compare", tmp_path / "early.h5", tmp_path / "late.h5", "--labels", "step 100,step 900",
                "--out", tmp_path / "b")
    assert r.exit_code == 0, r
    assert re.fullmatch(r"quantity\s+step 100\s+step 900", r.stdout.splitlines()[0])
    assert _summary(tmp_path / "b" / "comparison.json")["labels"] == ["step 100", "step 900"]


def test_compare_failures(runs, run_cli, files, eigen_h5, tmp_path):
    root, _ = runs
    good = root / "e1" / "results.h5"
    cases = [
        ([good, tmp_path / "missing.h5"], r"results file not found: .*missing\.h5"),
        ([good, files / "notes.txt"], r"'.*notes\.txt' is not a readable HDF5 file"),
        ([good, eigen_h5], r".*top\.h5 holds a EigenResult, not an analysis$"),
    ]
    for args, message in cases:
        r = run_cli("compare", *args, "--out", tmp_path / "out")
        assert r.exit_code == 1, r
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and re.match("Error: " + message, lines[0]), r
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    ([], r"Missing argument 'RESULTS\.\.\.'"),
    (["a.h5"], r"compare needs at least two results files"),
    (["a.h5", "b.h5", "--labels", "only-one"], r"Invalid value for --labels: expected 2 labels \(one per file\), got 1"),
    (["a.h5", "b.h5", "--labels", ","], r"expected a comma-separated list, got an empty value"),
])
def test_compare_bad_options(run_cli, tmp_path, args, message):
    r = run_cli("compare", *args, "--out", tmp_path / "out")
    assert r.exit_code == 2, r
    assert re.search(message, r.stderr) and "Try 'curvlens compare --help' for help." in r.stderr
    assert not (tmp_path / "out").exists()
