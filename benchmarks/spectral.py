"""Spectral accuracy per product: curvlens against PyHessian, hessian-eigenthings and curvlinops.

Same process, CPU, float32 products for every library. For each model it prints products
(counted by wrapping what each library calls), wall time (operator construction included) and
relative error of the top-1 and top-5 Hessian eigenvalues at each library's defaults and at the
cheapest setting found (doubling/decade search of its budget knob) that reaches 1e-3 relative
error. On the small model, where the exact float64 Hessian is formed, it also prints the trace
error at 100 products (mean over seeds) and the spectral-density 1-Wasserstein distance at an
equal product budget, plus two reproductions of known peer failures. A final section states
the targets as met / not met with the numbers.

References: the small model's exact Hessian (``torch.func.hessian`` in float64 ->
``numpy.linalg.eigvalsh``); for the larger models curvlens' ``top_eigenpairs(k=5, rtol=1e-7)``
on a float64 copy of the model, certified by true residuals (each value within ``rtol * |l|``
of an eigenvalue), computed once and printed. Trace and density are scored on the small model
only.

``mlp_uneven`` is the MLP with curvlens' data in 8 uneven batches: its top-5 rows add curvlens at
the defaults over seeds and the fewest products in which any Krylov vector certifies each pair.
On the small model the density is also scored at 100 products against every peer at 4 splits.
Results and commands: ``benchmarks/results/spectral.md``.

Run:  .venv/bin/python benchmarks/spectral.py --threads 1 [--models small,mlp,mlp_uneven,cnn,transformer] [--quick]
Peers missing or failing are reported in the tables (exception type and message), never hidden.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
import warnings

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
import _spectral_peers as peers  # noqa: E402
from _common import fmt, make_problem, print_table, set_threads  # noqa: E402
from _spectral_rows import (  # noqa: E402
    DENSITY_BUDGET,
    dense_trace_rows,
    density_budget_rows,
    krylov_limit_rows,
    density_rows,
    premature_stop_rows,
    trace_rows,
    uneven_batch_rows,
)

SIZES = {"mlp": 512, "mlp_uneven": 512, "cnn": 256, "transformer": 128}
UNEVEN = (96, 32, 80, 48, 112, 16, 72, 56)  # mlp_uneven: curvlens' 8 batches of the same 512 samples
TARGET = 1e-3


# ------------------------------------------------------------------------------ problems
def make_small(seed: int = 0) -> peers.Problem:
    """A 2,714-parameter tanh MLP on 4 Gaussian classes, trained 150 Adam steps (outliers + bulk)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # model init only (benchmark process)
    n, d, c = 256, 16, 10
    means = 2.0 * torch.randn(c, d, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    x = means[y] + torch.randn(n, d, generator=g)
    model = nn.Sequential(nn.Linear(d, 48), nn.Tanh(), nn.Linear(48, 32), nn.Tanh(), nn.Linear(32, c))
    loss = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        opt.zero_grad()
        loss(model(x), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    model.eval()
    return peers.Problem("small", model, loss, x, y)


def exact_hessian(pb: peers.Problem) -> np.ndarray:
    model = copy.deepcopy(pb.model).double()
    names = [n for n, p in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    x, y = pb.x.double(), pb.y

    def f(flat):
        ps, i = {}, 0
        for n, s, k in zip(names, shapes, sizes):
            ps[n] = flat[i : i + k].view(s)
            i += k
        return pb.loss(torch.func.functional_call(model, ps, (x,)), y)

    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    H = torch.func.hessian(f)(flat).numpy()
    return 0.5 * (H + H.T)


def reference_top(pb: peers.Problem, k: int) -> tuple[np.ndarray, str]:
    from curvlens.linalg import top_eigenpairs
    from curvlens.operators import HessianOperator

    model = copy.deepcopy(pb.model).double()
    op = HessianOperator(model, pb.loss, (pb.x.double() if pb.x.is_floating_point() else pb.x, pb.y))
    t0 = time.perf_counter()
    res = top_eigenpairs(op, k, rtol=1e-7, max_matvecs=3000, generator=12345)
    ok = bool(res.converged.all())
    note = (f"curvlens top_eigenpairs(k={k}, rtol=1e-7), float64 model, {res.info.matvecs} products, "
            f"{time.perf_counter() - t0:.1f} s, certified={ok}, max residual/|l|="
            f"{float((res.residuals / res.eigenvalues.abs()).max()):.1e}")
    return res.eigenvalues.numpy(), note


# ------------------------------------------------------------------------------ top-k
def rel_err(values, ref) -> float:
    if values is None or len(values) < len(ref):
        return math.nan
    v = np.sort(np.asarray(values, dtype=np.float64))[::-1][: len(ref)]
    return float(np.max(np.abs(v - ref) / np.abs(ref)))


def gradient_seconds(pb, repeats: int = 3) -> float:
    """CPU seconds of one full-batch gradient (best of ``repeats``): the unit of "x gradient"."""
    best = math.inf
    for _ in range(repeats):
        t0 = time.process_time()
        torch.autograd.grad(pb.loss(pb.model(pb.x), pb.y), pb.params)
        best = min(best, time.process_time() - t0)
    return best


def defaults_and_search(pb, k, ref, limit, seed=0, libraries=None):
    """[(role, Run)] for each library: defaults, then the cheapest setting reaching TARGET."""
    searches = {
        "curvlens": [lambda: peers.curvlens_topk(pb, k, seed=seed, limit=limit)]
        + [lambda r=r: peers.curvlens_topk(pb, k, seed=seed, limit=limit, rtol=r) for r in (1e-4, 1e-5)],
        "PyHessian": [lambda: peers.pyhessian_topk(pb, k, seed=seed, limit=limit)]
        + [lambda t=t: peers.pyhessian_topk(pb, k, seed=seed, limit=limit, maxIter=10_000, tol=t)
           for t in (1e-4, 1e-5, 1e-6, 1e-7, 1e-8)],
        "hessian-eigenthings": [lambda: peers.eigenthings_topk(pb, k, seed=seed, limit=limit)]
        + [lambda m=m: peers.eigenthings_topk(pb, k, seed=seed, limit=limit, max_iter=m)
           for m in [2 * k * 2 ** j for j in range(1, 10)] if m <= limit],
        "curvlinops": [lambda: peers.curvlinops_topk(pb, k, seed=seed, limit=limit)]
        + [lambda t=t: peers.curvlinops_topk(pb, k, seed=seed, limit=limit, tol=t)
           for t in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)],
    }
    # curvlens' default certifies residuals <= 1e-3 |l|, which bounds the eigenvalue error by
    # 1e-3 and in practice gives ~1e-6 (the error is about residual^2 / gap): its cheapest
    # setting that reaches TARGET is the cheapest of looser rtol values, the way the peers'
    # knobs are searched from their cheap end up.
    # Also single-vector Lanczos (block_size=1), like every peer: the default block of 2 for
    # k >= 2 costs ~1.2x the products but finds repeated eigenvalues from a random start.
    looser = [lambda r=r, b=b: peers.curvlens_topk(pb, k, seed=seed, limit=limit, rtol=r, block_size=b)
              for b in (1, None) for r in (1e-1, 3e-2, 1e-2, 1e-3) if (r, b) != (1e-3, None)]
    out = []
    for lib, settings in searches.items():
        if libraries is not None and lib not in libraries:
            continue
        default = settings[0]()
        out.append(("defaults", default))
        if lib == "curvlens":
            ok = [r for r in (f() for f in looser) if r.error == "" and rel_err(r.values, ref) <= TARGET]
            cheap = min(ok, key=lambda r: (r.matvecs, r.seconds)) if ok else None
            if cheap is not None and cheap.matvecs < default.matvecs:
                out.append((f"reaches {TARGET:g}", cheap))
                continue
        if default.error == "" and rel_err(default.values, ref) <= TARGET:
            out.append((f"reaches {TARGET:g}", default))
            continue
        found = None
        tried = 0
        for s in settings[1:]:
            r = s()
            tried += 1
            if r.error == "" and rel_err(r.values, ref) <= TARGET:
                found = r
                break
            if r.error.startswith("BudgetExceeded"):
                break
        if found is None:
            miss = peers.Run(lib, f"not reached ({tried} larger setting(s) tried, cap {limit} products)",
                             None, 0, math.nan, error=r.error if tried else "no search setting")
            out.append((f"reaches {TARGET:g}", miss))
        else:
            out.append((f"reaches {TARGET:g}", found))
    return out


def topk_table(pb, k, ref, limit, libraries=None, grad_s=None):
    rows, runs = [], defaults_and_search(pb, k, ref, limit, libraries=libraries)
    for role, r in runs:
        e = rel_err(r.values, ref)
        flag = ""
        if "certified" in r.extra:
            flag = "certified" if r.extra["certified"] else "NOT certified"
            flag += f", max residual / (rtol |l|) {r.extra['res_over_rtol']:.2f}"
        if "converged" in r.extra:
            flag = "converged flag" if r.extra["converged"] else "reports unconverged"
        rows.append({
            "library": r.library, "run": role, "setting": r.setting,
            "products": r.matvecs if not (r.error and r.matvecs == 0) else "",
            "seconds": fmt(r.seconds), "rel. error": f"{e:.1e}" if e == e else "n/a",
            "x gradient": fmt(r.seconds / grad_s) if grad_s and r.seconds == r.seconds else "",
            "note": r.error or flag,
        })
    return rows, runs


def defaults_over_seeds(pb, ref, limit, grad_s, he, seeds, targets):
    """curvlens' top-5 at the defaults over several seeds, scored against the issue's targets:
    <= 22 products, <= 0.8x hessian-eigenthings' tuned CPU time, relative error <= 1e-5, every
    pair certified at rtol itself (residual <= 1e-3 |l|, the rounding floor atol not used)."""
    runs = [peers.curvlens_topk(pb, 5, seed=s, limit=limit) for s in seeds]
    rows = [{"seed": s, "products": r.matvecs, "seconds": fmt(r.seconds), "x gradient": fmt(r.seconds / grad_s),
             "rel. error": f"{rel_err(r.values, ref):.1e}", "certified": r.extra.get("certified"),
             "max residual / (rtol |l|)": f"{r.extra.get('res_over_rtol', math.nan):.2f}", "note": r.error}
            for s, r in zip(seeds, runs)]
    print(f"\n-- curvlens top_eigenpairs(k=5) at the defaults, {len(seeds)} seeds --")
    print_table(rows, ["seed", "products", "seconds", "x gradient", "rel. error", "certified", "max residual / (rtol |l|)", "note"])
    ok = [r for r in runs if not r.error]
    prods = [r.matvecs for r in ok]
    worst_t = max(r.seconds for r in ok)
    errs = [rel_err(r.values, ref) for r in ok]
    certified = all(r.extra["certified"] and r.extra["res_over_rtol"] <= 1.0 for r in ok)
    targets.append(("mlp_uneven: top-5 at the defaults in <= 22 products (every seed)", max(prods) <= 22,
                    f"products {prods} over seeds {seeds}"))
    if he is not None:
        targets.append(("mlp_uneven: top-5 at the defaults in <= 0.8x hessian-eigenthings' tuned CPU time (slowest seed)",
                        worst_t <= 0.8 * he.seconds, f"curvlens {worst_t / grad_s:.0f}x gradient, hessian-eigenthings "
                        f"{he.seconds / grad_s:.0f}x ({he.matvecs} products; ratio {worst_t / he.seconds:.2f})"))
    targets.append(("mlp_uneven: relative error <= 1e-5 and every pair certified at rtol 1e-3 (float32)",
                    max(errs) <= 1e-5 and certified, f"max rel. error {max(errs):.1e}, certified at rtol: {certified}"))


# ------------------------------------------------------------------------------ main
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="small,mlp,cnn,transformer")
    ap.add_argument("--quick", action="store_true", help="small + mlp, 3 trace seeds, cap 600 products")
    ap.add_argument("--dense-seeds", type=int, default=0,
                    help="if > 0, also score the trace estimators on the exact Hessian matrix over this many seeds (slow; off by default)")
    ap.add_argument("--density-seeds", type=int, default=3, help="seeds for the density rows (default 3)")
    ap.add_argument("--trace-seeds", type=int, default=None, help="seeds for the trace rows (default 10, quick 3)")
    ap.add_argument("--max-matvecs", type=int, default=None, help="product cap per run (default 2000, quick 600)")
    ap.add_argument("--ks", default="1,5", help="top-k rows to run (default 1,5)")
    ap.add_argument("--libraries", default=None,
                    help="comma list of libraries in the top-k rows (default all: curvlens, PyHessian, "
                         "hessian-eigenthings, curvlinops)")
    ap.add_argument("--topk-only", action="store_true", help="only the top-k rows (no trace/density sections)")
    ap.add_argument("--skip-trace", action="store_true", help="leave out the trace rows of the small model")
    ap.add_argument("--topk-seeds", type=int, default=3,
                    help="mlp_uneven: seeds of curvlens' top-5 at the defaults (default 3)")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    warnings.simplefilter("ignore")  # libraries' convergence warnings: the tables carry that information
    models = ["small", "mlp"] if args.quick and args.models == ap.get_default("models") else args.models.split(",")
    limit = args.max_matvecs or (600 if args.quick else 2000)
    t_start = time.perf_counter()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, float32 products; "
          f"relative errors vs the references below; product cap per run {limit}")
    print("products: counted by wrapping each library's product function/operator; seconds: CPU time "
          "(time.process_time, the machine is shared; use --threads 1), operator setup included\n")
    targets: list[tuple[str, bool, str]] = []

    for name in models:
        if name == "small":
            pb = make_small()
            t0 = time.perf_counter()
            H = exact_hessian(pb)
            eigs = np.linalg.eigvalsh(H)
            ref_note = f"exact float64 Hessian (torch.func.hessian, {time.perf_counter() - t0:.1f} s) -> numpy eigvalsh"
        else:
            model, loss, x, y = make_problem("mlp" if name == "mlp_uneven" else name, SIZES[name])
            pb = peers.Problem(name, model, loss, x, y)
            eigs, ref_note = reference_top(pb, 5)
            if name == "mlp_uneven":
                bounds = np.cumsum((0,) + UNEVEN)
                pb.batches = [(x[a:b], y[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        ref5 = np.sort(eigs)[::-1][:5]
        print(f"== {name}: {pb.dim:,} parameters, {len(pb.y)} samples "
              f"({'one batch' if pb.batches is None else f'{len(pb.batches)} uneven batches for curvlens'}) ==")
        print(f"reference: {ref_note}")
        print(f"reference top-5: {', '.join(f'{v:.6g}' for v in ref5)}")
        if name == "small":
            print(f"exact spectrum: [{eigs.min():.4g}, {eigs.max():.4g}], trace {eigs.sum():.6g}, "
                  f"{int((eigs < 0).sum())} negative eigenvalues")
        grad_s = gradient_seconds(pb)
        print(f"one full-batch gradient: {grad_s:.3g} CPU s ('x gradient' = CPU seconds / this)")
        libraries = None if args.libraries is None else args.libraries.split(",")
        if name == "mlp_uneven":
            print(f"curvlens runs on {len(UNEVEN)} uneven batches {UNEVEN}; the peers get the same 512 samples as one "
                  "batch (hessian-eigenthings averages batches without their sizes: the one-batch workaround, see "
                  "'known peer failure 1')")
            if libraries is None:
                libraries = ["curvlens", "hessian-eigenthings", "curvlinops"]
                print("PyHessian is left out here (its power iteration needs hundreds of products per eigenvalue; "
                      "pass --libraries to include it)")
        for k in (int(v) for v in args.ks.split(",")):
            print(f"\n-- top-{k} eigenvalues --")
            rows, runs = topk_table(pb, k, ref5[:k], limit, libraries=libraries, grad_s=grad_s)
            print_table(rows, ["library", "run", "setting", "products", "seconds", "x gradient", "rel. error", "note"])
            if k == 5:
                reach = {r.library: r for role, r in runs if role.startswith("reaches") and not r.error}
                cl = reach.get("curvlens")
                others = {lib: r for lib, r in reach.items() if lib != "curvlens"}
                if cl is None:
                    targets.append((f"{name}: curvlens reaches 1e-3 on top-5", False, "curvlens did not reach it"))
                else:
                    fewer = all(cl.matvecs < r.matvecs for r in others.values())
                    faster = all(cl.seconds < r.seconds for r in others.values())
                    det = "; ".join(f"{lib} {r.matvecs} / {r.seconds:.2f} s" for lib, r in others.items()) or "no peer reached 1e-3"
                    unreached = [r.library for role, r in runs if role.startswith("reaches") and r.error]
                    if unreached:
                        det += "; did not reach it: " + ", ".join(unreached)
                    targets.append((f"{name}: top-5 to 1e-3 with fewer products and less time than every peer",
                                    fewer and faster, f"curvlens {cl.matvecs} products / {cl.seconds:.2f} s; {det}"))
                if name == "mlp_uneven":
                    he = reach.get("hessian-eigenthings")
                    tseeds = list(range(args.topk_seeds))
                    defaults_over_seeds(pb, ref5, limit, grad_s, he, tseeds, targets)
                    print("\n-- the fewest products in which any vector of a Krylov space from a random start "
                          "certifies each of the top 5 to 1e-3 (one 36-step Lanczos run per seed) --")
                    rows, first = krylov_limit_rows(peers.curvlens_operator(pb), ref5, tseeds)
                    print_table(rows, list(rows[0]))
                    need = [max(f if f is not None else math.inf for f in fs) for fs in first]
                    targets.append(("mlp_uneven: 22 products reachable by a Krylov method from a random start",
                                    max(need) <= 22, f"first Krylov dimension certifying all 5, per seed: {need}"))
        if name == "small" and not args.topk_only:
            if not args.skip_trace:
                seeds = list(range(args.trace_seeds or (3 if args.quick else 10)))
                print(f"\n-- trace at 100 products, {len(seeds)} seeds (exact {eigs.sum():.6g}) --")
                rows, tsum = trace_rows(pb, float(eigs.sum()), seeds)
                print_table(rows, ["library", "setting", "products (mean)", "seconds (mean)", "mean |rel. error|", "max |rel. error|", "note"])
                cl_best = min(v[0] for (lib, s), v in tsum.items() if lib == "curvlens")
                cl_x = tsum[("curvlens", "krylov_trace(num_matvecs=100)")][0]
                peer = {k: v[0] for k, v in tsum.items() if k[0] != "curvlens" and v[1] >= 95 and v[0] == v[0]}
                bk = min(peer, key=peer.get) if peer else None
                targets.append(("small: trace error at 100 products <= best peer's (curvlens krylov_trace, the recommended default)",
                                bk is not None and cl_x <= peer[bk],
                                f"curvlens krylov_trace {cl_x:.2e} (best curvlens {cl_best:.2e}); best peer {bk[0]} {bk[1]} {peer[bk]:.2e}" if bk else "no peer result"))
                dn = args.dense_seeds
                if dn > 0:
                    print(f"\n-- the same trace estimators on the exact Hessian matrix, 100 products, {dn} seeds --")
                    rows, dsum_t = dense_trace_rows(H, list(range(dn)))
                    print_table(rows, ["library", "setting", "mean |rel. error|", "note"])
                dsum_t = dsum_t if dn > 0 else {}
                dpeer = {k: v for k, v in dsum_t.items() if k[0] != "curvlens" and v == v}
                if dpeer:
                    bk = min(dpeer, key=dpeer.get)
                    cx = dsum_t[("curvlens", "krylov_trace(100)")]
                    targets.append((f"small: trace error at 100 products <= best peer's, exact matrix, {dn} seeds",
                                    cx <= dpeer[bk], f"curvlens krylov_trace {cx:.2e}; best peer {bk[0]} {bk[1]} {dpeer[bk]:.2e}"))
            bseeds = list(range(max(args.density_seeds, 8)))
            print(f"\n-- spectral density at {DENSITY_BUDGET} products, {len(bseeds)} seeds: 1-Wasserstein distance of "
                  "each quadrature measure to the exact spectrum; peers at 4 splits of the same budget --")
            rows, bsum, split = density_budget_rows(pb, eigs, bseeds)
            print(f"curvlens' split of {DENSITY_BUDGET} products at D = {pb.dim}: {split[0]} probe(s) x {split[1]} steps")
            print_table(rows, ["library", "setting", "products (mean)", "W1 (mean +- se)", "note"])
            cl_b = bsum[("curvlens", f"spectral_density(num_matvecs={DENSITY_BUDGET})")]
            cl_simple = bsum[("curvlens", f"spectral_density(num_probes=1, num_steps={DENSITY_BUDGET}, deflate=False)")]
            bpeer = {k: v for k, v in bsum.items() if k[0] != "curvlens" and v == v}
            bk = min(bpeer, key=bpeer.get)
            targets.append((f"small: density W1 at {DENSITY_BUDGET} products <= 0.7x the best peer's (best split)",
                            cl_b <= 0.7 * bpeer[bk], f"curvlens {cl_b:.3e}; best peer {bk[0]} [{bk[1]}] {bpeer[bk]:.3e} "
                            f"(ratio {cl_b / bpeer[bk]:.2f})"))
            targets.append((f"small: curvlens' split at {DENSITY_BUDGET} products no worse than one probe x "
                            f"{DENSITY_BUDGET} steps (plain)", cl_b <= cl_simple, f"{cl_b:.3e} vs {cl_simple:.3e}"))
            probes, steps = 10, 80
            dseeds = list(range(args.density_seeds))
            print(f"\n-- spectral density, equal budget {probes} probes x {steps} steps = {probes * steps} products, "
                  f"{len(dseeds)} seed(s); 1-Wasserstein distance of the quadrature measure to the exact spectrum --")
            rows, dsum = density_rows(pb, eigs, dseeds, probes, steps)
            print_table(rows, ["library", "setting", "products (mean)", "seconds (mean)", "W1 (mean)", "W1 / spectral width", "note"])
            cl_w = next(v for k, v in dsum.items() if k[0] == "curvlens" and "num_matvecs" in k[1])
            shipped = {k: v for k, v in dsum.items() if k[0] != "curvlens" and "shim" not in k[1] and v == v}
            allp = {k: v for k, v in dsum.items() if k[0] != "curvlens" and v == v}
            if shipped:
                bk = min(shipped, key=shipped.get)
                targets.append(("small: density W1 <= half of the best peer's (peers as shipped)", cl_w <= 0.5 * shipped[bk],
                                f"curvlens {cl_w:.2e}; best peer {bk[0]} {shipped[bk]:.2e} (ratio {cl_w / shipped[bk]:.2f})"))
            if allp:
                bk = min(allp, key=allp.get)
                targets.append(("small: density W1 <= half of the best peer's (incl. PyHessian with torch.eig shim)",
                                cl_w <= 0.5 * allp[bk], f"curvlens {cl_w:.2e}; best {bk[0]} [{bk[1]}] {allp[bk]:.2e} (ratio {cl_w / allp[bk]:.2f})"))
            print("\n-- known peer failure 1: products averaged over uneven batches (small model, 200 + 56 samples) --")
            rows, usum = uneven_batch_rows(pb, H)
            print_table(rows, ["library", "data", "||Hv - Hv_exact|| / ||Hv_exact||", "note"])
            targets.append(("small: uneven batches weighted correctly (curvlens product error < 1e-5)",
                            usum["curvlens"] < 1e-5, ", ".join(f"{k} {v:.1e}" for k, v in usum.items())))
            print("\n-- known peer failure 2: PyHessian power iteration stops on eigenvalue change alone "
                  "(D=1000 least squares, bulk [0.95, 1], lambda_max 1.2) --")
            rows, perr = premature_stop_rows(list(range(3 if args.quick else 5)))
            print_table(rows, ["library", "setting", "products per seed", "lambda_max found", "max rel. error", "note"])
            targets.append(("lsq: curvlens lambda_max correct where PyHessian stops early (rel. error <= 1e-3)",
                            perr["curvlens"] <= 1e-3, f"curvlens {perr['curvlens']:.1e}, PyHessian {perr['PyHessian']:.1e}"))
        print()

    print("== targets ==")
    for label, ok, detail in targets:
        print(f"[{'met' if ok else 'NOT met'}] {label}: {detail}")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
