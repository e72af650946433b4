"""Two gloo processes on 127.0.0.1 give the single-process numbers on the union of their shards."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import curvlens

from ._spawn import run_ranks
from ._worker import N_SAMPLES, analysis, local_batches, make_model, measure

@pytest.fixture(scope="module")
def single():
    y = torch.cat([b[1] for r in (0, 1) for b in local_batches(r)])
    assert len(y) == N_SAMPLES
    batches = [b for r in (0, 1) for b in local_batches(r)]
    return measure(curvlens.Problem(make_model(), nn.CrossEntropyLoss(), batches))


def _compare(res, ref):
    assert res["num_samples"] == ref["num_samples"] == N_SAMPLES
    for key in ("loss", "grad", "Hv", "Gv", "top", "trace", "negative_mass"):
        a, b = res[key], ref[key]
        scale = max(float(b.abs().max()), 1.0)
        assert float((a - b).abs().max()) <= 1e-10 * scale, (key, a, b)


@pytest.mark.parametrize("scenario", ["equal", "empty", "ddp"])
def test_two_ranks_equal_single_process(scenario, two_ranks, single):
    r0, r1 = two_ranks[0][scenario], two_ranks[1][scenario]
    _compare(r0, single)
    for key in r0:  # every rank holds the same bits
        assert torch.equal(torch.as_tensor(r0[key]), torch.as_tensor(r1[key])), key


def test_analyze_on_two_ranks_equals_single_process(two_ranks):
    batches = [b for r in (0, 1) for b in local_batches(r)]
    ref = analysis(make_model(), nn.CrossEntropyLoss(), batches)
    r0, r1 = two_ranks[0]["analyze"], two_ranks[1]["analyze"]
    assert set(r0) == set(r1) == set(ref)
    for key in r0:  # every rank returns the same result (NaN where a quantity is not defined)
        assert r0[key] == r1[key] or (r0[key] != r0[key] and r1[key] != r1[key]), key
    for key, val in ref.items():
        got = r0[key]
        if isinstance(val, (float, list, tuple)) and not isinstance(val, str):
            assert got == pytest.approx(val, rel=1e-10, abs=1e-12, nan_ok=True), key
        else:
            assert got == val, key


def test_process_group_none_stays_local_under_an_initialized_group(two_ranks):
    assert two_ranks[0]["local"]["num_samples"] == 15 and two_ranks[1]["local"]["num_samples"] == 8


def test_a_failing_rank_makes_the_other_exit_with_a_clear_error(tmp_path):
    codes, outputs, _ = run_ranks("fail", tmp_path, timeout=90, pg_timeout=5)
    assert codes[1] == 3
    assert codes[0] == 4, outputs[0]
    assert "ProcessGroupError: process group: the all-reduce of the curvature product on rank 0 of 2 failed" in outputs[0]


def test_process_group_errors_without_an_initialized_group():
    x, y = local_batches(0)[0]
    with pytest.raises(ValueError, match=r"process_group: got 'world' but torch.distributed is not initialized"):
        curvlens.Problem(make_model(), nn.CrossEntropyLoss(), (x, y), process_group="world")
