"""Cost of one K-FAC step as a multiple of one SGD step, beside its flop model.

Models: a ~1.07M-parameter MLP (784-1024-256-10, random inputs) and a small CNN on the 8x8
digits (conv 1->16 3x3, conv 16->32 3x3, max-pool, linear 512->10; scikit-learn's
``load_digits``, see ``_kfac_data.py``). K-FAC: fisher="mc" (and "empirical"), inverse_every=10,
update_every 1 and 5, inverse="cholesky" (the default: explicit damped inverses) and "eigh".
CPU time (``time.process_time``), one thread (the machine is shared).

The cost model (:func:`cost_model`) counts each part of a K-FAC step: forward and backward
(6 rows d_in d_out flops per layer), the Monte-Carlo backward to the layer outputs (2 rows d_in
d_out for every layer but the first), the unfold of convolution inputs and the copies to row
layout (bytes moved), the grams of the factor statistics (2 rows (d_in^2 + d_out^2)), the
preconditioning (4 (d_in d_out^2 + d_in^2 d_out) with eigenvectors, 2 (...) with explicit
inverses) and the inversions (9 d^3 per factor for an eigendecomposition, d^3 for a Cholesky
factorization and inversion, float64, amortized over inverse_every = 10 steps). Each part runs with the library's own
functions on this model's own shapes, and its rate (GFLOP/s or GB/s) is printed beside its
amount; the model of the step is the sum of the parts. The parts, the K-FAC steps and the SGD
steps are timed *interleaved* (each round: one inverse cycle of 10 K-FAC steps, 10 SGD steps,
every part once), so that load drift on the shared machine cancels in the ratio. What the model
leaves out (hooks, the KL clip, copies of gradients) shows up as measured / model > 1. Also
checks the factors against curvlinops' KFACLinearOperator.

Run: ``.venv/bin/python benchmarks/kfac_step_cost.py [rounds]`` (default 3)
"""

from __future__ import annotations

import copy
import inspect
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _kfac_data import digits, digits_source  # noqa: E402

from curvlens.optim.kfac import KFACPreconditioner  # noqa: E402
from curvlens.optim.kfac import factors as fx  # noqa: E402


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
    """(rows, d_in + 1, d_out, conv) of every Linear/Conv2d layer."""
    out = []
    for m, _, o in seen:
        conv = isinstance(m, nn.Conv2d)
        rows = o.shape[0] * (o[0, 0].numel() if conv else 1)
        d_in = (m.in_channels * m.kernel_size[0] * m.kernel_size[1]) if conv else m.in_features
        out.append((rows, d_in + 1, m.out_channels if conv else m.out_features, conv))
    return out


#: bytes of float32
_F32 = 4


def cost_model(shapes, every=10, update_every=1, inverse="cholesky", fisher="mc"):
    """Per part: (amount, unit). Flops for the arithmetic parts, bytes moved for the copies.

    - fwd/bwd: 6 rows d_in d_out per layer (forward, input gradient, weight gradient);
    - mc backward: the second backward to the layer outputs: 2 rows d_in d_out for every layer
      but the first (input gradients only, no weight gradients); none for fisher="empirical";
    - unfold/copies: the unfold of each convolution writes rows x (d_in - 1) floats and the
      transposed copy reads and writes them again; the output gradients of convolutions are
      copied to row layout (read + write): 3 and 2 float32 moves per element;
    - grams: 2 rows (d_in - 1)^2 for A (the bias row is a column sum) + 2 rows d_out^2 for G;
    - precondition: eigh: the two basis changes on each side, 4 (d_out^2 d_in + d_out d_in^2);
      cholesky: one product with each inverse, 2 (d_out^2 d_in + d_out d_in^2);
    - inverse: eigh: ~9 d^3 per factor (symmetric eigendecomposition with vectors); cholesky:
      d^3 / 3 (factorization) + 2 d^3 / 3 (inverse from the factor); float64, once every
      ``every`` steps.

    The statistics (mc backward, unfold/copies, grams) are taken every ``update_every`` steps.
    """
    k = update_every
    mc = 0 if fisher == "empirical" else 1
    pre, inv = (4, 9) if inverse == "eigh" else (2, 1)
    c = {"fwd/bwd": (sum(6 * r * i * o for r, i, o, _ in shapes), "flop"),
         "mc backward": (mc * sum(2 * r * i * o for r, i, o, _ in shapes[1:]) / k, "flop"),
         "unfold/copies": (sum(_F32 * r * (3 * (i - 1) + 2 * o) for r, i, o, conv in shapes if conv) / k, "byte"),
         "grams": (sum(2 * r * ((i - 1) ** 2 + o * o) for r, i, o, _ in shapes) / k, "flop"),
         "precondition": (sum(pre * (i * o * o + i * i * o) for r, i, o, _ in shapes), "flop"),
         "inverse (amortized)": (sum(inv * (i ** 3 + o ** 3) for r, i, o, _ in shapes) / every, "flop")}
    return c


def _clock(fn):
    t = time.process_time()
    fn()
    return time.process_time() - t


