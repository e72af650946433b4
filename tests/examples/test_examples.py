"""Every example runs at a tiny size and its numbers agree with exact references."""

import importlib.util
import pathlib

import torch

ROOT = pathlib.Path(__file__).resolve().parents[2] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quickstart(capsys):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        out = load("quickstart").main(num_samples=300, hidden=8, k=3)
    H = out["operator"]
    exact = torch.linalg.eigvalsh(H.to_dense().double()).flip(0)
    assert bool(out["converged"].all())
    torch.testing.assert_close(out["eigenvalues"], exact[:3], rtol=2e-3, atol=1e-5)
    assert abs(out["trace"] - float(exact.sum())) < 5 * out["trace_stderr"] + 1e-4
    assert "certified" in capsys.readouterr().out


def test_spectral_density(tmp_path):
    png = tmp_path / "d.png"
    with torch.random.fork_rng():  # the example initializes its model from the global RNG
        torch.manual_seed(0)
        out = load("spectral_density").main(out=str(png), num_samples=200, steps=20)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dens, ext = out["density"], out["extreme"]
    assert ext.lambda_max_certified and ext.lambda_min_certified
    # Ritz values lie inside the spectrum; the certified extremes are within their residuals
    # of the true ones (float32 model: allow rounding)
    mass = dens.nodes[dens.weights > 0]
    slack = 1e-5 * abs(ext.lambda_max)
    assert float(mass.max()) <= ext.lambda_max + ext.lambda_max_residual + slack
    assert float(mass.min()) >= ext.lambda_min - ext.lambda_min_residual - slack


def test_batch_size_noise(capsys):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        out = load("batch_size_noise").main(num_samples=256, hidden=4, budget=300)
    noise = out["analysis"].noise
    assert noise is not None and len(noise.batch_sizes) >= 2
    assert set(noise.quantities) >= {"lambda_max", "trace"}
    # the law variance ~ a + b/B: larger minibatches are not noisier on average
    assert float(noise.rstderr[0, -1]) <= float(noise.rstderr[0, 0]) + 1e-12
    assert "critical batch size for lambda_max" in capsys.readouterr().out


def test_analyze_checkpoint_example(tmp_path):
    summary = load("analyze_checkpoint").main(str(tmp_path), budget=120,
                                              extra=("--only", "conditioning,trace", "-q"))
    assert summary["num_params"] == 8 * 32 + 32 + 32 * 3 + 3
    assert summary["num_samples"] == 512
    assert summary["lambda_max"] > 0 and summary["trace"] is not None
    assert (tmp_path / "report" / "report.html").exists()
    assert (tmp_path / "report" / "results.h5").exists()
