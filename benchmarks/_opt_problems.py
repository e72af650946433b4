"""Problems of the optimizer benchmark (register more with ``@register_problem``).

A problem is a :class:`BenchProblem`: ``make(seed)`` returns a fresh :class:`Instance` (the
model initialized from ``seed``; the data are the same for every seed), a target loss and a
CPU-time budget (and a smaller one for ``--quick``). All data are made deterministically in
code or come from scikit-learn's bundled digits; nothing is downloaded.

- ``logreg``: L2-free logistic regression, n=4000, d=100, features scaled so that the
  Hessian at the optimum has condition number ~1e4 (printed), float64, full batch. Target:
  ``f - f* <= 1e-8 |f*|`` with ``f*`` from scipy's Newton-CG run to convergence.
- ``autoencoder``: 64-128-64-32-8 and mirrored (tanh, sigmoid output), MSE on scikit-learn's
  digits scaled to [0, 1], float32, mini-batches of 128 (methods may override). Target 0.03.
- ``pinn``: 1-D Poisson ``-u'' = f`` on (0, 1), ``u(0) = u(1) = 0``, exact ``u = sin(pi x) +
  0.1 sin(4 pi x)``, a 1-32-32-1 tanh network in float64, 128 collocation points + 2 boundary
  points, full batch. The model outputs the residual vector (so Gauss-Newton is ``J_r^T J_r``);
  the extra metric is the relative L2 error of ``u`` on 1000 points. Target 3e-3.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

__all__ = ["PROBLEMS", "BenchProblem", "Instance", "register_problem"]

PROBLEMS: dict[str, "BenchProblem"] = {}


@dataclass
class Instance:
    model: nn.Module
    loss_fn: Any
    data: tuple  # the full training set (inputs, targets)
    full_batch: bool
    batch_size: int | None
    eval_loss: Callable[[nn.Module], float]
    metrics: Callable[[nn.Module], dict] | None = None
    problem: str = ""  # the registered problem's name (set by the harness)

    @property
    def num_samples(self) -> int:
        return int(self.data[0].shape[0])


@dataclass(frozen=True)
class BenchProblem:
    name: str
    description: str
    make: Callable[[int], Instance]
    target: float
    budget: float  # CPU seconds per run
    quick_budget: float
    plot_offset: float = 0.0  # subtracted from losses in the plot (f* for convex problems)
    info: tuple = ()


def register_problem(p: BenchProblem) -> BenchProblem:
    if p.name in PROBLEMS:
        raise ValueError(f"problem {p.name!r} registered twice")
    PROBLEMS[p.name] = p
    return p


def _init(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng():  # model initialization only; the global RNG is restored
        torch.manual_seed(seed)
        return build()


def _full_loss(loss_fn, data):
    @torch.no_grad()
    def f(model):
        return float(loss_fn(model(data[0]), data[1]))

    return f


# ---------------------------------------------------------------------- (a) logistic regression
@functools.lru_cache(maxsize=1)
def _logreg_data(n: int = 4000, d: int = 100):
    g = torch.Generator().manual_seed(1234)
    scales = torch.logspace(0, -2, d, dtype=torch.float64)  # X^T X condition ~1e4
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    X = torch.randn(n, d, generator=g, dtype=torch.float64) * scales @ Q.T
    w_true = Q @ (torch.randn(d, generator=g, dtype=torch.float64) * 2.0)
    p = torch.sigmoid(X @ w_true + 0.3)
    y = (torch.rand(n, generator=g, dtype=torch.float64) < p).to(torch.float64)[:, None]
    f_star, _, cond = _logreg_optimum(X, y)
    return X, y, f_star, cond


def _logreg_optimum(X, y):
    import numpy as np
    import scipy.optimize as so

    Xa = np.hstack([X.numpy(), np.ones((X.shape[0], 1))])
    yy = y.numpy()[:, 0]
    n = Xa.shape[0]

    def f(w):
        z = Xa @ w
        return float(np.mean(np.logaddexp(0, z) - yy * z))

    def g(w):
        return Xa.T @ (1 / (1 + np.exp(-(Xa @ w))) - yy) / n

    def hessp(w, v):
        s = 1 / (1 + np.exp(-(Xa @ w)))
        return Xa.T @ (s * (1 - s) * (Xa @ v)) / n

    res = so.minimize(f, np.zeros(Xa.shape[1]), jac=g, hessp=hessp, method="Newton-CG",
                      options={"xtol": 1e-14, "maxiter": 1000})
    s = 1 / (1 + np.exp(-(Xa @ res.x)))
    H = Xa.T @ (Xa * (s * (1 - s))[:, None]) / n
    ev = np.linalg.eigvalsh(H)
    return float(res.fun), res.x, float(ev[-1] / ev[0])


def _make_logreg(seed: int) -> Instance:
    X, y, _, _ = _logreg_data()
    model = _init(seed, lambda: nn.Linear(X.shape[1], 1).double())
    loss = nn.BCEWithLogitsLoss()
    return Instance(model, loss, (X, y), True, None, _full_loss(loss, (X, y)))


def _logreg_problem() -> BenchProblem:
    _, _, f_star, cond = _logreg_data()
    return BenchProblem("logreg", "ill-conditioned logistic regression (n=4000, d=100), full batch, float64",
                        _make_logreg, target=f_star + 1e-8 * abs(f_star), budget=3.0, quick_budget=1.0,
                        plot_offset=f_star, info=(f"f*={f_star:.12g}", f"Hessian condition number at optimum {cond:.3g}"))


# ---------------------------------------------------------------------- (b) deep autoencoder
@functools.lru_cache(maxsize=1)
def _digits():
    from sklearn.datasets import load_digits

    X = torch.tensor(load_digits().data, dtype=torch.float32) / 16.0
    return X


def _autoencoder() -> nn.Module:
    sizes = [64, 128, 64, 32, 8]
    layers: list[nn.Module] = []
    enc = list(zip(sizes[:-1], sizes[1:]))
    dec = [(b, a) for a, b in reversed(enc)]
    for i, (a, b) in enumerate(enc + dec):
        layers.append(nn.Linear(a, b))
        last = i == len(enc) + len(dec) - 1
        if i == len(enc) - 1:
            continue  # linear code layer
        layers.append(nn.Sigmoid() if last else nn.Tanh())
    return nn.Sequential(*layers)


def _make_autoencoder(seed: int) -> Instance:
    X = _digits()
    model = _init(seed, _autoencoder)
    loss = nn.MSELoss()
    return Instance(model, loss, (X, X), False, 128, _full_loss(loss, (X, X)))


# ---------------------------------------------------------------------- (c) physics-informed network
def _u_exact(x):
    return torch.sin(math.pi * x) + 0.1 * torch.sin(4 * math.pi * x)


def _forcing(x):
    return math.pi**2 * torch.sin(math.pi * x) + 0.1 * (4 * math.pi) ** 2 * torch.sin(4 * math.pi * x)


class PoissonResidual(nn.Module):
    """Wraps ``u_theta``: input rows ``(x, is_boundary)``, output the residual of each row
    (``-u'' - f`` inside, ``bc_weight * u`` on the boundary); the loss is MSE against zero."""

    def __init__(self, hidden: int = 32, bc_weight: float = 10.0):
        super().__init__()
        self.u = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                               nn.Linear(hidden, 1))
        self.bc_weight = bc_weight

    def forward(self, rows):
        x, bnd = rows[:, :1], rows[:, 1:2]
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            u = self.u(xr)
            du = torch.autograd.grad(u.sum(), xr, create_graph=True)[0]
            d2u = torch.autograd.grad(du.sum(), xr, create_graph=True)[0]
        interior = -d2u - _forcing(x)
        return torch.where(bnd > 0, self.bc_weight * u, interior)


@functools.lru_cache(maxsize=1)
def _pinn_data(n: int = 128):
    xi = ((torch.arange(n, dtype=torch.float64) + 0.5) / n)[:, None]
    xb = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    rows = torch.cat([torch.cat([xi, torch.zeros_like(xi)], 1), torch.cat([xb, torch.ones_like(xb)], 1)])
    return rows, torch.zeros(rows.shape[0], 1, dtype=torch.float64)


def _make_pinn(seed: int) -> Instance:
    rows, zeros = _pinn_data()
    model = _init(seed, lambda: PoissonResidual().double())
    loss = nn.MSELoss()
    xt = torch.linspace(0, 1, 1000, dtype=torch.float64)[:, None]
    ut = _u_exact(xt)

    def full_loss(m):
        with torch.no_grad():
            return float(loss(m(rows), zeros))

    @torch.no_grad()
    def metrics(m):
        return {"rel_l2": float(torch.linalg.norm(m.u(xt) - ut) / torch.linalg.norm(ut))}

    return Instance(model, loss, (rows, zeros), True, None, full_loss, metrics)


def register_defaults() -> None:
    """Register the three standard problems (data are built lazily on first call)."""
    if "logreg" not in PROBLEMS:
        register_problem(_logreg_problem())
    if "autoencoder" not in PROBLEMS:
        register_problem(BenchProblem(
            "autoencoder", "deep autoencoder 64-128-64-32-8-32-64-128-64 on sklearn digits, mini-batch, float32",
            _make_autoencoder, target=0.03, budget=6.0, quick_budget=1.5))
    if "pinn" not in PROBLEMS:
        register_problem(BenchProblem(
            "pinn", "PINN for 1-D Poisson (1-32-32-1 tanh), 130 points, full batch, float64",
            _make_pinn, target=3e-3, budget=6.0, quick_budget=1.5))


# ---------------------------------------------------------------------- (d) small CNN on digits (K-FAC)
@functools.lru_cache(maxsize=1)
def _digits_labeled():
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.data, dtype=torch.float32) / 16.0, torch.tensor(d.target, dtype=torch.int64)


def _digits_cnn() -> nn.Module:
    return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(32 * 16, 10))


def _make_digits_cnn(seed: int) -> Instance:
    X, y = _digits_labeled()
    model = _init(seed, _digits_cnn)
    loss = nn.CrossEntropyLoss()

    @torch.no_grad()
    def metrics(m):
        return {"train_error": float((m(X).argmax(1) != y).double().mean())}

    return Instance(model, loss, (X, y), False, 128, _full_loss(loss, (X, y)), metrics)


_register_defaults_before_cnn = register_defaults


def register_defaults() -> None:  # noqa: F811 - extends the standard problems by the digits CNN
    """The standard problems and ``digits_cnn`` (conv 1-16-32 3x3, max-pool, linear 512-10, cross-entropy
    on scikit-learn's 1797 digits, mini-batches of 128, float32)."""
    _register_defaults_before_cnn()
    if "digits_cnn" not in PROBLEMS:
        register_problem(BenchProblem(
            "digits_cnn", "CNN conv16-conv32-pool-linear on sklearn digits, cross-entropy, mini-batch 128, float32",
            _make_digits_cnn, target=0.01, budget=8.0, quick_budget=1.5))


# ---------------------------------------------------------------------- deep linear network at a saddle
@functools.lru_cache(maxsize=1)
def _deep_linear_data(n: int = 512, d: int = 16):
    """Whitened-ish Gaussian inputs and a linear teacher ``A`` with singular values 10, 1, 0.3,
    0.1 in random directions: each mode is a saddle of the three-layer linear student."""
    g = torch.Generator().manual_seed(7)
    U, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    s = torch.zeros(d, dtype=torch.float64)
    s[:4] = torch.tensor([10.0, 1.0, 0.3, 0.1], dtype=torch.float64)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    return X, X @ (U @ torch.diag(s) @ V.T).T


def _deep_linear(d: int = 16, depth: int = 3, scale: float = 1e-2) -> nn.Module:
    layers = [nn.Linear(d, d, bias=False) for _ in range(depth)]
    with torch.no_grad():
        for layer in layers:
            layer.weight.normal_(0.0, scale / math.sqrt(d))  # small init: near the saddle at the origin
    return nn.Sequential(*layers).double()


def _make_deep_linear(seed: int) -> Instance:
    X, Y = _deep_linear_data()
    model = _init(seed, _deep_linear)
    loss = nn.MSELoss()
    return Instance(model, loss, (X, Y), True, None, _full_loss(loss, (X, Y)))


_register_defaults_before_saddle = register_defaults


def register_defaults() -> None:  # noqa: F811 - extends the standard problems by the deep linear saddle
    """The problems above and the three-layer linear network started at its saddle."""
    _register_defaults_before_saddle()
    if "deep_linear" not in PROBLEMS:
        register_problem(BenchProblem(
            "deep_linear", "3-layer linear net 16-16-16-16, init std 1e-2/4 (near the origin saddle), teacher "
            "singular values 10,1,0.3,0.1, n=512, full batch, float64", _make_deep_linear, target=1e-3,
            budget=3.0, quick_budget=1.0, info=("initial loss ~6.3; plateaus at ~0.069, ~0.0063, ~6e-4",)))


# ---------------------------------------------------------------------- small tanh autoencoder on its plateau
def _tanh_autoencoder(scale: float = 1e-2) -> nn.Module:
    """64-16-8-16-64 (tanh hidden layers, linear output), weights ``N(0, scale^2 / fan_in)``."""
    sizes = [64, 16, 8, 16, 64]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    with torch.no_grad():
        for layer in layers:
            if isinstance(layer, nn.Linear):
                layer.weight.normal_(0.0, scale / math.sqrt(layer.in_features))
                layer.bias.zero_()
    return nn.Sequential(*layers).double()


def _make_tanh_autoencoder(seed: int) -> Instance:
    """Started on the plateau of predicting the mean: small weights, the output bias = the data mean."""
    X = _digits().double()
    model = _init(seed, _tanh_autoencoder)
    with torch.no_grad():
        model[-1].bias.copy_(X.mean(0))
    loss = nn.MSELoss()
    return Instance(model, loss, (X, X), True, None, _full_loss(loss, (X, X)))


_register_defaults_before_tanh_ae = register_defaults


def register_defaults() -> None:  # noqa: F811 - extends the standard problems by the tanh autoencoder plateau
    """The problems above and a small tanh autoencoder started on its mean-prediction plateau."""
    _register_defaults_before_tanh_ae()
    if "tanh_autoencoder" not in PROBLEMS:
        register_problem(BenchProblem(
            "tanh_autoencoder", "tanh autoencoder 64-16-8-16-64 on sklearn digits (/16), init std 1e-2/sqrt(fan_in), "
            "output bias = data mean (on the mean-prediction plateau), full batch, float64", _make_tanh_autoencoder,
            target=0.03, budget=3.0, quick_budget=1.0, info=("initial loss = the mean-prediction plateau ~0.0735",)))
