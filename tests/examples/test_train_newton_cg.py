"""examples/train_newton_cg.py at a tiny size: the loss falls, weights stay finite, nothing global changes."""

import importlib.util
import math
import pathlib

import torch

PATH = pathlib.Path(__file__).resolve().parents[2] / "examples" / "train_newton_cg.py"


def test_train_newton_cg_tiny(capsys):
    spec = importlib.util.spec_from_file_location("example_train_newton_cg", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rng = torch.get_rng_state()
    out = mod.main(steps=6, batch_size=128, hidden=8, num_samples=300)
    assert torch.equal(torch.get_rng_state(), rng)
    losses = out["losses"]
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
    assert out["final_loss"] < 0.8 * math.log(10)  # started near log(10) = 2.30 (uniform prediction)
    assert all(bool(torch.isfinite(p).all()) for p in out["model"].parameters())
    assert out["optimizer"].last_step.step == 5
    assert "training loss" in capsys.readouterr().out
