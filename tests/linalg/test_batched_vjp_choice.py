"""Batched versus looped backward: the choice follows per-vector costs (injected, deterministic)."""

import time

import pytest
import torch

import curvlens.operators.model as M
from curvlens.operators.model import batched_vjp, choose_vjp_mode, vjp_size_class


class _FakeCost:
    """A clock advanced by the backward calls: ``single`` per non-batched call, ``per_vector(k)``
    times ``k`` per batched call of ``k`` vectors."""

    def __init__(self, monkeypatch, single, per_vector):
        self.t, self.calls = 0.0, []
        real = M.grads

        def fake(outputs, inputs, grad_outputs, *, batched, **kw):
            k = grad_outputs[0].shape[0] if batched else 1
            self.t += per_vector(k) * k if batched else single
            self.calls.append(("batched", k) if batched else ("single", 1))
            return real(outputs, inputs, grad_outputs, batched=batched, **kw)

        monkeypatch.setattr(M, "grads", fake)

    def __call__(self):
        return self.t


def _quadratic(D=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(D, D, generator=g, dtype=torch.float64)
    A = A @ A.T
    w = torch.randn(D, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.randn(D, generator=g, dtype=torch.float64)
    loss = 0.5 * w @ A @ w + torch.sin(w @ x)
    (gw,) = torch.autograd.grad(loss, [w], create_graph=True)
    H = A - torch.sin(w @ x).detach() * torch.outer(x, x)
    return w, gw, H


def _run(clock, k, calls, state, seed=1):
    w, gw, H = _quadratic()
    g = torch.Generator().manual_seed(seed)
    for _ in range(calls):
        V = torch.randn(k, w.numel(), generator=g, dtype=torch.float64)
        (HV,) = batched_vjp([gw], [w], [V], k, state, clock=clock)
        torch.testing.assert_close(HV, V @ H, rtol=1e-10, atol=1e-10)  # either way, the exact products


def test_slow_batched_falls_back_to_loop(monkeypatch):
    # 8 vectors batched cost 3.11 gradients per vector, one product alone 1.86
    clock = _FakeCost(monkeypatch, single=1.86, per_vector=lambda k: 3.11)
    state = {}
    _run(clock, 8, 6, state)
    assert state["decided"] == {8: "loop"}
    clock.calls.clear()
    _run(clock, 8, 3, state)
    assert clock.calls == [("single", 1)] * 24  # decided: no batched call any more


def test_fast_batched_is_kept(monkeypatch):
    clock = _FakeCost(monkeypatch, single=1.86, per_vector=lambda k: 0.6)
    state = {}
    _run(clock, 8, 6, state)
    assert state["decided"] == {8: "batched"}
    clock.calls.clear()
    _run(clock, 8, 2, state)
    assert clock.calls == [("batched", 8)] * 2


def test_decision_is_per_size_class(monkeypatch):
    # batching pays at 2 vectors but not at 8: a decision made at k=2 must not carry over to k=8
    clock = _FakeCost(monkeypatch, single=1.86, per_vector=lambda k: 1.0 if k <= 2 else 3.11)
    state = {}
    _run(clock, 2, 6, state)
    _run(clock, 8, 6, state)
    assert state["decided"] == {2: "batched", 8: "loop"}


def test_single_products_count_as_single_timings(monkeypatch):
    clock = _FakeCost(monkeypatch, single=2.0, per_vector=lambda k: 1.0)
    state = {}
    _run(clock, 1, 4, state)  # e.g. block-1 Lanczos: single products are timed as they happen
    _run(clock, 4, 3, state)  # three batched calls suffice
    assert state["decided"] == {4: "batched"}
    assert [c for c in clock.calls if c[0] == "batched"] == [("batched", 4)] * 3


def test_choose_vjp_mode_and_size_classes():
    assert choose_vjp_mode([1.86] * 3, [3.11] * 3) == "loop"
    assert choose_vjp_mode([1.86, 5.0, 1.9], [1.5, 9.0, 9.0]) == "batched"  # best of each (warm-up spikes)
    assert choose_vjp_mode([1.0, 1.0], [0.1, 0.1, 0.1]) is None
    assert choose_vjp_mode([1.0], [0.5], min_samples=1) == "batched"
    assert choose_vjp_mode([1.0] * 3, [1.0] * 3) == "loop"  # a tie keeps the plain loop
    assert [vjp_size_class(k) for k in (1, 2, 3, 8, 9, 16, 17)] == [1, 2, 4, 8, 16, 16, 32]


@pytest.mark.parametrize("k", [2, 5])
def test_results_exact_before_and_after_the_decision(k):
    state = {}
    _run(time.perf_counter, k, 8, state)  # real timings: whichever way is chosen, the products are exact
    assert vjp_size_class(k) in state["decided"]