def measure(name, model, x, y, rounds, update_every=1, inverse="cholesky", fisher="mc"):
    """Interleaved timing: each round runs one inverse cycle (``inverse_every`` steps) of K-FAC,
    as many SGD steps, and every part of the cost model once, so that load drift on the shared
    machine affects all of them alike; totals over the rounds are compared."""
    loss_fn = nn.CrossEntropyLoss()
    every = 10
    # SGD runs on its own copy of the model: the K-FAC hooks on ``model`` would otherwise take
    # statistics (and run the Monte-Carlo backward) in the SGD steps too
    plain = copy.deepcopy(model)
    sgd = torch.optim.SGD(plain.parameters(), lr=1e-3, momentum=0.9)
    base = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def sgd_step():
        sgd.zero_grad()
        loss_fn(plain(x), y).backward()
        sgd.step()

    def kfac_step():
        base.zero_grad()
        loss_fn(model(x), y).backward()
        pre.step(lr=1e-3)
        base.step()

    # the parts, on this model's own shapes, with the library's own functions
    seen, out = capture(copy.deepcopy(model), x)  # a copy: the steps below change the weights
    zs = [o for _, _, o in seen]
    d = torch.randn_like(out)
    gzs = [g.detach() for g in torch.autograd.grad(out, zs, d, retain_graph=True)]
    rows = [(fx._plain_rows(m, xi), fx.output_rows(m, gz)) for (m, xi, _), gz in zip(seen, gzs)]

    def unfold_copies():
        for (m, xi, _), gz in zip(seen, gzs):
            if isinstance(m, nn.Conv2d):
                fx._plain_rows(m, xi)
                fx.output_rows(m, gz)

    def grams():  # what input_gram and grad_stats compute, on ready rows
        for (m, _, _), (a, g) in zip(seen, rows):
            fx.gram(a)
            if m.bias is not None:
                a.sum(0)
            fx.gram(g)

    pre = KFACPreconditioner(model, loss_fn=loss_fn, inverse_every=every, update_every=update_every,
                             inverse=inverse, fisher=fisher, generator=0)
    for _ in range(2):  # warm-up; the K-FAC blocks then hold factors and eigendecompositions
        sgd_step(), kfac_step()
    blocks = list(pre.blocks.values())
    parts = {"fwd/bwd": None,
             "mc backward": (lambda: torch.autograd.grad(out, zs, d, retain_graph=True)) if fisher != "empirical"
             else (lambda: None),
             "unfold/copies": unfold_copies, "grams": grams,
             "precondition": lambda: [b.precondition(pre.damping) for b in blocks],
             "inverse (amortized)": lambda: [b.update_inverse(pre.damping) for b in blocks]}
    tot = {k: 0.0 for k in parts}
    t_sgd = t_kfac = 0.0
    for _ in range(rounds):
        for _ in range(every):
            t_sgd += _clock(sgd_step)
            t_kfac += _clock(kfac_step)
        saved = [(p, p.grad) for b in blocks for p in b.params]
        for b in blocks:
            for p in b.params:
                p.grad = torch.randn_like(p)
        for k, fn in parts.items():
            if fn is not None:
                reps = {"inverse (amortized)": 1, "precondition": every}.get(k, every / update_every)
                tot[k] += _clock(fn) * reps
        for p, g in saved:
            p.grad = g
    n = rounds * every
    tot["fwd/bwd"] = t_sgd
    times = {k: v / n for k, v in tot.items()}
    t_sgd, t_kfac = t_sgd / n, t_kfac / n
    pre.remove()
    cm = cost_model(layer_shapes(seen), every, update_every, inverse, fisher)
    pred = sum(times.values())
    print(f"\n{name}: {sum(p.numel() for p in model.parameters())} params, batch {x.shape[0]}, "
          f"{rounds} interleaved rounds of {every} steps; inverse_every={every}, update_every={update_every}, "
          f"inverse={inverse!r}, fisher={fisher!r}")
    print(f"  {'part':18s} {'amount':>12s} {'rate':>14s} {'model ms':>9s}")
    for k, (v, unit) in cm.items():
        u = unit[0].upper()
        rate = f"{v / times[k] / 1e9:9.2f} G{u}/s" if v and times[k] > 0 else f"{'-':>14s}"
        print(f"  {k:18s} {v / 1e6:9.2f} M{u} {rate} {1e3 * times[k]:9.2f}")
    print(f"  SGD step measured {1e3 * t_sgd:.2f} ms; K-FAC step measured {1e3 * t_kfac:.2f} ms beside the "
          f"model's {1e3 * pred:.2f} ms (measured / model = {t_kfac / pred:.2f}); K-FAC / SGD = {t_kfac / t_sgd:.2f}")
    return t_kfac / t_sgd, t_kfac / pred, update_every


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
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    torch.set_num_threads(1)
    print("CPU time (time.process_time), torch.set_num_threads(1): the machine is shared and loaded.")
    print(f"Digits: {digits_source()} (benchmarks/_kfac_data.py).")
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    r1 = measure("MLP 784-1024-256-10", mlp(), torch.randn(128, 784, generator=g),
                 torch.randint(0, 10, (128,), generator=g), rounds)
    X, Y = digits(1797)
    k = inspect.signature(KFACPreconditioner).parameters["update_every"].default
    cnn_rows = {}
    for label, kw in (("mc, update_every=1", {}), ("mc, update_every=1, eigh", {"inverse": "eigh"}),
                      (f"mc, update_every={k}", {"update_every": k}),
                      (f"mc, update_every={k}, eigh", {"update_every": k, "inverse": "eigh"}),
                      (f"empirical, update_every={k}", {"update_every": k, "fisher": "empirical"}),
                      ("mc, update_every=10", {"update_every": 10})):
        torch.manual_seed(0)
        cnn_rows[label] = measure("CNN on 8x8 digits", cnn(), X[:128], Y[:128], 2 * rounds, **kw)
    curvlinops_check()
    print("\ntargets: CNN K-FAC/SGD (target <= 1.5) and measured/model (target within 1.2x):")
    print(f"  MLP: K-FAC/SGD {r1[0]:.2f}, measured/model {r1[1]:.2f}")
    for label, r in cnn_rows.items():
        print(f"  CNN {label:32s}: K-FAC/SGD {r[0]:.2f}, measured/model {r[1]:.2f}")


if __name__ == "__main__":
    main()
