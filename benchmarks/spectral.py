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

Run:  .venv-bench/bin/python benchmarks/spectral.py [--models small,mlp,cnn,transformer] [--quick]
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

SIZES = {"mlp": 512, "cnn": 256, "transformer": 128}
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


# ------------------------------------------------------------------------------ trace
def trace_rows(pb, exact_trace, seeds):
    from curvlens.estimators import hutchinson_trace, hutchpp_trace, krylov_trace, xtrace

    def cl(fn, name):
        def run(seed):
            budget = peers.Budget(10**9)

            def f():
                res = fn(peers.curvlens_operator(pb), 100, generator=seed)
                budget.count = res.info.matvecs
                return [res.estimate], None
            return peers._guarded("curvlens", f"{name}(num_matvecs=100)", f, budget)
        return run

    methods = [
        cl(krylov_trace, "krylov_trace"), cl(xtrace, "xtrace"), cl(hutchpp_trace, "hutchpp_trace"),
        cl(hutchinson_trace, "hutchinson_trace"),
        lambda s: peers.pyhessian_trace(pb, seed=s, maxIter=100, tol=0.0),
        lambda s: peers.pyhessian_trace(pb, seed=s),
        lambda s: peers.eigenthings_trace(pb, seed=s, method="hutch++"),
        lambda s: peers.eigenthings_trace(pb, seed=s, method="hutchinson"),
        lambda s: peers.curvlinops_trace(pb, seed=s, method="xtrace", num=100),
        lambda s: peers.curvlinops_trace(pb, seed=s, method="hutchpp_trace", num=99),
        lambda s: peers.curvlinops_trace(pb, seed=s, method="hutchinson_trace", num=100),
    ]
    rows, summary = [], {}
    for m in methods:
        runs = [m(s) for s in seeds]
        errs = [abs(r.values[0] - exact_trace) / abs(exact_trace) for r in runs if not r.error]
        err_txt = next((r.error for r in runs if r.error), "")
        mean = float(np.mean(errs)) if errs else math.nan
        r0 = runs[0]
        summary[(r0.library, r0.setting)] = (mean, float(np.mean([r.matvecs for r in runs])))
        rows.append({
            "library": r0.library, "setting": r0.setting,
            "products (mean)": fmt(float(np.mean([r.matvecs for r in runs])), 1),
            "seconds (mean)": fmt(float(np.mean([r.seconds for r in runs])), 3),
            "mean |rel. error|": (f"{mean:.2e} +- {np.std(errs, ddof=1) / math.sqrt(len(errs)):.1e}"
                                  if len(errs) > 1 else "n/a"),
            "max |rel. error|": f"{max(errs):.2e}" if errs else "n/a",
            "note": err_txt,
        })
    return rows, summary


def dense_trace_rows(H: np.ndarray, seeds):
    """Same estimators on the exact Hessian matrix (cheap products), many seeds: less seed luck."""
    import curvlinops
    from hessian_eigenthings import LambdaOperator, trace as ht_trace

    from curvlens.estimators import hutchinson_trace, krylov_trace, xtrace
    from curvlens.operators import DenseOperator

    Ht = torch.from_numpy(H)
    exact = float(np.trace(H))

    def seeded(fn):
        def run(s):
            torch.manual_seed(s)  # curvlinops' probes come from the global RNG
            return fn(s)
        return run

    lam = LambdaOperator(lambda v: Ht @ v, H.shape[0], dtype=torch.float64)
    methods = [
        ("curvlens", "krylov_trace(100)", lambda s: krylov_trace(DenseOperator(Ht), 100, generator=s).estimate),
        ("curvlens", "xtrace(100)", lambda s: xtrace(DenseOperator(Ht), 100, generator=s).estimate),
        ("curvlens", "hutchinson_trace(100)", lambda s: hutchinson_trace(DenseOperator(Ht), 100, generator=s).estimate),
        ("hessian-eigenthings", "trace(hutch++, 100)", lambda s: ht_trace(lam, num_matvecs=100, seed=s).estimate),
        ("hessian-eigenthings", "trace(hutchinson, 100)",
         lambda s: ht_trace(lam, num_matvecs=100, method="hutchinson", seed=s).estimate),
        ("curvlinops", "xtrace(100)", seeded(lambda s: float(curvlinops.xtrace(Ht, 100)))),
        ("curvlinops", "hutchpp_trace(99)", seeded(lambda s: float(curvlinops.hutchpp_trace(Ht, 99)))),
        ("curvlinops", "hutchinson_trace(100)", seeded(lambda s: float(curvlinops.hutchinson_trace(Ht, 100)))),
    ]
    rows, summary = [], {}
    for lib, label, fn in methods:
        try:
            errs = np.array([abs(fn(s) - exact) / abs(exact) for s in seeds])
            summary[(lib, label)] = float(errs.mean())
            rows.append({"library": lib, "setting": label,
                         "mean |rel. error|": f"{errs.mean():.2e} +- {errs.std(ddof=1) / math.sqrt(len(errs)):.1e}",
                         "note": ""})
        except Exception as e:  # noqa: BLE001
            summary[(lib, label)] = math.nan
            rows.append({"library": lib, "setting": label, "mean |rel. error|": "n/a", "note": f"{type(e).__name__}: {e}"[:90]})
    d = np.diag(H)
    sd = math.sqrt(2 * (np.sum(H * H) - np.sum(d * d)) / 100) / abs(exact)
    rows.append({"library": "(theory)", "setting": "Rademacher Hutchinson, 100 probes",
                 "mean |rel. error|": f"{sd * math.sqrt(2 / math.pi):.2e}", "note": "sqrt(2/pi) * exact std"})
    return rows, summary


