"""Adapters running curvlens and its peers on one problem, counting curvature products.

Every adapter returns a :class:`Run`: the numbers it produced, the products it spent (counted
by wrapping the function or operator each library calls, never taken from the library's own
bookkeeping), wall time including operator construction, and the error text if it failed.
A product budget guard (:class:`Budget`) stops peers whose settings would run for hours (for
example ARPACK with ``tol=0`` on float32 products) and records that as a failure.

Peers that draw from the global RNG (PyHessian, curvlinops' probes) get ``torch.manual_seed``
right before the call; this is a benchmark script, the library itself never does that.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch


class BudgetExceeded(RuntimeError):
    pass


@dataclass
class Budget:
    """Counts products (columns) and raises :class:`BudgetExceeded` past ``limit``."""

    limit: int
    count: int = 0

    def add(self, k: int = 1) -> None:
        self.count += int(k)
        if self.count > self.limit:
            raise BudgetExceeded(f"stopped by the benchmark after {self.limit} products")


@dataclass
class Run:
    library: str
    setting: str
    values: np.ndarray | None = None
    matvecs: int = 0
    seconds: float = float("nan")
    error: str = ""
    extra: dict = field(default_factory=dict)


@dataclass
class Problem:
    name: str
    model: torch.nn.Module
    loss: torch.nn.Module
    x: torch.Tensor
    y: torch.Tensor
    batches: list | None = None  # curvlens' data when set (uneven batches); peers get the one batch (x, y)

    @property
    def params(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    @property
    def dim(self) -> int:
        return sum(p.numel() for p in self.params)


def _guarded(library: str, setting: str, fn, budget: Budget) -> Run:
    """Run ``fn`` and record its products and CPU time (``time.process_time``: the honest clock
    on a shared machine; run with one thread so CPU time is the time of one core)."""
    t0 = time.process_time()
    try:
        values, extra = fn()
        run = Run(library, setting, None if values is None else np.asarray(values, dtype=np.float64),
                  budget.count, time.process_time() - t0, extra=extra or {})
    except Exception as e:  # noqa: BLE001 - every peer failure is a result, printed in the table
        run = Run(library, setting, None, budget.count, time.process_time() - t0,
                  error=f"{type(e).__name__}: {str(e).splitlines()[0][:90] if str(e) else ''}")
    return run


# ------------------------------------------------------------------------------ curvlens
def curvlens_operator(pb: Problem, data=None):
    from curvlens.operators import HessianOperator

    if data is None:
        data = pb.batches if pb.batches is not None else (pb.x, pb.y)
    return HessianOperator(pb.model, pb.loss, data)


def curvlens_topk(pb: Problem, k: int, *, seed: int, limit: int, rtol: float = 1e-3,
                  block_size: int | None = None) -> Run:
    from curvlens.linalg import top_eigenpairs

    budget = Budget(limit)

    def fn():
        op = curvlens_operator(pb)
        res = top_eigenpairs(op, k, rtol=rtol, max_matvecs=min(limit, max(500, 150 * k)), block_size=block_size,
                             generator=seed)
        budget.count = res.info.matvecs  # cross-checked against op.num_matvecs below
        assert op.num_matvecs == res.info.matvecs
        # certified at rtol itself (not the rounding floor atol): residual <= rtol * |l| for every pair
        at_rtol = float((res.residuals / (rtol * res.eigenvalues.abs())).max())
        return res.eigenvalues.numpy(), {"certified": bool(res.converged.all()), "res_over_rtol": at_rtol}

    bs = "" if block_size is None else f", block_size={block_size}"
    return _guarded("curvlens", f"top_eigenpairs(k={k}, rtol={rtol:g}{bs})", fn, budget)


# ------------------------------------------------------------------------------ PyHessian
@contextlib.contextmanager
def _count_pyhessian(budget: Budget):
    import pyhessian  # noqa: F401  (the package attribute ``hessian`` is the class, not the module)

    ph = sys.modules["pyhessian.hessian"]
    orig_hvp, orig_dl = ph.hessian_vector_product, ph.hessian.dataloader_hv_product

    def hvp(*a, **kw):
        budget.add(1)
        return orig_hvp(*a, **kw)

    def dl(self, v):
        budget.add(1)
        return orig_dl(self, v)

    ph.hessian_vector_product, ph.hessian.dataloader_hv_product = hvp, dl
    try:
        yield
    finally:
        ph.hessian_vector_product, ph.hessian.dataloader_hv_product = orig_hvp, orig_dl


def pyhessian_make(pb: Problem, data=None):
    from pyhessian import hessian as PyHessian

    pb.model.zero_grad(set_to_none=True)  # PyHessian accumulates into .grad (with graph)
    if data is None:
        return PyHessian(pb.model, pb.loss, data=(pb.x, pb.y), cuda=False)
    return PyHessian(pb.model, pb.loss, dataloader=data, cuda=False)


def _pyhessian_cleanup(pb: Problem) -> None:
    pb.model.zero_grad(set_to_none=True)


def pyhessian_topk(pb: Problem, k: int, *, seed: int, limit: int, maxIter: int = 100, tol: float = 1e-3) -> Run:
    budget = Budget(limit)

    def fn():
        with _count_pyhessian(budget):
            torch.manual_seed(seed)  # PyHessian draws its start vectors from the global RNG
            h = pyhessian_make(pb)
            vals, _ = h.eigenvalues(maxIter=maxIter, tol=tol, top_n=k)
        del h
        _pyhessian_cleanup(pb)
        return sorted(vals, reverse=True), None

    run = _guarded("PyHessian", f"eigenvalues(top_n={k}, maxIter={maxIter}, tol={tol:g})", fn, budget)
    _pyhessian_cleanup(pb)
    return run


def pyhessian_trace(pb: Problem, *, seed: int, maxIter: int = 100, tol: float = 1e-3) -> Run:
    budget = Budget(10 * maxIter)

    def fn():
        with _count_pyhessian(budget):
            torch.manual_seed(seed)
            h = pyhessian_make(pb)
            samples = h.trace(maxIter=maxIter, tol=tol)
        return [float(np.mean(samples))], None

    run = _guarded("PyHessian", f"trace(maxIter={maxIter}, tol={tol:g})", fn, budget)
    _pyhessian_cleanup(pb)
    return run


def pyhessian_density(pb: Problem, *, seed: int, steps: int, probes: int, shim: bool = False) -> Run:
    budget = Budget(probes * steps + 1)

    def fn():
        with _count_pyhessian(budget), _torch_eig_shim(shim):
            torch.manual_seed(seed)
            h = pyhessian_make(pb)
            nodes, weights = h.density(iter=steps, n_v=probes)
        return None, {"nodes": np.asarray(nodes, dtype=np.float64), "weights": np.asarray(weights, dtype=np.float64)}

    label = f"density(iter={steps}, n_v={probes})" + (" + torch.eig shim" if shim else "")
    run = _guarded("PyHessian", label, fn, budget)
    _pyhessian_cleanup(pb)
    return run


@contextlib.contextmanager
def _torch_eig_shim(active: bool):
    """Stand-in for ``torch.eig`` (removed in torch 2.x) so PyHessian's SLQ can be scored at all."""
    had = hasattr(torch, "eig")
    old = getattr(torch, "eig", None)
    if active:
        def eig(T, eigenvectors=False):
            w, V = torch.linalg.eigh(T)
            return torch.stack([w, torch.zeros_like(w)], dim=1), V

        torch.eig = eig
    try:
        yield
    finally:
        if active:
            if had:
                torch.eig = old
            else:
                del torch.eig


