"""`curvlens inspect` through click's CliRunner (and once as a real subprocess)."""

import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from curvlens_cli.inspect_cmd import command
from curvlens_cli.main import cli
from curvlens.data.demo import demo_model

NUM_PARAMS = (3 * 4 + 4) + (4 * 4 + 4) + (4 * 2 + 2)  # 46


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpts")
    m = demo_model(3, 2, 4, dtype=torch.float64)
    x = torch.zeros(2, 3, dtype=torch.float64)
    torch.save({"epoch": 7, "model_state_dict": {f"module.{k}": v for k, v in m.state_dict().items()}}, d / "nested.pt")
    torch.jit.save(torch.jit.trace(m, x), str(d / "ts.pt"))
    torch.export.save(torch.export.export(m, (x,)), str(d / "prog.pt2"))
    torch.save(m, d / "whole.pt")
    raw = (d / "nested.pt").read_bytes()
    (d / "cut.pt").write_bytes(raw[: len(raw) // 3])
    (d / "readme.txt").write_text("hello\n")
    return d


def invoke(*args):
    return CliRunner().invoke(cli, ["inspect", *map(str, args)])


def test_help():
    r = invoke("--help")
    assert r.exit_code == 0
    assert "format, keys, tensor shapes, total parameters" in r.output and "--format [table|json]" in r.output


def test_state_dict_table(ckpts):
    r = invoke(ckpts / "nested.pt")
    assert r.exit_code == 0, r.output
    assert "format:      state_dict" in r.output
    assert "weights at:  ['model_state_dict']" in r.output
    assert f"parameters:  {NUM_PARAMS}" in r.output and "loading needs: --model" in r.output
    assert "epoch             int 7" in r.output
    assert "module.0.weight  (4, 3)  float64" in r.output and "6 tensors" in r.output


def test_max_rows(ckpts):
    r = invoke(ckpts / "nested.pt", "--max-rows", "2")
    assert r.exit_code == 0 and "... 4 more tensors (use --max-rows 0 to show all)" in r.output


@pytest.mark.parametrize(
    "name, fmt, needs",
    [("ts.pt", "torchscript", "nothing else (self-contained)"),
     ("prog.pt2", "torch_export", "nothing else (self-contained)"),
     ("whole.pt", "pickled_module", "--trust-checkpoint")],
)
def test_formats(ckpts, name, fmt, needs):
    r = invoke(ckpts / name)
    assert r.exit_code == 0, r.output
    assert f"format:      {fmt}" in r.output and f"loading needs: {needs}" in r.output
    if fmt == "pickled_module":
        assert "parameters:  unknown (needs unpickling)" in r.output and "Sequential" in r.output
    else:
        assert f"parameters:  {NUM_PARAMS}" in r.output
    if fmt == "torch_export":
        assert "note:        input shapes: (2, 3)" in r.output


def test_json(ckpts):
    r = invoke(ckpts / "nested.pt", "--format", "json")
    assert r.exit_code == 0
    data = json.loads(r.output)
    assert data["format"] == "state_dict" and data["num_parameters"] == NUM_PARAMS
    assert data["tensors"][0] == {"name": "module.0.weight", "shape": [4, 3], "dtype": "float64"}
    assert data["entries"][0] == ["epoch", "int 7"] and data["needs_model"] is True


@pytest.mark.parametrize(
    "name, message",
    [("missing.pt", "does not exist; check the path"),
     ("cut.pt", "is a corrupt or truncated zip archive"),
     ("readme.txt", "is not a checkpoint")],
)
def test_errors_exit_1_with_one_line(ckpts, name, message):
    r = invoke(ckpts / name)
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]
    assert "Traceback" not in r.output


def test_verbose_shows_traceback(ckpts):
    r = CliRunner().invoke(command, [str(ckpts / "readme.txt"), "-v"])
    assert r.exit_code == 1 and "Traceback" in r.output and "CheckpointError" in r.output


@pytest.mark.parametrize("args", [["--format", "xml"], ["--max-rows", "-1"], []])
def test_bad_options_exit_2(ckpts, args):
    r = invoke(*args, *([ckpts / "nested.pt"] if args else []))
    assert r.exit_code == 2


def test_real_subprocess(ckpts):
    proc = subprocess.run(
        [sys.executable, "-m", "curvlens_cli.main", "inspect", str(ckpts / "ts.pt"), "--format", "json"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["format"] == "torchscript"
    proc = subprocess.run([sys.executable, "-m", "curvlens_cli.main", "inspect", str(ckpts / "nope.pt")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip().startswith("Error: checkpoint")
