"""Cost of one K-FAC step as a multiple of one SGD step, beside its flop model.

Models: a ~1.07M-parameter MLP (784-1024-256-10, random inputs) and a small CNN on the 8x8
digits (conv 1->16 3x3, conv 16->32 3x3, max-pool, linear 512->10; scikit-learn's
``load_digits``, see ``_kfac_data.py``). K-FAC: fisher="mc", inverse_every=10, update_every=1.
CPU time (``time.process_time``), one thread (the machine is shared).

The flop model counts forward+backward (6 N d_in d_out per layer), the Monte-Carlo backward
to the layer outputs (2 N d_in d_out for every layer but the first), the factor statistics
(unfold + grams, 2 N (d_in^2 + d_out^2)), the preconditioning (4 (d_in d_out^2 + d_in^2 d_out)) and the eigendecompositions (9 d^3 per factor,
float64, every 10 steps). Each part has its own rate, measured by timing that part alone on
this model's own shapes: the SGD step for the forward/backward kernels (convolutions and
GEMMs with the batch), the Monte-Carlo backward to the layer outputs, unfold + gram of every
layer's rows, the Kronecker solves, and ``eigh`` of the factors as they are. The model is
then the sum of flops / rate; what it leaves out (hooks, copies, the KL clip) shows up as
measured / model > 1. Also checks the factors against curvlinops' KFACLinearOperator.

Run: ``.venv/bin/python benchmarks/kfac_step_cost.py``
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _kfac_data import digits, digits_source  # noqa: E402

from curvlens.optim.kfac import KFACPreconditioner  # noqa: E402
from curvlens.optim.kfac import factors as fx  # noqa: E402
from curvlens.optim.kfac.inverse import eigh_factor, kron_solve  # noqa: E402


def mlp():
    return nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 256), nn.ReLU(), nn.Linear(256, 10))


def cnn():
    return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(32 * 16, 10))


def _layers(model):
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def capture(model, x):
    """Per layer: (module, input, output) of one forward with the graph kept, and the output."""
    seen = []
    hs = [m.register_forward_hook(lambda m, i, o: seen.append((m, i[0], o))) for m in _layers(model)]
    out = model(x)
    for h in hs:
        h.remove()
    return seen, out


def layer_shapes(seen):
    """(rows, d_in + 1, d_out) of every Linear/Conv2d layer."""
    out = []
    for m, _, o in seen:
        rows = o.shape[0] * (o[0, 0].numel() if isinstance(m, nn.Conv2d) else 1)
        d_in = (m.in_channels * m.kernel_size[0] * m.kernel_size[1]) if isinstance(m, nn.Conv2d) else m.in_features
        out.append((rows, d_in + 1, m.out_channels if isinstance(m, nn.Conv2d) else m.out_features))
    return out


def flop_model(shapes, every=10):
    fb = sum(6 * r * i * o for r, i, o in shapes)
    mc = sum(2 * r * i * o for r, i, o in shapes[1:])  # input gradients above the first layer only
    fac = sum(2 * r * (i * i + o * o) for r, i, o in shapes)
    pre = sum(4 * (i * o * o + i * i * o) for r, i, o in shapes)
    eig = sum(9 * (i ** 3 + o ** 3) for r, i, o in shapes) / every
    return {"fwd/bwd": fb, "mc backward": mc, "factors": fac, "precondition": pre, "eigh (amortized)": eig}


def timed(fn, steps):
    fn()
    t = time.process_time()
    for _ in range(steps):
        fn()
    return (time.process_time() - t) / steps


def part_times(model, x, pre, t_sgd, reps=10):
    """CPU seconds of each part of the step, each timed alone on this model's shapes."""
    seen, out = capture(model, x)
    zs = [o for _, _, o in seen]
    d = torch.randn_like(out)
    t_mc = timed(lambda: torch.autograd.grad(out, zs, d, retain_graph=True), reps)
    gzs = torch.autograd.grad(out, zs, d)

    def factors():
        for (m, xi, _), gz in zip(seen, gzs):
            fx.gram(fx.input_rows(m, xi))
            fx.gram(fx.output_rows(m, gz))

    eigs = [(eigh_factor(b.factors["G"]), eigh_factor(b.factors["A"]), b.grad_matrix()) for b in pre.blocks.values()]

    def eigh_all():
        for b in pre.blocks.values():
            eigh_factor(b.factors["A"]), eigh_factor(b.factors["G"])

    return {"fwd/bwd": t_sgd, "mc backward": t_mc, "factors": timed(factors, reps),
            "precondition": timed(lambda: [kron_solve(g, a, v, 1e-3) for g, a, v in eigs], reps),
            "eigh (amortized)": timed(eigh_all, 3) / pre.inverse_every}


