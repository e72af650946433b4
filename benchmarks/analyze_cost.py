"""Cost of the default ``analyze`` on an MLP (~1M parameters), a small CNN and a transformer block.

Prints one row per model: parameters, samples, wall time and matvecs of the full default
analysis, the time of one gradient over the same data ("one epoch"), and the analysis cost as a
multiple of it. Target: the 1M-parameter MLP on 2,000 samples in under 2 minutes on 2 CPU cores.

With ``--memory``, each model's ``analyze`` runs instead in a fresh subprocess (1 torch thread)
that reports its peak memory above start: the process's resident-set high-water mark
(``VmHWM``, reset through ``/proc/self/clear_refs`` just before ``analyze``; ``ru_maxrss`` where
that is unavailable) minus the resident set just before ``analyze``, overall and per stage, and
the resident set at each stage's end (memory the allocator kept: a floor under the next stage's peak).
tracemalloc does not see torch's CPU allocator, so RSS is the measure. Beside it, per Krylov
stage, what that stage must hold: the retained graphs (``graph_bytes`` of the same operator), the
D-vectors it keeps at once (:func:`held_vectors`: for the top end the basis *and* its stored
products) and the working set of one product of as many vectors as the stage multiplies at once
(measured: :func:`product_working_set`). Targets: <= 600 MB above start on the 1.1M MLP, and each
stage's peak <= 2x what it must hold.

Usage: ``python benchmarks/analyze_cost.py [--samples 2000] [--models mlp,cnn,transformer] [--budget N]
[--memory]``
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time
import warnings

import torch
from torch import nn

from curvlens.diagnostics import analyze


class _Block(nn.Module):
    """Token embedding, one transformer encoder layer (no dropout), mean pool, linear head."""

    def __init__(self, vocab=64, d=64, seq=16, classes=10):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(seq, d))
        self.layer = nn.TransformerEncoderLayer(d, 4, 128, dropout=0.0, batch_first=True)
        self.head = nn.Linear(d, classes)

    def forward(self, tokens):
        return self.head(self.layer(self.emb(tokens) + self.pos).mean(1))


def problem(name: str, n: int, g: torch.Generator):
    if name == "mlp":
        model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 256), nn.ReLU(), nn.Linear(256, 10))
        x = torch.randn(n, 784, generator=g)
    elif name == "cnn":
        model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1),
                              nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 4 * 4, 10))
        x = torch.randn(n, 3, 16, 16, generator=g)
    elif name == "transformer":
        model = _Block()
        x = torch.randint(0, 64, (n, 16), generator=g)
    else:
        raise SystemExit(f"--models: unknown model {name!r}; use mlp, cnn, transformer")
    y = torch.randint(0, 10, (n,), generator=g)
    return model, x, y


def epoch_gradient_seconds(model, loss_fn, x, y, repeats=3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        loss = loss_fn(model(x), y)
        torch.autograd.grad(loss, [p for p in model.parameters()])
        best = min(best, time.perf_counter() - t0)
    return best


def progress(name: str, t0: float):
    def cb(stage: str, done: int, total: int) -> None:
        if done == total == 1:
            print(f"  {name}: {stage} done at {time.perf_counter() - t0:.1f}s", flush=True)
    return cb


def _status_kib(key: str) -> int | None:
    try:
        m = re.search(rf"^{key}:\s+(\d+) kB", open("/proc/self/status").read(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident set
        return True
    except OSError:
        return False


def _peak_kib() -> int:
    hwm = _status_kib("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def density_live_vectors(dens, D: int, itemsize: int) -> int:
    """D-vectors SLQ holds at once (see curvlens/estimators/slq.py): the Lanczos bases of one group
    of probes (``num_steps`` vectors each; groups fit in ``_BASIS_BYTES``, so one probe at a time
    at D ~ 1M) plus the converged Ritz vectors deflated from the later probes, plus the next
    Lanczos vector. Probes run after one another are freed in between, so the total number of
    products is not what is held."""
    import re

    from curvlens.estimators.slq import _BASIS_BYTES

    m = min(int(dens.num_steps), D)
    found = re.search(r"(\d+) converged eigenpair\(s\) deflated", dens.info.status)
    deflated = int(found.group(1)) if found else 0
    probes = dens.num_probes + (1 if "served as the deflation pilot" in dens.info.status else 0)
    group = max(1, min(probes, _BASIS_BYTES // max(m * D * itemsize, 1)))
    return group * m + deflated + 1


def memory_child(name: str, n: int, budget: int | None) -> dict:
    """Runs in a fresh process: analyze's peak resident memory above the resident set before it."""
    import gc

    from curvlens.operators import HessianOperator

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model, x, y = problem(name, n, g)
    loss_fn = nn.CrossEntropyLoss()
    gc.collect()
    resettable = _reset_peak()
    rss0 = _status_kib("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stages: dict[str, float] = {}
    after: dict[str, float] = {}  # resident set at the end of each stage (a floor for the next one's peak)

    def cb(stage, done, total):
        if done == total == 1:
            stages[stage] = max(stages.get(stage, 0.0), (_peak_kib() - rss0) / 1024)
            after[stage] = ((_status_kib("VmRSS") or rss0) - rss0) / 1024
            if resettable:
                _reset_peak()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = analyze(model, loss_fn, (x, y), lr=0.1, momentum=0.9, generator=0, budget=budget, callback=cb)
    peak = max([(_peak_kib() - rss0) / 1024] + list(stages.values()))
    D, item = sum(p.numel() for p in model.parameters()), 4
    op = HessianOperator(model, loss_fn, (x, y))
    work = product_working_set(op, g)
    held = held_vectors(res, D, item)
    mb = D * item / 2**20
    graph_mb = op.graph_bytes / 2**20
    # what each stage must hold: retained graphs + its vectors + the working set of its products
    must = {st: graph_mb + n * mb + work[grp] for st, (n, grp) in held.items()}
    # the same with one vector per product (a group of 4 is a choice of the trace code, not a need)
    must1 = {st: graph_mb + n * mb + work[1] for st, (n, _) in held.items()}
    return {"model": name, "params": D, "peak_mb": peak, "stages_mb": stages, "rss_after_mb": after, "graph_mb": graph_mb,
            "held_vectors": {st: n for st, (n, _) in held.items()}, "work_mb": work, "must_mb": must, "must1_mb": must1,
            "exact_peak_reset": resettable, "matvecs": res.info.matvecs}


def product_working_set(op, g) -> dict[int, float]:
    """Resident-set peak of one ``op.matmat`` of 1 and of 4 vectors above the resident set before
    it, output included (autograd's temporaries of a double backward: the memory a product needs
    while it runs, beyond the retained graphs)."""
    import gc

    from curvlens.diagnostics.driver import _release_freed_memory

    out = {}
    op.matmat(torch.randn(op.dim, 1, generator=g))  # graphs built before measuring
    for k in (1, 4):
        V = torch.randn(op.dim, k, generator=g)
        gc.collect()
        _release_freed_memory()
        _reset_peak()
        base = _status_kib("VmRSS") or 0
        W = op.matmat(V)
        out[k] = (_peak_kib() - base) / 1024
        del W, V
    return out


def held_vectors(res, D: int, itemsize: int) -> dict[str, tuple[int, int]]:
    """D-vectors each Krylov stage must hold at its peak, and the vectors per product it uses.

    top: the basis V and its stored products A V (kept so that the certificates need no product;
    ``curvlens/linalg/_thick_restart.py``), capacity ``basis + block`` rows each, plus the k Ritz
    vectors and their products. bottom: the basis (no stored products) plus the k vectors and
    their certificate products. trace (``krylov_trace``): the Krylov basis Q and Z = A Q, the
    pilot probes and their products (multiplied ``PROBE_GROUP`` at a time). density: see
    :func:`density_live_vectors`."""
    import re

    from curvlens.estimators.hutchpp import PROBE_GROUP
    from curvlens.estimators.krylov_trace import pilot_size
    from curvlens.linalg.eigen import default_basis_size

    out = {}
    if res.top is not None:
        k = res.top.eigenvalues.numel()
        n = min(default_basis_size(k, 1, largest=True, dim=D), res.top.info.matvecs) + 1
        out["top"] = (2 * n + 2 * k, 1)
    if res.bottom is not None:
        k = res.bottom.eigenvalues.numel()
        n = min(default_basis_size(k, 1, largest=False, dim=D), res.bottom.info.matvecs) + 1
        out["bottom"] = (n + 2 * k, 1)
    if res.trace is not None and res.trace.method == "krylov":
        found = re.search(r"split: (\d+) Krylov vectors", res.trace.info.status)
        r = int(found.group(1)) if found else 0
        out["trace"] = (2 * r + 2 * pilot_size(int(res.trace.info.matvecs), 1), PROBE_GROUP)
    if res.density is not None:
        out["density"] = (density_live_vectors(res.density, D, itemsize), 1)
    return out


def memory_main(args) -> None:
    rows = []
    for name in args.models.split(","):
        cmd = [sys.executable, __file__, "--memory-child", name, "--samples", str(args.samples)]
        if args.budget is not None:
            cmd += ["--budget", str(args.budget)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{name}: per-stage peak above start (MB): "
              + ", ".join(f"{k} {v:.0f}" for k, v in r["stages_mb"].items())
              + f"; held vectors {r['held_vectors']}; product working set (MB) "
              + ", ".join(f"{k} vector(s) {v:.0f}" for k, v in r["work_mb"].items()), flush=True)
        print(f"{name}: resident set above start at each stage's end (MB): "
              + ", ".join(f"{k} {v:.0f}" for k, v in r["rss_after_mb"].items()), flush=True)
    print("peak memory of analyze at the defaults, RSS high-water mark above the RSS just before it, "
          "fresh subprocess, 1 torch thread")
    from curvlens.estimators.hutchpp import PROBE_GROUP

    print("must hold = retained graphs + the stage's held D-vectors + one product's working set "
          f"({PROBE_GROUP} vector(s) per product for trace, 1 otherwise)")
    head = ("model", "stage", "peak MB above start", "held D-vectors", "must hold MB", "peak / must hold",
            "must hold, 1 vector per product MB", "peak / that")
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for r in rows:
        for st, must in r["must_mb"].items():
            pk = r["stages_mb"].get(st, float("nan"))
            m1 = r["must1_mb"][st]
            print(f"{r['model']} | {st} | {pk:.0f} | {r['held_vectors'][st]} | {must:.0f} | {pk / must:.2f} | "
                  f"{m1:.0f} | {pk / m1:.2f}")
        worst, worst1 = max(r["must_mb"].values(), default=0.0), max(r["must1_mb"].values(), default=0.0)
        print(f"{r['model']} | overall ({r['params']:,} params, {r['matvecs']} matvecs, graphs "
              f"{r['graph_mb']:.0f} MB) | {r['peak_mb']:.0f} | | {worst:.0f} | {r['peak_mb'] / max(worst, 1e-9):.2f} | "
              f"{worst1:.0f} | {r['peak_mb'] / max(worst1, 1e-9):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--models", default="mlp,cnn,transformer")
    ap.add_argument("--budget", type=int, default=None, help="matvecs (default: analyze's default)")
    ap.add_argument("--verbose", action="store_true", help="print each stage's end time")
    ap.add_argument("--memory", action="store_true", help="peak memory of analyze, one fresh subprocess per model")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.samples, args.budget)))
        return
    if args.memory:
        memory_main(args)
        return
    rows = []
    for name in args.models.split(","):
        g = torch.Generator().manual_seed(0)
        with torch.random.fork_rng():
            torch.manual_seed(0)  # initial weights only; analyze itself uses its own generator
            model, x, y = problem(name, args.samples, g)
        loss_fn = nn.CrossEntropyLoss()
        t_grad = epoch_gradient_seconds(model, loss_fn, x, y)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = analyze(model, loss_fn, (x, y), budget=args.budget, lr=0.1, momentum=0.9, generator=0,
                          callback=progress(name, t0) if args.verbose else None)
        wall = time.perf_counter() - t0
        s = res.summary()
        stages = {k: getattr(res, k) for k in ("top", "trace", "bottom", "density", "per_layer", "noise",
                                                 "gradient_noise")}
        print(f"{name}: " + ", ".join(f"{k} {v.info.wall_time:.1f}s/{v.info.matvecs}mv" for k, v in stages.items()
                                      if v is not None), flush=True)
        rows.append((name, s["num_params"], s["num_samples"], wall, s["matvecs"], t_grad, wall / t_grad,
                     s["hvp_cost"], s["lambda_max"], res.gradient_noise.method if res.gradient_noise else "-"))
    head = ("model", "params", "N", "analyze s", "matvecs", "epoch grad s", "x epoch grad", "hvp/grad", "lambda_max",
            "grad noise")
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for r in rows:
        print(f"{r[0]} | {r[1]:,} | {r[2]} | {r[3]:.1f} | {r[4]} | {r[5]:.3f} | {r[6]:.0f} | "
              f"{(r[7] or float('nan')):.2f} | {r[8]:.4g} | {r[9]}")


if __name__ == "__main__":
    main()