# ------------------------------------------------------------------------------ density
def pb_dim(pb) -> int:
    return sum(p.numel() for p in pb.model.parameters() if p.requires_grad)


def density_rows(pb, eigs, seeds, probes, steps):
    from curvlens.estimators.density import spectral_density
    from curvlens.estimators.wasserstein import wasserstein_1

    from curvlens.estimators._density_budget import split_budget

    def cl(seed, **kw):
        budget = peers.Budget(10**9)
        label = ", ".join(f"{k}={v}" for k, v in kw.items())

        def f():
            r = spectral_density(peers.curvlens_operator(pb), generator=seed, **kw)
            budget.count = r.info.matvecs
            return None, {"nodes": r.nodes.numpy(), "weights": r.weights.numpy()}
        return peers._guarded("curvlens", f"spectral_density({label})", f, budget)

    # curvlens' own split of the budget (its num_matvecs API), its explicit 10 x 80, and every
    # peer at both the shared 10 x 80 and curvlens' split, so no library is held to a worse split.
    sp, ss = split_budget(probes * steps, pb_dim(pb))
    methods = [lambda s: cl(s, num_matvecs=probes * steps), lambda s: cl(s, num_probes=probes, num_steps=steps)]
    for P, m in ((probes, steps), (sp, ss)):
        methods += [
            lambda s, P=P, m=m: peers.pyhessian_density(pb, seed=s, steps=m, probes=P),
            lambda s, P=P, m=m: peers.eigenthings_density(pb, seed=s, steps=m, probes=P),
            lambda s, P=P, m=m: peers.curvlinops_density(pb, seed=s, steps=m, probes=P),
            lambda s, P=P, m=m: peers.pyhessian_density(pb, seed=s, steps=m, probes=P, shim=True),
        ]
    width = float(eigs.max() - eigs.min())
    rows, summary = [], {}
    for m in methods:
        runs = [m(s) for s in seeds]
        w1 = [wasserstein_1(r.extra["nodes"], r.extra["weights"], eigs) for r in runs if not r.error]
        r0 = runs[0]
        mean = float(np.mean(w1)) if w1 else math.nan
        summary[(r0.library, r0.setting)] = mean
        rows.append({
            "library": r0.library, "setting": r0.setting,
            "products (mean)": fmt(float(np.mean([r.matvecs for r in runs])), 1),
            "seconds (mean)": fmt(float(np.mean([r.seconds for r in runs])), 2),
            "W1 (mean)": f"{mean:.2e}" if w1 else "n/a",
            "W1 / spectral width": f"{mean / width:.1e}" if w1 else "n/a",
            "note": next((r.error for r in runs if r.error), ""),
        })
    return rows, summary


