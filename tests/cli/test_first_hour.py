"""What a first-time user meets: progress with percentage and ETA, hints in CLI words, a transformer
with default attention, a trusted pickled module whose class lives beside it, output folders
switched as a whole."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.cli import _tiny
from tests.cli.conftest import MODEL_FILE_SPEC, TINY_PY

REPO = Path(__file__).resolve().parents[2]


# --- progress -----------------------------------------------------------------------------------------


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_progress_lines_when_not_a_terminal():
    from curvlens_cli._common import Progress

    clock, stream = _Clock(), io.StringIO()
    p = Progress(True, stream=stream, tty=False, interval=10.0, clock=clock)
    p("top", 0, 40)
    clock.t = 5.0
    p("top", 10, 40)  # within the interval: no line
    clock.t = 12.0
    p("top", 20, 40)  # half done after 12 s: 12 s left
    clock.t = 13.0
    p("density", 1, 10)  # a new stage closes the old one
    p.close()
    assert stream.getvalue().splitlines() == [
        "top: started", "top: 50% done, ETA 0:12", "top: done in 0:13", "density: started", "density: done in 0:00"]


def test_progress_bar_on_a_terminal_never_goes_back_and_quiet_is_silent():
    from curvlens_cli._common import Progress

    clock, stream = _Clock(), io.StringIO()
    p = Progress(True, stream=stream, tty=True, clock=clock)
    clock.t = 0.0
    p("density", 0, 30)
    clock.t = 30.0
    p("density", 15, 30)  # 50% after 30 s
    p("density", 2, 30)  # a restarted counter (next probe) keeps the progress
    frames = stream.getvalue().split("\r")
    assert " 50%  ETA 0:30" in frames[2] and " 50%  ETA 0:30" in frames[3]
    p.close()
    assert stream.getvalue().endswith("] 100%  in 0:30    \n")
    quiet = io.StringIO()
    q = Progress(False, stream=quiet, tty=True)
    q("top", 1, 2)
    q.close()
    assert quiet.getvalue() == ""


def test_analyze_progress_through_the_cli(run_cli, files, tmp_path):
    args = ["analyze", files / "bare.pt", "--model", MODEL_FILE_SPEC, "--data", files / "data.pt",
            "--budget", "60", "--only", "conditioning", "--seed", "0", "--out"]
    loud = run_cli(*args, tmp_path / "a")
    assert loud.exit_code == 0, loud
    for stage in ("top", "bottom"):
        assert f"{stage}: started" in loud.stderr and f"{stage}: done in 0:" in loud.stderr
    quiet = run_cli(*args, tmp_path / "b", "-q")
    assert quiet.exit_code == 0 and "started" not in quiet.stderr and quiet.stderr.strip() == ""


# --- hints name the option of the interface used ----------------------------------------------------------


def test_hints_name_cli_options_in_the_cli_and_arguments_in_the_api(run_cli, files, tmp_path):
    from curvlens.io.hdf5 import load_result
    from curvlens.report import render_report, summary_table

    out = tmp_path / "out"
    r = run_cli("analyze", files / "bare.pt", "--model", MODEL_FILE_SPEC, "--data", files / "data.pt",
                "--budget", "8", "--only", "conditioning", "--seed", "0", "--out", out, "-q")
    assert r.exit_code == 0, r
    html = (out / "report.html").read_text(encoding="utf-8")
    for text in (r.stdout, html):
        assert "max_matvecs" not in text and "in the context" not in text and "budget=" not in text
    assert "raise --budget" in r.stdout and "raise --budget" in html
    api = load_result(out / "results.h5")  # the same result shown through the library speaks in arguments
    assert "raise budget=" in summary_table(api) and "--budget" not in summary_table(api)
    assert "max_matvecs" not in render_report(api)


def test_help_shows_the_default_budget(run_cli):
    r = run_cli("analyze", "--help")
    assert "[default: 300 products; --demo: 800]" in " ".join(r.stdout.split())


def test_context_keys_name_the_option_that_sets_them():
    from curvlens_cli._words import analysis_to_cli

    assert analysis_to_cli("set memory_bytes in the context: rejects optimizers whose state does not fit") == (
        "pass --memory to `curvlens recommend RESULTS.h5`: rejects optimizers whose state does not fit")
    assert analysis_to_cli("set batch_size in the context: scales the lr") == "pass --batch-size: scales the lr"
    assert analysis_to_cli("saddle: increase max_matvecs; more num_steps narrow the bounds") == (
        "saddle: raise --budget; a larger --budget narrows the bounds")
    assert analysis_to_cli("only the bound holds; resolve it with resolve_bottom_float64 or analyze a float64 "
                           "model") == "only the bound holds; pass --dtype float64"


# --- attention with PyTorch's default kernels ---------------------------------------------------------------


def test_transformer_state_dict_analyzes_with_default_attention(run_cli, files, tmp_path):
    from curvlens.problem._double_backward import MATH_ATTENTION_NOTE, _probe

    net = _tiny.make_transformer().eval()
    x = _tiny.inputs().float()
    # the reason the math kernel is needed: PyTorch's default kernel has no double backward here
    assert "double backward failed" in (_probe(net, (x[:2],)) or "")
    torch.save({"epoch": 1, "model": {"net": net.state_dict()}}, tmp_path / "tnet.pt")  # nested, as users save
    torch.save({"inputs": x, "targets": _tiny.labels()}, tmp_path / "data.pt")
    r = run_cli("analyze", tmp_path / "tnet.pt", "--model", f"{TINY_PY}:make_transformer", "--data",
                tmp_path / "data.pt", "--budget", "80", "--only", "conditioning", "--seed", "0",
                "--out", tmp_path / "out")
    assert r.exit_code == 0, r
    assert f"note: {MATH_ATTENTION_NOTE}" in r.stderr
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    # exact reference: the dense Hessian in float64 with the math kernel, in eval mode
    ref = _tiny.make_transformer().double().eval()
    ref.load_state_dict({k: v.double() for k, v in net.state_dict().items()})
    params = dict(ref.named_parameters())
    xd, y = x.double(), _tiny.labels()

    def loss(ps):
        return torch.nn.functional.cross_entropy(torch.func.functional_call(ref, ps, (xd,)), y)

    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        H = torch.func.hessian(loss)(params)
    names = list(params)
    sizes = [params[n].numel() for n in names]
    dense = torch.cat([torch.cat([H[a][b].reshape(sa, sb) for b, sb in zip(names, sizes)], 1)
                       for a, sa in zip(names, sizes)], 0)
    assert s["lambda_max"] == pytest.approx(float(torch.linalg.eigvalsh(dense)[-1]), rel=1e-3)


# --- a trusted pickled module whose class is defined in the current folder -------------------------------


def test_trusted_pickle_finds_its_class_in_the_current_folder(tmp_path):
    (tmp_path / "mynets.py").write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(3, 2).double()\n"
        "    def forward(self, x):\n"
        "        return self.fc(x)\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import mynets

        torch.save(mynets.Net(), tmp_path / "whole.pt")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("mynets", None)
    torch.save({"inputs": _tiny.inputs(), "targets": _tiny.labels()}, tmp_path / "data.pt")
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "curvlens_cli.main", "analyze", "whole.pt", "--trust-checkpoint", "--data",
           "data.pt", "--budget", "30", "--only", "trace", "--out", "out", "-q"]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "summary.json").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "whole.pt").rename(elsewhere / "whole.pt")
    (tmp_path / "mynets.py").rename(tmp_path / "moved.py")
    r = subprocess.run([*cmd[:4], str(elsewhere / "whole.pt"), *cmd[5:]], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert "whose classes live in module 'mynets', which is not importable" in r.stderr
    assert "run from the folder holding mynets.py" in r.stderr and "Traceback" not in r.stderr


# --- output folders ---------------------------------------------------------------------------------------


def test_killed_run_leftovers_are_cleaned_and_the_folder_is_switched_whole(run_cli, files, tmp_path):
    out = tmp_path / "out"
    leftover = tmp_path / ".out.curvlens-staging-999999999-abcd"  # a run killed mid-write (no such pid)
    legacy = out / ".curvlens-staging-old"  # older versions staged inside the folder
    for d in (leftover, legacy):
        d.mkdir(parents=True)
        (d / "results.h5").write_bytes(b"partial")
    common = ["--model", MODEL_FILE_SPEC, "--data", files / "data.pt", "--budget", "30", "--seed", "0",
              "--out", out, "-q"]
    r = run_cli("analyze", files / "bare.pt", "--only", "trace,density", *common)
    assert r.exit_code == 0, r
    assert not leftover.exists() and not legacy.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["files"]) == sorted(p.name for p in out.iterdir() if p.name != "manifest.json")
    assert "density.png" in manifest["files"]
    inode = out.stat().st_ino
    r = run_cli("analyze", files / "other.pt", "--only", "trace", *common)
    assert r.exit_code == 0, r
    assert out.stat().st_ino != inode  # a new complete folder took the old one's place
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "report.html", "results.h5", "summary.json"]
