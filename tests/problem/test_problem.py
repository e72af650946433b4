"""Problem: the one owner of model + loss + data; live operators built from it."""

import pytest
import torch
from torch import nn

from curvlens import Problem
from curvlens.operators import EmpiricalFisherOperator, GGNOperator, HessianOperator, MCFisherOperator

from tests.operators._models import D64, bn_model, data, dense_ggn, dense_hessian, mlp
from tests.operators.test_reference import split

CE = nn.CrossEntropyLoss()


def close(A, B, tol=1e-12):
    scale = max(float(B.abs().max()), 1e-300)
    assert float((A - B).abs().max()) <= tol * scale, float((A - B).abs().max()) / scale


def test_loss_and_gradient_match_autograd_on_all_data_with_uneven_batches():
    model = mlp()
    x, y = data(11)
    pr = Problem(model, CE, split(x, y, [5, 2, 4]))
    assert (pr.num_samples, pr.batch_sizes, pr.dim) == (11, [5, 2, 4], sum(p.numel() for p in model.parameters()))
    ref_loss = CE(model(x), y)
    ref_grad = torch.autograd.grad(ref_loss, list(model.parameters()))
    loss, g = pr.loss_and_gradient()
    assert torch.allclose(loss, ref_loss.detach(), rtol=1e-13)
    for a, b in zip(g, ref_grad):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    assert torch.allclose(pr.loss(), ref_loss.detach(), rtol=1e-13)
    assert torch.equal(pr.gradient(flat=True), torch.cat([t.reshape(-1) for t in g]))


def test_sum_reduction_weights_batches_by_one():
    model = mlp()
    x, y = data(9)
    crit = nn.CrossEntropyLoss(reduction="sum")
    pr = Problem(model, crit, split(x, y, [4, 5]))
    assert torch.allclose(pr.loss(), crit(model(x), y).detach(), rtol=1e-13)


def test_state_guard_restores_mode_buffers_grad_and_rng():
    model = bn_model().train()
    x, y = data(10)
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    grads_before = [p.grad for p in model.parameters()]
    buffers = [b.clone() for b in model.buffers()]

    def leaky_loss(model, batch):  # a loss_fn that calls backward and draws random numbers
        out = model(batch[0] + 0.01 * torch.randn_like(batch[0]))
        loss = CE(out, batch[1])
        loss.backward(retain_graph=True)
        return loss

    rng = torch.get_rng_state()
    pr = Problem(model, leaky_loss, (x, y), mode="train")
    pr.loss_and_gradient()
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))
    for p, g in zip(model.parameters(), grads_before):
        assert p.grad is g and bool((g == 7.0).all())


def test_per_sample_gradients_average_to_the_gradient():
    model = mlp()
    x, y = data(7)
    pr = Problem(model, CE, split(x, y, [3, 4]))
    rows = torch.cat(list(pr.per_sample_gradients(chunk_size=2)))
    assert rows.shape == (7, pr.dim)
    close(rows.mean(0), pr.gradient(flat=True), 1e-12)
    one = Problem(model, CE, (x[5:6], y[5:6])).gradient(flat=True)
    close(rows[5], one, 1e-12)


def test_with_data_and_with_params_share_everything_else():
    model = mlp()
    x, y = data(10)
    pr = Problem(model, CE, (x, y), mode="eval")
    sub = pr.with_data((x[:4], y[:4]))
    assert sub.model is model and sub.params == pr.params and sub.num_samples == 4 and pr.num_samples == 10
    close(HessianOperator(sub).to_dense(), HessianOperator(Problem(model, CE, (x[:4], y[:4]))).to_dense())
    first = pr.with_params(["0.weight", "0.bias"])
    assert first.dim == 4 * 6 + 6 and first.batches is pr.batches
    H = dense_hessian(model, lambda call: CE(call(x), y))
    close(HessianOperator(first).to_dense(), H[:30, :30], 1e-10)


@pytest.mark.parametrize("make", [HessianOperator, GGNOperator, EmpiricalFisherOperator,
                                  lambda p: MCFisherOperator(p, generator=3)])
