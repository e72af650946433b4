"""Trial runs compared by loss decrease per second to a common deep loss (trial_rank.py)."""

from __future__ import annotations

import math

import pytest

from curvlens.recommend.trial_rank import DEPTH, comparison_level, rank_key, time_to_level
from curvlens.recommend.trials import _best_run


def test_comparison_level_is_depth_of_the_log_decrease():
    assert comparison_level(1.0, 1e-4) == pytest.approx(1e-4 * 1e4 ** (1 - DEPTH))
    assert math.log(1.0 / comparison_level(1.0, 1e-4)) == pytest.approx(DEPTH * math.log(1e4))
    assert comparison_level(2.0, 0.0) == pytest.approx(0.2)  # a zero loss: the arithmetic form
    assert comparison_level(1.0, 1.5) == 1.0  # nothing fell below the start


def test_time_to_level_interpolates_in_log_loss_and_never_is_infinite():
    t, loss = [0.0, 1.0, 3.0], [1.0, 0.1, 0.001]
    assert time_to_level(t, loss, 0.1) == 1.0
    assert time_to_level(t, loss, 0.01) == pytest.approx(2.0)  # halfway between 0.1 and 0.001 in log
    assert time_to_level(t, loss, 1e-4) == math.inf
    assert time_to_level([0.0, 1.0], [1.0, float("nan")], 0.5) == math.inf
    assert time_to_level([0.0], [0.5], 1.0) == 0.0


def test_a_fast_start_that_stalls_loses_to_a_run_that_gets_deep_first():
    # run 0 drops fastest at the start and then stalls; run 1 reaches the deep level first; run 2 diverged
    rows = [(0, 0, 0.0, 1.0), (0, 5, 0.5, 0.05), (0, 10, 1.0, 0.04),
            (1, 0, 0.0, 1.0), (1, 5, 0.5, 0.2), (1, 10, 1.0, 0.001),
            (2, 0, 0.0, 1.0), (2, 5, 0.5, 2.0)]
    finals, diverged, lrs = [0.04, 0.001, math.inf], [False, False, True], [3.0, 1.0, 9.0]
    assert _best_run(rows, finals, diverged, lrs) == 1
    level = comparison_level(1.0, 0.001)
    assert rank_key([0.0, 0.5, 1.0], [1.0, 0.05, 0.04], level, False)[1] == math.inf
    assert rank_key([0.0, 0.5], [1.0, 2.0], level, True) == (1, math.inf, math.inf)


def test_equal_runs_go_to_the_smaller_lr():
    rows = [(i, k, float(k), v) for i in (0, 1) for k, v in ((0, 1.0), (1, 0.1), (2, 0.01))]
    assert _best_run(rows, [0.01, 0.01], [False, False], [0.3, 0.1]) == 1
