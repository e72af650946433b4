"""Initial saddle-free Newton settings from a measured spectrum (:class:`~curvlens.AnalysisResult`).

- ``damping`` is the curvature scale below which the directions that get no escape step count
  as flat: ``|lambda| + damping`` never falls below it (which eigenvalues get an escape step is
  decided by the optimizer's relative ``negative_tol``, not by the damping). It starts at the
  mean eigenvalue ``trace / D`` (as for Newton-CG; else ``1e-3 lambda_max``) and, when the
  Hessian has a measured negative eigenvalue, at most ``|lambda_min| / 2``, so that directions
  as curved as the saddle's are not damped by more than half their curvature.
- ``negative``: ``"escape"`` when the measurement shows a saddle (negative spectral mass above
  the recommender's saddle threshold, or ``lambda_min < -damping``), else ``"abs"`` (the two
  rules agree where the subspace has no clearly negative eigenvalue; ``"abs"`` says so
  explicitly).
- ``trust_radius``: the length ``||g|| / (|lambda_min| + damping)`` of the saddle-free step
  along the most negative direction when the gradient norm was measured (``gradient_noise``),
  the length the ``|lambda|^{-1}`` rule could take there; the radius then doubles after every
  good step. Else ``||g|| / (lambda_max + damping)`` (a Cauchy-like step) without negative
  curvature, and the default 1 when the gradient norm was not measured.
- ``lr=1``: the saddle-free step is scale-free; the trust region and the acceptance test
  guard it.
"""

from __future__ import annotations

import math

from curvlens.recommend import thresholds as T

__all__ = ["settings_from_analysis"]


def _num(summary: dict, key: str) -> float | None:
    v = summary.get(key)
    if v is None or isinstance(v, (bool, str)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def settings_from_analysis(result) -> tuple[dict, tuple[str, ...]]:
    """(keyword arguments for SaddleFreeNewton, one reason per setting)."""
    if not hasattr(result, "summary") or not callable(result.summary):
        raise TypeError(f"result: expected a curvlens AnalysisResult (from curvlens.analyze), got "
                        f"{type(result).__name__}; run result = curvlens.analyze(model, loss_fn, data, "
                        "curvature='hessian') first")
    s = result.summary()
    lmax, lmin, trace = _num(s, "lambda_max"), _num(s, "lambda_min"), _num(s, "trace")
    nm, dim = _num(s, "negative_mass"), s.get("num_params") or 0
    measured = s.get("curvature") or getattr(result, "curvature", "?")
    reasons: list[str] = []
    if trace is not None and dim and trace > 0:
        damping = trace / dim
        reasons.append(f"damping={damping:.3g}: the mean eigenvalue trace/D = {trace:.3g}/{dim} of the measured "
                       f"{measured} curvature")
    elif lmax is not None and lmax > 0:
        damping = 1e-3 * lmax
        reasons.append(f"damping={damping:.3g}: 1e-3 lambda_max (lambda_max={lmax:.3g}; the trace was not measured)")
    else:
        damping = 1e-2
        reasons.append("damping=0.01: neither the trace nor a positive lambda_max was measured")
    hessian = measured == "hessian"
    if hessian and lmin is not None and lmin < 0 and damping > 0.5 * abs(lmin):
        damping = 0.5 * abs(lmin)
        reasons.append(f"damping lowered to {damping:.3g} = |lambda_min|/2 (lambda_min={lmin:.3g}) so that "
                       "directions as curved as the saddle's are damped by at most half their curvature")
    if not hessian:
        negative = "escape"
        reasons.append(f"negative='escape': the {measured} is PSD by construction, so it shows no saddles; the "
                       "default rule is kept (measure curvature='hessian' to decide)")
    elif (nm is not None and nm > T.NEGATIVE_MASS_SADDLE) or (lmin is not None and lmin < -damping):
        negative = "escape"
        why = (f"negative mass {nm:.3g} > {T.NEGATIVE_MASS_SADDLE}" if nm is not None and nm > T.NEGATIVE_MASS_SADDLE
               else f"lambda_min={lmin:.3g} < -damping")
        reasons.append(f"negative='escape': {why} (a saddle region): trust-region-length steps along negative "
                       "curvature leave it faster than |lambda|^-1 g, which shrinks near the saddle")
    else:
        negative = "abs"
        reasons.append("negative='abs': no measured negative curvature beyond the damping, so Dauphin's "
                       "|lambda|^-1 rule is used in every direction")
    kw: dict = {"damping": damping, "negative": negative, "lr": 1.0}
    gn = getattr(result, "gradient_noise", None)
    gsq = getattr(gn, "grad_norm_sq", None) if gn is not None else None
    gnorm = math.sqrt(gsq) if isinstance(gsq, (int, float)) and math.isfinite(gsq) and gsq > 0 else None
    if gnorm is not None and hessian and lmin is not None and lmin < -damping:
        kw["trust_radius"] = gnorm / (abs(lmin) + damping)
        reasons.append(f"trust_radius={kw['trust_radius']:.3g}: ||g|| / (|lambda_min| + damping) = {gnorm:.3g} / "
                       f"{abs(lmin) + damping:.3g}, the saddle-free step along the most negative direction; it "
                       "doubles after every good step")
    elif gnorm is not None and lmax is not None and lmax > 0:
        kw["trust_radius"] = gnorm / (lmax + damping)
        reasons.append(f"trust_radius={kw['trust_radius']:.3g}: ||g|| / (lambda_max + damping) = {gnorm:.3g} / "
                       f"{lmax + damping:.3g}, a steepest-descent step stable for the largest curvature")
    else:
        reasons.append("trust_radius=1 (the default): the gradient norm was not measured (run analyze with the "
                       "gradient-noise stage to set it)")
    kw["max_trust_radius"] = 100.0 * kw.get("trust_radius", 1.0)
    reasons.append("lr=1: the saddle-free step is scale-free; the trust region and the acceptance test guard it")
    return kw, tuple(reasons)
