"""The cost of one curvature product in gradients: :func:`measure_product_cost`.

A product through retained graphs is one backward of the gradient graph (about 1.1-2x a
gradient on CPU; 2-3x when graphs are rebuilt), so a ratio below 1 says that the timing, not
the product, is wrong. The causes guarded against here:

* **one-time costs** (lazy weight packing, allocator growth, first-call dispatch): one
  gradient and one product run untimed first;
* **a busy machine**: on shared cores with several torch threads, the same gradient was
  measured to vary 7x between consecutive calls (0.63-4.4 s for an LSTM on 2 threads at load
  6.5), so a min-of-two of each, timed apart, can give any ratio. Here every sample is a
  *pair* (one gradient, one product) timed back to back, the order alternating between pairs,
  and the reported ratio is the median of the per-pair ratios: a slow spell inflates both
  halves of a pair, or one pair of several;
* **preemption on tiny models**: a gradient of a few milliseconds is shorter than a
  scheduler time slice, so one preemption doubles its wall time (measured per-pair wall
  ratios of 0.59-2.6 for a 9k-parameter MLP on the loaded 2-core machine). The ratio is
  therefore taken from the process CPU time (``time.process_time``, which a preempted process
  does not accrue) on CPU, and from wall time (after a device synchronize) on accelerators,
  whose work the CPU clock does not see. The wall-clock medians, which convert a time budget
  into products, are reported beside it.

Both halves use the same data: the full data of the operator's :class:`~curvlens.Problem`.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

__all__ = ["ProductCost", "measure_product_cost", "COST_PAIRS"]

#: timed (gradient, product) pairs after the untimed warm-up pair
COST_PAIRS = 3


@dataclass(frozen=True)
class ProductCost:
    """The measured cost of one product.

    Attributes:
        matvec_seconds: median wall-clock seconds of one product over the timed pairs.
        gradient_seconds: median wall-clock seconds of one full-data gradient over the pairs.
        hvp_cost: median over pairs of (product time / gradient time), CPU time on CPU and
            wall time on accelerators; None when a gradient took no measurable time.
        ratio_range: ``(min, max)`` of the per-pair ratios (their spread), or None.
        pairs: timed pairs (after one untimed warm-up pair).
    """

    matvec_seconds: float
    gradient_seconds: float
    hvp_cost: float | None
    ratio_range: tuple[float, float] | None = None
    pairs: int = 0


def measure_product_cost(op: Any, v: torch.Tensor, *, pairs: int = COST_PAIRS,
                         clock: Callable[[], float] | None = None,
                         wall_clock: Callable[[], float] = time.perf_counter) -> ProductCost:
    """Time ``op.matvec(v)`` against ``op.gradient()`` (see the module doc for the protocol).

    Spends ``pairs + 1`` products and ``pairs + 1`` gradients.

    Args:
        op: a model operator (has ``matvec`` and ``gradient``).
        v: the direction (length ``op.dim``, the operator's dtype and device).
        pairs: timed pairs, at least 1.
        clock: the timer of the ratio (default: ``time.process_time`` on CPU, ``wall_clock``
            on accelerators).
        wall_clock: the timer of the reported seconds.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from curvlens.operators import HessianOperator
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(32, 3, dtype=torch.float64, generator=g)
        >>> y = torch.randint(0, 2, (32,), generator=g)
        >>> op = HessianOperator(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double(),
        ...                      nn.CrossEntropyLoss(), (x, y))
        >>> c = measure_product_cost(op, torch.ones(op.dim, dtype=torch.float64))
        >>> c.pairs, c.hvp_cost > 0, c.ratio_range[0] <= c.hvp_cost <= c.ratio_range[1]
        (3, True, True)
    """
    if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 1:
        raise ValueError(f"pairs: expected an int >= 1, got {pairs!r}; pass e.g. pairs=3")
    sync = _synchronizer(op)
    if clock is None:
        clock = time.process_time if torch.device(getattr(op, "device", "cpu")).type == "cpu" else wall_clock

    def timed(fn) -> tuple[float, float]:
        sync()
        t0, w0 = clock(), wall_clock()
        fn()
        sync()
        return clock() - t0, wall_clock() - w0

    def grad():
        op.gradient()

    def prod():
        op.matvec(v)

    grad()  # warm-up pair: one-time costs are charged to neither
    prod()
    t_g, t_m, ratios = [], [], []
    for j in range(pairs):
        if j % 2 == 0:
            g, m = timed(grad), timed(prod)
        else:
            m, g = timed(prod), timed(grad)
        t_g.append(g[1])
        t_m.append(m[1])
        if g[0] > 0:
            ratios.append(m[0] / g[0])
    ratio = statistics.median(ratios) if ratios else None
    return ProductCost(matvec_seconds=statistics.median(t_m), gradient_seconds=statistics.median(t_g),
                       hvp_cost=ratio, ratio_range=(min(ratios), max(ratios)) if ratios else None, pairs=pairs)


def _synchronizer(op: Any) -> Callable[[], None]:
    """Waits for queued device work (CUDA kernels run asynchronously), a no-op on CPU."""
    dev = torch.device(getattr(op, "device", "cpu"))
    if dev.type == "cuda":
        return lambda: torch.cuda.synchronize(dev)
    return lambda: None
