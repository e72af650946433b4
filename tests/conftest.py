"""Suite-wide settings.

Tests run single-threaded: their matrices and models are tiny, and multi-threaded BLAS on tiny
problems spins on a shared 2-core machine (measured 16 s vs 0.07 s for one small eigensolve).
The thread count is restored after each test, so the suite leaves global state as it found it.
"""

import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
