"""KFACPreconditioner: unsupported layers, errors, state guards, hooks, and the KFAC optimizer."""

import copy
import logging
import re

import pytest
import torch
from torch import nn

from curvlens.optim.kfac import KFAC, KFACPreconditioner


def _mlp():
    torch.manual_seed(0)  # test process only: model init
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 3))


def _data(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return x, (x @ torch.randn(4, 3, generator=g)).argmax(1)  # learnable labels


class _Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.gru = nn.GRU(4, 4, batch_first=True)
        self.grouped = nn.Conv1d(4, 4, 1, groups=2)
        self.out = nn.Linear(4, 10)
        self.out.weight = self.emb.weight  # tied
        self.head = nn.Linear(4, 3)

    def forward(self, idx):
        h = self.gru(self.emb(idx))[0]
        h = self.grouped(h.transpose(1, 2)).transpose(1, 2)
        return self.head(h.mean(1)) + 0 * self.out(h).sum()


def test_unsupported_layers_listed_once(caplog):
    with caplog.at_level(logging.WARNING, logger="curvlens.optim.kfac.preconditioner"):
        pre = KFACPreconditioner(_Mixed(), loss_fn="cross_entropy")
    text = "; ".join(pre.unsupported)
    assert list(pre.blocks) == ["head"]
    for part in ("gru: GRU", "grouped: Conv1d with groups=2", "emb: Embedding (tied weight shared with out)",
                 "out: Linear (tied weight shared with emb)"):
        assert part in text
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "base optimizer" in msgs[0] and "gru" in msgs[0]
    model = _Mixed()
    pre = KFACPreconditioner(model, loss_fn="cross_entropy", generator=0)
    idx = torch.randint(0, 10, (5, 3))
    nn.functional.cross_entropy(model(idx), torch.randint(0, 3, (5,))).backward()
    raw = model.gru.weight_ih_l0.grad.clone()
    pre.step()
    assert torch.equal(model.gru.weight_ih_l0.grad, raw)  # left to the base optimizer


BAD = [
    (dict(model="net"), TypeError, r"^model: expected a torch.nn.Module, got str"),
    (dict(damping=-1.0), ValueError, r"^damping: expected a finite float >= 0, got -1.0"),
    (dict(damping=float("nan")), ValueError, r"^damping: expected a finite float >= 0"),
    (dict(factor_decay=1.0), ValueError, r"^factor_decay: expected a float in \[0, 1\), got 1.0"),
    (dict(update_every=0), ValueError, r"^update_every: expected an int >= 1, got 0"),
    (dict(inverse_every=2.5), ValueError, r"^inverse_every: expected an int >= 1, got 2.5"),
    (dict(fisher="true"), ValueError, r"^fisher: expected one of 'mc', 'type2', 'empirical', got 'true'"),
    (dict(kl_clip=0.0), ValueError, r"^kl_clip: expected a float > 0 or None, got 0.0"),
    (dict(lr=0), ValueError, r"^lr: expected a float > 0, got 0"),
    (dict(loss_fn=None), ValueError, r"^loss_fn: fisher='mc' needs the loss"),
    (dict(loss_fn=nn.L1Loss()), ValueError, r"^loss_fn: K-FAC supports cross_entropy"),
    (dict(loss_fn=nn.CrossEntropyLoss(reduction="none")), ValueError, r"^loss_fn: expected reduction 'mean'"),
    (dict(loss_fn=nn.BCELoss(), fisher="type2"), ValueError, r"^fisher: 'type2' needs an output Hessian"),
    (dict(layers=["nope"]), ValueError, r"^layers: expected names or submodules of model, got 'nope'"),
    (dict(generator="seed"), TypeError, r"^generator: expected a torch.Generator"),
]


@pytest.mark.parametrize("kwargs, exc, msg", BAD)
def test_bad_inputs_one_line(kwargs, exc, msg):
    kw = {"loss_fn": nn.CrossEntropyLoss(), **kwargs}
    model = kw.pop("model", _mlp())
    with pytest.raises(exc, match=msg) as info:
        KFACPreconditioner(model, **kw)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs, msg", [
    (dict(lr=-1.0), r"^lr: expected a finite number > 0"),
    (dict(lr=0.1, momentum=1.0), r"^momentum: expected a number in \[0, 1\)"),
    (dict(lr=0.1, adapt_every=0), r"^adapt_every: expected an int >= 1"),
])
def test_kfac_bad_inputs(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        KFAC(_mlp(), nn.CrossEntropyLoss(), **kwargs)


def test_model_returning_tuple_is_refused_for_mc():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x):
            return self.lin(x), x

    pre = KFACPreconditioner(Two(), loss_fn="cross_entropy")
    with pytest.raises(TypeError, match=r"^model: fisher='mc' needs the model to return one tensor"):
        pre.model(torch.randn(2, 4))


