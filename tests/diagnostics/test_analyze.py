"""``analyze`` on a small real network: fields, consistency, reproducibility, budget, degenerate data."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from curvlens.diagnostics import SUMMARY_KEYS, AnalysisResult, analyze
from curvlens.io.hdf5 import load_result, results_equal, save_result, save_summary
from curvlens.operators import DenseOperator, HessianOperator


def _problem(N=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (N,), generator=g)
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.7 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return model, x, y


@pytest.fixture(scope="module")
def full_run():
    model, x, y = _problem()
    res = analyze(model, nn.CrossEntropyLoss(), (x, y), budget=200, lr=0.5, momentum=0.9,
                  batch_sizes=[8, 16], generator=7)
    return model, x, y, res


def test_all_fields_present_and_within_budget(full_run):
    _, _, _, res = full_run
    assert isinstance(res, AnalysisResult)
    s = res.summary()
    assert list(s) == list(SUMMARY_KEYS)
    optional = {"condition_number", "condition_number_lower_bound"}  # None for an indefinite Hessian
    missing = [k for k, v in s.items() if v is None and k not in optional]
    assert not missing, (missing, res.notes)
    assert s["curvature"] == "hessian" and s["num_params"] == 20 and s["num_samples"] == 40
    assert res.info.matvecs <= 200 + 4  # at most one block of vectors over
    assert s["stability_threshold"] == pytest.approx((2 + 2 * 0.9) / 0.5)
    assert s["noise_batch_sizes"] == [8, 16] and len(s["noise_rstderr_trace"]) == 2
    for r in (res.top, res.bottom, res.trace, res.density, res.conditioning, res.sharpness, res.saddle, res.noise,
              res.gradient_noise, res.per_layer):
        assert r is not None
    json.dumps(s)  # plain JSON types


def test_consistent_with_dense_reference(full_run):
    model, x, y, res = full_run
    H = HessianOperator(model, nn.CrossEntropyLoss(), (x, y)).to_dense()
    ref = torch.func.hessian(lambda w: _loss_flat(model, w, x, y))(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    assert torch.allclose(H, ref, atol=1e-10)
    ev = torch.linalg.eigvalsh(ref)
    s = res.summary()
    assert s["lambda_max_certified"]
    assert abs(s["lambda_max"] - float(ev[-1])) <= float(res.top.residuals[0]) + 1e-10
    if s["lambda_min_certified"]:
        assert abs(s["lambda_min"] - float(ev[0])) <= float(res.bottom.residuals[0]) + 1e-10
    assert abs(s["trace"] - float(ev.sum())) <= 4 * s["trace_stderr"] + 1e-8
    assert s["sharpness_ratio"] == pytest.approx(s["lambda_max"] / s["stability_threshold"])
    if s["trace"] > 0:
        assert s["effective_condition_number"] == pytest.approx(s["lambda_max"] * 20 / s["trace"])
    else:  # l_max / (trace / D) undefined: the headline falls back to l_max / l_k
        k = res.top.k
        assert res.conditioning.effective_names == (f"l_max/l_k(k={k})",)
        assert s["effective_condition_number"] == pytest.approx(float(ev[-1] / ev[-k]), rel=1e-3)
    assert s["saddle_verdict"] == res.saddle.verdict
    frac = float((ev < -1e-10).double().mean())
    assert abs(s["saddle_index"] - frac) <= 4 * s["saddle_index_stderr"] + 1e-8
    lo, hi = s["saddle_index_bounds"]  # D = 20 steps: the quadrature is exact, so are the bounds
    assert lo == pytest.approx(hi, abs=1e-12) and lo == pytest.approx(s["saddle_index"], abs=1e-12)
    assert s["saddle_index_resolved"] is True
    pl = res.per_layer
    assert pl.block_names == ("0", "2") and float(pl.lambda_max_share.sum()) == pytest.approx(1.0)
    for i, (a, b) in enumerate(((0, 12), (12, 20))):
        assert abs(float(pl.lambda_max[i]) - float(torch.linalg.eigvalsh(ref[a:b, a:b])[-1])) \
            <= max(float(pl.lambda_max_residual[i]), 1e-8)


def _loss_flat(model, w, x, y):
    from torch.func import functional_call

    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    parts, i = {}, 0
    for n, s in zip(names, shapes):
        k = math.prod(s)
        parts[n] = w[i:i + k].reshape(s)
        i += k
    return nn.functional.cross_entropy(functional_call(model, parts, (x,)), y)


def test_reproducible_with_seed_and_roundtrips(tmp_path):
    model, x, y = _problem(N=24, seed=1)
    kw = dict(budget=80, which=["conditioning", "saddle", "trace", "noise"], batch_sizes=[4, 8], generator=3)
    a = analyze(model, nn.CrossEntropyLoss(), (x, y), **kw)
    b = analyze(model, nn.CrossEntropyLoss(), (x, y), **kw)
    sa, sb = a.summary(), b.summary()
    for k in ("seconds", "hvp_cost"):
        sa.pop(k), sb.pop(k)
    assert sa == sb and a.info.seed == 3
    assert a.gradient_noise is None and a.sharpness is None and a.per_layer is None
    back = load_result(save_result(a, tmp_path / "a.h5"))
    assert type(back) is AnalysisResult and back.summary()["trace"] == a.summary()["trace"]
    diff = results_equal(back, a, explain=True)
    assert diff is None, diff
    doc = json.loads(save_summary(a, tmp_path / "summary.json").read_text())
    assert doc["summary"]["lambda_max"] == pytest.approx(a.summary()["lambda_max"])


def test_time_budget_and_operator_input():
    op = DenseOperator(torch.diag(torch.linspace(-1.0, 3.0, 12, dtype=torch.float64)))
    res = analyze(op, budget=60, generator=0)
    assert res.curvature == "operator" and res.num_samples == 0 and res.hvp_cost is None
    assert any("noise skipped" in n for n in res.notes) and res.info.matvecs <= 64
    assert res.summary()["lambda_max"] == pytest.approx(3.0, rel=1e-3)
    model, x, y = _problem(N=16)
    res2 = analyze(model, nn.CrossEntropyLoss(), (x, y), budget="30s", which=["trace"], generator=0)
    assert res2.trace is not None and any("time budget 30s" in n for n in res2.notes)


def test_degenerate_data_never_crash():
    model, x, y = _problem(N=16)
    # loss that does not depend on the data: zero minibatch spread, critical batch 1
    def reg(model, batch):
        return sum((p ** 2).sum() for p in model.parameters()) + 0.0 * batch[0].sum()

    res = analyze(model, reg, (x, y), budget=80, which=["noise"], batch_sizes=[2, 4], generator=0)
    assert res.noise.critical("trace") == 1.0 and res.noise.critical("lambda_max") == 1.0
    assert any("does not vary across minibatches" in n for n in res.noise.notes)
    # a single sample: noise study has nothing to compare
    one = analyze(model, nn.CrossEntropyLoss(), (x[:1], y[:1]), budget=40, which=["noise", "gradient_noise"],
                  generator=0)
    assert any("at least 2 samples" in n for n in one.noise.notes) and one.noise.batch_sizes.numel() == 0
    assert one.summary()["critical_batch_trace"] is None
    # ladder rungs larger than the data, list of batches
    big = analyze(model, nn.CrossEntropyLoss(), [(x[:8], y[:8]), (x[8:], y[8:])], budget=60, which=["noise"],
                  batch_sizes=[4, 64], generator=0)
    assert big.noise.batch_sizes.tolist() == [4] and any("[64] exceed" in n for n in big.noise.notes)
    # batches that cannot be indexed: noise skipped with a note
    dict_loss = lambda model, batch: nn.functional.cross_entropy(model(batch["x"]), batch["y"])  # noqa: E731
    d = analyze(model, dict_loss, {"x": x, "y": y}, budget=40, which=["noise", "trace"], generator=0)
    assert d.noise is None and any(n.startswith("noise skipped") for n in d.notes)


@pytest.mark.parametrize("kw, exc, msg", [
    (dict(which=["magic"]), ValueError, "which: unknown analysis 'magic'"),
    (dict(skip="nope"), ValueError, "skip: unknown analysis 'nope'"),
    (dict(budget="5 parsecs"), ValueError, "budget: expected a positive duration like '300s'"),
    (dict(budget=1.5), TypeError, "budget: expected an int number of matvecs"),
    (dict(budget=10, budget_seconds=3.0), ValueError, "budget_seconds: got both"),
    (dict(lr=-1.0), ValueError, "lr: expected a finite number > 0"),
    (dict(curvature="laplacian"), ValueError, "curvature: expected 'hessian', 'ggn' or 'fisher'"),
    (dict(callback=3), TypeError, "callback: expected a callable"),
])
def test_errors(kw, exc, msg):
    model, x, y = _problem(N=8)
    with pytest.raises(exc, match=msg):
        analyze(model, nn.CrossEntropyLoss(), (x, y), **kw)