# ------------------------------------------------------------------------------ known failures
def uneven_batch_rows(pb, H):
    """Products over batches of 200 and 56 samples vs the exact full-data product."""
    from curvlens.operators import HessianOperator

    data = [(pb.x[:200], pb.y[:200]), (pb.x[200:], pb.y[200:])]
    v = torch.randn(pb.dim, generator=torch.Generator().manual_seed(7))
    ref = H @ v.double().numpy()
    big = peers.Budget(10**9)

    def flat(ts):
        return torch.cat([t.reshape(-1) for t in ts]).detach().double().numpy()

    def ph():
        h = peers.pyhessian_make(pb, data)
        shaped, i = [], 0
        for p in h.params:
            shaped.append(v[i : i + p.numel()].view_as(p))
            i += p.numel()
        out = flat(h.dataloader_hv_product(shaped)[1])
        peers._pyhessian_cleanup(pb)
        return out

    cases = [
        ("curvlens", lambda: (HessianOperator(pb.model, pb.loss, data) @ v).double().numpy()),
        ("hessian-eigenthings", lambda: peers.eigenthings_operator(pb, big, data).matvec(v).double().numpy()),
        ("curvlinops", lambda: (peers.curvlinops_operator(pb, big, data) @ v).double().numpy()),
        ("PyHessian", ph),
    ]
    rows, summary = [], {}
    for lib, fn in cases:
        try:
            e = float(np.linalg.norm(fn() - ref) / np.linalg.norm(ref))
            rows.append({"library": lib, "data": "batches of 200 + 56", "||Hv - Hv_exact|| / ||Hv_exact||": f"{e:.1e}", "note": ""})
        except Exception as ex:  # noqa: BLE001
            e = math.nan
            rows.append({"library": lib, "data": "batches of 200 + 56", "||Hv - Hv_exact|| / ||Hv_exact||": "n/a",
                         "note": f"{type(ex).__name__}: {ex}"[:90]})
        summary[lib] = e
    return rows, summary


def premature_stop_rows(seeds):
    """Linear least squares whose Hessian has a 999-eigenvalue bulk in [0.95, 1] and top 1.2."""
    D = 1000
    g = torch.Generator().manual_seed(3)
    lam = torch.cat([torch.linspace(0.95, 1.0, D - 1, dtype=torch.float64), torch.tensor([1.2], dtype=torch.float64)])
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    X = (math.sqrt(D / 2) * lam.sqrt()[:, None] * Q.T).float()  # (2/n) X^T X = Q diag(lam) Q^T, n = D
    torch.manual_seed(0)
    model = nn.Linear(D, 1, bias=False)
    pb = peers.Problem("lsq", model, nn.MSELoss(), X, torch.zeros(D, 1))
    rows, errs = [], {}
    for lib, fn in [("PyHessian", lambda s: peers.pyhessian_topk(pb, 1, seed=s, limit=5000)),
                    ("curvlens", lambda s: peers.curvlens_topk(pb, 1, seed=s, limit=5000))]:
        runs = [fn(s) for s in seeds]
        e = [abs(r.values[0] - 1.2) / 1.2 for r in runs if not r.error]
        errs[lib] = max(e) if e else math.nan
        rows.append({"library": lib, "setting": runs[0].setting,
                     "products per seed": " ".join(str(r.matvecs) for r in runs),
                     "lambda_max found": " ".join(f"{r.values[0]:.4f}" if not r.error else "err" for r in runs),
                     "max rel. error": f"{max(e):.1e}" if e else "n/a",
                     "note": next((r.error for r in runs if r.error), "true lambda_max = 1.2")})
    return rows, errs


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
            model, loss, x, y = make_problem(name, SIZES[name])
            pb = peers.Problem(name, model, loss, x, y)
            eigs, ref_note = reference_top(pb, 5)
        ref5 = np.sort(eigs)[::-1][:5]
        print(f"== {name}: {pb.dim:,} parameters, {len(pb.y)} samples (one batch) ==")
        print(f"reference: {ref_note}")
        print(f"reference top-5: {', '.join(f'{v:.6g}' for v in ref5)}")
        if name == "small":
            print(f"exact spectrum: [{eigs.min():.4g}, {eigs.max():.4g}], trace {eigs.sum():.6g}, "
                  f"{int((eigs < 0).sum())} negative eigenvalues")
        grad_s = gradient_seconds(pb)
        print(f"one full-batch gradient: {grad_s:.3g} CPU s ('x gradient' = CPU seconds / this)")
        libraries = None if args.libraries is None else args.libraries.split(",")
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
        if name == "small" and not args.topk_only:
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
