"""``torchrun --nproc-per-node 2 -m curvlens_cli analyze``: one report, the single-process numbers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = ["analyze", "--demo", "--dtype", "float64", "--budget", "80", "--only", "conditioning,trace,density",
        "--no-per-layer", "-q"]
TIMING = ("cost", "time", "second")


def _run(cmd, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_torchrun_two_ranks_write_one_report_equal_to_one_process(tmp_path):
    two = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "curvlens_cli", *ARGS, "--out", "two"], tmp_path)
    assert two.returncode == 0, two.stdout + two.stderr
    one = _run([sys.executable, "-m", "curvlens_cli", *ARGS, "--out", "one"], tmp_path)
    assert one.returncode == 0, one.stdout + one.stderr
    assert two.stdout.count("curvature products") == 1  # only rank 0 printed its table
    a = json.loads((tmp_path / "two" / "summary.json").read_text())
    b = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert set(a) == set(b)
    compared = 0
    for key, val in b.items():
        if any(t in key for t in TIMING) or not isinstance(val, (int, float)) or isinstance(val, bool):
            continue
        got = a[key]
        if isinstance(val, float) and math.isnan(val):
            assert isinstance(got, float) and math.isnan(got), key
        else:
            assert abs(got - val) <= 1e-9 * max(1.0, abs(val)), (key, got, val)
        compared += 1
    assert compared >= 5
    from curvlens.io import load_result

    notes = load_result(str(tmp_path / "two" / "results.h5")).notes
    assert any("analyzed on 2 processes" in n for n in notes), notes
