"""The stage table behind ``analyze``: structure, planning, per-stage budgets, order, stage functions."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from curvlens.diagnostics import ANALYSES, STAGES, BudgetSplitter, Stage, analyze
from curvlens.diagnostics.stages import (
    FRACTIONS,
    StageContext,
    plan_stages,
    run_cost,
    run_density,
    run_top,
    run_trace,
)
from curvlens.operators import DenseOperator

PRODUCT_STAGES = ("top", "trace", "bottom", "density", "per_layer", "noise")


def _op(n=12):
    return DenseOperator(torch.diag(torch.linspace(-1.0, 3.0, n, dtype=torch.float64)))


def _quiet(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return analyze(*args, **kw)


def test_table_rows():
    assert [s.name for s in STAGES] == ["cost", *PRODUCT_STAGES, "gradient_noise"]
    assert all(isinstance(s, Stage) and callable(s.fn) for s in STAGES)
    assert FRACTIONS == {"top": 0.15, "trace": 0.10, "bottom": 0.15, "density": 0.30, "per_layer": 0.10,
                         "noise": 0.20}
    assert sum(FRACTIONS.values()) == pytest.approx(1.0)
    assert STAGES[0].fraction is None and not STAGES[0].reports  # measured before the split, no progress
    for s in STAGES:
        assert set(s.needed_by) <= set(ANALYSES) | {"*"}, s.name
    with pytest.raises(AttributeError):
        STAGES[1].fraction = 0.5  # frozen rows


def test_documented_table_matches_rows():
    import curvlens.diagnostics.stages as mod

    rows = {line.split()[0]: line.split()[1] for line in mod.__doc__.splitlines()
            if line.split() and line.split()[0] in {s.name for s in STAGES}}
    assert list(rows) == [s.name for s in STAGES]
    for s in STAGES:
        assert rows[s.name] == "(fixed)" if s.fraction is None else float(rows[s.name]) == s.fraction, s.name


@pytest.mark.parametrize("chosen, names", [
    ({"saddle"}, ["cost", "bottom", "density"]),
    ({"conditioning"}, ["cost", "top", "trace", "bottom"]),
    ({"sharpness"}, ["cost", "top"]),
    ({"per_layer"}, ["cost", "top", "trace", "per_layer"]),
    ({"noise", "gradient_noise"}, ["cost", "top", "trace", "noise", "gradient_noise"]),
    (set(), ["cost"]),
    (set(ANALYSES), [s.name for s in STAGES]),
])
def test_plan(chosen, names):
    assert [s.name for s in plan_stages(chosen)] == names


@pytest.mark.parametrize("budget, pinned", [
    # per-stage products of analyze before it became a table (same seed): the split is unchanged
    (60, {"top": 11, "trace": 7, "bottom": 11, "density": 22, "per_layer": 9}),
    (17, {"top": 3, "trace": 2, "bottom": 3, "density": 6, "per_layer": 3}),
])
def test_stages_follow_the_splitter(budget, pinned):
    calls = []
    res = _quiet(_op(), budget=budget, generator=0, callback=lambda s, d, t: calls.append(s))
    used = {s: int(getattr(res, s).info.matvecs) for s in pinned}
    assert used == pinned and res.info.matvecs == sum(pinned.values())
    # replaying the splitter on what each stage spent gives allowances that each stage kept to
    b = BudgetSplitter(budget, {s: FRACTIONS[s] for s in pinned})
    for s in pinned:
        assert used[s] <= b.allowance(s) + 2, s  # a block solver may pass its ceiling by one block
        b.spend(s, used[s])
    first = list(dict.fromkeys(calls))
    assert first == list(pinned)  # stages ran in table order
    if budget == 60:  # enough products for an accurate top eigenvalue
        assert res.summary()["lambda_max"] == pytest.approx(3.0, rel=1e-3)


def test_cost_stage_charged_to_budget():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, generator=g, dtype=torch.float64), torch.randint(0, 2, (16,), generator=g)
    model = nn.Sequential(nn.Linear(3, 2)).double()
    res = _quiet(model, nn.CrossEntropyLoss(), (x, y), which=[], budget=50, generator=0)
    assert res.info.matvecs == 4 and res.hvp_cost is not None and res.hvp_cost > 0
    res2 = _quiet(model, nn.CrossEntropyLoss(), (x, y), which=["trace"], budget=50, generator=0)
    assert res2.trace.info.matvecs <= 50 - 4 and res2.info.matvecs == 4 + res2.trace.info.matvecs


def test_deadline_skips_every_stage_with_a_note():
    res = _quiet(_op(), budget_seconds=1e-9, which=["saddle", "trace"], generator=0)
    assert res.bottom is None and res.density is None and res.trace is None
    assert res.notes[0] == "time budget 1e-09s: about 2 products of 0.001s each"
    for s in ("trace", "bottom", "density"):
        assert f"{s} skipped: time budget spent" in res.notes
    assert res.info.matvecs == 0


def test_stage_functions_alone():
    notes: list[str] = []
    ctx = StageContext(op=_op(), gen=torch.Generator().manual_seed(1), chosen={"conditioning"}, notes=notes)
    assert run_top(ctx, 1) is None and run_trace(ctx, 1) is None and run_density(ctx, 1) is None
    assert run_cost(ctx, 0) == (None, 0) and ctx.cost is None  # an operator has no gradient to time
    top, used = run_top(ctx, 40)
    assert top.k == 4 and used == top.info.matvecs <= 40 and bool(top.converged.all())
    assert run_top(ctx, 23)[0].k == 1  # k=1 below 24 products
    tr, used = run_trace(ctx, 3)
    assert used <= 3 and tr.method == "hutchinson"
    tr, _ = run_trace(ctx, 20)
    assert tr.method == "krylov"
    dens, used = run_density(ctx, 30)
    assert used <= 30
    assert notes == []  # stage functions report through their return value; the driver writes notes
