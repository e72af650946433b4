"""Suite-wide settings.

Tests run single-threaded: their matrices and models are tiny, and multi-threaded BLAS on tiny
problems spins on a shared 2-core machine (measured 16 s vs 0.07 s for one small eigensolve).
The thread count is restored after each test, so the suite leaves global state as it found it.

MKL's conditional numerical reproducibility is set to strict before torch loads MKL: without it,
MKL's AVX-512 kernels may sum in an order that depends on the memory alignment of their operands,
and a repeated float64 curvature product then differs in its last bit (measured: 1.4e-17 to
5.7e-17 relative on the cnn operators of tests/operators/test_reference.py, which assert identical
repeats). ``MKL_CBWR=AUTO,STRICT`` keeps the fastest code path and fixes the order. An explicit
MKL_CBWR in the environment wins.
"""

import os

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # before torch (and MKL) is imported

import pytest  # noqa: E402
import torch  # noqa: E402

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
