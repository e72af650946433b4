"""Analyze a checkpoint saved by a plain PyTorch training script, with the `curvlens` CLI.

    python examples/analyze_checkpoint.py --workdir /tmp/curvlens-example

1. trains a small network the ordinary way and saves ``{"model_state_dict": ..., "epoch": ...}``
   with ``torch.save`` (as most training scripts do), plus its validation data as ``val.pt``;
2. runs ``curvlens analyze ckpt.pt --model examples/analyze_checkpoint.py:make_model --data val.pt``
   exactly as you would in a shell, which writes ``report.html``, ``results.h5`` and
   ``summary.json`` next to the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch
from torch import nn


def make_model() -> nn.Module:
    """The architecture (the factory that `--model` points to)."""
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))


def train_and_save(workdir: str, num_samples: int = 1024, epochs: int = 20, seed: int = 0) -> str:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_samples, 8, generator=g)
    y = (x[:, :3] + 0.3 * torch.randn(num_samples, 3, generator=g)).argmax(dim=1)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64,
                                         shuffle=True, generator=g)
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
    os.makedirs(workdir, exist_ok=True)
    ckpt = os.path.join(workdir, "ckpt.pt")
    torch.save({"model_state_dict": model.state_dict(), "epoch": epochs}, ckpt)
    torch.save({"inputs": x[:512], "targets": y[:512]}, os.path.join(workdir, "val.pt"))
    return ckpt


def main(workdir: str = "curvlens-example", budget: int = 400, extra: tuple[str, ...] = ()) -> dict:
    ckpt = train_and_save(workdir)
    out = os.path.join(workdir, "report")
    here = os.path.abspath(__file__)
    cmd = [sys.executable, "-m", "curvlens_cli.main", "analyze", ckpt, "--model", f"{here}:make_model",
           "--data", os.path.join(workdir, "val.pt"), "--loss", "cross_entropy", "--lr", "0.1",
           "--momentum", "0.9", "--batch-size", "64", "--budget", str(budget), "--out", out, *extra]
    print("$", " ".join(cmd))
    subprocess.run(cmd, check=True)
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    print(f"open {os.path.join(out, 'report.html')} in a browser")
    return summary


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="curvlens-example")
    main(ap.parse_args().workdir)
