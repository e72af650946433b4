"""load_problem: a Problem from files, equal to the one built by hand; every mismatch one line in API words."""

from __future__ import annotations

import textwrap

import pytest
import torch
from torch import nn

from curvlens.errors import CheckpointError
from curvlens.problem import Problem
from curvlens.problem.load import load_problem

FACTORIES = textwrap.dedent(
    """
    import torch
    from torch import nn


    def make(seed=0):
        g = torch.Generator().manual_seed(seed)
        m = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
        return m


    class _Once(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = torch.tanh(x)
            ctx.save_for_backward(y)
            return y

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, grad):
            (y,) = ctx.saved_tensors
            return grad * (1 - y * y)


    class OnceTanh(nn.Module):
        def forward(self, x):
            return _Once.apply(x)


    def make_once():
        m = make()
        m[1] = OnceTanh()
        return m


    def batches():  # a one-shot iterable of three batches
        g = torch.Generator().manual_seed(9)
        return ((torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randint(0, 2, (4,), generator=g))
                for _ in range(3))
    """
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("load_problem")
    (d / "nets.py").write_text(FACTORIES)
    ns: dict = {}
    exec(FACTORIES, ns)  # the same factories, to build references
    model = ns["make"](seed=3)
    torch.save({"epoch": 2, "model": {f"module.{k}": v for k, v in model.state_dict().items()}}, d / "net.pt")
    torch.save(model, d / "whole.pt")
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(10, 3, generator=g, dtype=torch.float64), torch.randint(0, 2, (10,), generator=g)
    torch.save({"inputs": x, "targets": y}, d / "data.pt")
    torch.save({"images": x, "labels": y}, d / "keys.pt")
    torch.save({"inputs": x, "targets": (torch.rand(10, 2, generator=g) > 0.5).double()}, d / "binary.pt")
    torch.save({"inputs": torch.randn(10, 5, generator=g, dtype=torch.float64), "targets": y}, d / "wide.pt")
    xn = x.clone()
    xn[0, 0] = float("nan")
    torch.save({"inputs": xn, "targets": y}, d / "nan.pt")
    return d, ns, model, x, y


def _load(d, **kw):
    kw.setdefault("model", f"{d / 'nets.py'}:make")
    kw.setdefault("data", d / "data.pt")
    return load_problem(kw.pop("checkpoint", d / "net.pt"), **kw)


def test_equals_the_problem_built_by_hand(files):
    d, _, model, x, y = files
    problem = _load(d, batch_size=4)
    assert isinstance(problem, Problem)
    assert problem.source == "net.pt (state_dict)"
    assert any("stripped key prefix 'module.'" in n for n in problem.notes)
    assert problem.num_samples == 10 and [len(b[1]) for b in problem.batches] == [4, 4, 2]
    assert isinstance(problem.loss_fn, nn.CrossEntropyLoss)
    ref = Problem(model, nn.CrossEntropyLoss(), (x, y))
    torch.testing.assert_close(problem.gradient(flat=True), ref.gradient(flat=True), rtol=1e-12, atol=1e-14)
    assert not problem.model.training


def test_options(files):
    d, _, model, x, y = files
    p = _load(d, data=d / "keys.pt", data_keys="images,labels", num_samples=6, dtype="float32")
    assert p.num_samples == 6 and p.dtype == torch.float32 and p.batches[0][0].dtype == torch.float32
    assert _load(d, data=d / "keys.pt", data_keys=("images", "labels"), dtype=torch.float64).dtype == torch.float64
    p = _load(d, data=d / "binary.pt", loss="bce_with_logits")
    assert isinstance(p.loss_fn, nn.BCEWithLogitsLoss)
    p = load_problem(d / "whole.pt", data=d / "data.pt", trust=True)
    assert p.source == "whole.pt (pickled_module)"
    torch.testing.assert_close(p.gradient(flat=True), Problem(model, nn.CrossEntropyLoss(), (x, y)).gradient(flat=True))


def test_one_shot_iterable_is_read_once_and_kept(files):
    d, ns, _, _, _ = files
    p = _load(d, data=f"{d / 'nets.py'}:batches")
    expected = list(ns["batches"]())
    assert len(p.batches) == 3 and p.num_samples == 12
    for (xa, ya), (xb, yb) in zip(p.batches, expected):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


ERRORS = [
    ({"checkpoint": 3}, TypeError, r"^checkpoint: expected a file path, got int$"),
    ({"trust": "yes"}, TypeError, r"^trust: expected True or False, got str$"),
    ({"dtype": "half-precision"}, ValueError, r"^dtype: expected None, a floating torch\.dtype or one of .*, "
                                              r"got 'half-precision'; pass dtype='float64'"),
    ({"dtype": torch.int64}, ValueError, r"^dtype: expected None, a floating torch\.dtype"),
    ({"device": "gpu!"}, ValueError, r"^device: expected 'cpu', 'cuda', 'cuda:1', \.\.\. or a torch\.device, got 'gpu!'$"),
    ({"data_keys": "images"}, ValueError,
     r"^data_keys: expected two names 'INPUTS,TARGETS' \(e\.g\. data_keys='images,labels'\), got 'images'$"),
    ({"data": "{d}/keys.pt"}, CheckpointError,
     r"has no keys 'inputs' and 'targets' .*; it holds 'images', 'labels'; name the keys with data_keys='INPUTS,TARGETS'$"),
    ({"batch_size": 0}, ValueError, r"^batch_size: expected a positive int or None, got 0$"),
    ({"model": None}, CheckpointError, r"holds only weights, not the architecture; pass model='pkg\.module:factory' or "
                                       r"model='path/to/file\.py:factory' that builds it$"),
    ({"checkpoint": "{d}/whole.pt", "model": None}, CheckpointError,
     r"so it is refused: pass trust=True only if you trust its source, or save model\.state_dict\(\) instead and "
     r"load it with model='pkg\.module:factory'$"),
    ({"data": "{d}/wide.pt"}, CheckpointError,
     r"^data/model shape mismatch: the model cannot take inputs of shape \(8, 5\) \(.*\); check data=/data_keys= and "
     r"model=$"),
    ({"loss": "mse"}, CheckpointError,
     r"^loss/target mismatch: loss='mse' cannot compare outputs of shape \(8, 2\) with targets of shape \(8,\) and "
     r"dtype torch\.int64 \(.*\); pick the loss that matches the targets"),
    ({"loss": "bce"}, ValueError, r"^loss: 'bce' is ambiguous .*use 'bce_with_logits' .* or 'bce_probs'"),
    ({"data": "{d}/nan.pt"}, CheckpointError,
     r"^NaN loss: the loss on the first samples is nan; check the data and the checkpoint for NaN/Inf "
     r"\(or use dtype='float64' if it overflows\)$"),
    ({"model": "{d}/nets.py:make_once"}, CheckpointError,
     r"^state_dict model '.*net\.pt' cannot give Hessian-vector products: .*; every operation in the "
     r"model's forward needs a second derivative .*not itself differentiable$"),
]


@pytest.mark.parametrize("kwargs, exc, message", ERRORS, ids=[" ".join(map(str, e[0].items()))[:40] for e in ERRORS])
def test_errors_are_one_line_in_api_words(files, kwargs, exc, message):
    d = files[0]
    kwargs = {k: (v.format(d=d) if isinstance(v, str) and "{d}" in v else v) for k, v in kwargs.items()}
    with pytest.raises(exc, match=message) as info:
        _load(d, **kwargs)
    assert "\n" not in str(info.value) and "--" not in str(info.value)
