"""examples/edge_of_stability.py at a tiny size: plot, series file, certified sharpness."""

import importlib.util
import pathlib

from curvlens.io.series import load_series

ROOT = pathlib.Path(__file__).resolve().parents[2] / "examples"


def test_edge_of_stability_tiny(tmp_path):
    spec = importlib.util.spec_from_file_location("example_eos", ROOT / "edge_of_stability.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    png = tmp_path / "eos.png"
    res = mod.main(steps=40, lr=0.5, num_samples=80, hidden=8, every=20, out=str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    s = load_series(res["path"])
    assert s.steps.tolist() == [20, 40] and s.columns["threshold"].tolist() == [4.0, 4.0]
    assert s.columns["lambda_max_converged"].tolist() == [1.0, 1.0]
    assert (s.columns["eos_ratio"] == s.columns["lambda_max"] * 0.25).all()
    assert len(res["alerts"]) == len(s.alert_steps)
    assert res["series"].columns["lambda_max"].tolist() == s.columns["lambda_max"].tolist()