# ------------------------------------------------------------------------------ hessian-eigenthings
def eigenthings_operator(pb: Problem, budget: Budget, data=None):
    from hessian_eigenthings import HessianOperator, supervised_loss

    op = HessianOperator(pb.model, [(pb.x, pb.y)] if data is None else data, supervised_loss(pb.loss))
    inner = op.matvec

    def matvec(v):
        budget.add(1)
        return inner(v)

    op.matvec = matvec
    return op


def eigenthings_topk(pb: Problem, k: int, *, seed: int, limit: int, max_iter: int | None = None) -> Run:
    from hessian_eigenthings import lanczos

    budget = Budget(limit)

    def fn():
        op = eigenthings_operator(pb, budget)
        res = lanczos(op, k=k, max_iter=max_iter, seed=seed)
        return sorted(res.eigenvalues.tolist(), reverse=True), {"converged": bool(res.converged.all())}

    return _guarded("hessian-eigenthings", f"lanczos(k={k}, max_iter={max_iter or f'default={2 * k}'})", fn, budget)


def eigenthings_trace(pb: Problem, *, seed: int, method: str, num: int = 100) -> Run:
    from hessian_eigenthings import trace

    budget = Budget(num + 3)

    def fn():
        op = eigenthings_operator(pb, budget)
        return [trace(op, num_matvecs=num, method=method, seed=seed).estimate], None

    return _guarded("hessian-eigenthings", f"trace({method}, num_matvecs={num})", fn, budget)


