"""`curvlens analyze`: every checkpoint, data and loss format on a tiny problem, checked against the
exact Hessian (``torch.func.hessian`` in float64); `--demo` end to end against the library API;
the HTML report; `--help`/`--version`; and real subprocess runs of the installed entry point."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import torch
from torch import nn

from tests.cli import _tiny
from tests.cli.conftest import MODEL_FILE_SPEC, MODEL_MODULE_SPEC, QUICK, TINY_PY

REPO = Path(__file__).resolve().parents[2]
FIGURE_FILES = ("density.png", "sharpness.png", "per_layer.png", "noise.png", "gradient_noise.png")


def exact_spectrum(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of the full-data Hessian of ``loss_fn(model(x), y)`` w.r.t. all parameters."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).to(torch.float64)

    def f(flat):
        params, i = {}, 0
        for n, s in zip(names, shapes):
            params[n] = flat[i: i + s.numel()].reshape(s)
            i += s.numel()
        return loss_fn(torch.func.functional_call(model, params, (x,)), y)

    return torch.linalg.eigvalsh(torch.func.hessian(f)(flat0))


@pytest.fixture(scope="module")
def reference():
    """Exact lambda_max and trace of the tiny problem with cross-entropy (weights of conftest's checkpoints)."""
    ev = exact_spectrum(_tiny.make(seed=3), nn.CrossEntropyLoss(), _tiny.inputs(), _tiny.labels())
    return {"lambda_max": float(ev[-1]), "trace": float(ev.sum())}


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def assert_matches(s: dict, ref: dict) -> None:
    """lambda_max to 1e-6 relative (certified Lanczos); the trace within 4 standard errors of the truth."""
    assert s["num_params"] == _tiny.NUM_PARAMS and s["num_samples"] == _tiny.NUM_SAMPLES
    assert s["lambda_max"] == pytest.approx(ref["lambda_max"], rel=1e-6)
    assert s["lambda_max_certified"] is True
    assert abs(s["trace"] - ref["trace"]) <= 4 * s["trace_stderr"] + 1e-9 * abs(ref["trace"])


# --- help and version -------------------------------------------------------------------------


@pytest.mark.parametrize("cmd, text", [
    ("analyze", "Measure the curvature of CHECKPOINT's loss"),
    ("inspect", "tensor shapes"),
    ("report", "Rebuild report.html and the PNG figures from RESULTS"),
    ("compare", "Compare analyses of several checkpoints"),
    ("recommend", "Usage: curvlens recommend"),
])
def test_help_of_every_command(run_cli, cmd, text):
    r = run_cli(cmd, "--help")
    assert r.exit_code == 0, r
    assert f"Usage: curvlens {cmd}" in r.stdout and text in r.stdout


def test_group_help_lists_every_command(run_cli):
    r = run_cli("--help")
    assert r.exit_code == 0, r
    listed = re.findall(r"^  (\w+)", r.stdout.split("Commands:")[1], flags=re.M)
    assert listed == ["analyze", "compare", "inspect", "recommend", "report"]


def test_analyze_help_names_every_option(run_cli):
    r = run_cli("analyze", "-h")
    for opt in ("--demo", "--model", "--data", "--data-keys", "--loss", "--budget", "--only", "--skip", "--lr",
                "--momentum", "--seed", "--curvature", "--trust-checkpoint", "--out", "--verbose", "--quiet"):
        assert opt in r.stdout, opt


def test_version(run_cli):
    from curvlens import __version__

    r = run_cli("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"curvlens, version {__version__}"


# --- checkpoint formats -----------------------------------------------------------------------


@pytest.mark.parametrize("ckpt, extra, note", [
    ("bare.pt", ("--model", MODEL_FILE_SPEC), None),
    ("bare.pt", ("--model", MODEL_MODULE_SPEC), None),
    ("nested_model.pt", ("--model", MODEL_FILE_SPEC), "stripped key prefix 'module.'"),
    ("nested_state_dict.pt", ("--model", MODEL_MODULE_SPEC), "stripped key prefix 'module.'"),
    ("nested_model_state_dict.pt", ("--model", MODEL_FILE_SPEC), "stripped key prefix 'module.'"),
    ("scripted.pt", (), None),
    ("scripted.pt", ("--model", MODEL_FILE_SPEC), "--model ignored: the torchscript archive"),
    ("program.pt2", (), None),
    ("whole.pt", ("--trust-checkpoint",), "unpickled with weights_only=False (trusted)"),
    ("weights.safetensors", ("--model", MODEL_FILE_SPEC), None),  # safetensors is in the test extra
])
def test_checkpoint_formats_give_the_exact_curvature(run_cli, files, reference, tmp_path, ckpt, extra, note):
    out = tmp_path / "out"
    r = run_cli("analyze", files / ckpt, *extra, "--data", files / "data.pt", "--out", out, *QUICK)
    assert r.exit_code == 0, r
    if note:
        assert f"note: {note}" in r.stderr
    assert_matches(summary(out), reference)
    assert r.stdout.startswith("curvlens analysis") and "parameters D                      46" in r.stdout


# --- data formats -----------------------------------------------------------------------------


@pytest.mark.parametrize("data, extra", [
    ("data.pt", ()),                                   # inputs/targets
    ("data.npz", ()),                                  # x/y
    ("data.h5", ()),                                   # X/y
    ("custom_keys.pt", ("--data-keys", "images,labels")),
    (f"{TINY_PY}:data", ()),                           # file.py:factory
    ("tests.cli._tiny:data", ()),                      # pkg.module:factory
])
def test_data_formats(run_cli, files, reference, tmp_path, data, extra):
    spec = data if ":" in data else files / data
    out = tmp_path / "out"
    r = run_cli("analyze", files / "bare.pt", "--model", MODEL_FILE_SPEC, "--data", spec, *extra, "--out", out, *QUICK)
    assert r.exit_code == 0, r
    assert_matches(summary(out), reference)


def test_batches_and_num_samples(run_cli, files, tmp_path):
    """--batch-size splits the data (mean over all samples, not of batch means); --num-samples truncates."""
    x, y = _tiny.inputs()[:40], _tiny.labels()[:40]
    ev = exact_spectrum(_tiny.make(seed=3), nn.CrossEntropyLoss(), x, y)
    out = tmp_path / "out"
    r = run_cli("analyze", files / "bare.pt", "--model", MODEL_FILE_SPEC, "--data", files / "data.npz",
                "--num-samples", 40, "--batch-size", 16, "--out", out, *QUICK)
    assert r.exit_code == 0, r
    s = summary(out)
    assert s["num_samples"] == 40 and s["lambda_max"] == pytest.approx(float(ev[-1]), rel=1e-6)


# --- losses -----------------------------------------------------------------------------------


def _targets(name):
    return torch.load(name, weights_only=True)["targets"]


@pytest.mark.parametrize("loss, ckpt, model, data, ref_model, ref_loss", [
    ("cross_entropy", "bare.pt", "make", "data.pt", lambda: _tiny.make(3), nn.CrossEntropyLoss()),
    ("mse", "bare.pt", "make", "regression.pt", lambda: _tiny.make(3), nn.MSELoss()),
    ("bce_with_logits", "bare.pt", "make", "binary.pt", lambda: _tiny.make(3), nn.BCEWithLogitsLoss()),
    ("bce_probs", "probs.pt", "make_probs", "binary.pt", lambda: nn.Sequential(_tiny.make(3), nn.Sigmoid()),
     nn.BCELoss()),
    ("nll", "logprobs.pt", "make_logprobs", "data.pt",
     lambda: nn.Sequential(_tiny.make(3), nn.LogSoftmax(dim=1)), nn.NLLLoss()),
    (f"{TINY_PY}:half_mse", "bare.pt", "make", "regression.pt", lambda: _tiny.make(3), _tiny.half_mse),
])
def test_losses(run_cli, files, tmp_path, loss, ckpt, model, data, ref_model, ref_loss):
    out = tmp_path / "out"
    r = run_cli("analyze", files / ckpt, "--model", f"{TINY_PY}:{model}", "--data", files / data, "--loss", loss,
                "--out", out, *QUICK)
    assert r.exit_code == 0, r
    ev = exact_spectrum(ref_model(), ref_loss, _tiny.inputs(), _targets(files / data))
    s = summary(out)
    assert s["lambda_max"] == pytest.approx(float(ev[-1]), rel=1e-6)
    assert abs(s["trace"] - float(ev.sum())) <= 4 * s["trace_stderr"] + 1e-9


@pytest.mark.parametrize("loss, ckpt, model, ref_model", [
    ("bce_with_logits", "bare.pt", "make", lambda: _tiny.make(3)),
    ("bce_logits", "bare.pt", "make", lambda: _tiny.make(3)),
    ("bce_probs", "probs.pt", "make_probs", lambda: nn.Sequential(_tiny.make(3), nn.Sigmoid())),
])
def test_loss_name_means_the_same_in_cli_and_api(run_cli, files, tmp_path, loss, ckpt, model, ref_model):
    """--loss NAME --curvature ggn measures the GGN that GGNOperator(model, NAME, data) is (dense float64)."""
    from curvlens.operators import GGNOperator

    x, y = _tiny.inputs(), _targets(files / "binary.pt")
    top = float(torch.linalg.eigvalsh(GGNOperator(ref_model(), loss, (x, y)).to_dense())[-1])
    out = tmp_path / "out"
    r = run_cli("analyze", files / ckpt, "--model", f"{TINY_PY}:{model}", "--data", files / "binary.pt",
                "--loss", loss, "--curvature", "ggn", "--out", out, *QUICK)
    assert r.exit_code == 0, r
    assert summary(out)["lambda_max"] == pytest.approx(top, rel=1e-6)


def test_ggn_is_psd_and_below_the_hessian_top(run_cli, files, tmp_path, reference):
    """--curvature ggn: the exact GGN's top eigenvalue (J^T H_out J in float64)."""
    model, x, y = _tiny.make(3), _tiny.inputs(), _tiny.labels()
    params = dict(model.named_parameters())
    jac = torch.func.jacrev(lambda p: torch.func.functional_call(model, p, (x,)))(params)
    J = torch.cat([jac[n].reshape(x.shape[0] * _tiny.OUT, -1) for n in params], dim=1)
    z = model(x).detach()
    h_out = torch.func.hessian(lambda o: nn.functional.cross_entropy(o, y))(z).reshape(J.shape[0], J.shape[0])
    ggn_top = float(torch.linalg.eigvalsh((J.T @ h_out @ J).detach())[-1])
    out = tmp_path / "out"
    r = run_cli("analyze", files / "bare.pt", "--model", MODEL_FILE_SPEC, "--data", files / "data.pt",
                "--curvature", "ggn", "--out", out, *QUICK)
    assert r.exit_code == 0, r
    s = summary(out)
    assert s["curvature"] == "ggn" and s["lambda_max"] == pytest.approx(ggn_top, rel=1e-6)
    assert s["lambda_max"] != pytest.approx(reference["lambda_max"], rel=1e-3)


# --- full default analysis on the tiny problem: every figure --------------------------------------


@pytest.fixture(scope="module")
def full_tiny(tmp_path_factory, files, run_cli):
    out = tmp_path_factory.mktemp("full_tiny") / "out"
    r = run_cli("analyze", files / "bare.pt", "--model", MODEL_FILE_SPEC, "--data", files / "data.pt",
                "--lr", "0.5", "--momentum", "0.9", "--budget", "300", "--out", out)
    return r, out


def _assert_report_has_every_figure(out: Path) -> None:
    from curvlens.report.html import FIGURES

    html = (out / "report.html").read_text(encoding="utf-8")
    assert [f[1] for f in FIGURES] == list(FIGURE_FILES)
    for key, fname, section, _, _ in FIGURES:
        assert (out / fname).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", fname
        after = html.split(f'<h2 id="{key}">', 1)[1].split("<h2", 1)[0]
        assert '<img' in after and "data:image/png;base64," in after, key
        assert '<p class="missing">' not in after, key
    assert html.count("data:image/png;base64,") == len(FIGURES)


def test_full_analysis_writes_every_figure(full_tiny, reference):
    r, out = full_tiny
    assert r.exit_code == 0, r
    assert sorted(p.name for p in out.iterdir()) == sorted(["report.html", "results.h5", "summary.json",
                                                            "manifest.json", *FIGURE_FILES])
    _assert_report_has_every_figure(out)
    s = summary(out)
    assert s["lambda_max"] == pytest.approx(reference["lambda_max"], rel=1e-6)
    assert s["lr"] == 0.5 and s["momentum"] == 0.9
    assert s["stability_threshold"] == pytest.approx((2 + 2 * 0.9) / 0.5)
    assert s["sharpness_ratio"] == pytest.approx(s["lambda_max"] / s["stability_threshold"])
    assert "wrote density.png, gradient_noise.png, manifest.json, noise.png, per_layer.png, report.html, " \
           "results.h5, sharpness.png, summary.json to" in r.stdout


def test_results_h5_matches_summary_json(full_tiny):
    from curvlens.io.hdf5 import load_result

    _, out = full_tiny
    res = load_result(out / "results.h5")
    js = summary(out)
    for k, v in res.summary().items():
        if isinstance(v, float) and not math.isfinite(v):
            assert js[k] is None, k
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            assert js[k] == pytest.approx(v, rel=1e-12), k
    with h5py.File(out / "results.h5", "r") as f:
        assert f["result"].attrs["curvlens-kind"] == "analysis" and int(f.attrs["seed"]) == 0


def test_fewer_analyses_remove_stale_figures(full_tiny, run_cli, files, tmp_path):
    """Re-running into the same folder with fewer analyses must not leave figures of the old run."""
    _, first = full_tiny
    out = tmp_path / "out"
    shutil.copytree(first, out)
    r = run_cli("analyze", files / "bare.pt", "--model", MODEL_FILE_SPEC, "--data", files / "data.pt",
                "--out", out, "--budget", "120", "--only", "trace", "-q")
    assert r.exit_code == 0, r
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "report.html", "results.h5", "summary.json"]
    assert summary(out)["lambda_max"] is None
    assert 'density">Spectral density</h2>\n<p class="missing">' in (out / "report.html").read_text()


# --- the built-in demo, once, against the library API ---------------------------------------------


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, run_cli):
    """``curvlens analyze --demo`` with its defaults, as ``make demo`` runs it."""
    out = tmp_path_factory.mktemp("demo") / "report"
    return run_cli("analyze", "--demo", "--out", out), out


