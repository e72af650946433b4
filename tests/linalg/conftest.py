"""Run these small dense tests single-threaded: on a shared, loaded CPU, multi-threaded BLAS on
tiny matrices spins and made this folder ~100x slower (measured 16 s vs 0.07 s for one solve)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
