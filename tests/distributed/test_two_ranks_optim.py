"""Newton-CG, saddle-free Newton, K-FAC and analyze's minibatch studies on two gloo ranks (127.0.0.1).

The ranks run every scenario of ``_optim_worker`` (uneven shards of 15 and 8 samples unless
said otherwise) in the session's pair of processes (``conftest.two_ranks``); the references
run here in one process on the union.
"""

from __future__ import annotations

import math

import pytest
import torch

import curvlens
from curvlens.optim import NewtonCG

from . import _optim_worker as w
from ._worker import make_model


def _close(a, b, tol=1e-10):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    scale = max(float(b.abs().max()), 1.0)
    return float((a - b).abs().max()) <= tol * scale


def _identical(r0, r1):
    for key in r0:
        if isinstance(r0[key], torch.Tensor):
            assert torch.equal(r0[key], r1[key]), key
        elif isinstance(r0[key], dict):
            _identical(r0[key], r1[key])
        else:
            assert r0[key] == r1[key], key


@pytest.mark.parametrize("name", ["newton_cg", "newton_cg_defaults", "newton_cg_sample_loop", "saddle_free",
                                  "kfac_type2", "kfac_empirical_ddp",
                                  "kfac_preconditioner"])
def test_two_ranks_step_like_one_process_on_the_union(name, two_ranks):
    r0, r1 = two_ranks[0][name], two_ranks[1][name]
    _identical(r0, r1)  # every rank holds the same weights (and records, factors) bit for bit
    ref = w.SCENARIOS[name](None, 0)
    assert _close(r0["weights"], ref["weights"]), (r0["weights"] - ref["weights"]).abs().max()
    if "losses" in ref:  # the loss each step returns is the one over the union
        assert _close(r0["losses"], ref["losses"])
    for got, want in zip(r0.get("records", []), ref.get("records", [])):  # damping, rho, CG iterations, ...
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12), (got, want)
    for key in ref.get("factors", {}):
        assert _close(r0["factors"][key], ref["factors"][key]), key
    moved = r0["weights"][-1] - w.flat(make_model())
    assert float(moved.abs().max()) > 1e-3  # the steps did something


def test_newton_cg_draws_its_curvature_subsets_like_one_process(two_ranks):
    recs = two_ranks[0]["newton_cg"]["records"]
    assert [r[-1] for r in recs] == [12] * w.STEPS  # round(0.5 * n) of each batch 8, 7, 5, 3: 4 + 4 + 2 + 2


@pytest.mark.parametrize("name", ["kfac_mc", "newton_cg_fisher"])
def test_monte_carlo_fisher_is_identical_on_every_rank(name, two_ranks):
    r0, r1 = two_ranks[0][name], two_ranks[1][name]
    _identical(r0, r1)
    assert all(bool(torch.isfinite(t).all()) for t in r0["weights"])
    if name == "kfac_mc":  # targets are drawn per rank: the factors differ from one process's draws
        ref = w.SCENARIOS[name](None, 0)
        assert any(not torch.equal(r0["factors"][k], ref["factors"][k]) for k in ref["factors"] if k.endswith(".G"))


def test_kfac_preconditioner_reduces_once_per_step(two_ranks):
    r = two_ranks[0]["kfac_preconditioner"]
    assert r["all_reduces_per_step"] == [1] * w.STEPS
    # float64; update_every=2. Every step: the 51 gradient entries, the loss head (3), 2 per parameter tensor
    # (4 x 2); update steps also the factors of both layers (A: 5x5 and 7x7, G: 6x6 and 3x3), 2 per layer and a
    # row count per factor (4)
    every = 51 + 3 + 4 * 2
    update = every + 25 + 49 + 36 + 9 + 2 * 2 + 4
    assert r["bytes_per_step"] == [8 * update, 8 * every, 8 * update]


def test_analyze_noise_studies_on_two_ranks_equal_one_process(two_ranks):
    r0, r1 = two_ranks[0]["analyze_noise"], two_ranks[1]["analyze_noise"]
    _identical(r0, r1)
    ref = w.analyze_noise(None, 0)
    assert set(r0) == set(ref)
    assert not any("skipped" in n and "noise" in n for n in r0["notes"]), r0["notes"]
    assert r0["noise_batch_sizes"] == ref["noise_batch_sizes"] and len(ref["noise_batch_sizes"]) >= 2
    for key, val in ref.items():
        got = r0[key]
        if isinstance(val, torch.Tensor):
            assert torch.allclose(got, val, rtol=1e-10, atol=1e-12, equal_nan=True), key
        elif isinstance(val, float) or (isinstance(val, list) and val and isinstance(val[0], float)):
            assert got == pytest.approx(val, rel=1e-10, abs=1e-12, nan_ok=True), key
        else:
            assert got == val, key
    assert math.isfinite(r0["gradient_noise_scale"])


def test_an_empty_shard_steps_like_one_process_on_the_other(two_ranks):
    r0, r1 = two_ranks[0]["empty_shard"], two_ranks[1]["empty_shard"]
    _identical(r0, r1)
    ref = w.empty_shard(None, 0)
    for opt in ("newton_cg", "kfac"):
        assert _close(r0[opt]["weights"], ref[opt]["weights"]) and _close(r0[opt]["losses"], ref[opt]["losses"]), opt
        assert all(rec[0] if opt == "kfac" else rec[5] for rec in r0[opt]["records"])  # every step accepted


def test_a_nan_on_one_shard_is_rejected_alike_on_every_rank(two_ranks):
    r0, r1 = two_ranks[0]["nonfinite_shard"], two_ranks[1]["nonfinite_shard"]
    ref = w.nonfinite_shard(None, 0)
    start = w.flat(make_model())
    for opt in ("newton_cg", "kfac"):
        for r in (r0, r1):
            assert all(torch.equal(row, start) for row in r[opt]["weights"]), opt  # weights left as they were
            assert all(math.isnan(v) for v in r[opt]["losses"].tolist())
        assert [rec[0] for rec in r0[opt]["records"]] == [False] * w.STEPS
    for a, b, c in zip(r0["newton_cg"]["records"], r1["newton_cg"]["records"], ref["newton_cg"]["records"]):
        assert a == b == c  # the damping is raised alike: 0.5 -> 5 -> 50 -> 500
    assert r0["kfac"]["records"] == r1["kfac"]["records"] == ref["kfac"]["records"]


def test_bad_process_group_arguments_are_one_clear_line(two_ranks):
    bad = two_ranks[0]["bad_arguments"]
    assert bad["string"] == "ValueError: process_group: expected None, 'world' or a ProcessGroup, got 'wrld'"
    assert bad["type"] == ("TypeError: process_group: expected None, 'world' or a torch.distributed.ProcessGroup, "
                           "got int")
    assert bad["ekfac"].startswith("ValueError: ekfac: the eigenvalue-corrected moments are not reduced over a "
                                   "process group")
    assert all("\n" not in v for v in bad.values())


def test_process_group_without_an_initialized_group_is_refused():
    with pytest.raises(ValueError, match=r"^process_group: got 'world' but torch.distributed is not initialized"):
        NewtonCG(make_model(), "cross_entropy", process_group="world")
    with pytest.raises(ValueError, match=r"^process_group: got 'world' but torch.distributed is not initialized"):
        curvlens.optim.KFAC(make_model(), "cross_entropy", lr=0.1, process_group="world")
