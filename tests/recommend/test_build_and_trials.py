"""Runnable candidates, trial runs (seeded, RNG- and weight-neutral) and setup-aware reasons."""

from __future__ import annotations

import importlib

import pytest
import torch

from curvlens.recommend import RecommendationContext, recommend
from curvlens.recommend.trials import TRIAL_EXTENSIONS, run_trials

for _mod in ("curvlens.optim.kfac", "curvlens.optim.saddle_free", "curvlens.optim.newton_cg"):
    try:  # register curvlens' optimizers (the recommender itself only reads the registry)
        importlib.import_module(_mod)
    except ImportError:
        pass

SUMMARY = {"num_params": 58, "num_samples": 64, "curvature": "hessian", "lambda_max": 4.0,
           "lambda_min": -0.5, "negative_mass": 0.3, "hvp_cost": 1.5, "critical_batch_lambda_max": 16}


def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(64, 5, generator=g)
    y = (X[:, 0] > 0).long()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    return model, torch.nn.CrossEntropyLoss(), (X, y)


def _state(model):
    return [t.detach().clone() for t in list(model.parameters()) + list(model.buffers())]


def test_every_runnable_candidate_builds_an_optimizer_that_takes_a_step():
    model, loss_fn, (X, y) = _problem()
    rec = recommend(SUMMARY, RecommendationContext(batch_size=64, layer_types="linear,tanh", memory_bytes="1GB"))
    runnable = [c for c in rec.candidates if c.runnable]
    assert {"sgd_momentum", "adamw", "lbfgs"} <= {c.optimizer for c in runnable}
    for c in runnable:
        before = _state(model)
        opt = c.build(model, loss_fn)
        assert isinstance(opt, torch.optim.Optimizer)
        if hasattr(opt, "last_step"):
            opt.step((X, y))
        else:
            def closure():
                opt.zero_grad()
                loss = loss_fn(model(X), y)
                loss.backward()
                return loss
            opt.step(closure)
        after = _state(model)
        assert any(not torch.equal(a, b) for a, b in zip(before, after)), c.optimizer
        assert all(torch.isfinite(a).all() for a in after)
        assert len(c.code) == 2 and "opt = " in c.code[1]
        with torch.no_grad():
            for p, b in zip(model.parameters(), before):
                p.copy_(b)
    assert isinstance(rec.build(model, loss_fn), torch.optim.Optimizer)
    sgd = next(c for c in runnable if c.optimizer == "sgd_momentum")
    assert sgd.code[1].startswith("opt = torch.optim.SGD(model.parameters(), lr=")


def test_unregistered_optimizer_is_not_ranked_as_runnable_and_says_so(monkeypatch):
    from curvlens.optim import _base

    monkeypatch.setattr(_base, "OPTIMIZERS", {k: v for k, v in _base.OPTIMIZERS.items() if k != "newton_cg"})
    rec = recommend(SUMMARY, RecommendationContext(batch_size=64, layer_types="linear", memory_bytes="1GB"))
    ncg = next(c for c in rec.candidates if c.optimizer == "newton_cg")
    assert not ncg.runnable and "no optimizer 'newton_cg' is registered" in ncg.build_note
    assert ncg.confidence == 0.0 and ncg.code == ()
    order = [c.runnable for c in rec.candidates]
    assert order == sorted(order, reverse=True)  # every runnable candidate first
    diag = next(c for c in rec.candidates if c.optimizer == "diag_hessian")
    assert not diag.runnable and "no implementation" in diag.build_note
    with pytest.raises(ValueError, match=r"^optimizer: 'newton_cg' cannot be built; not runnable"):
        ncg.build(*_problem()[:2])


def test_reasons_match_full_batch_and_mini_batch():
    full = recommend(SUMMARY, RecommendationContext(batch_size=64))
    mini = recommend(SUMMARY, RecommendationContext(batch_size=16))
    alltext = lambda rec: [r for c in rec.candidates for r in c.reasons] + [  # noqa: E731
        r for x in rec.rejected for r in x.reasons]
    assert not any("escape" in t for t in alltext(full))  # no gradient noise to escape saddles with
    assert any("at full batch: the strong-Wolfe line search" in t for t in alltext(full))
    lb_full = next(c for c in full.candidates if c.optimizer == "lbfgs")
    assert not any(t.startswith("against:") and "s^T y" in t for t in lb_full.reasons)
    assert any("escape strict saddles" in t for t in alltext(mini))
    assert any("at mini-batch: BFGS curvature pairs" in t for t in alltext(mini))
    assert any("need a deterministic loss" in t for t in alltext(mini))
    assert full.candidates[0].optimizer == "lbfgs"  # full batch: negative curvature is no veto


