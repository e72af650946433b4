"""Training time with and without CurvatureMonitor: digits MLP and a small CNN.

CPU time (time.process_time) with torch.set_num_threads(1), because the machine is shared and
loaded. Same seed, data and SGD steps in every run; the monitor's construction is inside the
timed region, module imports are done once before any timing.

True overhead = (time with the monitor) / (time without) - 1, measured interleaved: three
identical copies of the model, one with the monitor attached, are trained in one process in
chunks of ``--chunk`` steps (the order rotated every chunk), and each copy's CPU time is counted
only while it runs. Drift of the machine's load thus hits all arms alike (separate runs on this
machine vary by +-20%). "Time without" is the mean of the two copies without the monitor; the
ratio of those two (``A/A``) is printed as the noise floor of the measurement: identical work,
whose times still differ (memory layout, cache sharing with other jobs) by about 1.5% per run at
a load of 5 on this machine, so single runs scatter by that much whatever the monitor does.
The monitor's own cost accounts read its arm's clock, so it sees what it would see as the only
job of the process. ``--repeats`` interleaved runs per setting; the ratio of the summed times
is reported, each run's ratio next to it. Also printed: the monitor's own account
(``overhead_fraction``: monitoring time incl. setup and the charged excess of the steps right
after records / training time between its calls), that charged excess, and whether the copies
ended with bit-identical weights.

Settings: the default schedule (``every=100``, all three metrics) over ``--every-steps``
steps, and ``overhead=0.05`` over as many steps as give at least ``--min-records`` records
(sized from a measured record cost).

Lower bound of ``every=100``: one record needs at least the ``lanczos_steps`` (20) products of
the shared Lanczos run (the negative mass's quadrature needs them; the top eigenvalue's
certificate and the trace come from the same run's stored products), plus one graph rebuild
and one loss evaluation on the monitoring subset. Printed: a product's cost as a share of 100
training steps, the products 5% allows, and the smallest ``every`` at which a record of the
measured cost fits 5%.

Run: ``python benchmarks/monitor_overhead.py [--results benchmarks/results/monitor_overhead.md]``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

BATCH_DEFAULT = 32


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


MODELS = {"mlp": _mlp, "cnn": _cnn}


def _setup(build):
    x, y = _data()
    torch.manual_seed(0)
    model = build()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return x, y, model, opt, nn.CrossEntropyLoss()


class ArmClock:
    """CPU time of this process counted only while its arm runs (``start`` .. ``stop``)."""

    def __init__(self):
        self.total, self._base = 0.0, None

    def start(self) -> None:
        self._base = time.process_time()

    def stop(self) -> None:
        self.total += time.process_time() - self._base
        self._base = None

    def __call__(self) -> float:
        return self.total + (time.process_time() - self._base if self._base is not None else 0.0)


ARMS = ("off", "off2", "on")


def interleaved(build, steps: int, batch: int, monitor_kwargs: dict, monitor_samples: int, chunk: int) -> dict:
    """Train three identical copies, two without and one with the monitor, in rotating chunks of ``chunk`` steps.

    Each arm's CPU time is counted only while it runs (:class:`ArmClock`); the monitor's cost
    accounts use its arm's clock (what it would see as the only job in the process), so the
    load of the machine affects all arms alike. The monitor's construction is timed in its arm.
    Returns the three times, the monitor, and whether the weights ended bit-identical.
    """
    import curvlens.hooks.monitor as monitor_module
    from curvlens.hooks import CurvatureMonitor

    arms = {}
    for arm in ARMS:
        x, y, model, opt, loss_fn = _setup(build)
        arms[arm] = {"model": model, "opt": opt, "clock": ArmClock(), "gen": torch.Generator().manual_seed(0)}
    on = arms["on"]
    saved = monitor_module._clocks
    monitor_module._clocks = lambda: (on["clock"], on["clock"])
    try:
        on["clock"].start()
        mon = CurvatureMonitor(on["model"], loss_fn, (x[:monitor_samples], y[:monitor_samples]), **monitor_kwargs)
        mon.attach(on["opt"])
        on["clock"].stop()
        done, k = 0, 0
        while done < steps:
            n = min(chunk, steps - done)
            for name in ARMS[k % 3:] + ARMS[:k % 3]:
                a = arms[name]
                a["clock"].start()
                for _ in range(n):
                    idx = torch.randint(0, x.shape[0], (batch,), generator=a["gen"])
                    a["opt"].zero_grad()
                    loss_fn(a["model"](x[idx]), y[idx]).backward()
                    a["opt"].step()
                a["clock"].stop()
            done, k = done + n, k + 1
    finally:
        monitor_module._clocks = saved
    mon.close()
    same = all(torch.equal(p, q) for other in ("off", "off2")
               for p, q in zip(arms[other]["model"].parameters(), on["model"].parameters()))
    t1, t2 = arms["off"]["clock"].total, arms["off2"]["clock"].total
    return {"t_off": 0.5 * (t1 + t2), "aa": t2 / t1 - 1, "t_on": on["clock"].total, "mon": mon, "identical": same}


def costs(build, batch: int, monitor_samples: int) -> dict:
    """CPU seconds of a training step, a product on the subset, a graph rebuild, a loss, a record."""
    from curvlens.hooks import CurvatureMonitor

    x, y, model, opt, loss_fn = _setup(build)
    g = torch.Generator().manual_seed(1)

    def train(n):
        for _ in range(n):
            idx = torch.randint(0, x.shape[0], (batch,), generator=g)
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()

    train(100)
    start = time.process_time()
    train(300)
    t_step = (time.process_time() - start) / 300
    mon = CurvatureMonitor(model, loss_fn, (x[:monitor_samples], y[:monitor_samples]), every=10**9)
    op = mon.op
    v = torch.randn(op.dim, generator=g)
    op @ v
    start = time.process_time()
    for _ in range(20):
        op @ v
    t_prod = (time.process_time() - start) / 20
    rebuild, loss, rec, mv = [], [], [], []
    for k in range(5):
        train(20)
        start = time.process_time()
        op.problem.loss()
        loss.append(time.process_time() - start)
        start = time.process_time()
        op.refresh()
        rebuild.append(time.process_time() - start)
        train(20)
        r = mon.measure(k + 1, optimizer=opt)
        rec.append(r.values["seconds"])
        mv.append(r.values["matvecs"])
    return {"t_step": t_step, "t_product": t_prod, "t_rebuild": min(rebuild), "t_loss": min(loss),
            "t_record": sorted(rec)[len(rec) // 2], "products_per_record": sum(mv) / len(mv),
            "lanczos_steps": mon.measurer.lanczos_steps, "dim": op.dim}


def measure_setting(build, steps, batch, kw, samples, chunk, repeats):
    """``repeats`` interleaved runs: the true overhead and the monitor's own account."""
    runs = [interleaved(build, steps, batch, kw, samples, chunk) for _ in range(repeats)]
    mons = [r["mon"] for r in runs]
    per_rec = [x.values["seconds"] for m in mons for x in m.records]
    mv = [x.values["matvecs"] for m in mons for x in m.records]
    last = mons[-1].records[-1].values if mons[-1].records else {}
    t_off, t_on = [r["t_off"] for r in runs], [r["t_on"] for r in runs]
    return {"steps": steps, "t_off": t_off, "t_on": t_on, "true": sum(t_on) / sum(t_off) - 1,
            "each": [a / b - 1 for a, b in zip(t_on, t_off)], "own": [m.overhead_fraction for m in mons],
            "records": [len(m.records) for m in mons], "identical": all(r["identical"] for r in runs),
            "aa": [r["aa"] for r in runs],
            "settle": [m.schedule.settle_time / m.schedule.monitor_time if m.schedule.monitor_time > 0 else 0.0
                       for m in mons],
            "s_per_record": sum(per_rec) / max(len(per_rec), 1), "products_per_record": sum(mv) / max(len(mv), 1),
            "setup_s": [m.setup_seconds for m in mons],
            "first_step": [m.records[0].step if m.records else None for m in mons],
            "last": {k: last.get(k, math.nan) for k in ("lambda_max", "lambda_max_converged", "lambda_max_residual",
                                                          "trace", "trace_stderr", "negative_mass",
                                                          "negative_mass_stderr")}}


