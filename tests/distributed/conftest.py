"""One pair of gloo processes runs every agreeing two-rank scenario (starting processes is the slow part)."""

from __future__ import annotations

import pytest
import torch

from ._optim_worker import SCENARIOS as OPTIM_SCENARIOS
from ._spawn import run_ranks

PROBLEM_SCENARIOS = ("equal", "empty", "ddp", "local", "analyze")


@pytest.fixture(scope="session")
def two_ranks(tmp_path_factory):
    """(rank 0's results, rank 1's results), each a dict scenario -> results."""
    tmp = tmp_path_factory.mktemp("ranks")
    codes, outputs, out = run_ranks(",".join(PROBLEM_SCENARIOS + tuple(OPTIM_SCENARIOS)), tmp, timeout=300,
                                    name="ranks")
    assert codes == [0, 0], outputs
    return torch.load(f"{out}.0.pt", weights_only=False), torch.load(f"{out}.1.pt", weights_only=False)
