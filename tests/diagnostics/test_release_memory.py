"""Returning freed heap pages to the OS between analyze stages is harmless and optional."""

from __future__ import annotations

import sys

import torch

import curvlens.diagnostics.driver as driver


def test_release_keeps_live_tensors_and_allocation_working():
    keep = torch.arange(1_000_000, dtype=torch.float64)
    freed = [torch.randn(600_000) for _ in range(20)]  # 2.4 MB blocks, below a raised mmap threshold
    del freed
    done = driver._release_freed_memory()
    assert isinstance(done, bool)
    if sys.platform.startswith("linux") and driver._LIBC is not False:
        assert done
    assert float(keep.sum()) == 999_999 * 1_000_000 / 2  # live data untouched
    again = torch.ones(600_000) * 2
    assert float(again.sum()) == 1_200_000.0
    assert driver._release_freed_memory() == done  # repeated calls: same answer, no error


def test_release_is_skipped_without_glibc(monkeypatch):
    monkeypatch.setattr(driver, "_LIBC", None)
    monkeypatch.setattr(driver.sys, "platform", "darwin")
    assert driver._release_freed_memory() is False
    monkeypatch.setattr(driver, "_LIBC", None)  # looked up again on the next call