def test_live_operator_after_in_place_update_equals_a_fresh_one(make):
    model = mlp()
    x, y = data(10)
    pr = Problem(model, CE, split(x, y, [6, 4]))
    op = make(pr)
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(0), dtype=D64)
    before = op @ v
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.zero_grad()
    CE(model(x), y).backward()
    opt.step()  # in-place update: version counters move
    assert op.is_stale
    after = op @ v
    fresh = make(Problem(model, CE, split(x, y, [6, 4]))) @ v
    assert op.num_refreshes == 1 and not op.is_stale
    close(after, fresh, 1e-12)
    assert float((after - before).abs().max()) > 1e-6  # it did change
    op @ v
    assert op.num_refreshes == 1  # no rebuild while the weights stay


def test_live_ggn_matches_dense_after_load_state_dict_and_refresh_after_data_write():
    model, other = mlp(), mlp()
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(0.5)
    x, y = data(8)
    G = GGNOperator(model, CE, (x, y))
    G.to_dense()
    model.load_state_dict(other.state_dict())  # copy_ under no_grad: a version bump
    close(G.to_dense(), dense_ggn(model, x, y, CE), 1e-10)
    for p in model.parameters():
        p.data.mul_(2.0)  # invisible to autograd's version counter: refresh() by hand
    G.refresh()
    close(G.to_dense(), dense_ggn(model, x, y, CE), 1e-10)


def test_operator_with_data_and_block_are_live_siblings():
    model = mlp()
    x, y = data(10)
    H = HessianOperator(model, CE, (x, y), max_graph_memory=2**20)
    Hs = H.with_data((x[:5], y[:5]))
    assert Hs.graph_memory_limit == 2**20 and Hs.num_samples == 5
    close(Hs.to_dense(), dense_hessian(model, lambda call: CE(call(x[:5]), y[:5])), 1e-10)
    B = H.block("2")
    close(B.to_dense(), H.to_dense()[30:, 30:], 1e-12)


def test_graph_memory_renamed_and_validated():
    model = mlp()
    x, y = data(6)
    H = HessianOperator(model, CE, (x, y), max_graph_memory=0)
    assert H.graph_bytes == 0 and H.graph_memory_limit == 0 and not hasattr(H, "budget")


@pytest.mark.parametrize("call, exc, match", [
    (lambda m, x, y: Problem("m", CE, (x, y)), TypeError, r"model: expected a torch.nn.Module, got str"),
    (lambda m, x, y: Problem(m, 3, (x, y)), TypeError, r"loss_fn: expected a criterion .* got int"),
    (lambda m, x, y: Problem(m, CE, None), ValueError, r"data: expected one \(inputs, targets\) batch"),
    (lambda m, x, y: Problem(m, CE, (x, y), reduction="none"), ValueError, r"reduction: expected 'mean' or 'sum'"),
    (lambda m, x, y: Problem(m, CE, (x, y), mode="test"), ValueError, r"mode: expected 'eval' or 'train'"),
    (lambda m, x, y: Problem(m, CE, (x, y), params="nope"), ValueError, r"params: no parameter or module named"),
    (lambda m, x, y: Problem(m, CE, (x, y)).unflatten(torch.zeros(3)), ValueError, r"v: expected a flat tensor"),
    (lambda m, x, y: HessianOperator(Problem(m, CE, (x, y)), CE), TypeError,
     r"HessianOperator: got a Problem and also loss_fn"),
    (lambda m, x, y: GGNOperator(Problem(m, CE, (x, y)), mode="train"), TypeError,
     r"GGNOperator: got a Problem and also mode"),
    (lambda m, x, y: HessianOperator(m), TypeError, r"HessianOperator: missing loss_fn"),
    (lambda m, x, y: HessianOperator(m, CE, (x, y), max_graph_memory=-1), ValueError,
     r"max_graph_memory: expected a number of bytes >= 0"),
    (lambda m, x, y: Problem(m, CE, (x, y)).per_sample_gradients(chunk_size=0).__next__(), ValueError,
     r"chunk_size: expected a positive integer"),
], ids=["model", "loss", "data", "reduction", "mode", "params", "unflatten", "problem_and_loss",
        "problem_and_mode", "missing_loss", "graph_memory", "chunk"])
def test_bad_input_errors(call, exc, match):
    x, y = data(6)
    with pytest.raises(exc, match=match):
        call(mlp(), x, y)


def test_problem_refuses_once_differentiable_models():
    class Once(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.tanh()

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * (1 - x.tanh() ** 2)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3).to(D64)

        def forward(self, x):
            return Once.apply(self.lin(x))

    x, y = data(6)
    with pytest.raises(ValueError, match=r"model: Problem needs second derivatives"):
        Problem(Net(), CE, (x, y)).check_twice_differentiable()
