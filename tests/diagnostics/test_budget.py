"""BudgetSplitter: known splits, roll-over, stages that spend nothing, the rule analyze uses, bad inputs."""

from __future__ import annotations

import math
import random

import pytest

from curvlens.diagnostics import BudgetSplitter
from curvlens.diagnostics.stages import FRACTIONS


def _spend_all(b: BudgetSplitter, used=None) -> list[int]:
    """Ask every stage in order for its allowance and charge ``used[stage]`` (default: all of it)."""
    got = []
    for s in b.stages:
        a = b.allowance(s)
        got.append(a)
        b.spend(s, a if used is None or s not in used else used[s])
    return got


def test_known_splits_exact_fractions():
    b = BudgetSplitter(100, {"a": 0.5, "b": 0.25, "c": 0.25})
    assert _spend_all(b) == [50, 25, 25] and b.left == 0 and b.spent == 100
    # fractions need not sum to one: only their ratios matter
    assert _spend_all(BudgetSplitter(100, [("a", 2), ("b", 1), ("c", 1)])) == [50, 25, 25]
    assert _spend_all(BudgetSplitter(7, {"only": 0.3})) == [7]


def test_analyze_split_at_default_budget():
    # the documented split of analyze's table at 300 products (float quotient rounded down)
    assert list(FRACTIONS) == ["top", "trace", "bottom", "density", "per_layer", "noise"]
    assert _spend_all(BudgetSplitter(300, FRACTIONS)) == [45, 29, 45, 90, 30, 61]


def test_roll_over_of_unused_products():
    b = BudgetSplitter(100, {"a": 0.5, "b": 0.25, "c": 0.25})
    assert b.allowance("a") == 50
    b.spend("a", 10)  # 40 unused: split among b and c by their fractions
    assert b.allowance("b") == 45 and b.left == 90
    b.spend("b", 45)
    assert b.allowance("c") == 45
    assert b.spent_by("a") == 10 and b.spent_by("c") == 0


def test_stage_that_spends_nothing_and_zero_fraction():
    b = BudgetSplitter(100, {"a": 0.5, "fixed": 0.0, "b": 0.5})
    b.spend("a", 0)
    assert b.allowance("fixed") == 0  # no share, but it can be charged
    b.spend("fixed", 3)
    assert b.allowance("b") == 97
    # a stage after which only zero fractions remain gets nothing, without dividing by zero
    z = BudgetSplitter(10, {"a": 1.0, "z": 0.0})
    z.spend("a", 4)
    assert z.allowance("z") == 0 and z.left == 6


def test_overshoot_leaves_negative_left_and_zero_allowances():
    b = BudgetSplitter(10, {"a": 0.5, "b": 0.5})
    b.spend("a", 12)  # a solver may pass its ceiling by one block
    assert b.left == -2 and b.allowance("b") == 0
    b.spend("a", 1)  # spending adds up
    assert b.spent_by("a") == 13


def test_same_rule_as_inline_formula():
    # the rule analyze applied before the splitter existed: fraction of what is left over the
    # fractions of the stages from this one on, in table order, on any subset of the stages
    rng = random.Random(0)
    names = list(FRACTIONS)
    for _ in range(300):
        stages = [s for s in names if rng.random() < 0.7] or ["top"]
        total = rng.randint(0, 1000)
        b = BudgetSplitter(total, {s: FRACTIONS[s] for s in stages})
        spent = {"timing": rng.choice([0, 3])}
        b_pre = BudgetSplitter(total, [("timing", 0.0)] + [(s, FRACTIONS[s]) for s in stages])
        b_pre.spend("timing", spent["timing"])
        for s in stages:
            left = total - sum(spent.values())
            rest = sum(FRACTIONS[t] for t in stages[stages.index(s):])
            want = max(0, int(left * FRACTIONS[s] / rest))
            assert b_pre.allowance(s) == want
            used = rng.randint(0, want + 2)
            spent[s] = used
            b_pre.spend(s, used)
        assert b_pre.spent == sum(spent.values())
        assert b.allowance(stages[0]) == max(0, int(total * FRACTIONS[stages[0]] / sum(FRACTIONS[s] for s in stages)))


def test_fractional_products_and_properties():
    b = BudgetSplitter(10.5, {"x": 1.0, "y": 1.0})
    b.spend("x", 2.25)
    assert b.allowance("y") == 8 and math.isclose(b.left, 8.25)
    assert b.stages == ("x", "y") and b.fractions == {"x": 1.0, "y": 1.0} and b.total == 10.5
    b.fractions["x"] = 5.0  # a copy: the splitter is unchanged
    assert b.fractions["x"] == 1.0
    assert "BudgetSplitter(total=10.5" in repr(b)


@pytest.mark.parametrize("args, exc, msg", [
    ((100, {"a": -0.1, "b": 1.0}), ValueError, r"fractions: expected a finite fraction >= 0 for stage 'a', got -0.1"),
    ((100, {"a": 0.0, "b": 0.0}), ValueError, r"fractions: expected fractions summing to a positive number, got sum 0"),
    ((100, {}), ValueError, r"fractions: expected fractions summing to a positive number"),
    ((100, {"a": float("nan")}), ValueError, r"fractions: expected a finite fraction >= 0 for stage 'a'"),
    ((100, {"a": "half"}), TypeError, r"fractions: expected a number for stage 'a', got str"),
    ((100, {3: 0.5}), TypeError, r"fractions: expected stage names as str, got int"),
    ((100, [("a", 0.5), ("a", 0.5)]), ValueError, r"fractions: stage 'a' appears twice"),
    ((100, [0.5, 0.5]), TypeError, r"fractions: expected a mapping \{stage: fraction\} or \(stage, fraction\) pairs"),
    ((100, 0.5), TypeError, r"fractions: expected a mapping \{stage: fraction\} in run order, got float"),
    ((-1, {"a": 1.0}), ValueError, r"total: expected a finite, non-negative number of products, got -1"),
    (("300", {"a": 1.0}), TypeError, r"total: expected a non-negative number of products, got str"),
    ((True, {"a": 1.0}), TypeError, r"total: expected a non-negative number of products, got bool"),
])
def test_bad_construction(args, exc, msg):
    with pytest.raises(exc, match=msg):
        BudgetSplitter(*args)


def test_bad_calls():
    b = BudgetSplitter(100, {"top": 0.5, "trace": 0.5})
    with pytest.raises(ValueError, match=r"stage: unknown stage 'bottom'; expected one of \('top', 'trace'\)"):
        b.allowance("bottom")
    with pytest.raises(ValueError, match=r"stage: unknown stage 'x'"):
        b.spend("x", 1)
    with pytest.raises(ValueError, match=r"stage: unknown stage 'x'"):
        b.spent_by("x")
    with pytest.raises(ValueError, match=r"used: expected a finite, non-negative number of products, got -2"):
        b.spend("top", -2)
    with pytest.raises(TypeError, match=r"used: expected a non-negative number of products, got NoneType"):
        b.spend("top", None)
    assert b.spent == 0  # failed calls charge nothing
