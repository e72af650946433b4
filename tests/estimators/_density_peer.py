"""A re-implementation, from its published description, of the density method that
curvlinops ships (Papyan 2020, Alg. 2): plain three-term Lanczos (no reorthogonalization),
Gaussian bumps of width ``2 / (m - 1) / sqrt(8 ln kappa)`` (kappa = 3) on the spectrum mapped to
``[-1, 1]`` with 5% margins, averaged over repeats. Used only as a baseline in tests; the
spectral bounds are given exactly (free), which favours the baseline."""

from __future__ import annotations

import math

import numpy as np
import torch

from curvlens.linalg.lanczos import lanczos


def plain_lanczos_density(op, num_steps, num_repeats, bounds, *, seed, num_points=1024):
    lo, hi = bounds
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    c, h = (hi + lo) / 2, (hi - lo) / 2
    x = np.linspace(-1.0, 1.0, num_points)
    width = 2.0 / (num_steps - 1) / math.sqrt(8.0 * math.log(3.0))
    dens = np.zeros(num_points)
    g = torch.Generator().manual_seed(seed)
    nodes, weights = [], []
    for _ in range(num_repeats):
        res = lanczos(op, num_steps, generator=g, reorth=False, store_basis=False)
        theta, S = res.ritz()
        w = S[0] ** 2
        z = (x[None, :] - ((theta - c) / h)[:, None]) / width
        dens += (w[:, None] * np.exp(-0.5 * z * z)).sum(0) / (width * math.sqrt(2 * math.pi) * h)
        nodes.append(theta)
        weights.append(w)
    return c + h * x, dens / num_repeats, np.concatenate(nodes), np.concatenate(weights)