def bound(c: dict) -> dict:
    """Lower bound of the overhead of ``every=100`` from the measured costs (see the module docstring)."""
    hundred = 100 * c["t_step"]
    p_min = c["lanczos_steps"]
    floor = p_min * c["t_product"] + c["t_rebuild"] + c["t_loss"]
    return {"product_share": c["t_product"] / hundred, "products_min": p_min,
            "floor_share": floor / hundred, "record_share": c["t_record"] / hundred,
            "products_allowed": 0.05 * hundred / c["t_product"],
            "every_for_5pct": math.ceil(c["t_record"] / (0.05 * c["t_step"]))}


def _pct(x):
    return f"{100 * x:.1f}%"


def markdown(args, rows: dict, command: str) -> str:
    out = ["# CurvatureMonitor overhead (digits MLP and small CNN)", "",
           f"Command: `{command}`", "",
           f"CPU time (`time.process_time`), `torch.set_num_threads(1)`, on a shared, loaded 2-core machine "
           f"({platform.processor() or platform.machine()}, Python {platform.python_version()}, "
           f"torch {torch.__version__}). SGD (lr 0.05, momentum 0.9), batch {args.batch}; monitoring subset "
           f"{args.monitor_samples} samples. True overhead = time with / time without - 1, from {args.repeats} "
           f"interleaved run(s) per setting: one copy with and two copies without the monitor take turns in chunks "
           f"of {args.chunk} steps in one process, each timed only while it runs (time without = mean of the two; "
           "ratio of summed times; each run's ratio next to it). A/A = second copy without / first copy without "
           "- 1 in the same run: identical work, so it is the noise floor of a single run's true overhead. Own "
           "account = the monitor's `overhead_fraction` (monitoring time incl. setup and the charged excess of the "
           "steps right after records / training time); post-record = that charged excess as a share of the "
           "monitoring time. Identical = all copies ended with bit-identical weights.", "",
           "| model | setting | steps | true overhead | each run | A/A each run | own account | post-record "
           "| records | s / record | products / record | identical |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        for label in ("every=100", "overhead=0.05"):
            s = r[label]
            out.append(f"| {name} | {label} | {s['steps']} | {_pct(s['true'])} | "
                       f"{', '.join(_pct(p) for p in s['each'])} | {', '.join(_pct(p) for p in s.get('aa', []))} | "
                       f"{', '.join(_pct(o) for o in s['own'])} | {', '.join(_pct(o) for o in s.get('settle', []))} | "
                       f"{', '.join(str(n) for n in s['records'])} | "
                       f"{s['s_per_record']:.3f} | {s['products_per_record']:.1f} | {s['identical']} |")
    out += ["", "Cost of one record against training, and the lower bound of `every=100`:", "",
            "| model | D | step (ms) | product on subset (ms) | rebuild (ms) | loss (ms) | record (ms) "
            "| product / 100 steps | min products (3 metrics, certified) | floor at every=100 "
            "| record at every=100 | products 5% allows | every for 5% |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        c, b = r["costs"], r["bound"]
        out.append(f"| {name} | {c['dim']} | {1e3 * c['t_step']:.2f} | {1e3 * c['t_product']:.2f} | "
                   f"{1e3 * c['t_rebuild']:.2f} | {1e3 * c['t_loss']:.2f} | {1e3 * c['t_record']:.1f} | "
                   f"{_pct(b['product_share'])} | {b['products_min']} | {_pct(b['floor_share'])} | "
                   f"{_pct(b['record_share'])} | {b['products_allowed']:.1f} | {b['every_for_5pct']} |")
    out += ["", "Last record of the last `overhead=0.05` run (the certificates and standard errors it carries):", ""]
    for name, r in rows.items():
        v = r["overhead=0.05"]["last"]
        out.append(f"- {name}: lambda_max {v['lambda_max']:.4g} (certified {v['lambda_max_converged']:.0f}, "
                   f"residual {v['lambda_max_residual']:.2g}), trace {v['trace']:.4g} +- {v['trace_stderr']:.2g}, "
                   f"negative mass {v['negative_mass']:.3g} +- {v['negative_mass_stderr']:.2g}")
    out += ["", "Verdict (from the numbers above):", ""]
    for name, r in rows.items():
        s5, s100, b = r["overhead=0.05"], r["every=100"], r["bound"]
        ok = abs(s5["true"] - 0.05) <= 0.01 and min(s5["records"]) >= 10
        inside = sum(abs(e - 0.05) <= 0.01 for e in s5["each"])
        aa = max((abs(x) for x in s5.get("aa", [])), default=math.nan)
        out.append(f"- {name}: `overhead=0.05`: true overhead {_pct(s5['true'])} over {min(s5['records'])}+ records, "
                   f"{'within' if ok else 'NOT within'} 1 point of 5%; {inside} of {len(s5['each'])} single runs "
                   f"within 1 point ({', '.join(_pct(e) for e in s5['each'])}; the A/A noise floor of a single run "
                   f"reached {_pct(aa)}); own account "
                   f"{', '.join(_pct(o) for o in s5['own'])}. `every=100`: true {_pct(s100['true'])}, target 5% "
                   f"{'met' if s100['true'] <= 0.05 else 'missed'}: one product on the {args.monitor_samples} "
                   f"samples costs {_pct(b['product_share'])} of 100 training steps, so 5% allows "
                   f"{b['products_allowed']:.1f} products a record, against the {b['products_min']} the three "
                   f"metrics need with their certificates (floor {_pct(b['floor_share'])} with the graph rebuild "
                   f"and the loss); a record of the measured cost fits 5% from every={b['every_for_5pct']}.")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description="CurvatureMonitor overhead")
    ap.add_argument("--models", default="mlp,cnn", help="comma-separated: mlp, cnn")
    ap.add_argument("--batch", type=int, default=BATCH_DEFAULT)
    ap.add_argument("--monitor-samples", type=int, default=256)
    ap.add_argument("--every-steps", type=int, default=2000, help="steps of the every=100 runs")
    ap.add_argument("--min-records", type=int, default=12, help="records the overhead=0.05 runs must contain")
    ap.add_argument("--chunk", type=int, default=50, help="steps per chunk of the interleaved arms")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved runs per setting")
    ap.add_argument("--results", default=None, help="write the markdown table here (and a .json next to it)")
    ap.add_argument("--render", default=None, help="only re-render the markdown from this run's .json")
    a = ap.parse_args()
    if a.render:
        saved = json.loads(Path(a.render).read_text())
        command = saved.get("command") or (
            f"python benchmarks/monitor_overhead.py --models {a.models} --batch {a.batch} --monitor-samples "
            f"{a.monitor_samples} --every-steps {a.every_steps} --min-records {a.min_records} --chunk {a.chunk} "
            f"--repeats {a.repeats} --results {a.results}")
        rows = saved.get("rows", saved)
        md = markdown(a, rows, command)
        print(md)
        if a.results:
            Path(a.results).write_text(md)
        return
    torch.set_num_threads(1)
    import curvlens.estimators  # noqa: F401  (imports once, outside every timed region)
    import curvlens.hooks.monitor  # noqa: F401
    import scipy.linalg  # noqa: F401

    print(f"CPU time (time.process_time), torch.set_num_threads(1) (shared, loaded machine); SGD batch {a.batch}; "
          f"monitoring subset {a.monitor_samples} samples; interleaved arms, chunks of {a.chunk} steps", flush=True)
    rows = {}
    for name in a.models.split(","):
        build = MODELS[name]
        c = costs(build, a.batch, a.monitor_samples)
        b = bound(c)
        print(f"{name}: D={c['dim']} step {1e3 * c['t_step']:.2f} ms, product {1e3 * c['t_product']:.2f} ms "
              f"({_pct(b['product_share'])} of 100 steps), rebuild {1e3 * c['t_rebuild']:.2f} ms, loss "
              f"{1e3 * c['t_loss']:.2f} ms, record {1e3 * c['t_record']:.1f} ms ({c['products_per_record']:.1f} "
              f"products): every=100 costs >= {_pct(b['floor_share'])} (floor of {b['products_min']} products + "
              f"rebuild + loss), measured record {_pct(b['record_share'])}; 5% allows "
              f"{b['products_allowed']:.1f} products; a record fits 5% from every={b['every_for_5pct']}", flush=True)
        rows[name] = {"costs": c, "bound": b}
        # overhead=0.05: enough training to pay for setup, a first guess and min_records records
        need = (1.5 + a.min_records) * c["t_record"] / 0.05
        steps = int(math.ceil(1.2 * need / c["t_step"] / 100.0) * 100)
        for label, kw, n in (("every=100", {}, a.every_steps), ("overhead=0.05", {"overhead": 0.05}, steps)):
            s = measure_setting(build, n, a.batch, kw, a.monitor_samples, a.chunk, a.repeats)
            rows[name][label] = s
            print(f"{name:4} {label:14} {n:6d} steps: true {_pct(s['true'])} (each "
                  f"{', '.join(_pct(p) for p in s['each'])}), A/A {', '.join(_pct(p) for p in s['aa'])}, "
                  f"own {', '.join(_pct(o) for o in s['own'])} (post-record {', '.join(_pct(o) for o in s['settle'])}), "
                  f"records {s['records']} (first at {s['first_step']}), {s['s_per_record']:.3f} s/record, "
                  f"{s['products_per_record']:.1f} products/record; off {[round(t, 2) for t in s['t_off']]} s, "
                  f"on {[round(t, 2) for t in s['t_on']]} s; identical weights {s['identical']}", flush=True)
    command = "python benchmarks/monitor_overhead.py " + " ".join(sys.argv[1:])
    md = markdown(a, rows, command.strip())
    print(md)
    if a.results:
        path = Path(a.results)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(md)
        path.with_suffix(".json").write_text(json.dumps({"command": command.strip(), "args": vars(a), "rows": rows},
                                                        indent=1, default=float))


if __name__ == "__main__":
    main()
