"""The embedded demo problem: deterministic, global-RNG free, a real (learnable) task."""

import pytest
import torch
from torch import nn

from curvlens.data.demo import DemoProblem, demo_model, demo_problem, make_spirals


@pytest.fixture(scope="module")
def small():
    return demo_problem(num_samples=600, train_steps=150, dtype=torch.float64)


def test_same_seed_identical_other_seed_differs():
    a = demo_problem(num_samples=300, train_steps=5, seed=3)
    b = demo_problem(num_samples=300, train_steps=5, seed=3)
    c = demo_problem(num_samples=300, train_steps=5, seed=4)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    assert a.train_losses == b.train_losses
    assert not torch.equal(a.inputs, c.inputs)


def test_never_touches_global_rng():
    state = torch.random.get_rng_state()
    demo_problem(num_samples=200, train_steps=3)
    make_spirals(100, 4)
    demo_model()
    assert torch.equal(state, torch.random.get_rng_state())


def test_problem_shapes_and_training(small):
    assert isinstance(small, DemoProblem)
    assert small.inputs.shape == (600, 2) and small.inputs.dtype == torch.float64
    assert small.targets.dtype == torch.int64
    assert torch.bincount(small.targets).tolist() == [120] * 5  # balanced classes
    assert small.num_params == 2 * 32 + 32 + 32 * 32 + 32 + 32 * 5 + 5
    assert isinstance(small.loss_fn, nn.CrossEntropyLoss) and not small.model.training
    losses = small.train_losses
    assert len(losses) == 150 and losses[-1] < 0.5 * losses[0]
    # spirals are not linearly separable: the trained MLP must do clearly better than chance (0.2)
    assert small.accuracy > 0.75
    logits = small.model(small.inputs)
    torch.testing.assert_close(small.loss_fn(logits, small.targets),
                               torch.nn.functional.cross_entropy(logits, small.targets))
    inputs, targets = small.data
    assert inputs is small.inputs and targets is small.targets
    assert "spirals" in small.description and "seed 0" in small.description


def test_spirals_geometry():
    x, y = make_spirals(1000, 3, noise=0.0, generator=torch.Generator().manual_seed(0))
    r = x.to(torch.float64).norm(dim=1)
    assert r.max() <= 1.5 + 1e-6
    # without noise each arm is a deterministic curve: angle = 2*pi*(r/1.5) + 2*pi*k/3 (mod 2*pi)
    angle = torch.atan2(x[:, 1].double(), x[:, 0].double())
    expected = 2 * torch.pi * (r / 1.5) + 2 * torch.pi * y.double() / 3
    diff = torch.remainder(angle - expected + torch.pi, 2 * torch.pi) - torch.pi
    assert diff.abs().max() < 1e-4


def test_demo_model_is_a_factory_and_uses_the_generator():
    m = demo_model()
    assert [type(layer) for layer in m] == [nn.Linear, nn.Tanh, nn.Linear, nn.Tanh, nn.Linear]
    w = m[0].weight
    assert w.abs().max() <= 1 / 2**0.5 and w.std() > 0.1  # uniform(+-1/sqrt(fan_in)), not zeros
    m1 = demo_model(generator=torch.Generator().manual_seed(1))
    assert not torch.equal(m1[0].weight, w)


def test_untrained_and_hessian_exists():
    p = demo_problem(num_samples=100, hidden=4, train_steps=0, dtype=torch.float64)
    assert p.train_losses == ()
    params = dict(p.model.named_parameters())

    def loss(ps):
        out = torch.func.functional_call(p.model, ps, (p.inputs,))
        return p.loss_fn(out, p.targets)

    H = torch.func.hessian(loss)(params)["0.weight"]["0.weight"].reshape(8, 8)
    torch.testing.assert_close(H, H.T)
    assert torch.isfinite(H).all() and H.abs().max() > 0


@pytest.mark.parametrize(
    "fn, kwargs, exc, match",
    [
        (demo_problem, {"seed": "0"}, TypeError, r"seed: expected an int, got str; pass seed=0"),
        (demo_problem, {"train_steps": -1}, ValueError, r"train_steps: expected an int >= 0, got -1"),
        (make_spirals, {"num_samples": 3, "num_classes": 5}, ValueError, r"num_samples: expected an int >= num_classes \(5\), got 3"),
        (make_spirals, {"num_classes": 1}, ValueError, r"num_classes: expected an int >= 2, got 1"),
    ],
)
def test_argument_errors(fn, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fn(**kwargs)
