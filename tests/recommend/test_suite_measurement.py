"""The recommender suite's yardstick (benchmarks/recommender_suite.py), on synthetic curves: the target's
float32 floor, the families not resolved from the best two, where the advice as given ranks, and the
machine-speed staleness of a cached ground truth."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import recommender_suite as S  # noqa: E402

N = len(S.SEEDS)


def _runs(curves):
    """{(family, lr, seed): curve} with every grid value of each family given the same curves per seed."""
    return {(f, lr, s): curves[f][s] for f in curves for lr in S.GRIDS[f] for s in S.SEEDS}


def _line(t_hit, final, l0=2.0, n=30, budget=0.6):
    """A curve that reaches ``final`` at ``t_hit`` (log-linear) and stays there."""
    out = [(0.0, l0)]
    for k in range(1, n + 1):
        t = budget * k / n
        f = min(t / t_hit, 1.0) if math.isfinite(t_hit) else 0.5
        out.append((t, l0 * (final / l0) ** f))
    return out


def test_target_is_raised_to_the_float32_floor_of_cross_entropy():
    runs = _runs({"sgd_momentum": [_line(0.3, 1e-9)] * N, "adamw": [_line(0.5, 1e-3)] * N})
    t_plain, _, _ = S.measure(runs, ["sgd_momentum", "adamw"], 0.6)
    t_floor, _, _ = S.measure(runs, ["sgd_momentum", "adamw"], 0.6, floor=S.CE_LOSS_FLOOR)
    assert t_plain == pytest.approx(1e-9 * (2.0 / 1e-9) ** 0.1)
    assert t_floor == pytest.approx(1e-6 * (2.0 / 1e-6) ** 0.1)
    exact_zero = _runs({"sgd_momentum": [[(0.0, 2.0), (0.6, 0.0)]] * N, "adamw": [_line(0.5, 1e-3)] * N})
    t0, _, _ = S.measure(exact_zero, ["sgd_momentum", "adamw"], 0.6, floor=S.CE_LOSS_FLOOR)
    assert t0 == pytest.approx(t_floor)  # a loss of exactly 0 (float32 underflow) no longer sets a 10% target


def test_families_within_the_second_best_resolution_are_unresolved():
    fams = ["sgd_momentum", "adamw", "kfac", "lbfgs"]
    curves = {"sgd_momentum": [_line(0.20, 1e-4)] * N,
              "adamw": [_line(0.30 + 0.1 * k / (N - 1), 1e-4) for k in range(N)],  # seed spread 0.1 s
              "kfac": [_line(0.42, 1e-4)] * N,      # 0.07 s behind the second (median 0.35 s): within its spread
              "lbfgs": [_line(0.58, 1e-4)] * N}     # 0.22 s behind: resolved
    runs = _runs(curves)
    target, stats, ranking = S.measure(runs, fams, 0.6)
    assert ranking[:2] == ["sgd_momentum", "adamw"]
    out = S.family_unresolved(runs, stats, ranking, target, 0.6)
    assert out == ["sgd_momentum", "adamw", "kfac"]


def test_advice_rank_places_the_advice_among_the_other_families():
    fams = ["sgd_momentum", "adamw", "kfac"]
    runs = _runs({"sgd_momentum": [_line(0.2, 1e-4)] * N, "adamw": [_line(0.3, 1e-4)] * N,
                  "kfac": [_line(0.1, 1e-4)] * N})
    target, stats, ranking = S.measure(runs, fams, 0.6)
    assert S.advice_rank([_line(0.25, 1e-4)] * N, target, stats, ranking, "kfac")[2] == 2  # own grid ignored
    assert S.advice_rank([_line(0.15, 1e-4)] * N, target, stats, ranking, "kfac")[2] == 1
    t, fin, rank = S.advice_rank([_line(0.15, 1e-4)], target, stats, ranking, "kfac")  # later seeds diverged
    assert math.isinf(t) and math.isinf(fin) and rank == 3


def test_speed_ratio_marks_entries_measured_at_another_speed():
    assert S.speed_ratio({"gradient_seconds": 2e-3}, 1e-3) == pytest.approx(2.0)
    assert S.speed_ratio({}, 1e-3) is None
    assert 1 / S.SPEED_TOLERANCE <= S.speed_ratio({"gradient_seconds": 1.1e-3}, 1e-3) <= S.SPEED_TOLERANCE