def test_trials_are_reproducible_by_seed_and_leave_model_and_rng_alone():
    model, loss_fn, data = _problem()
    rec = recommend(SUMMARY, RecommendationContext(batch_size=16))
    cands = [c for c in rec.candidates if c.optimizer in ("sgd_momentum", "adamw")]
    before, grads = _state(model), [p.grad for p in model.parameters()]
    rng = torch.random.get_rng_state()
    plan = {"sgd_momentum": 6, "adamw": 6}
    a = run_trials(cands, model, loss_fn, data, seconds=1.0, batch_size=16, seed=3, steps=plan)
    b = run_trials(cands, model, loss_fn, data, seconds=1.0, batch_size=16, seed=3, steps=plan)
    c = run_trials(cands, model, loss_fn, data, seconds=1.0, batch_size=16, seed=4, steps=plan)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert all(torch.equal(x, y) for x, y in zip(before, _state(model)))  # bit-identical
    assert [p.grad for p in model.parameters()] == grads
    for ta, tb in zip(a, b):
        assert (ta.losses == tb.losses).all() and ta.steps == 6 and 3 <= len(ta.lrs) <= 3 + TRIAL_EXTENSIONS
        assert (ta.lrs == tb.lrs).all()
    assert any((ta.losses != tc.losses).any() for ta, tc in zip(a, c))  # another seed, other mini-batches


def test_recommend_with_trial_reranks_and_round_trips(tmp_path):
    from curvlens.io.hdf5 import load_result, save_result

    model, loss_fn, data = _problem()
    before = _state(model)
    rng = torch.random.get_rng_state()
    rec = recommend(SUMMARY, RecommendationContext(batch_size=64), model=model, loss_fn=loss_fn, data=data,
                    trial=1.0, trial_candidates=2)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert all(torch.equal(x, y) for x, y in zip(before, _state(model)))
    assert len(rec.trials) == 2
    from curvlens.recommend.engine import _rates_to_common_level

    rates, keys = _rates_to_common_level(rec.trials)  # loss decrease per second down to a common loss
    tried = [c.optimizer for c in rec.candidates[:2]]
    assert set(tried) == set(rates) and keys[tried[0]] <= keys[tried[1]]  # re-ranked by measurement
    assert rates[tried[0]] >= rates[tried[1]] or keys[tried[1]][1] == float("inf")
    assert rec.top.reasons[0].startswith("trial: ")
    assert "Trial runs" in rec.to_text()
    save_result(rec, tmp_path / "rec.h5")
    back = load_result(tmp_path / "rec.h5")
    assert [t.optimizer for t in back.trials] == [t.optimizer for t in rec.trials]
    assert (back.trials[0].losses == rec.trials[0].losses).all()


def test_trials_remove_hooks_an_optimizer_registered():
    import copy

    from curvlens.optim._base import OPTIMIZERS

    assert "kfac" in OPTIMIZERS  # import curvlens registers every curvlens optimizer
    model, loss_fn, data = _problem()
    rec = recommend(SUMMARY, RecommendationContext(batch_size=64, layer_types="linear,tanh"))
    kfac = [c for c in rec.candidates if c.optimizer == "kfac"]
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]
    run_trials(kfac, model, loss_fn, data, seconds=1.0, seed=0, steps={"kfac": 3})
    assert [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()] == hooks
    copy.deepcopy(model)  # nothing of the optimizer is left on the model


@pytest.mark.parametrize("kwargs,exc,msg", [
    (dict(trial=-1), ValueError, r"^trial: expected a positive number of seconds, got -1; pass e.g. trial=30$"),
    (dict(trial="soon"), ValueError, r"^trial: expected seconds or a duration like '30s', got 'soon'"),
    (dict(trial=5), ValueError, r"^trial: expected model=, loss_fn= and data= with it, got model, loss_fn, data missing"),
    (dict(trial_candidates=0), ValueError, r"^trial_candidates: expected a positive int, got 0"),
    (dict(context={"batchsize": 3}), ValueError, r"^context: unknown field\(s\) batchsize"),
    (dict(context={"phase": "late"}), ValueError, r"^phase: expected one of early, mid, fine-tuning, got 'late'$"),
])
def test_bad_values_are_one_clear_line(kwargs, exc, msg):
    ctx = kwargs.pop("context", None)
    with pytest.raises(exc, match=msg) as e:
        recommend(SUMMARY, ctx, **kwargs)
    assert "\n" not in str(e.value)


def test_build_needs_a_module_and_loss_for_curvlens_optimizers():
    rec = recommend(SUMMARY, RecommendationContext(batch_size=64))
    with pytest.raises(TypeError, match=r"^model: expected a torch.nn.Module, got str"):
        rec.top.build("model")
    ncg = [c for c in rec.candidates if c.optimizer == "newton_cg" and c.runnable]
    if ncg:
        with pytest.raises(TypeError, match=r"^loss_fn: expected the loss for newton_cg"):
            ncg[0].build(_problem()[0])
