"""Rows of the spectral benchmark (:mod:`spectral`): trace, density and two known peer failures.

Each function runs curvlens and its peers (through :mod:`_spectral_peers`) on one problem and
returns printable rows plus a summary for the target checks; see ``benchmarks/spectral.py``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

import _spectral_peers as peers
from _common import fmt

DENSITY_BUDGET = 100

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


def density_budget_rows(pb, eigs, seeds, budget=DENSITY_BUDGET):
    """W1 at one product budget: curvlens' split and the simplest split (one probe, plain Gauss
    rule), against every peer at several splits of the same budget (its best split is its score)."""
    from curvlens.estimators._density_budget import split_budget
    from curvlens.estimators.density import spectral_density
    from curvlens.estimators.wasserstein import wasserstein_1

    def cl(seed, **kw):
        b = peers.Budget(10**9)
        label = ", ".join(f"{k}={v}" for k, v in kw.items())

        def f():
            r = spectral_density(peers.curvlens_operator(pb), generator=seed, **kw)
            b.count = r.info.matvecs
            return None, {"nodes": r.nodes.numpy(), "weights": r.weights.numpy()}
        return peers._guarded("curvlens", f"spectral_density({label})", f, b)

    sp, ss = split_budget(budget, pb_dim(pb))
    methods = [("curvlens", lambda s: cl(s, num_matvecs=budget)),
               ("curvlens", lambda s: cl(s, num_probes=1, num_steps=budget, deflate=False))]
    for P in (1, 2, 4, 10):
        m = budget // P
        methods += [
            ("peer", lambda s, P=P, m=m: peers.pyhessian_density(pb, seed=s, steps=m, probes=P, shim=True)),
            ("peer", lambda s, P=P, m=m: peers.eigenthings_density(pb, seed=s, steps=m, probes=P)),
            ("peer", lambda s, P=P, m=m: peers.curvlinops_density(pb, seed=s, steps=m, probes=P)),
        ]
    rows, summary = [], {}
    for kind, m in methods:
        runs = [m(s) for s in seeds]
        w1 = np.array([wasserstein_1(r.extra["nodes"], r.extra["weights"], eigs) for r in runs if not r.error])
        r0 = runs[0]
        mean = float(w1.mean()) if w1.size else math.nan
        summary[(r0.library, r0.setting)] = mean
        rows.append({
            "library": r0.library, "setting": r0.setting,
            "products (mean)": fmt(float(np.mean([r.matvecs for r in runs])), 1),
            "W1 (mean +- se)": f"{mean:.3e} +- {w1.std(ddof=1) / math.sqrt(w1.size):.1e}" if w1.size > 1 else "n/a",
            "note": next((r.error for r in runs if r.error), ""),
        })
    return rows, summary, (sp, ss)


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


# ------------------------------------------------------------------------------ Krylov limit
def krylov_limit_rows(op, ref, seeds, *, at: int = 22, max_steps: int = 36, rtol: float = 1e-3):
    """The fewest products in which *any* Krylov method from a random start can certify each pair.

    For a unit ``u = Q_m s`` of the m-step Krylov space, ``A Q_m = Q_m T_m + beta_m q_{m+1} e_m^T``
    gives ``||A u - t u||^2 = ||(T_m - t I) s||^2 + beta_m^2 s_m^2``: the smallest residual of any
    vector of the space for the shift ``t`` is the smallest singular value of
    ``[T_m - t I; beta_m e_m^T]``. Minimised over 41 shifts within ``rtol`` of each reference
    eigenvalue, it says whether the space can hold a vector certifying that eigenvalue to ``rtol``.
    One fully reorthogonalized Lanczos run of ``max_steps`` products per seed; its leading
    ``m x m`` block is the m-step run.
    """
    from curvlens.linalg.lanczos import lanczos

    rows, first_all = [], []
    for seed in seeds:
        res = lanczos(op, max_steps, generator=torch.Generator().manual_seed(seed), store_basis=False)
        a, b = res.alphas, np.concatenate([res.betas, [res.residual_norm]])
        first = [None] * len(ref)
        best_at = [math.nan] * len(ref)
        for m in range(1, len(a) + 1):
            T = np.diag(a[:m]) + np.diag(b[: m - 1], 1) + np.diag(b[: m - 1], -1)
            bottom = np.zeros((1, m))
            bottom[0, -1] = b[m - 1]
            for i, lam in enumerate(ref):
                r = min(np.linalg.svd(np.vstack([T - t * np.eye(m), bottom]), compute_uv=False)[-1] / t
                        for t in lam * (1 + np.linspace(-rtol, rtol, 41)))
                if m == at:
                    best_at[i] = r
                if r <= rtol and first[i] is None:
                    first[i] = m
        first_all.append(first)
        rows.append({"seed": seed, f"min residual / lambda in K_{at}": " ".join(f"{v:.1e}" for v in best_at),
                     f"first m with a vector certified to {rtol:g}": " ".join(str(f) for f in first)})
    return rows, first_all
