"""Cost of one K-FAC step as a multiple of one SGD step, beside its flop model.

Models: a ~1.07M-parameter MLP (784-1024-256-10, random inputs) and a small CNN on the 8x8
digits (conv 1->16 3x3, conv 16->32 3x3, max-pool, linear 512->10; scikit-learn's
``load_digits``, see ``_kfac_data.py``). K-FAC: fisher="mc" (and "empirical"), inverse_every=10,
update_every 1, 5 and 10, inverse="cholesky" (the default: explicit damped inverses) and "eigh", weight_sharing
"expand" (every position of a convolution one row of the statistics) and "reduce" (one row per sample).
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

Run: ``.venv/bin/python benchmarks/kfac_step_cost.py [rounds]`` (default 3); with ``--training [rounds]``
(default 10) only :func:`training_steps`: a step of tuned Adam against K-FAC on the two training problems;
with ``--steps`` only :func:`steps_to_target`: the exact steps to the digits CNN's target (seeds 0-5).
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
    """(rows, d_in + 1, d_out, conv, samples) of every Linear/Conv2d layer."""
    out = []
    for m, _, o in seen:
        conv = isinstance(m, nn.Conv2d)
        rows = o.shape[0] * (o[0, 0].numel() if conv else 1)
        d_in = (m.in_channels * m.kernel_size[0] * m.kernel_size[1]) if conv else m.in_features
        out.append((rows, d_in + 1, m.out_channels if conv else m.out_features, conv, o.shape[0]))
    return out


#: bytes of float32
_F32 = 4


def cost_model(shapes, every=10, update_every=1, inverse="cholesky", fisher="mc", weight_sharing="expand",
               fraction=1.0):
    """Per part: (amount, unit). Flops for the arithmetic parts, bytes moved for the copies.

    - fwd/bwd: 6 rows d_in d_out per layer (forward, input gradient, weight gradient);
    - mc backward: the second backward to the layer outputs: 2 rows d_in d_out for every layer
      but the first (input gradients only, no weight gradients); none for fisher="empirical";
    - unfold/copies: the rows of each convolution are written once by one concatenation of the
      kernel offsets' windows (read + write, no ``F.unfold``), the output gradients of
      convolutions are copied to row layout (read + write): 2 and 2 float32 moves per element;
      with weight_sharing="reduce" the windows are read once by their means, the output
      gradients once by the sum: 1 and 1 moves;
    - grams: 2 rows (d_in - 1)^2 for A (the bias row is a column sum) + 2 rows d_out^2 for G;
      with weight_sharing="reduce" a convolution has one row per sample (N instead of rows);
    - precondition: eigh: the two basis changes on each side, 4 (d_out^2 d_in + d_out d_in^2);
      cholesky: one product with each inverse, 2 (d_out^2 d_in + d_out d_in^2);
    - precondition, triangular: two triangular solves with each Cholesky factor, the same
      2 (d_out^2 d_in + d_out d_in^2) flops;
    - inverse: eigh: ~9 d^3 per factor (symmetric eigendecomposition with vectors); cholesky:
      d^3 / 3 (factorization) + 2 d^3 / 3 (inverse from the factor); triangular: d^3 / 3 (the
      factorization alone); float64, once every ``every`` steps.

    The statistics (mc backward, unfold/copies, grams) are taken every ``update_every`` steps;
    with ``fraction < 1`` the unfold/copies and grams take ``fraction`` of the rows (the
    Monte-Carlo backward still runs through the whole batch).
    """
    k = update_every
    mc = 0 if fisher == "empirical" else 1
    pre, inv = {"eigh": (4, 9), "cholesky": (2, 1), "triangular": (2, 1 / 3)}[inverse]
    red = weight_sharing == "reduce"
    mv_a, mv_g = (1, 1) if red else (2, 2)
    stat_rows = [fraction * (n if (red and conv) else r) for r, _, _, conv, n in shapes]
    c = {"fwd/bwd": (sum(6 * r * i * o for r, i, o, _, _ in shapes), "flop"),
         "mc backward": (mc * sum(2 * r * i * o for r, i, o, _, _ in shapes[1:]) / k, "flop"),
         "unfold/copies": (fraction * sum(_F32 * r * (mv_a * (i - 1) + mv_g * o) for r, i, o, conv, _ in shapes
                                          if conv) / k, "byte"),
         "grams": (sum(2 * sr * ((i - 1) ** 2 + o * o) for sr, (_, i, o, _, _) in zip(stat_rows, shapes)) / k, "flop"),
         "precondition": (sum(pre * (i * o * o + i * i * o) for _, i, o, _, _ in shapes), "flop"),
         "inverse (amortized)": (sum(inv * (i ** 3 + o ** 3) for _, i, o, _, _ in shapes) / every, "flop")}
    return c


def _clock(fn):
    t = time.process_time()
    fn()
    return time.process_time() - t


def _conv_rows(m, x):
    """The patch rows :func:`~curvlens.optim.kfac.factors.input_gram` builds (one concatenation
    of the kernel offsets' windows)."""
    views, _, _ = fx._windows(m, x)
    return torch.cat(views, -1).reshape(-1, sum(v.shape[-1] for v in views))


def measure(name, model, x, y, rounds, update_every=1, inverse="cholesky", fisher="mc", weight_sharing="expand",
            statistics_fraction=1.0):
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
    red = weight_sharing == "reduce"
    sub = max(1, int(round(statistics_fraction * x.shape[0])))  # the statistics' sub-batch

    def a_rows(m, xi):
        if red:
            return fx.averaged_rows(m, xi)
        return _conv_rows(m, xi) if isinstance(m, nn.Conv2d) else fx._plain_rows(m, xi)

    rows = [(a_rows(m, xi[:sub]), fx.output_rows(m, gz[:sub], red)) for (m, xi, _), gz in zip(seen, gzs)]

    def unfold_copies():
        for (m, xi, _), gz in zip(seen, gzs):
            if isinstance(m, nn.Conv2d):
                a_rows(m, xi[:sub])
                fx.output_rows(m, gz[:sub], red)

    def grams():  # what input_gram and grad_stats compute, on ready rows
        for (m, _, _), (a, g) in zip(seen, rows):
            fx.gram(a)
            if m.bias is not None:
                a.sum(0)
            fx.gram(g)

    pre = KFACPreconditioner(model, loss_fn=loss_fn, inverse_every=every, update_every=update_every,
                             inverse=inverse, fisher=fisher, weight_sharing=weight_sharing,
                             statistics_fraction=statistics_fraction, generator=0)
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
    cm = cost_model(layer_shapes(seen), every, update_every, inverse, fisher, weight_sharing, statistics_fraction)
    pred = sum(times.values())
    print(f"\n{name}: {sum(p.numel() for p in model.parameters())} params, batch {x.shape[0]}, "
          f"{rounds} interleaved rounds of {every} steps; inverse_every={every}, update_every={update_every}, "
          f"inverse={inverse!r}, fisher={fisher!r}, weight_sharing={weight_sharing!r}, "
          f"statistics_fraction={statistics_fraction:g}")
    print(f"  {'part':18s} {'amount':>12s} {'rate':>14s} {'model ms':>9s}")
    for k, (v, unit) in cm.items():
        u = unit[0].upper()
        rate = f"{v / times[k] / 1e9:9.2f} G{u}/s" if v and times[k] > 0 else f"{'-':>14s}"
        print(f"  {k:18s} {v / 1e6:9.2f} M{u} {rate} {1e3 * times[k]:9.2f}")
    print(f"  SGD step measured {1e3 * t_sgd:.2f} ms; K-FAC step measured {1e3 * t_kfac:.2f} ms beside the "
          f"model's {1e3 * pred:.2f} ms (measured / model = {t_kfac / pred:.2f}); K-FAC / SGD = {t_kfac / t_sgd:.2f}")
    return t_kfac / t_sgd, t_kfac / pred, update_every


def mc_sub_batch(x, y, fraction, rounds):
    """The Monte-Carlo backward of a statistics sub-batch, two ways (CNN): sampled targets for the
    sub-batch only still backpropagate through the whole batch's graph (the cost of the full
    Monte-Carlo backward), or the sub-batch gets a forward of its own and a backward of that."""
    torch.manual_seed(0)
    model = cnn()
    m = max(1, int(round(fraction * x.shape[0])))
    seen, out = capture(model, x)
    zs = [o for _, _, o in seen]
    d = torch.randn_like(out)

    def whole():
        torch.autograd.grad(out, zs, d, retain_graph=True)

    def own():
        s, o = capture(model, x[:m])
        torch.autograd.grad(o, [z for _, _, z in s], d[:m])

    t = {"whole": 0.0, "own": 0.0}
    for _ in range(rounds):
        for _ in range(10):
            t["whole"] += _clock(whole)
            t["own"] += _clock(own)
    n = 10 * rounds
    print(f"\nMonte-Carlo backward of a {m}-sample statistics sub-batch of {x.shape[0]} (CNN, {n} interleaved "
          f"repetitions): through the whole batch's graph {1e3 * t['whole'] / n:.2f} ms; its own forward and "
          f"backward {1e3 * t['own'] / n:.2f} ms")


def curvlinops_check(weight_sharing="expand"):
    from curvlinops import KFACLinearOperator
    from curvlinops.kfac import FisherType

    torch.manual_seed(0)
    X, Y = digits(256)
    model = cnn().double()
    x, y = X[:64].double(), Y[:64]
    loss_fn = nn.CrossEntropyLoss()
    params = [p for p in model.parameters()]
    op = KFACLinearOperator(model, loss_fn, params, [(x, y)], fisher_type=FisherType.TYPE2, separate_weight_and_bias=False,
                            kfac_approx=weight_sharing, check_deterministic=False, progressbar=False)
    op.compute_kronecker_factors()
    pre = KFACPreconditioner(model, loss_fn=loss_fn, fisher="type2", weight_sharing=weight_sharing, generator=0)
    loss_fn(model(x), y).backward()
    pre.step()
    pre.remove()
    print(f"\ncurvlinops KFACLinearOperator (type2, kfac_approx={weight_sharing!r}, weight+bias joint) vs curvlens "
          f"(weight_sharing={weight_sharing!r}), float64, CNN, batch 64:")
    worst = 0.0
    for name, b in pre.blocks.items():
        for ours, theirs, label in ((b.factors["A"], op._input_covariances[name], "A"),
                                    (b.factors["G"], op._gradient_covariances[name], "G")):
            rel = float((ours - theirs).norm() / theirs.norm())
            worst = max(worst, rel)
            print(f"  layer {name:>2s} {label}: shape {tuple(ours.shape)}, relative difference {rel:.2e}")
    print(f"  worst relative difference {worst:.2e}")


def training_steps(rounds):
    """A training step of tuned Adam (and SGD-momentum, the cheapest step with a forward and
    backward) against K-FAC (the benchmark's builders and tuned rates) on the digits autoencoder and CNN, interleaved in blocks of 10 steps (load drift cancels in the
    ratio): the harness times methods one after another, so its time ratios carry the drift."""
    import _opt_methods as M
    import _opt_problems as P

    P.register_defaults()
    M.register_defaults()
    print("\nTraining steps, interleaved (blocks of 10 steps, batch 128): ms per step")
    fresh = ("kfac_fresh", 0.5)
    frac = {f"kfac_fresh_f{f:g}": dict(M.KFAC_FRESH, statistics_fraction=f) for f in (0.5, 0.25)}
    for prob, methods in (("autoencoder", (("adam", 0.01), ("sgd_m", 0.3), ("kfac", 0.5), fresh)),
                          ("digits_cnn", (("adam", 0.03), ("sgd_m", 0.1), ("kfac_expand", 0.5), ("kfac_reduce", 0.03),
                                          fresh, ("kfac_fresh_reduce", 0.5), *((n, 0.5) for n in frac),
                                          ("kfac_sub", 0.5)))):
        steppers = {}
        for name, lr in methods:
            inst = P.PROBLEMS[prob].make(0)
            steppers[name] = (M._kfac(inst, lr, 0, **frac[name]) if name in frac
                              else M.METHODS[name].build(inst, lr, 0))
        data = inst.data
        g = torch.Generator().manual_seed(0)
        batches = [tuple(t[torch.randint(0, data[0].shape[0], (128,), generator=g)] for t in data) for _ in range(10)]
        tot = dict.fromkeys(steppers, 0.0)
        for r in range(rounds + 1):
            for name, step in steppers.items():
                t = _clock(lambda: [step(b) for b in batches])
                tot[name] += t if r else 0.0  # the first round warms up
        ms = {n: 1e3 * v / (10 * rounds) for n, v in tot.items()}
        print(f"  {prob}: " + ", ".join(f"{n} {v:.2f}" for n, v in ms.items()) + "; / adam: "
              + ", ".join(f"{n} {v / ms['adam']:.2f}" for n, v in ms.items() if n != "adam"))


def steps_to_target(seeds, max_steps=400):
    """Steps to the digits CNN's target loss, counted exactly: the harness's batch order
    (``randperm`` from seed 10000 + seed, batches of 128), the full training loss evaluated after
    every step once it is within 4x of the target (every 3rd step before). Multiplied by the
    interleaved step-cost ratios of :func:`training_steps`, this is the load-robust estimate of
    the wall-clock ratio (the harness times methods one after another, so its ratios carry the
    machine's load drift)."""
    import math
    import statistics

    import _opt_methods as M
    import _opt_problems as P

    P.register_defaults()
    M.register_defaults()
    problem = P.PROBLEMS["digits_cnn"]
    methods = (("adam", 0.03), ("kfac", 0.5), ("kfac_fresh", 0.5), ("kfac_sub", 0.5))
    print(f"\nSteps to the target loss {problem.target} on digits_cnn (seeds {list(seeds)}; tuned rates):")
    for name, lr in methods:
        counts = []
        for seed in seeds:
            inst = problem.make(seed)
            step = M.METHODS[name].build(inst, lr, seed)
            gen = torch.Generator().manual_seed(10_000 + seed)
            order, pos, bs, loss, hit = None, 0, inst.batch_size, math.inf, math.inf
            for k in range(1, max_steps + 1):
                if order is None or pos + bs > inst.num_samples:
                    order, pos = torch.randperm(inst.num_samples, generator=gen), 0
                step(tuple(t[order[pos:pos + bs]] for t in inst.data))
                pos += bs
                if loss < 4 * problem.target or k % 3 == 0:
                    loss = float(inst.eval_loss(inst.model))
                    if loss <= problem.target:
                        hit = k
                        break
            counts.append(hit)
        print(f"  {name} (lr {lr:g}): steps {counts}, median {statistics.median(counts):g}, "
              f"seeds 0-2 {statistics.median(counts[:3]):g}")


def main():
    if "--steps" in sys.argv:
        torch.set_num_threads(1)
        steps_to_target(range(6))
        return
    if "--training" in sys.argv:
        rest = [a for a in sys.argv[1:] if a != "--training"]
        torch.set_num_threads(1)
        print("CPU time (time.process_time), torch.set_num_threads(1): the machine is shared and loaded.")
        training_steps(int(rest[0]) if rest else 10)
        return
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
                      ("mc, update_every=10", {"update_every": 10}),
                      ("mc, update_every=1, reduce", {"weight_sharing": "reduce"}),
                      (f"mc, update_every={k}, reduce", {"update_every": k, "weight_sharing": "reduce"}),
                      (f"empirical, update_every={k}, reduce", {"update_every": k, "fisher": "empirical",
                                                                 "weight_sharing": "reduce"}),
                      ("mc, update_every=10, reduce", {"update_every": 10, "weight_sharing": "reduce"}),
                      (f"mc, update_every={k}, triangular", {"update_every": k, "inverse": "triangular"}),
                      (f"mc, update_every={k}, triangular, fraction 1/4",
                       {"update_every": k, "inverse": "triangular", "statistics_fraction": 0.25}),
                      (f"mc, update_every={k}, reduce, triangular",
                       {"update_every": k, "inverse": "triangular", "weight_sharing": "reduce"})):
        torch.manual_seed(0)
        cnn_rows[label] = measure("CNN on 8x8 digits", cnn(), X[:128], Y[:128], 2 * rounds, **kw)
    mc_sub_batch(X[:128], Y[:128], 0.25, 2 * rounds)
    curvlinops_check("expand")
    curvlinops_check("reduce")
    print("\ntargets: CNN K-FAC/SGD (target <= 1.5) and measured/model (target within 1.2x):")
    print(f"  MLP: K-FAC/SGD {r1[0]:.2f}, measured/model {r1[1]:.2f}")
    for label, r in cnn_rows.items():
        print(f"  CNN {label:32s}: K-FAC/SGD {r[0]:.2f}, measured/model {r[1]:.2f}")


if __name__ == "__main__":
    main()
