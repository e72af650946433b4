"""Explicit random number generators: curvlens never touches the global RNG."""

from __future__ import annotations

import torch


def resolve_generator(generator: torch.Generator | int | None) -> torch.Generator:
    """Return a ``torch.Generator`` to draw from.

    Args:
        generator: a generator (used as is), an int seed (a new CPU generator seeded with it),
            or None (a new generator seeded from OS entropy; its seed is recorded in the
            result's ``RunInfo.seed`` so the run can be replayed).

    Raises:
        TypeError: for anything else.
    """
    if isinstance(generator, torch.Generator):
        return generator
    if generator is None:
        g = torch.Generator()
        g.seed()  # OS entropy, does not touch the global RNG
        return g
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(generator)
    raise TypeError(
        f"generator: expected a torch.Generator, an int seed or None, got {type(generator).__name__}; "
        "pass generator=torch.Generator().manual_seed(0)"
    )

