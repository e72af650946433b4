"""Trial brackets extend beyond their edge while the best run is there (trials._extension), at most
trials.TRIAL_EXTENSIONS times."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from curvlens.recommend import RecommendationContext, recommend
from curvlens.recommend.trials import TRIAL_BRACKET, TRIAL_EXTENSIONS, _extension, run_trials


def test_extension_rule_on_given_final_losses():
    inf = float("inf")
    assert _extension([1.0, 3.0, 9.0], [2.0, 1.0, 3.0]) is None  # best inside: nothing to add
    assert _extension([1.0, 3.0, 9.0], [1.0, 2.0, 3.0]) == pytest.approx(1 / 3)
    assert _extension([1.0, 3.0, 9.0], [3.0, 2.0, 1.0]) == pytest.approx(27.0)
    assert _extension([1.0, 3.0, 9.0], [inf, inf, inf]) == pytest.approx(1 / 3)  # all diverged: go down
    assert _extension([1.0], [1.0]) is None
    # an earlier extension comes appended at the end: the lrs are sorted before the edge is found
    assert _extension([1.0, 3.0, 9.0, 1 / 3], [1.0, 2.0, 3.0, 0.5]) == pytest.approx(1 / 9)
    assert _extension([1.0, 3.0, 9.0, 1 / 3], [1.0, 2.0, 3.0, 1.5]) is None  # the extension was worse
    assert TRIAL_EXTENSIONS == 2


def _problem():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(128, 6, generator=g)
    y = X @ torch.randn(6, 1, generator=g)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = torch.nn.Linear(6, 1)
    return model, torch.nn.MSELoss(), (X, y)


def _sgd(lr):
    rec = recommend({"lambda_max": 2.0, "num_params": 7}, RecommendationContext(batch_size=128))
    c = next(c for c in rec.candidates if c.optimizer == "sgd_momentum")
    return dataclasses.replace(c, hyperparameters={**c.hyperparameters, "lr": lr})


@pytest.mark.parametrize("advice, expected", [
    (1e-4, 1e-4 * TRIAL_BRACKET[-1] ** 2),  # 10x+ too small: the largest lr is best, a step up
    (50.0, 50.0 * TRIAL_BRACKET[0] ** 2),   # every run diverges: a step down
])
def test_edge_best_extends_the_bracket_reproducibly(advice, expected):
    model, loss_fn, data = _problem()
    before = [p.detach().clone() for p in model.parameters()]
    rng = torch.random.get_rng_state()
    a = run_trials([_sgd(advice)], model, loss_fn, data, seconds=0.5, seed=1, steps={"sgd_momentum": 8})[0]
    b = run_trials([_sgd(advice)], model, loss_fn, data, seconds=0.5, seed=1, steps={"sgd_momentum": 8})[0]
    assert len(a.lrs) in (4, 5) and a.lrs[3] == pytest.approx(expected)
    finals = a.final_losses()
    if len(a.lrs) == 5:  # a second step only while the first extension was the best run, same direction
        assert all(a.diverged[:4]) or min(range(4), key=lambda k: finals[k]) == 3
        step = TRIAL_BRACKET[-1] if advice < 1 else TRIAL_BRACKET[0]
        assert a.lrs[4] == pytest.approx(expected * step)
    assert (a.lrs == b.lrs).all() and (a.losses == b.losses).all()
    assert set(a.run_index.tolist()) == set(range(len(a.lrs)))
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    if advice < 1:  # the (last) extension is the best run: advice 10x off comes back 9x-27x up
        assert a.best_lr == pytest.approx(a.lrs[-1]) and a.best_lr >= expected * (1 - 1e-9)


def test_minibatch_kfac_bracket_spans_the_noise_edge_and_the_model_step():
    from curvlens.recommend.build import constructor_kwargs
    from curvlens.recommend.evidence import Measurements
    from curvlens.recommend.hyperparams import polyak_lower_edge, suggest
    from curvlens.recommend.trials import _bracket

    m = Measurements({"kfac_trusted_step": 0.5, "kfac_lambda_max": 1.0, "num_samples": 1000})
    hp, _, _ = suggest("kfac", m, RecommendationContext(batch_size=32, dataset_size=1000))
    edge = polyak_lower_edge(0.9)
    mean = (edge * 0.05) ** 0.5
    assert hp["lr"] == pytest.approx(mean) and hp["lr_model_step"] == pytest.approx(0.05)  # 0.5 x (1 - 0.9)
    spec = dataclasses.make_dataclass("Spec", ["hyperparameters"])(hp)
    assert _bracket(spec) == pytest.approx([edge, mean, 0.05])
    assert "lr_model_step" not in constructor_kwargs("kfac", hp)  # advice, not a K-FAC argument
    full, _, _ = suggest("kfac", m, RecommendationContext(batch_size=1000, dataset_size=1000))
    assert "lr_model_step" not in full  # at the full batch the model step is the lr itself
    spec = dataclasses.make_dataclass("Spec", ["hyperparameters"])(full)
    assert _bracket(spec) == pytest.approx([full["lr"] * f for f in TRIAL_BRACKET])


def test_trial_set_adds_candidates_that_tie_the_last_one_within_the_timing_resolution():
    from curvlens.recommend import thresholds as T
    from curvlens.recommend.engine import trial_set

    rec = recommend({"lambda_max": 2.0, "num_params": 7}, RecommendationContext(batch_size=128))
    ok = [c for c in rec.candidates if c.runnable][:5]
    assert len(ok) == 5
    assert T.TRIAL_TIE_MARGIN == pytest.approx(0.5 * math.log10(1.3))

    def scored(*scores):
        return [dataclasses.replace(c, score=s) for c, s in zip(ok, scores)]

    cands = scored(2.0, 1.5, 1.147, 1.128, 0.8)  # the 4th ties the 3rd (0.019 < 0.057), the 5th does not
    assert [c.optimizer for c in trial_set(cands, 3)] == [c.optimizer for c in cands[:4]]
    cands = scored(2.0, 1.5, 1.147, 1.0, 0.8)
    assert [c.optimizer for c in trial_set(cands, 3)] == [c.optimizer for c in cands[:3]]
    not_runnable = [dataclasses.replace(c, runnable=False) for c in scored(2.0, 1.5, 1.147, 1.128, 0.8)[:2]]
    assert trial_set(not_runnable + cands[2:], 3) == cands[2:]  # only runnable ones, fewer than k: all of them
