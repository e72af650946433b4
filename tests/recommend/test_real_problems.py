"""The recommender on real small problems, with measured (not synthetic) curvature.

Two routes to the summary: exact dense quantities in float64 (the Hessian by
``torch.func.hessian``, cross-checked against the closed form; the noise study from exact
Hessians of random minibatches; the gradient noise scale from per-sample gradients, McCandlish
et al. 2018), and the real pipeline, ``analyze(...).summary()`` on the same problems.
"""

from __future__ import annotations

import numpy as np
import torch

from curvlens.recommend import RecommendationContext, recommend
from curvlens.recommend.evidence import CURVATURE_AWARE, FIRST_ORDER

DT = torch.float64


def _summary(loss, w: torch.Tensor, n: int, sizes, gen: torch.Generator, reps: int = 16) -> dict:
    """Summary keys from exact dense Hessians and per-sample gradients of ``loss(w, idx)``."""
    every = torch.arange(n)
    H = torch.func.hessian(lambda v: loss(v, every))(w)
    ev = torch.linalg.eigvalsh(H)
    lmin, lmax = float(ev[0]), float(ev[-1])
    errs = []
    for b in sizes:
        tops = []
        for _ in range(reps):
            idx = torch.randperm(n, generator=gen)[:b]
            tops.append(float(torch.linalg.eigvalsh(torch.func.hessian(lambda v: loss(v, idx))(w))[-1]))
        errs.append(float(np.std(tops, ddof=1) / abs(np.mean(tops))))
    grads = torch.func.vmap(lambda i: torch.func.grad(lambda v: loss(v, i[None]))(w))(every)  # per-sample
    G = grads.mean(0)
    noise_scale = float(((grads - G) ** 2).sum(1).mean() / (G @ G))
    return {
        "num_params": w.numel(), "num_samples": n, "curvature": "hessian",
        "lambda_max": lmax, "lambda_max_certified": True, "lambda_min": lmin, "lambda_min_certified": True,
        "condition_number": lmax / lmin if lmin > 0 else None, "trace": float(ev.sum()),
        "negative_mass": float((ev < 0).double().mean()),
        "noise_batch_sizes": list(sizes), "noise_rstderr_lambda_max": errs, "gradient_noise_scale": noise_scale,
    }, H


def test_ill_conditioned_least_squares_gets_a_curvature_aware_recommendation():
    gen = torch.Generator().manual_seed(0)
    n, d = 200, 8
    scales = torch.logspace(0, -3, d, dtype=DT)  # column scales 1 .. 1e-3 -> kappa ~ 1e6
    X = torch.randn(n, d, generator=gen, dtype=DT) * scales
    y = X @ torch.randn(d, generator=gen, dtype=DT) + 0.01 * torch.randn(n, generator=gen, dtype=DT)

    def loss(w, idx):
        r = X[idx] @ w - y[idx]
        return 0.5 * (r**2).mean()

    summary, H = _summary(loss, torch.zeros(d, dtype=DT), n, (8, 32, 128), gen)
    exact = np.linalg.eigvalsh((X.T @ X / n).numpy())
    torch.testing.assert_close(H, X.T @ X / n)  # torch.func.hessian agrees with the closed form
    assert np.isclose(summary["lambda_max"], exact[-1]) and summary["condition_number"] > 1e5
    rec = recommend(summary, RecommendationContext(batch_size=n, memory_bytes="1GB", phase="mid"))
    assert rec.top.optimizer in CURVATURE_AWARE, rec.to_text()
    assert any("(ill-conditioned)" in r for r in rec.top.reasons)
    runnable = [c.optimizer for c in rec.candidates if c.runnable]  # unbuildable ones are listed after these
    # SGD ranks below every method the conditioning supports (saddle-free Newton, whose steps cost
    # ~10 products, may rank lower still)
    assert "sgd_momentum" in {r.optimizer for r in rec.rejected} or all(
        runnable.index("sgd_momentum") > runnable.index(o) for o in ("lbfgs", "newton_cg", "kfac", "adamw"))


