"""Operators leave the model untouched, and bad input gets a clear error."""

import pytest
import torch
from torch import nn

from curvlens.errors import NonFiniteLossError
from curvlens.operators import DenseOperator, EmpiricalFisherOperator, GGNOperator, HessianOperator, MCFisherOperator

from ._models import D64, bn_model, data, dense_hessian_autograd, mlp

CE = nn.CrossEntropyLoss()


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {n: m.training for n, m in model.named_modules()},
            {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()})


@pytest.mark.parametrize("cls", [HessianOperator, GGNOperator, EmpiricalFisherOperator, MCFisherOperator])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_model_state_untouched(cls, mode):
    model = bn_model()
    if cls is EmpiricalFisherOperator and mode == "train":
        with pytest.raises(ValueError, match="EmpiricalFisherOperator needs per-sample gradients"):
            cls(model, CE, data(12), mode=mode)
        return
    model.train()
    model[0].weight.grad = torch.full_like(model[0].weight, 0.5)  # a pending user gradient
    x, y = data(12)
    before = snapshot(model)
    rng = torch.get_rng_state()
    op = cls(model, CE, [(x[:6], y[:6]), (x[6:], y[6:])], mode=mode, max_graph_memory=0)
    for s in range(5):
        op.matmat(torch.randn(op.dim, 2, generator=torch.Generator().manual_seed(s), dtype=D64))
    after = snapshot(model)
    assert torch.equal(torch.get_rng_state(), rng)
    for k in before[0]:
        assert torch.equal(before[0][k], after[0][k]), k
    assert before[1] == after[1]
    assert model[1].num_batches_tracked.item() == 0
    assert torch.equal(after[2]["0.weight"], before[2]["0.weight"])
    assert after[2]["3.bias"] is None


def test_train_mode_uses_batch_statistics():
    model = bn_model()
    x, y = data(12)
    # Reference: reverse-over-reverse with batch statistics (see dense_hessian_autograd).
    model.train()
    model[1].track_running_stats = False
    ref = dense_hessian_autograd(model, lambda call: CE(call(x), y))
    model[1].track_running_stats = True
    model.eval()
    for backend in ("double_backward", "fwd_rev"):
        H = HessianOperator(model, CE, (x, y), mode="train", backend=backend)
        assert float((H.to_dense() - ref).abs().max()) < 1e-10 * float(ref.abs().max()), backend
    assert not model.training


def test_dropout_in_train_mode_refused_unless_allowed():
    model = nn.Sequential(nn.Linear(4, 5), nn.Dropout(0.3), nn.Linear(5, 3)).to(D64)
    x, y = data(8)
    with pytest.raises(ValueError, match=r"mode='train' with active dropout \(1\).*allow_random=True"):
        HessianOperator(model, CE, (x, y), mode="train")
    rng = torch.get_rng_state()
    op = HessianOperator(model, CE, (x, y), mode="train", allow_random=True, max_graph_memory=0)
    op @ torch.ones(op.dim, dtype=D64)
    assert torch.equal(torch.get_rng_state(), rng)
    HessianOperator(model, CE, (x, y))  # eval mode: dropout inactive, fine


def _bad(model_kind="mlp"):
    return mlp(), data(8)


class ScalarNotTensor(nn.Module):
    def forward(self, out, y):
        return 1.0


@pytest.mark.parametrize(
    "build,exc,match",
    [
        (lambda m, x, y: HessianOperator(m, nn.CrossEntropyLoss(reduction="none"), (x, y)), ValueError,
         r"reduction: expected 'mean' or 'sum', got 'none'"),
        (lambda m, x, y: HessianOperator(m, lambda o, t: (o.sum(1) - t) ** 2, (x, y)), ValueError,
         r"loss_fn: expected a scalar loss, got shape \(8,\) on batch 0"),
        (lambda m, x, y: HessianOperator(m, lambda o, t: o.detach().sum(), (x, y)), ValueError,
         r"loss_fn: the loss on batch 0 does not require grad"),
        (lambda m, x, y: HessianOperator(m, CE, [(x[:4], y[:4]), (x[4:] * float("nan"), y[4:])]), NonFiniteLossError,
         r"loss_fn: the loss is nan on batch 1 \(of 2\)"),
        (lambda m, x, y: HessianOperator(m, CE, []), ValueError, r"data: the iterable of batches is empty"),
        (lambda m, x, y: HessianOperator(m, CE, None), ValueError, r"data: expected one \(inputs, targets\) batch"),
        (lambda m, x, y: HessianOperator(m, CE, (x, y), params=lambda n, p: False), ValueError,
         r"params: no trainable parameters selected"),
        (lambda m, x, y: HessianOperator(m, CE, (x, y), params="nope"), ValueError,
         r"params: no parameter or module named 'nope'"),
        (lambda m, x, y: HessianOperator(m, ScalarNotTensor(), (x, y)), TypeError,
         r"loss_fn: expected a scalar tensor, got float on batch 0"),
        (lambda m, x, y: HessianOperator(m, CE, (x, y), mode="training"), ValueError,
         r"mode: expected 'eval' or 'train', got 'training'"),
        (lambda m, x, y: HessianOperator(m, CE, (x, y), backend="magic"), ValueError, r"backend: expected"),
        (lambda m, x, y: HessianOperator("model", CE, (x, y)), TypeError, r"model: expected a torch.nn.Module, got str"),
        (lambda m, x, y: GGNOperator(m, nn.HuberLoss(), (x, y)), ValueError,
         r"loss_fn: GGNOperator supports cross_entropy, nll, mse, bce_with_logits, bce_probs .* got 'HuberLoss'"),
        (lambda m, x, y: GGNOperator(m, nn.CrossEntropyLoss(weight=torch.ones(3, dtype=D64)), (x, y)), ValueError,
         r"class weights is not supported by GGNOperator"),
        (lambda m, x, y: GGNOperator(m, lambda model, batch: model(batch[0]).sum(), (x, y)), ValueError,
         r"GGNOperator needs a criterion applied to the model output"),
        (lambda m, x, y: MCFisherOperator(m, CE, (x, y), mc_samples=0), ValueError,
         r"mc_samples: expected a positive integer, got 0"),
        (lambda m, x, y: HessianOperator(m, CE, x), ValueError,
         r"data: batch 0 must be an \(inputs, targets\) pair for a criterion loss_fn"),
    ],
    ids=["reduction_none", "not_scalar", "no_grad", "nan_loss", "empty", "none", "no_params", "bad_name",
         "float_loss", "bad_mode", "bad_backend", "not_module", "unsupported_ggn", "weighted_ce",
         "ggn_model_batch", "mc_samples", "bare_tensor"],
)
def test_bad_input_errors(build, exc, match):
    m, (x, y) = _bad()
    with pytest.raises(exc, match=match):
        build(m, x, y)


