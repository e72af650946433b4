"""Factor statistics from a random sub-batch (``statistics_fraction``), against the dense float64
factors of that sub-batch, and the convolution Gram built without ``F.unfold``."""

import pytest
import torch
from torch import nn

from curvlens.optim.kfac import KFAC, KFACPreconditioner
from curvlens.optim.kfac import factors as fx


@pytest.fixture(autouse=True)
def _float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, stride=2), nn.Tanh(), nn.Flatten(), nn.LayerNorm(12),
                         nn.Linear(12, 4))


def _factors(model, x, y, fisher, fraction, seed=0):
    loss = nn.CrossEntropyLoss()
    pre = KFACPreconditioner(model, loss_fn=loss, fisher=fisher, kl_clip=None, statistics_fraction=fraction,
                             generator=seed)
    model.zero_grad()
    loss(model(x), y).backward()
    pre.step()
    pre.remove()
    model.zero_grad()
    return {n: dict(b.factors) for n, b in pre.blocks.items()}


def _drawn(n, m, seed):
    """The sub-batch the preconditioner draws first from ``generator=seed``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:m].sort().values


@pytest.mark.parametrize("fisher", ["type2", "empirical"])
@pytest.mark.parametrize("fraction, m", [(0.3, 3), (0.5, 5)])
def test_sub_batch_factors_equal_the_factors_of_that_sub_batch(fisher, fraction, m):
    """A, G (and the norm block's F) from ``round(fraction * N)`` drawn samples equal the factors of
    a batch of just those samples (G weighted N / m: the whole batch's scale)."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(10, 2, 4, 4, generator=g), torch.randint(0, 4, (10,), generator=g)
    model = _model()
    got = _factors(model, x, y, fisher, fraction, seed=3)
    idx = _drawn(10, m, 3)
    assert len(idx) == m
    ref = _factors(model, x[idx], y[idx], fisher, 1.0)
    full = _factors(model, x, y, fisher, 1.0)
    for name in ref:
        for key in ref[name]:
            torch.testing.assert_close(got[name][key], ref[name][key], rtol=1e-11, atol=1e-13)
    # and they are not the whole batch's factors (the comparison above can fail)
    assert float((got["0"]["A"] - full["0"]["A"]).norm()) > 1e-3 * float(full["0"]["A"].norm())


def test_sub_batch_factors_are_unbiased_over_draws():
    """The mean over many draws of the sub-batch factors converges to the whole batch's."""
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(8, 2, 4, 4, generator=g), torch.randint(0, 4, (8,), generator=g)
    model = _model(1)
    full = _factors(model, x, y, "type2", 1.0)
    loss = nn.CrossEntropyLoss()
    pre = KFACPreconditioner(model, loss_fn=loss, fisher="type2", kl_clip=None, statistics_fraction=0.25,
                             factor_decay=0.0, inverse_every=10**6, generator=0)
    sums, single, draws = {}, {}, 400
    for _ in range(draws):
        model.zero_grad()
        loss(model(x), y).backward()
        pre.step()
        for name, b in pre.blocks.items():
            for key, f in b.factors.items():
                ref = full[name][key]
                sums[(name, key)] = sums.get((name, key), 0) + f / draws
                single[(name, key)] = single.get((name, key), 0) + float((f - ref).norm() / ref.norm()) / draws
    pre.remove()
    assert len(sums) == 5  # A and G of the convolution and the Linear layer, F of the LayerNorm
    for (name, key), mean in sums.items():
        ref = full[name][key]
        err = float((mean - ref).norm() / ref.norm())
        # a single draw is far off; the mean over draws is within the 1 / sqrt(draws) noise of it
        assert err < 2.5 * single[(name, key)] / draws ** 0.5, (name, key, err, single[(name, key)])


def test_fraction_one_draws_nothing_and_runs_bit_identically():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(16, 2, 4, 4, generator=g), torch.randint(0, 4, (16,), generator=g)
    runs = []
    for kw in ({}, {"statistics_fraction": 1.0}):
        model = _model(2)
        opt = KFAC(model, nn.CrossEntropyLoss(), lr=0.3, update_every=1, inverse_every=2, generator=5, **kw)
        for _ in range(4):
            opt.step((x, y))
        runs.append(([p.detach().clone() for p in model.parameters()], opt.pre.generator.get_state()))
    for p, q in zip(runs[0][0], runs[1][0]):
        assert torch.equal(p, q)
    assert torch.equal(runs[0][1], runs[1][1])


def test_sub_batch_training_stays_finite_and_decreases_the_loss():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(32, 2, 4, 4, generator=g), torch.randint(0, 4, (32,), generator=g)
    model = _model(3)
    opt = KFAC(model, nn.CrossEntropyLoss(), lr=0.3, update_every=1, inverse_every=1, statistics_fraction=0.25,
               generator=0)
    losses = [float(opt.step((x, y))) for _ in range(15)]
    assert losses[-1] < 0.8 * losses[0]
    assert opt.pre.blocks["0"].factors["A"].shape == (19, 19)


@pytest.mark.parametrize("value", [0, -0.5, 1.5, float("nan"), True, "half"])
def test_bad_statistics_fraction_is_one_line(value):
    with pytest.raises(ValueError, match=r"^statistics_fraction: expected a float in \(0, 1\], got .*; pass e\.g\. "
                                         r"statistics_fraction=0\.25 \(1 takes the statistics from the whole batch\)$"):
        KFACPreconditioner(_model(), loss_fn=nn.CrossEntropyLoss(), statistics_fraction=value)


def test_statistics_fraction_with_ekfac_is_refused():
    with pytest.raises(ValueError, match=r"^statistics_fraction: expected 1 with ekfac=True .*, got 0\.5; "
                                         r"pass statistics_fraction=1 or ekfac=False$"):
        KFAC(_model(), nn.CrossEntropyLoss(), lr=0.1, ekfac=True, statistics_fraction=0.5)


@pytest.mark.parametrize("module, shape", [
    (nn.Conv2d(16, 4, 3, padding=1), (3, 16, 5, 5)),
    (nn.Conv2d(2, 3, (2, 3), stride=(2, 1), padding=(1, 2), dilation=(2, 1)), (3, 2, 7, 6)),
    (nn.Conv2d(2, 3, 3, stride=2, bias=False), (2, 2, 9, 9)),
    (nn.Conv1d(2, 3, 3, stride=2, padding=1, dilation=2), (4, 2, 9)),
])
def test_conv_gram_without_unfold_equals_the_unfolded_rows_gram(module, shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(5))
    patches = fx._patches(module, x)  # F.unfold: (N, C * K, positions), channel-major
    rows = patches.transpose(1, 2).reshape(-1, patches.shape[1])
    if module.bias is not None:
        rows = torch.cat([rows, torch.ones(rows.shape[0], 1)], 1)
    got, n = fx.input_gram(module, x)
    assert n == rows.shape[0]
    torch.testing.assert_close(got, rows.T @ rows, rtol=1e-13, atol=1e-13)


def test_state_dict_resume_with_sub_batches_and_cholesky_factors_is_bit_identical(monkeypatch):
    import copy

    from curvlens.optim.kfac import explicit

    monkeypatch.setattr(explicit, "TRIANGULAR_MIN_DIM", 1)  # every factor kept as its Cholesky factor
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(24, 2, 4, 4, generator=g), torch.randint(0, 4, (24,), generator=g)
    kw = dict(lr=0.3, update_every=2, inverse_every=2, inverse="triangular", statistics_fraction=0.5)
    model = _model(4)
    opt = KFAC(model, nn.CrossEntropyLoss(), generator=5, **kw)
    for _ in range(3):
        opt.step((x, y))
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    for _ in range(5):
        opt.step((x, y))
    model2 = _model(9)
    model2.load_state_dict(saved_model)
    opt2 = KFAC(model2, nn.CrossEntropyLoss(), generator=99, **kw)
    opt2.load_state_dict(saved_opt)
    for _ in range(5):
        opt2.step((x, y))
    assert opt2.pre.blocks["4"]._inv[1][0].lower is not None
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


def test_statistics_fraction_on_a_process_group_is_refused(monkeypatch):
    from curvlens.optim.kfac import preconditioner

    monkeypatch.setattr(preconditioner, "group_sync", lambda pre, group: (object(), None))  # a resolved group
    model = _model()
    with pytest.raises(ValueError, match=r"^statistics_fraction: expected 1 on a process group .*, got 0\.5; "
                                         r"pass statistics_fraction=1$"):
        KFACPreconditioner(model, loss_fn=nn.CrossEntropyLoss(), statistics_fraction=0.5, process_group="world")
    assert not model[0]._forward_hooks  # the hooks registered before the refusal are removed