#: headline quantities that the demo's summary must hold (measured, or bounded with a stated reason)
DEMO_HEADLINE = ("lambda_max", "lambda_min", "effective_condition_number", "trace", "saddle_index", "negative_mass",
                 "saddle_verdict", "lr", "momentum", "stability_threshold", "sharpness_ratio",
                 "critical_batch_lambda_max", "critical_batch_trace", "gradient_noise_scale", "hvp_cost")


def test_demo_end_to_end(demo_run):
    r, out = demo_run
    assert r.exit_code == 0, r
    assert "loading ..." in r.stderr and "largest eigenvalue λmax" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(["report.html", "results.h5", "summary.json",
                                                            "manifest.json", *FIGURE_FILES])
    _assert_report_has_every_figure(out)
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<title>curvlens: built-in demo: 5-arm 2-D spirals, 3000 samples" in html
    s = summary(out)
    # every headline number is measured, and its eigenvalues certified: nothing in the table is missing
    assert [k for k in DEMO_HEADLINE if s[k] is None] == []
    assert s["lambda_max_certified"] is True and s["lambda_min_certified"] is True
    assert "not measured" not in r.stdout and "NOT certified" not in r.stdout
    assert s["lr"] == 0.5 and s["momentum"] == 0.9 and 0 < s["sharpness_ratio"] < 1  # trained with that SGD
    # no component left unconverged: the report has no red notes of its own
    assert '<li class="warn">' not in html.split("<h2>Recommendation</h2>")[0]
    assert "estimate(s) stopped before their tolerance" not in r.stderr
    # what stands in for an undefined / unresolved number says why
    line = next(ln for ln in r.stdout.splitlines() if ln.lstrip().startswith("condition number"))
    if s["condition_number"] is None:
        assert "at least" in line or "undefined: λmin < 0" in line
    line = next(ln for ln in r.stdout.splitlines() if ln.lstrip().startswith("saddle index"))
    assert "quadrature bounds [" in line
    assert "model evaluated in eval mode" in html
    assert "max_matvecs" not in html and "max_matvecs" not in r.stdout


