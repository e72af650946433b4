"""Fixtures of the CLI tests: tiny checkpoints of every format and tiny data files, built once per session.

The model is :func:`tests.cli._tiny.make` (46 parameters, float64), the data 64 samples with 3
features and 2 classes. ``run_cli`` invokes the click app in-process and returns the result with
``exit_code``, ``stdout`` and ``stderr`` (kept apart, so tests can tell the report from the errors).
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.cli import _tiny

TINY_PY = str(Path(_tiny.__file__).resolve())
#: ``--model`` spec in the 'file.py:factory' form
MODEL_FILE_SPEC = f"{TINY_PY}:make"
#: ``--model`` spec in the 'pkg.module:factory' form
MODEL_MODULE_SPEC = "tests.cli._tiny:make"
#: the quick settings used by most format tests
QUICK = ("--budget", "120", "--only", "conditioning,trace", "--seed", "0", "-q")


def _safetensors_bytes(sd: dict[str, torch.Tensor]) -> bytes:
    """A valid .safetensors file written by hand (independent of the optional package)."""
    import json

    header, blobs, offset = {}, [], 0
    for name, t in sd.items():
        raw = t.contiguous().numpy().tobytes()
        header[name] = {"dtype": "F64", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return len(h).to_bytes(8, "little") + h + b"".join(blobs)


@pytest.fixture(scope="session")
def files(tmp_path_factory) -> Path:
    """A folder holding every checkpoint and data file the tests use (see the names below)."""
    d = tmp_path_factory.mktemp("cli_files")
    m = _tiny.make(seed=3)
    sd = m.state_dict()
    ddp = {f"module.{k}": v for k, v in sd.items()}
    x, y = _tiny.inputs(), _tiny.labels()

    # --- checkpoints -------------------------------------------------------------------------
    torch.save(sd, d / "bare.pt")
    for key in ("model", "state_dict", "model_state_dict"):
        torch.save({"epoch": 4, key: ddp, "optimizer": {"lr": 0.1}}, d / f"nested_{key}.pt")
    torch.save(_tiny.make(seed=5).state_dict(), d / "other.pt")  # same architecture, other weights
    torch.jit.save(torch.jit.trace(m, x[:2]), str(d / "scripted.pt"))
    batch = torch.export.Dim("batch", min=1)
    torch.export.save(torch.export.export(m, (x[:2],), dynamic_shapes=({0: batch},)), str(d / "program.pt2"))
    torch.export.save(torch.export.export(m, (x[:2],)), str(d / "program_batch2.pt2"))  # batch size fixed at 2
    torch.save(m, d / "whole.pt")  # a fully pickled module
    torch.save(torch.nn.Sequential(m, torch.nn.LogSoftmax(dim=1)).state_dict(), d / "logprobs.pt")
    torch.save(torch.nn.Sequential(m, torch.nn.Sigmoid()).state_dict(), d / "probs.pt")
    (d / "weights.safetensors").write_bytes(_safetensors_bytes(sd))
    raw = (d / "bare.pt").read_bytes()
    (d / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    (d / "empty.pt").write_bytes(b"")
    (d / "notes.txt").write_text("these are not weights\n")
    torch.save({"epoch": 3, "lr": 0.1}, d / "no_weights.pt")

    # --- data -------------------------------------------------------------------------------
    torch.save({"inputs": x, "targets": y}, d / "data.pt")
    np.savez(d / "data.npz", x=x.numpy(), y=y.numpy())
    with h5py.File(d / "data.h5", "w") as f:
        f["X"] = x.numpy()
        f["y"] = y.numpy()
    torch.save({"images": x, "labels": y}, d / "custom_keys.pt")
    torch.save({"inputs": _tiny.inputs(features=_tiny.IN + 2), "targets": y}, d / "wide_inputs.pt")
    xn = x.clone()
    xn[0, 0] = float("nan")
    torch.save({"inputs": xn, "targets": y}, d / "nan_inputs.pt")
    reg = torch.randn(len(y), _tiny.OUT, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    torch.save({"inputs": x, "targets": reg}, d / "regression.pt")
    torch.save({"inputs": x, "targets": (reg > 0).to(torch.float64)}, d / "binary.pt")
    torch.save({"inputs": x, "targets": torch.randn(len(y), 7, generator=torch.Generator().manual_seed(6),
                                                   dtype=torch.float64)}, d / "wrong_targets.pt")
    os.chmod(d, 0o755)
    return d


class _Result:
    def __init__(self, r):
        self.exit_code, self.exception = r.exit_code, r.exception
        self.stdout, self.stderr, self.output = r.stdout, r.stderr, r.output

    def __repr__(self):  # shown by pytest when an assertion on the result fails
        return f"<exit {self.exit_code}>\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


@pytest.fixture(scope="session")
def run_cli():
    """``run_cli("analyze", ckpt, "--data", data, ...)`` -> result (exit_code, stdout, stderr, output)."""
    from curvlens_cli.main import cli

    def run(*args):
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            try:
                runner = CliRunner(mix_stderr=False)
            except TypeError:  # click >= 8.2 keeps stderr apart by default
                runner = CliRunner()
            return _Result(runner.invoke(cli, [str(a) for a in args], prog_name="curvlens"))
        finally:
            torch.set_num_threads(before)

    return run
