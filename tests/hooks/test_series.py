"""The HDF5 series: round trip through load_result, resume, readers during writes, SIGKILL."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from curvlens.errors import SchemaError
from curvlens.io import load_result, save_result
from curvlens.io.series import CurvatureSeries, SeriesWriter, load_series

_WRITER = textwrap.dedent("""
    import sys
    from curvlens.io.series import SeriesWriter
    w = SeriesWriter(sys.argv[1], meta={"who": "child"})
    step = w.last_step or 0
    while True:
        step += 1
        w.append(step, {"a": 2.0 * step, "b%d" % (step % 3): float(step)},
                 [("edge_of_stability", "msg %d" % step)] if step % 5 == 0 else [])
""")


def _check_consistent(s: CurvatureSeries, alerts_upto: int | None = None) -> None:
    n = len(s)
    upto = n if alerts_upto is None else alerts_upto
    assert s.steps.tolist() == list(range(1, n + 1))
    if n == 0:  # the writer creates the file (with its settings) before the first record
        assert not s.columns and s.alert_steps.size == 0
        return
    assert np.array_equal(s.columns["a"], 2.0 * s.steps)
    for k in range(3):
        col = s.columns.get(f"b{k}")
        if col is not None:
            have = ~np.isnan(col)
            assert np.array_equal(s.steps[have] % 3, np.full(have.sum(), k))
    assert s.alert_steps.tolist() == [t for t in range(1, upto + 1) if t % 5 == 0]
    assert s.alert_messages.tolist() == [f"msg {t}" for t in s.alert_steps]


def test_survives_sigkill_mid_write_and_resumes(tmp_path):
    path = tmp_path / "run.h5"
    total_before = 0
    for _ in range(2):
        child = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stderr=subprocess.PIPE)
        reads, deadline = 0, time.time() + 180  # generous: the child imports torch on a loaded machine
        try:
            while time.time() < deadline:  # readers see a complete file while the writer appends
                if path.exists():
                    s = load_series(path)
                    _check_consistent(s)
                    reads += 1
                    if len(s) >= total_before + 10:
                        break
                assert child.poll() is None, child.stderr.read().decode()
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        assert reads > 0
        s = load_series(path)  # every record before the kill is intact
        _check_consistent(s)
        assert len(s) >= total_before + 10
        total_before = len(s)
        assert s.meta["who"] == "child"
    w = SeriesWriter(path)  # resume: appends after the last step and refuses to go back
    assert w.last_step == total_before
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]  # stale copies are removed
    with pytest.raises(ValueError, match=f"step: expected a step after the last recorded step {total_before}"):
        w.append(total_before, {"a": 0.0})
    w.append(total_before + 1, {"a": 2.0 * (total_before + 1)})
    _check_consistent(load_series(path), alerts_upto=total_before)


def test_round_trip_new_columns_and_save_result(tmp_path):
    path = tmp_path / "s.h5"
    w = SeriesWriter(path, meta={"optimizer": "SGD", "every": 10, "per_layer": False})
    w.append(10, {"lambda_max": 1.5})
    w.append(20, {"lambda_max": 2.0, "layer_lambda_max:fc/1": 0.5}, [("nonfinite", "bad")])
    s = load_result(path)
    assert isinstance(s, CurvatureSeries) and len(s) == 2
    assert s.columns["lambda_max"].tolist() == [1.5, 2.0]
    assert np.isnan(s.columns["layer_lambda_max:fc/1"][0]) and s.columns["layer_lambda_max:fc/1"][1] == 0.5
    assert s.alert_kinds.tolist() == ["nonfinite"] and s.meta == {"optimizer": "SGD", "every": 10,
                                                                 "per_layer": False}
    assert s.summary()["last_step"] == 20
    copy = save_result(s, tmp_path / "copy.h5")  # the generic codec writes the same kind
    s2 = load_series(copy)
    assert s2.steps.tolist() == [10, 20] and s2.meta == s.meta


def test_bad_inputs(tmp_path):
    w = SeriesWriter(tmp_path / "s.h5")
    with pytest.raises(TypeError, match="step: expected an int training step, got float"):
        w.append(1.5, {})
    with pytest.raises(ValueError, match="values: expected non-empty str column names"):
        w.append(1, {"": 1.0})
    with pytest.raises(TypeError, match="path: expected a str or os.PathLike file name, got int"):
        SeriesWriter(3)
    with pytest.raises(TypeError, match=r"meta\['x'\]: expected a str key"):
        SeriesWriter(tmp_path / "t.h5", meta={"x": [1]})
    with pytest.raises(ValueError, match="name: expected one of the series' columns"):
        load_series(tmp_path / "s.h5").column("nope")
    from curvlens.linalg import lanczos
    from curvlens.operators import DenseOperator
    import torch

    other = save_result(lanczos(DenseOperator(torch.eye(3, dtype=torch.float64)), 2, generator=0), tmp_path / "l.h5")
    with pytest.raises(SchemaError, match="not a curvature series"):
        SeriesWriter(other)
