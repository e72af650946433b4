"""Initial Newton-CG settings from a measured spectrum (:class:`~curvlens.AnalysisResult`).

The damping ``lambda`` sets the scale below which curvature is ignored. It starts at
``1e-2 lambda_max``: scale-free, and within the range where the tuned damping of the benchmark
problems lies (``lambda / lambda_max`` of 4e-5 to 4e-4 on ill-conditioned logistic regression,
5e-3 to 5e-2 on a physics-informed network, about 7e-2 on a deep autoencoder); the
Levenberg-Marquardt rule then adapts it from the reduction ratio (Martens 2010, Sec. 4.1). The
mean eigenvalue ``trace / D`` is the fallback when ``lambda_max`` was not measured. On a Hessian with negative eigenvalues it is at least
``1.5 |lambda_min|`` so that ``H + lambda I`` starts positive definite. The CG budget follows
the damped condition number ``kappa = (lambda_max + lambda) / lambda``: CG needs about
``sqrt(kappa) / 2 * ln(2 / eps)`` iterations for a relative error ``eps`` (``eps = 1e-3``).
"""

from __future__ import annotations

import math

__all__ = ["DAMPING_FRACTION", "settings_from_analysis"]

#: initial damping as a fraction of the measured lambda_max
DAMPING_FRACTION = 1e-2


def _num(summary: dict, key: str) -> float | None:
    v = summary.get(key)
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def settings_from_analysis(result, curvature: str) -> tuple[dict, tuple[str, ...]]:
    """(keyword arguments for NewtonCG, one reason per setting)."""
    if not hasattr(result, "summary") or not callable(result.summary):
        raise TypeError(f"result: expected a curvlens AnalysisResult (from curvlens.analyze), got "
                        f"{type(result).__name__}; run result = curvlens.analyze(model, loss_fn, data) first")
    s = result.summary()
    lmax, lmin, trace = _num(s, "lambda_max"), _num(s, "lambda_min"), _num(s, "trace")
    dim = s.get("num_params") or 0
    measured = getattr(result, "curvature", "?")
    kw: dict = {}
    reasons: list[str] = []
    if lmax is not None and lmax > 0:
        lam = DAMPING_FRACTION * lmax
        reasons.append(f"damping={lam:.3g}: {DAMPING_FRACTION:g} lambda_max (lambda_max={lmax:.3g} of the measured "
                       f"{measured} curvature), so CG resolves the top two decades of the spectrum at first")
    elif trace is not None and dim and trace > 0:
        lam = trace / dim
        reasons.append(f"damping={lam:.3g}: the mean eigenvalue trace/D = {trace:.3g}/{dim} (lambda_max was not "
                       "measured)")
    else:
        lam = 1e-3
        reasons.append("damping=1e-3: neither lambda_max nor the trace was measured (NewtonCG's default)")
    if curvature == "hessian" and lmin is not None and lmin < 0 and lam < 1.5 * abs(lmin):
        lam = 1.5 * abs(lmin)
        reasons.append(f"damping raised to {lam:.3g} = 1.5 |lambda_min| (lambda_min={lmin:.3g} < 0) so that "
                       "H + damping I starts positive definite")
    kw["damping"] = lam
    if lmax is not None and lmax > 0:
        kappa = (lmax + lam) / lam
        it = int(min(500, max(10, math.ceil(0.5 * math.sqrt(kappa) * math.log(2e3)))))
        kw["cg_maxiter"] = it
        reasons.append(f"cg_maxiter={it}: damped condition number (lambda_max + damping) / damping = {kappa:.3g} "
                       "needs about sqrt(kappa)/2 ln(2/1e-3) CG iterations (clamped to [10, 500])")
    certified = s.get("lambda_max_certified")
    if lmax is not None and certified is False:
        kw["lr"] = 0.5
        reasons.append("lr=0.5: lambda_max is not certified, so the first steps start at half length "
                       "(the line search still checks each step)")
    else:
        kw["lr"] = 1.0
        reasons.append("lr=1: the damped Newton step is scale-free; the Armijo line search shortens it if needed")
    return kw, tuple(reasons)
