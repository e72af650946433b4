"""The Lightning callback writes the series during Trainer.fit (CPU, tiny model, no logger)."""

import pytest
import torch
from torch import nn

pl = pytest.importorskip("pytorch_lightning")

from curvlens.integrations.lightning import CurvatureCallback  # noqa: E402
from curvlens.io.series import load_series  # noqa: E402


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.5)


def test_trainer_fit_writes_the_series(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 3, generator=g), torch.randn(64, 1, generator=g)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    out = tmp_path / "run.h5"
    cb = CurvatureCallback(nn.MSELoss(), (x[:32], y[:32]), every=2, metrics=("lambda_max",), out=out)
    trainer = pl.Trainer(max_steps=6, accelerator="cpu", devices=1, callbacks=[cb], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(Tiny(), loader)
    s = load_series(out)
    assert s.steps.tolist() == [2, 4, 6]
    assert s.columns["lr"].tolist() == [0.05] * 3 and s.columns["threshold"] == pytest.approx([3 / 0.05] * 3)
    assert all(v > 0 for v in s.columns["lambda_max"]) and s.columns["lambda_max_converged"].tolist() == [1.0] * 3


def test_bad_options_fail_at_construction():
    with pytest.raises(ValueError, match="every: expected an int >= 1"):
        CurvatureCallback(nn.MSELoss(), None, every=0)