def measure(name, model, x, y, steps):
    loss_fn = nn.CrossEntropyLoss()
    sgd = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def sgd_step():
        sgd.zero_grad()
        loss_fn(model(x), y).backward()
        sgd.step()

    pre = KFACPreconditioner(model, loss_fn=loss_fn, inverse_every=10, generator=0)

    def kfac_step():
        sgd.zero_grad()
        loss_fn(model(x), y).backward()
        pre.step(lr=1e-3)
        sgd.step()

    t_sgd = timed(sgd_step, steps)
    t_kfac = timed(kfac_step, max(steps, 20))
    pre.remove()
    sgd.zero_grad()
    for b in pre.blocks.values():  # gradients for the preconditioning part
        for p in b.params:
            p.grad = torch.randn_like(p)
    seen, _ = capture(model, x)
    fm = flop_model(layer_shapes(seen))
    times = part_times(model, x, pre, t_sgd)
    rates = {k: fm[k] / times[k] for k in fm}
    pred = sum(fm[k] / rates[k] for k in fm)
    print(f"\n{name}: {sum(p.numel() for p in model.parameters())} params, batch {x.shape[0]}")
    print(f"  {'component':18s} {'GFLOP':>8s} {'GFLOP/s':>8s} {'model ms':>9s}   (rate measured on that part alone)")
    for k, v in fm.items():
        print(f"  {k:18s} {v / 1e9:8.4f} {rates[k] / 1e9:8.2f} {1e3 * v / rates[k]:9.2f}")
    print(f"  SGD step measured {1e3 * t_sgd:.2f} ms; K-FAC step measured {1e3 * t_kfac:.2f} ms beside the "
          f"model's {1e3 * pred:.2f} ms (measured / model = {t_kfac / pred:.2f}); K-FAC / SGD = {t_kfac / t_sgd:.2f}")
    return t_kfac / t_sgd, t_kfac / pred


def curvlinops_check():
    from curvlinops import KFACLinearOperator
    from curvlinops.kfac import FisherType

    torch.manual_seed(0)
    X, Y = digits(256)
    model = cnn().double()
    x, y = X[:64].double(), Y[:64]
    loss_fn = nn.CrossEntropyLoss()
    params = [p for p in model.parameters()]
    op = KFACLinearOperator(model, loss_fn, params, [(x, y)], fisher_type=FisherType.TYPE2, separate_weight_and_bias=False,
                            check_deterministic=False, progressbar=False)
    op.compute_kronecker_factors()
    pre = KFACPreconditioner(model, loss_fn=loss_fn, fisher="type2", generator=0)
    loss_fn(model(x), y).backward()
    pre.step()
    pre.remove()
    print("\ncurvlinops KFACLinearOperator (type2, expand, weight+bias joint) vs curvlens, float64, CNN, batch 64:")
    worst = 0.0
    for name, b in pre.blocks.items():
        for ours, theirs, label in ((b.factors["A"], op._input_covariances[name], "A"),
                                    (b.factors["G"], op._gradient_covariances[name], "G")):
            rel = float((ours - theirs).norm() / theirs.norm())
            worst = max(worst, rel)
            print(f"  layer {name:>2s} {label}: shape {tuple(ours.shape)}, relative difference {rel:.2e}")
    print(f"  worst relative difference {worst:.2e}")


def main():
    torch.set_num_threads(1)
    print("CPU time (time.process_time), torch.set_num_threads(1): the machine is shared and loaded.")
    print(f"Digits: {digits_source()} (benchmarks/_kfac_data.py).")
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    r1 = measure("MLP 784-1024-256-10", mlp(), torch.randn(128, 784, generator=g),
                 torch.randint(0, 10, (128,), generator=g), 10)
    X, Y = digits(1797)
    r2 = measure("CNN on 8x8 digits", cnn(), X[:128], Y[:128], 30)
    curvlinops_check()
    print(f"\ntargets: CNN K-FAC/SGD {r2[0]:.2f} (target <= 1.5); measured/model MLP {r1[1]:.2f}, "
          f"CNN {r2[1]:.2f} (target within 1.2x)")


if __name__ == "__main__":
    main()