def eigenthings_density(pb: Problem, *, seed: int, steps: int, probes: int) -> Run:
    from hessian_eigenthings import spectral_density

    budget = Budget(probes * steps)

    def fn():
        op = eigenthings_operator(pb, budget)
        r = spectral_density(op, num_runs=probes, lanczos_steps=steps, seed=seed)
        w = r.raw_weights.double().numpy()
        x = np.nan_to_num(r.raw_eigenvalues.double().numpy(), nan=0.0)  # NaN pads carry weight 0
        return None, {"nodes": x, "weights": w}

    return _guarded("hessian-eigenthings", f"spectral_density(num_runs={probes}, lanczos_steps={steps})", fn, budget)


# ------------------------------------------------------------------------------ curvlinops
def curvlinops_operator(pb: Problem, budget: Budget, data=None):
    from curvlinops import HessianLinearOperator

    op = HessianLinearOperator(pb.model, pb.loss, pb.params, [(pb.x, pb.y)] if data is None else data,
                               check_deterministic=False)
    inner = op._matmat

    def matmat(M):
        budget.add(M[0].shape[-1])
        return inner(M)

    op._matmat = matmat
    return op


def curvlinops_topk(pb: Problem, k: int, *, seed: int, limit: int, tol: float = 0.0) -> Run:
    """curvlinops has no eigensolver; its documentation uses ``scipy.sparse.linalg.eigsh``."""
    from scipy.sparse.linalg import eigsh

    budget = Budget(limit)

    def fn():
        op = curvlinops_operator(pb, budget)
        v0 = np.random.default_rng(seed).standard_normal(op.shape[0])
        vals = eigsh(op.to_scipy(), k=k, which="LA", tol=tol, v0=v0, return_eigenvectors=False)
        return sorted(vals.tolist(), reverse=True), None

    return _guarded("curvlinops", f"eigsh(k={k}, which='LA', tol={tol:g})", fn, budget)


def curvlinops_trace(pb: Problem, *, seed: int, method: str, num: int) -> Run:
    import curvlinops

    budget = Budget(num + 3)

    def fn():
        op = curvlinops_operator(pb, budget)
        torch.manual_seed(seed)  # curvlinops' probes come from the global RNG
        return [float(getattr(curvlinops, method)(op, num_matvecs=num))], None

    return _guarded("curvlinops", f"{method}(num_matvecs={num})", fn, budget)


def curvlinops_density(pb: Problem, *, seed: int, steps: int, probes: int) -> Run:
    """The Lanczos runs behind ``lanczos_approximate_spectrum(A, ncv=steps, num_repeats=probes)``."""
    from curvlinops.papyan2020traces.spectrum import fast_lanczos

    budget = Budget(probes * steps)

    def fn():
        op = curvlinops_operator(pb, budget)
        torch.manual_seed(seed)  # fast_lanczos draws its start vector from the global RNG
        runs = [fast_lanczos(op, steps) for _ in range(probes)]
        nodes = np.stack([r[0].double().numpy() for r in runs])
        weights = np.stack([(r[1][0, :] ** 2).double().numpy() for r in runs])
        return None, {"nodes": nodes, "weights": weights}

    return _guarded("curvlinops", f"lanczos_approximate_spectrum(ncv={steps}, num_repeats={probes})", fn, budget)