def test_well_conditioned_small_batch_classifier_gets_a_first_order_recommendation():
    gen = torch.Generator().manual_seed(1)
    n, d = 256, 5
    X = torch.randn(n, d, generator=gen, dtype=DT)
    t = (X @ torch.randn(d, generator=gen, dtype=DT) + 0.5 * torch.randn(n, generator=gen, dtype=DT) > 0).to(DT)

    def loss(w, idx):  # logistic regression with a bias: params (d + 1,)
        logits = X[idx] @ w[:d] + w[d]
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, t[idx])

    w0 = 0.1 * torch.randn(d + 1, generator=gen, dtype=DT)
    summary, H = _summary(loss, w0, n, (4, 16, 64), gen)
    p = torch.sigmoid(X @ w0[:d] + w0[d])
    Xb = torch.cat([X, torch.ones(n, 1, dtype=DT)], 1)
    torch.testing.assert_close(H, Xb.T @ (Xb * (p * (1 - p))[:, None]) / n)  # closed-form logistic Hessian
    assert summary["condition_number"] < 1e2
    rec = recommend(summary, RecommendationContext(batch_size=16, lr=0.5, momentum=0.9, memory_bytes="1GB",
                                                   phase="early", layer_types="linear"))
    assert rec.top.optimizer in FIRST_ORDER, rec.to_text()
    assert any("(well-conditioned)" in r for r in rec.top.reasons)
    lr = next(c for c in rec.candidates if c.optimizer == "sgd_momentum").hyperparameters["lr"]
    # half the quadratic-optimal step, over the sharpening margin 2 (the unmargined rate diverged on networks),
    # times 1/(1 + B_noise/B) for the mini-batch noise measured on this problem (McCandlish et al. 2018)
    noise = 1.0 / (1.0 + summary["gradient_noise_scale"] / 16)
    assert np.isclose(lr, 0.5 * 3.8 / summary["lambda_max"] / 2 * noise)


def _analyzed(model, loss_fn, data, **kw):
    from curvlens.diagnostics import analyze

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small budgets may leave a minibatch estimate uncertified
        return analyze(model, loss_fn, data, generator=0, **kw).summary()


def test_measured_ill_conditioned_least_squares_gets_a_curvature_aware_recommendation():
    gen = torch.Generator().manual_seed(0)
    n, d = 200, 8
    X = torch.randn(n, d, generator=gen, dtype=DT) * torch.logspace(0, -3, d, dtype=DT)
    y = (X @ torch.randn(d, generator=gen, dtype=DT)).unsqueeze(1) + 0.01 * torch.randn(n, 1, generator=gen, dtype=DT)
    model = torch.nn.Linear(d, 1, bias=False).to(DT)
    summary = _analyzed(model, torch.nn.MSELoss(), (X, y), budget=400)
    exact = np.linalg.eigvalsh((2 * X.T @ X / n).numpy())
    assert np.isclose(summary["lambda_max"], exact[-1], rtol=1e-3)
    assert summary["condition_number"] is not None and summary["condition_number"] > 1e5
    rec = recommend(summary, RecommendationContext(batch_size=n, memory_bytes="1GB", phase="mid"))
    assert rec.top.optimizer in CURVATURE_AWARE, rec.to_text()
    assert any("(ill-conditioned)" in r for r in rec.top.reasons)


def test_measured_well_conditioned_small_batch_classifier_gets_a_first_order_recommendation():
    gen = torch.Generator().manual_seed(1)
    n, d = 256, 5
    X = torch.randn(n, d, generator=gen, dtype=DT)
    t = (X @ torch.randn(d, generator=gen, dtype=DT) + 0.5 * torch.randn(n, generator=gen, dtype=DT) > 0).to(DT)
    model = torch.nn.Linear(d, 1).to(DT)
    with torch.no_grad():
        model.weight.copy_(0.1 * torch.randn(1, d, generator=gen, dtype=DT))
        model.bias.zero_()
    summary = _analyzed(model, torch.nn.BCEWithLogitsLoss(), (X, t.unsqueeze(1)), budget=400, lr=0.5, momentum=0.9)
    assert summary["condition_number"] is not None and summary["condition_number"] < 1e2
    rec = recommend(summary, RecommendationContext(batch_size=16, lr=0.5, momentum=0.9, memory_bytes="1GB",
                                                   phase="early", layer_types="linear"))
    assert rec.top.optimizer in FIRST_ORDER, rec.to_text()
    assert any("(well-conditioned)" in r for r in rec.top.reasons)
