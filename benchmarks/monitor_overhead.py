"""Training time with and without CurvatureMonitor: digits MLP and a small CNN.

CPU time (time.process_time) with torch.set_num_threads(1), because the machine is shared and
loaded. Three runs per model, same seed and data: no monitor, the default schedule
(every=100, all metrics), and overhead=0.05. Overhead = (time with monitor - time without) /
time with monitor, i.e. the share of the run spent monitoring; the monitor's own account
(``overhead_fraction``, construction included) is printed next to it. The monitor's
construction is inside the timed region; module imports are done once before any timing.

Also printed: the cost ratio ``c = t_product(S) / (t_step(B) * S / B)`` of one Hessian-vector
product on the S monitoring samples against a training step on a batch of B, and the predicted
overhead ``P c S / (every B)`` of ``P`` products a record (as a share of training time).

Run: ``python benchmarks/monitor_overhead.py [--steps 5000] [--monitor-samples 256]``.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn


def _data():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return torch.tensor(X / 16.0, dtype=torch.float32), torch.tensor(y)


def _mlp():
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def _cnn():
    return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(64, 10))


def run(build, steps: int, batch: int, monitor_kwargs, monitor_samples: int) -> tuple[float, object]:
    from curvlens.hooks import CurvatureMonitor

    x, y = _data()
    torch.manual_seed(0)
    model = build()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    mon = None
    start = time.process_time()
    if monitor_kwargs is not None:
        mon = CurvatureMonitor(model, loss_fn, (x[:monitor_samples], y[:monitor_samples]), **monitor_kwargs)
        mon.attach(opt)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (batch,), generator=g)
        opt.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()
    return time.process_time() - start, mon


def cost_ratio(build, batch: int, monitor_samples: int) -> tuple[float, float]:
    """``(t_step, t_product)``: CPU seconds of a training step on ``batch`` and of a product on the subset."""
    from curvlens.operators import HessianOperator

    x, y = _data()
    torch.manual_seed(0)
    model = build()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(1)
    start = time.process_time()
    for _ in range(200):
        idx = torch.randint(0, x.shape[0], (batch,), generator=g)
        opt.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()
    t_step = (time.process_time() - start) / 200
    op = HessianOperator(model, loss_fn, (x[:monitor_samples], y[:monitor_samples]))
    v = torch.randn(op.dim, generator=g)
    op @ v
    start = time.process_time()
    for _ in range(20):
        op @ v
    return t_step, (time.process_time() - start) / 20


def main() -> None:
    ap = argparse.ArgumentParser(description="CurvatureMonitor overhead")
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--monitor-samples", type=int, default=256)
    ap.add_argument("--models", default="mlp,cnn", help="comma-separated: mlp, cnn")
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs per setting, alternating; the minimum CPU time is reported (the machine is loaded)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    print(f"CPU time (time.process_time), torch.set_num_threads(1) (shared, loaded machine); {a.steps} SGD steps "
          f"of batch {a.batch}; monitoring subset {a.monitor_samples} samples")
    import curvlens.estimators  # noqa: F401  (imports once, outside every timed region)
    import curvlens.hooks.monitor  # noqa: F401
    import scipy.linalg  # noqa: F401

    models = [(n, {"mlp": _mlp, "cnn": _cnn}[n]) for n in a.models.split(",")]
    for name, build in models:
        t_step, t_prod = cost_ratio(build, a.batch, a.monitor_samples)
        c = t_prod / (t_step * a.monitor_samples / a.batch)
        print(f"{name}: training step (batch {a.batch}) {1e3 * t_step:.2f} ms, product ({a.monitor_samples} samples) "
              f"{1e3 * t_prod:.2f} ms: c = {c:.2f}; at every=100, P products a record cost P * {100 * t_prod / (100 * t_step):.2f}% "
              f"of training: 5% needs P <= {0.05 * 100 * t_step / t_prod:.1f}")
    print(f"{'model':6} {'setting':16} {'cpu s':>8} {'overhead':>9} {'own acct':>9} {'records':>8} {'s/record':>9} "
          f"{'products/rec':>12} {'neg alerts':>10}")
    settings = (("every=100", {}), ("overhead=0.05", {"overhead": 0.05}))
    for name, build in models:
        best: dict = {}
        for _ in range(a.repeats):
            for label, kw in (("off", None),) + settings:
                t, mon = run(build, a.steps, a.batch, kw, a.monitor_samples)
                if label not in best or t < best[label][0]:
                    best[label] = (t, mon)
        base = best["off"][0]
        print(f"{name:6} {'off':16} {base:8.2f} {'':>9}")
        for label, kw in settings:
            t, mon = best[label]
            n = len(mon.records)
            per = sum(r.values["seconds"] for r in mon.records) / max(n, 1)
            mv = sum(r.values["matvecs"] for r in mon.records) / max(n, 1)
            neg = sum(a.kind == "negative_curvature" for r in mon.records for a in r.alerts)
            print(f"{name:6} {label:16} {t:8.2f} {100 * (t - base) / t:8.1f}% {100 * mon.overhead_fraction:8.1f}% "
                  f"{n:8d} {per:9.3f} {mv:12.1f} {neg:10d}")
            last = mon.records[-1].values if n else {}
            print(f"{'':6}   last record: lambda_max {last.get('lambda_max', float('nan')):.4g} (certified "
                  f"{last.get('lambda_max_converged', float('nan')):.0f}), trace {last.get('trace', float('nan')):.4g} "
                  f"+- {last.get('trace_stderr', float('nan')):.2g}, negative mass "
                  f"{last.get('negative_mass', float('nan')):.3g} +- {last.get('negative_mass_stderr', float('nan')):.2g}"
                  f" (pooled over {last.get('pooled_records', float('nan')):.0f} records from step "
                  f"{last.get('pooled_from_step', float('nan')):.0f})")


if __name__ == "__main__":
    main()
