"""The 8x8 digits for the K-FAC benchmarks: scikit-learn's bundled ``load_digits`` (1797 images,
pixel values 0..16 scaled to [0, 1]), or, only when scikit-learn is missing, a deterministic
stand-in of the same shape (ten 5x7 glyphs, shifted by up to one pixel, random stroke intensity
and pixel noise, from a fixed seed). :func:`digits_source` says which one is in use.
"""

from __future__ import annotations

import torch

_GLYPHS = [
    "01110 10001 10011 10101 11001 10001 01110", "00100 01100 00100 00100 00100 00100 01110",
    "01110 10001 00001 00010 00100 01000 11111", "11111 00010 00100 00010 00001 10001 01110",
    "00010 00110 01010 10010 11111 00010 00010", "11111 10000 11110 00001 00001 10001 01110",
    "00110 01000 10000 11110 10001 10001 01110", "11111 00001 00010 00100 01000 01000 01000",
    "01110 10001 10001 01110 10001 10001 01110", "01110 10001 10001 01111 00001 00010 01100",
]


def digits_source() -> str:
    """``"sklearn load_digits"`` or ``"deterministic glyph stand-in (scikit-learn missing)"``."""
    try:
        import sklearn.datasets  # noqa: F401
    except ImportError:
        return "deterministic glyph stand-in (scikit-learn missing)"
    return "sklearn load_digits"


def digits(n: int = 1797, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` digits: ``(X (n, 64) float32 in [0, 1], y (n,) int64)``."""
    if digits_source() == "sklearn load_digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return (torch.tensor(d.data[:n], dtype=torch.float32) / 16.0,
                torch.tensor(d.target[:n], dtype=torch.int64))
    return _stand_in(n, seed)


def _stand_in(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    protos = torch.zeros(10, 8, 8)
    for c, rows in enumerate(_GLYPHS):
        protos[c, :7, 1:6] = torch.tensor([[float(ch) for ch in r] for r in rows.split()])
    y = torch.arange(n) % 10
    y = y[torch.randperm(n, generator=g)]
    imgs = protos[y]
    dx = torch.randint(-1, 2, (n,), generator=g)
    dy = torch.randint(0, 2, (n,), generator=g)
    out = torch.zeros(n, 8, 8)
    for i in range(n):
        out[i] = torch.roll(imgs[i], shifts=(int(dy[i]), int(dx[i])), dims=(0, 1))
    out = out * (0.6 + 0.4 * torch.rand(n, 1, 1, generator=g))
    out = (out + 0.15 * torch.rand(n, 8, 8, generator=g)).clamp(0, 1)
    return (torch.round(out * 16) / 16).reshape(n, 64), y