def test_demo_numbers_match_the_library(demo_run):
    from curvlens.data import DEMO_LR, DEMO_MOMENTUM, demo_problem
    from curvlens.diagnostics import analyze
    from curvlens_cli._problem import DEMO_BUDGET

    r, out = demo_run
    cli_summary = summary(out)
    prob = demo_problem(seed=0)
    torch.set_num_threads(1)
    lib = analyze(prob.model, prob.loss_fn, prob.data, budget=DEMO_BUDGET, lr=DEMO_LR, momentum=DEMO_MOMENTUM,
                  generator=0).summary()
    assert cli_summary["num_params"] == 1317 and cli_summary["num_samples"] == 3000
    assert set(cli_summary) == set(lib)
    compared = 0
    for k, v in lib.items():
        if k in ("seconds", "hvp_cost"):  # timings
            continue
        got = cli_summary[k]
        if isinstance(v, float) and not math.isfinite(v):
            assert got is None, k
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            assert got == pytest.approx(v, rel=1e-6, abs=1e-12), k
            compared += 1
        elif isinstance(v, (list, tuple)):
            assert got == pytest.approx(list(v), rel=1e-6, abs=1e-12), k
        else:
            assert got == v, k
    assert compared >= 8
    assert cli_summary["matvecs"] <= DEMO_BUDGET + 2


# --- real subprocesses of the installed entry point ---------------------------------------------------


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def test_subprocess_module_entry_point(files, reference, tmp_path):
    out = tmp_path / "out"
    p = subprocess.run(
        [sys.executable, "-m", "curvlens_cli.main", "analyze", str(files / "nested_model.pt"), "--model",
         MODEL_MODULE_SPEC, "--data", str(files / "data.h5"), "--out", str(out), *QUICK],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("curvlens analysis")
    assert_matches(summary(out), reference)


def test_installed_console_script_fails_with_one_line(files, tmp_path):
    exe = shutil.which("curvlens") or str(Path(sys.executable).parent / "curvlens")
    assert Path(exe).is_file()
    p = subprocess.run([exe, "analyze", str(files / "truncated.pt"), "--model", MODEL_FILE_SPEC,
                        "--data", str(files / "data.pt"), "--out", str(tmp_path / "out"), "-q"],
                       cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 1
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr
    assert re.fullmatch(r"Error: checkpoint '.*truncated\.pt' is a corrupt or truncated zip archive .*; "
                        r"re-save or re-download it", lines[0])
