"""Factor statistics without materialized bias columns, and the refresh schedule of the inverses."""

import pytest
import torch
from torch import nn

from curvlens.optim.kfac import KFACPreconditioner
from curvlens.optim.kfac import factors as fx


@pytest.mark.parametrize("module, shape", [
    (nn.Linear(5, 3), (7, 5)),
    (nn.Linear(5, 3, bias=False), (2, 4, 5)),
    (nn.Conv1d(2, 3, 3, stride=2, padding=1), (4, 2, 9)),
    (nn.Conv2d(2, 3, 3, stride=2, padding=1), (3, 2, 6, 5)),
    (nn.Conv2d(2, 3, (2, 3), padding=(1, 0), dilation=(1, 2), bias=False), (2, 2, 5, 7)),
])
def test_input_gram_equals_gram_of_rows(module, shape):
    module = module.double()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rows = fx.input_rows(module, x)
    s, n = fx.input_gram(module, x)
    assert n == rows.shape[0]
    torch.testing.assert_close(s, rows.T @ rows, rtol=1e-13, atol=1e-13)


def test_input_gram_rejects_other_modules():
    with pytest.raises(TypeError, match=r"^module: expected Linear, Conv1d or Conv2d, got Tanh$"):
        fx.input_gram(nn.Tanh(), torch.ones(2, 2))


def _run(pre, model, steps, g):
    flags = []
    for _ in range(steps):
        x, y = torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        info = pre.step()
        flags.append((info.factors_updated, info.inverses_updated))
    return flags


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))


def test_inverses_refresh_at_first_update_after_each_period():
    model = _model()
    pre = KFACPreconditioner(model, loss_fn=nn.CrossEntropyLoss(), update_every=3, inverse_every=10, generator=0)
    flags = _run(pre, model, 26, torch.Generator().manual_seed(1))
    assert [k for k, (u, _) in enumerate(flags) if u] == list(range(0, 26, 3))
    # 3 does not divide 10: the inverses follow the first factor update at or after 10 steps
    assert [k for k, (_, inv) in enumerate(flags) if inv] == [0, 12, 24]


def test_schedule_survives_state_dict():
    model = _model()
    kw = dict(loss_fn=nn.CrossEntropyLoss(), update_every=3, inverse_every=10, generator=0)
    pre = KFACPreconditioner(model, **kw)
    _run(pre, model, 14, torch.Generator().manual_seed(1))
    state = pre.state_dict()
    assert state["last_inverse"] == 12
    g = torch.Generator().manual_seed(2)
    rest = _run(pre, model, 12, g)
    pre.remove()
    model2 = _model()
    pre2 = KFACPreconditioner(model2, **kw)
    pre2.load_state_dict(state)
    model2.load_state_dict(model.state_dict())  # weights do not matter for the schedule
    assert _run(pre2, model2, 12, torch.Generator().manual_seed(2)) == rest
    assert [k + 14 for k, (_, inv) in enumerate(rest) if inv] == [24]


def test_kept_denominators_follow_damping_and_inverses():
    from curvlens.optim.kfac.inverse import kron_solve

    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = _model()
        pre = KFACPreconditioner(model, loss_fn=nn.CrossEntropyLoss(), update_every=1, inverse_every=2,
                                 kl_clip=None, inverse="eigh", generator=0)
        g = torch.Generator().manual_seed(3)
        for damping in (1e-2, 1e-2, 0.3, 0.3, 1e-3):  # a new damping, then new inverses
            pre.damping = damping
            x, y = torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)
            model.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            raw = {n: b.grad_matrix().clone() for n, b in pre.blocks.items()}
            pre.step()
            for n, b in pre.blocks.items():
                ea, eg = b.eig
                ref = kron_solve(eg, ea, raw[n], damping)
                got = torch.cat([b.module.weight.grad, b.module.bias.grad[:, None]], 1)
                torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)
    finally:
        torch.set_default_dtype(before)