def test_mode_and_global_rng_untouched_and_hooks_removed():
    model = _mlp()
    model.train()
    x, y = _data()
    before = torch.get_rng_state()
    with KFACPreconditioner(model, loss_fn=nn.CrossEntropyLoss(), generator=3) as pre:
        nn.functional.cross_entropy(model(x), y).backward()
        pre.step()
        assert all(len(m._forward_hooks) == 1 for m in (model, model[0], model[1], model[3]))
    assert torch.equal(torch.get_rng_state(), before)
    assert model.training and all(m.training for m in model.modules())
    assert all(len(m._forward_hooks) == 0 for m in model.modules())
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()  # no hook runs any more
    assert not pre._outputs and not pre._pending


def test_same_seed_same_preconditioned_gradient():
    out = []
    for _ in range(2):
        model = _mlp()
        pre = KFACPreconditioner(model, loss_fn=nn.CrossEntropyLoss(), generator=11)
        x, y = _data()
        nn.functional.cross_entropy(model(x), y).backward()
        pre.step()
        out.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    assert torch.equal(out[0], out[1])


def test_kl_clip_bounds_the_update():
    model = _mlp()
    pre = KFACPreconditioner(model, loss_fn=nn.CrossEntropyLoss(), kl_clip=1e-6, lr=1.0, generator=0)
    x, y = _data()
    loss = nn.functional.cross_entropy(model(x), y)
    raw = torch.autograd.grad(loss, list(model.parameters()), retain_graph=True)
    loss.backward()
    info = pre.step()
    vg = sum(float((p.grad * g).sum()) for p, g in zip(model.parameters(), raw))
    assert info.kl_scale < 1 and info.kl_scale * vg == pytest.approx(1e-6, rel=1e-6)  # lr^2 nu^2 <P g, g>


def test_nonfinite_gradient_left_unchanged_and_weights_stay_finite():
    model = _mlp()
    opt = KFAC(model, nn.CrossEntropyLoss(), lr=0.1, generator=0)
    x, y = _data()
    opt.step((x, y))
    x_bad = x.clone()
    x_bad[0, 0] = float("nan")
    opt.step((x_bad, y))
    assert not opt.last_step.accepted and re.search("non-finite", opt.last_step.status)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    x_inf = x.clone()
    x_inf[0] = 1e30
    for _ in range(3):
        opt.step((x_inf, y))
        assert all(torch.isfinite(p).all() for p in model.parameters())


def test_kfac_reduces_loss_and_leaves_grads():
    model = _mlp()
    marker = [torch.full_like(p, 7.0) for p in model.parameters()]
    for p, m in zip(model.parameters(), marker):
        p.grad = m
    opt = KFAC(model, nn.CrossEntropyLoss(), lr=0.1, kl_clip=None, adapt_damping=True, adapt_every=2, generator=0)
    x, y = _data(128)
    first = opt.step((x, y))
    for _ in range(25):
        last = opt.step((x, y))
    assert last < 0.6 * first
    assert all(p.grad is m for p, m in zip(model.parameters(), marker))
    assert opt.last_step.damping != 1e-3  # adapted


@pytest.mark.parametrize("adapt", [False, True])
def test_state_dict_resume_is_bit_identical(adapt):
    x, y = _data(64)
    kw = dict(lr=0.1, inverse_every=3, adapt_damping=adapt, adapt_every=2)
    model = _mlp()
    opt = KFAC(model, nn.CrossEntropyLoss(), generator=5, **kw)
    for _ in range(4):
        opt.step((x, y))
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    for _ in range(5):
        opt.step((x, y))
    model2 = _mlp()
    model2.load_state_dict(saved_model)
    opt2 = KFAC(model2, nn.CrossEntropyLoss(), generator=99, **kw)
    opt2.load_state_dict(saved_opt)
    for _ in range(5):
        opt2.step((x, y))
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


def test_from_analysis_records_why():
    from types import SimpleNamespace

    res = SimpleNamespace(summary=lambda: {"lambda_max": 50.0, "saddle_verdict": "near_minimum"})
    opt = KFAC.from_analysis(res, _mlp(), nn.CrossEntropyLoss(), generator=0)
    assert opt.pre.damping == pytest.approx(0.05) and opt.param_groups[0]["lr"] == pytest.approx(0.5)  # 1 - momentum
    assert any("lambda_max" in n for n in opt.settings_notes)
    opt = KFAC.from_analysis(res, _mlp(), nn.CrossEntropyLoss(), lr=0.3)
    assert opt.param_groups[0]["lr"] == 0.3 and any("given explicitly" in n for n in opt.settings_notes)


def test_registered_by_name():
    from curvlens.optim._base import build_optimizer

    opt = build_optimizer("kfac", _mlp(), nn.CrossEntropyLoss(), lr=0.1)
    assert isinstance(opt, KFAC)


def test_model_can_be_copied_saved_and_outlives_the_optimizer(tmp_path):
    import copy
    import gc

    from curvlens.optim import KFAC

    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
    opt = KFAC(model, nn.CrossEntropyLoss(), lr=0.1, generator=0)
    opt.step((x, y))
    twin = copy.deepcopy(model)  # the copy carries inert hooks, not the preconditioner
    torch.save(model, tmp_path / "model.pt")
    assert torch.equal(twin(x), model(x))
    del opt
    gc.collect()
    model(x)  # the dead preconditioner's hooks remove themselves on the next forward
    assert not model._forward_hooks and all(not m._forward_hooks for m in model.modules())
    copy.deepcopy(model)
