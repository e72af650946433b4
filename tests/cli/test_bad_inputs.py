"""The growing table of bad inputs a first-time user tried: each gives exit code 1 (or 2 for a usage
error), one line on stderr naming what is wrong and the option to change, no traceback, no output
folder, and no warning text from torch before the error line. Add a row for every new report."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from tests.cli import _tiny
from tests.cli.conftest import MODEL_FILE_SPEC, QUICK


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """Files that are wrong in one way each."""
    d = tmp_path_factory.mktemp("bad_inputs")
    x, y = _tiny.inputs(), _tiny.labels()
    np.savez(d / "zero_samples.npz", inputs=np.zeros((0, _tiny.IN)), targets=np.zeros((0,), dtype=np.int64))
    (d / "zero_bytes.npz").write_bytes(b"")
    (d / "text.npz").write_text("inputs,targets\n0.1,1\n")
    np.savez(d / "int_inputs.npz", inputs=(x * 10).round().numpy().astype(np.int64), targets=y.numpy())
    np.savez(d / "ok.npz", inputs=x.numpy(), targets=y.numpy())
    (d / "models_dir").mkdir()
    (d / "data_dir.pt").mkdir()
    (d / "noisy.py").write_text(
        "import warnings\nimport torch\n"
        "def make():\n"
        "    warnings.warn('enable_nested_tensor is True, but self.use_nested_tensor is False', UserWarning)\n"
        "    return torch.nn.Linear(5, 2).double()\n")
    torch.save(_tiny.make().state_dict(), d / "net.pt")
    torch.save(torch.nn.Linear(5, 2).double().state_dict(), d / "linear.pt")
    return d


#: (name, analyze arguments ({b}: the bad-input folder, {m}: the tiny model spec), exit code, stderr regex)
BAD_INPUTS = [
    ("batch sizes above the data size", ["{b}/net.pt", "--model", "{m}", "--data", "{b}/ok.npz",
                                         "--batch-sizes", "8,100000"], 2,
     r"Invalid value for --batch-sizes: 100000 is larger than the data \(64 samples\), so a minibatch of that "
     r"size cannot be drawn; pass sizes up to 64, e.g. 4,8,16,32"),
    ("data file with zero samples", ["{b}/net.pt", "--model", "{m}", "--data", "{b}/zero_samples.npz"], 1,
     r"data file '.*zero_samples\.npz' holds 0 samples \(inputs of shape \(0, 3\)\); pass a file with at least "
     r"one \(input, target\) pair"),
    ("data file of zero bytes", ["{b}/net.pt", "--model", "{m}", "--data", "{b}/zero_bytes.npz"], 1,
     r"data file '.*zero_bytes\.npz' is empty \(0 bytes\); write the data again"),
    ("text file named .npz", ["{b}/net.pt", "--model", "{m}", "--data", "{b}/text.npz"], 1,
     r"data file '.*text\.npz' is not a \.npz archive \(it starts with b'inputs', not a zip header\); write it "
     r"with numpy\.savez\(path, inputs=X, targets=y\)"),
    ("int64 inputs to a float model", ["{b}/net.pt", "--model", "{m}", "--data", "{b}/int_inputs.npz"], 1,
     r"data/model dtype mismatch: the inputs are torch\.int64 but the model computes in torch\.float64 \(.*\); "
     r"save the inputs as floats \(inputs\.float\(\) before saving\)"),
    ("--model names a directory", ["{b}/net.pt", "--model", "{b}/models_dir:make", "--data", "{b}/ok.npz"], 1,
     r"factory '.*models_dir:make': '.*models_dir' is a directory, expected a Python file; pass "
     r"'.*models_dir/models\.py:make'"),
    ("--data names a directory", ["{b}/net.pt", "--model", "{m}", "--data", "{b}/data_dir.pt"], 1,
     r"data file '.*data_dir\.pt' is a directory; check the path"),
    ("a factory that warns, then a mismatch", ["{b}/linear.pt", "--model", "{b}/noisy.py:make", "--data",
                                               "{b}/ok.npz"], 1,
     r"data/model shape mismatch: the model cannot take inputs of shape \(8, 3\)"),
]


def _args(args, b):
    return [a.replace("{b}", str(b)).replace("{m}", MODEL_FILE_SPEC) for a in args]


@pytest.mark.parametrize("name, args, code, message", BAD_INPUTS, ids=[r[0] for r in BAD_INPUTS])
def test_bad_input_is_one_line_and_leaves_no_folder(run_cli, bad, tmp_path, name, args, code, message):
    out = tmp_path / "new" / "out"
    r = run_cli("analyze", *_args(args, bad), "--out", out, "--budget", "40", "--only", "trace", "--seed", "0")
    assert r.exit_code == code, r
    lines = [ln for ln in r.stderr.strip().splitlines() if ln != "loading ..."]
    errors = [ln for ln in lines if ln.startswith("Error: ")]
    assert errors and re.search(message, errors[-1]), r
    if code == 1:
        assert lines == errors, r  # nothing else: no torch warning, no traceback
    assert "Traceback" not in r.stderr and "UserWarning" not in r.stderr
    assert not (tmp_path / "new").exists()  # a failed run creates no folder


def test_warnings_of_loading_are_shown_with_verbose(run_cli, bad, tmp_path):
    r = run_cli("analyze", bad / "linear.pt", "--model", f"{bad}/noisy.py:make", "--data", bad / "ok.npz",
                "--out", tmp_path / "out", *QUICK[:-1], "-v")
    assert r.exit_code == 1
    assert "warning: UserWarning: enable_nested_tensor is True" in r.stderr
