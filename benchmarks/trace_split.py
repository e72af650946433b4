"""Trace budget split: ``krylov_trace`` (pilot-chosen split) against plain Hutchinson and the former
fixed split (40% of the products on the Krylov basis, the rest residual probes) at equal products.

Known spectra, D = 300, randomly rotated (DenseOperator, float64); RMSE over ``--seeds`` seeds;
Hutchinson's exact RMSE ``sqrt(2 (||A||_F^2 - sum A_ii^2) / M)`` is listed too. CPU time
(time.process_time) with torch.set_num_threads(1) because the machine is shared.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/trace_split.py [--seeds 200] [--out benchmarks/results/trace_split.md]

``--peers N`` instead runs the trace rows of ``benchmarks/spectral.py`` (the 2,714-parameter model of
its small section, 100 products, against PyHessian, hessian-eigenthings and curvlinops) over N seeds,
and the same estimators on its exact Hessian matrix over ``--dense-seeds`` seeds, and prints them.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from curvlens import DenseOperator
from curvlens.estimators import hutchinson_trace, krylov_trace
from curvlens.estimators.hutchpp import deflated_trace
from curvlens.estimators.krylov_trace import krylov_basis
from curvlens.results import RunTimer

D = 300


def spectra() -> dict[str, np.ndarray]:
    g = np.random.default_rng(0)
    return {
        "near-identity 1 + 0.1 U(0,1)": 1 + 0.1 * g.random(D),
        "uniform U(0,1)": g.random(D),
        "1/i decay": 1 / np.arange(1, D + 1),
        "Gaussian N(0,1) (indefinite)": g.standard_normal(D),
        "clustered {0, 1, 5} x 100": np.concatenate(
            [0.01 * g.standard_normal(100), 1 + 0.01 * g.standard_normal(100), 5 + 0.01 * g.standard_normal(100)]),
        "low rank + noise (20,10,5,2,1 + 0.05 N)": np.concatenate([[20.0, 10.0, 5.0, 2.0, 1.0],
                                                                 0.05 * g.standard_normal(D - 5)]),
    }


def matrix(eigs) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    A = (Q * torch.as_tensor(eigs, dtype=torch.float64)) @ Q.T
    return (A + A.T) / 2


def fixed_split(op, m: int, seed: int) -> float:
    """The former rule: ``round(0.4 m)`` Krylov vectors from a fresh start, ``m - r`` residual probes."""
    gen = torch.Generator().manual_seed(seed)
    timer = RunTimer(op, gen)
    Q, Z = krylov_basis(op, min(max(1, int(math.floor(0.4 * m + 0.5))), m - 2), 1, probe="rademacher", chunk=64,
                        gen=gen)
    return deflated_trace(op, Q, Z, m=m, target=None, mx=m, method="krylov", probe="rademacher", chunk=64,
                          gen=gen, timer=timer, per_block=False, callback=None).estimate


def peer_rows(n: int, dense_seeds: int) -> None:
    import sys
    import warnings

    sys.path.insert(0, str(Path(__file__).parent))
    import spectral
    from _common import print_table
    from _spectral_rows import dense_trace_rows, trace_rows

    warnings.simplefilter("ignore")
    pb = spectral.make_small()
    H = spectral.exact_hessian(pb)
    exact = float(np.trace(H))
    t0 = time.process_time()
    print(f"small model: {pb.dim:,} parameters, exact trace {exact:.6g}; 100 products, {n} seeds, 1 thread")
    rows, _ = trace_rows(pb, exact, list(range(n)))
    print_table(rows, ["library", "setting", "products (mean)", "seconds (mean)", "mean |rel. error|",
                       "max |rel. error|", "note"])
    if dense_seeds:
        print(f"\nthe same estimators on the exact Hessian matrix, {dense_seeds} seeds")
        rows, _ = dense_trace_rows(H, list(range(dense_seeds)))
        print_table(rows, ["library", "setting", "mean |rel. error|", "note"])
    print(f"CPU time {time.process_time() - t0:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--out", default="benchmarks/results/trace_split.md")
    ap.add_argument("--peers", type=int, default=0, help="run spectral.py's trace rows with the peers over N seeds")
    ap.add_argument("--dense-seeds", type=int, default=40)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.peers:
        peer_rows(args.peers, args.dense_seeds)
        return
    t0 = time.process_time()
    lines = [
        "# Trace budget split at equal products",
        "",
        f"`OMP_NUM_THREADS=1 .venv/bin/python benchmarks/trace_split.py --seeds {args.seeds}` "
        f"(torch {torch.__version__}, 1 thread, CPU time). D = {D}, randomly rotated spectra (DenseOperator, "
        f"float64), RMSE over {args.seeds} seeds (relative standard error of each RMSE about "
        f"{100 / math.sqrt(2 * args.seeds):.0f}%). Ratio: adaptive / Hutchinson's exact RMSE.",
        "",
        "| spectrum | M | krylov_trace (adaptive) | hutchinson_trace | Hutchinson exact | old fixed 40% split "
        "| ratio | splits chosen |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, eigs in spectra().items():
        A = matrix(eigs)
        op, truth = DenseOperator(A), float(A.trace())
        exact_var = 2 * (float((A * A).sum()) - float((A.diagonal() ** 2).sum()))
        for m in (30, 60):
            ad = [krylov_trace(op, m, generator=s) for s in range(args.seeds)]
            rm = lambda e: math.sqrt(float(np.mean(np.square(e))))  # noqa: E731
            r_ad = rm([r.estimate - truth for r in ad])
            r_h = rm([hutchinson_trace(op, m, generator=s).estimate - truth for s in range(args.seeds)])
            r_old = rm([fixed_split(op, m, s) - truth for s in range(args.seeds)])
            r_ex = math.sqrt(exact_var / m)
            hut = np.mean(["plain Hutchinson" in r.info.status for r in ad])
            kry = np.mean([int(r.info.status.split("split: ")[1].split()[0]) for r in ad if "deflation" in r.info.status]
                          or [0])
            lines.append(f"| {name} | {m} | {r_ad:.4g} | {r_h:.4g} | {r_ex:.4g} | {r_old:.4g} | {r_ad / r_ex:.2f} "
                         f"| Hutchinson {100 * hut:.0f}%, else {kry:.1f} Krylov vectors |")
            print(lines[-1], flush=True)
    lines += ["", f"CPU time: {time.process_time() - t0:.0f} s.", ""]
    Path(args.out).write_text("\n".join(lines))


if __name__ == "__main__":
    main()
