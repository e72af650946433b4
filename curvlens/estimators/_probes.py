"""Random probe vectors for stochastic estimators, drawn from an explicit generator only.

Rademacher probes (entries +-1 with equal probability) give the minimum-variance Hutchinson
trace estimator among probes with i.i.d. entries (Hutchinson 1990; Avron & Toledo 2011);
Gaussian probes are rotation invariant, which XTrace's error estimate and Hutch++'s analysis
assume. Both satisfy ``E[v v^T] = I``.
"""

from __future__ import annotations

import torch

PROBE_KINDS = ("rademacher", "gaussian")


def check_probe_kind(kind: object, name: str = "probe") -> str:
    """Validate a probe kind and return it (lower-cased)."""
    if not isinstance(kind, str) or kind.lower() not in PROBE_KINDS:
        raise ValueError(
            f"{name}: expected one of {PROBE_KINDS}, got {kind!r}; "
            f"use {name}='rademacher' (lowest variance for trace) or {name}='gaussian'"
        )
    return kind.lower()


def probe_vectors(
    dim: int,
    k: int,
    *,
    kind: str = "rademacher",
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    generator: torch.Generator,
) -> torch.Tensor:
    """Draw ``k`` random probe vectors of length ``dim`` as the columns of a ``(dim, k)`` tensor.

    The vectors are drawn on ``generator.device`` (so a CPU generator gives the same probes
    whatever the target device) and then moved to ``device``. The global RNG is never used.

    Args:
        dim: vector length ``D`` (positive int).
        k: number of probes (non-negative int).
        kind: ``"rademacher"`` (entries +-1) or ``"gaussian"`` (standard normal entries).
        dtype: floating dtype of the result.
        device: device of the result.
        generator: the ``torch.Generator`` to draw from (required; see
            :func:`curvlens._rng.resolve_generator` to build one from a seed).

    Returns:
        A ``(dim, k)`` tensor with ``E[v v^T] = I`` for each column ``v``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> V = probe_vectors(4, 2, kind="rademacher", generator=g)
        >>> V.shape, bool((V.abs() == 1).all())
        (torch.Size([4, 2]), True)
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim: expected a positive int, got {dim!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k: expected a non-negative int number of probes, got {k!r}")
    kind = check_probe_kind(kind, "kind")
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator: expected a torch.Generator, got {type(generator).__name__}; "
            "pass generator=torch.Generator().manual_seed(0) (curvlens never uses the global RNG)"
        )
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype: expected a floating torch.dtype, got {dtype!r}; use dtype=torch.float64")
    gdev = generator.device
    if kind == "gaussian":
        V = torch.randn(dim, k, generator=generator, dtype=dtype, device=gdev)
    else:
        bits = torch.randint(0, 2, (dim, k), generator=generator, device=gdev)
        V = bits.to(dtype).mul_(2).sub_(1)
    return V.to(device)
