"""Shared pieces of the benchmark scripts: models, data, timing, peak memory, peer imports.

Every figure is reported as a multiple of one plain gradient over the same data, measured in
the same process. Peers are imported lazily; a missing or failing peer is recorded as such.
"""

from __future__ import annotations

import gc
import time
from typing import Callable

import torch
from torch import nn


def set_threads(n: int = 2) -> None:
    torch.set_num_threads(n)


# ---------------------------------------------------------------------- models
class TinyTransformer(nn.Module):
    """One pre-norm transformer encoder block + classification head (dropout off)."""

    def __init__(self, d: int = 128, heads: int = 4, ff: int = 256, classes: int = 10, vocab: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.block = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True, norm_first=True)
        self.head = nn.Linear(d, classes)

    def forward(self, tokens):
        return self.head(self.block(self.embed(tokens)).mean(dim=1))


def make_problem(name: str, n: int, seed: int = 0):
    """(model, loss, x, y) for 'mlp' (~1.07M params), 'cnn' or 'transformer'."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # model init only (benchmark process; library code never does this)
    if name == "mlp":
        model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 256), nn.ReLU(), nn.Linear(256, 10))
        x = torch.randn(n, 784, generator=g)
    elif name == "cnn":
        model = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10),
        )
        x = torch.randn(n, 1, 28, 28, generator=g)
    elif name == "transformer":
        model = TinyTransformer()
        x = torch.randint(0, 64, (n, 32), generator=g)
    else:
        raise ValueError(name)
    y = torch.randint(0, 10, (n,), generator=g)
    model.eval()
    return model, nn.CrossEntropyLoss(), x, y


def batches(x, y, bs: int):
    return [(x[i : i + bs], y[i : i + bs]) for i in range(0, len(x), bs)]


def num_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------- measuring
def timeit(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Best (minimum) wall time of ``fn`` over ``repeat`` runs, in seconds."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def peak_mib(fn: Callable[[], object]) -> float:
    """Peak resident memory above the current level while running ``fn`` (Linux only, MiB)."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) to the current RSS
    except OSError:
        return float("nan")
    base = _rss_kib("VmRSS")
    fn()
    return max(0, _rss_kib("VmHWM") - base) / 1024


def full_gradient(model, loss_fn, data):
    params = [p for p in model.parameters() if p.requires_grad]
    n = sum(len(b[1]) for b in data)

    def run():
        acc = None
        for xb, yb in data:
            g = torch.autograd.grad(loss_fn(model(xb), yb) * (len(yb) / n), params)
            acc = g if acc is None else [a + b for a, b in zip(acc, g)]
        return acc

    return run


def fmt(x: float, nd: int = 2) -> str:
    if x != x:
        return "n/a"
    return f"{x:.{nd}f}"


def print_table(rows: list[dict], cols: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    print("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols))