def test_no_trainable_params():
    m = mlp()
    for p in m.parameters():
        p.requires_grad_(False)
    x, y = data(8)
    with pytest.raises(ValueError, match="params: no trainable parameters selected"):
        HessianOperator(m, CE, (x, y))


def test_mixed_dtypes():
    m = mlp()
    m[2].float()
    x, y = data(8)
    with pytest.raises(ValueError, match=r"params: expected one dtype and device .*torch.float32.*torch.float64"):
        HessianOperator(m, CE, (x, y))


def test_vector_validation():
    m = mlp()
    x, y = data(8)
    H = HessianOperator(m, CE, (x, y))
    with pytest.raises(ValueError, match=rf"v: expected shape \({H.dim},\) \(D={H.dim} parameters\), got \(3,\)"):
        H.matvec(torch.ones(3, dtype=D64))
    with pytest.raises(ValueError, match=r"v: expected dtype torch.float64 .* got torch.float32; convert with v.to"):
        H.matvec(torch.ones(H.dim))
    with pytest.raises(TypeError, match=r"v: expected a torch.Tensor"):
        H.matvec([1.0] * H.dim)
    with pytest.raises(ValueError, match=r"V: expected shape \(\d+, k\)"):
        H.matmat(torch.ones(3, 2, dtype=D64))
    with pytest.raises(ValueError, match=r"x: expected 4 parameter-shaped tensors, got 1"):
        H @ [torch.ones(2)]
    with pytest.raises(ValueError, match=r"to_dense: D=\d+ exceeds max_dim=10"):
        H.to_dense(max_dim=10)


def test_dense_operator_validation():
    with pytest.raises(ValueError, match=r"matrix: expected a symmetric matrix"):
        DenseOperator(torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=D64))
    with pytest.raises(ValueError, match=r"matrix: expected a square \(D, D\) matrix, got shape \(2, 3\)"):
        DenseOperator(torch.ones(2, 3))
    assert DenseOperator(torch.eye(3, dtype=D64)).is_psd
    assert not DenseOperator(-torch.eye(3, dtype=D64)).is_psd


def test_non_finite_product_detected():
    m = mlp()
    x, y = data(8)
    H = HessianOperator(m, CE, (x, y))
    v = torch.full((H.dim,), float("nan"), dtype=D64)
    with pytest.raises(NonFiniteLossError, match="the product is not finite"):
        H @ v


class _OnceTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)


class _OnceModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 5).to(D64), nn.Linear(5, 3).to(D64)

    def forward(self, x):
        return self.b(_OnceTanh.apply(self.a(x)))


@pytest.mark.parametrize("cls", [HessianOperator, GGNOperator, EmpiricalFisherOperator])
def test_first_derivative_only_models_are_refused(cls):
    x, y = data(8)
    with pytest.raises(ValueError, match=r"can only be differentiated once .*@once_differentiable"):
        cls(_OnceModel(), CE, (x, y))


def test_modules_that_refuse_train_calls_work():
    class NoTrain(nn.Sequential):
        def train(self, mode=True):
            raise NotImplementedError("Calling train() is not supported yet.")

    model = NoTrain(nn.Linear(4, 3)).to(D64)
    x, y = data(8)
    H = HessianOperator(model, CE, (x, y))
    assert H.to_dense().shape == (15, 15)
