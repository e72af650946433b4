"""Curvature noise versus batch size: how many samples give a stable top eigenvalue?

For each batch size ``B`` of a ladder, ``num_draws`` independent minibatches of ``B`` distinct
samples are drawn with the generator; on each, the minibatch operator ``A_B`` gives

* ``"lambda_max"``: its top eigenvalue (:func:`~curvlens.linalg.top_eigenpairs`),
* ``"trace"``: its trace (exact with ``D`` unit-vector products when ``D <= trace_probes``),
  else Hutchinson with *common probes* ``Z`` used for every minibatch and, when the full-data
  operator is given, as a control variate: ``tr(A) + mean_i z_i^T (A_B - A) z_i``. The probe
  error then scales with ``||A_B - A||_F`` (small) instead of ``||A_B||_F``, and its estimated
  variance is subtracted from the spread across draws (unbiased); where the difference is not
  clearly positive (the spread is within the probe error), the raw spread is kept as an upper
  bound, with a note, instead of a false zero,
* ``"directional"``: ``u^T A_B u`` along the full-data top eigenvector ``u`` (one product).

The spread across draws gives ``std(B)`` and the relative standard error of a single-minibatch
estimate ``rstderr(B) = std(B) / |full-data value|``. The model ``var(B) = a + b / B`` is
fitted by least squares on ``B var(B) = b + a B``. For a quantity that is a mean over samples
(trace, directional curvature) drawn without replacement the law is exact:
``var(B) = s^2 (N - B) / ((N - 1) B)``, i.e. ``a = -s^2 / (N - 1)`` and ``b = N s^2 / (N - 1)``
(``s^2`` the population variance of the per-sample values). ``critical_batch`` is the smallest
``B`` with ``a + b / B <= (target * |full value|)^2``.

Defaults (documented cost): ladder = the 5 largest powers of two below ``N`` (at least 2);
4 draws per rung; top eigenvalue with at most 40 products (``rtol=1e-3``); 8 trace probes.
Costs are counted in full-data product equivalents (a product on ``B`` samples counts
``B / N``). Degenerate cases give a defined answer plus a note: fewer than 2 samples (no
study), rungs larger than ``N`` (dropped), a curvature that does not depend on the data
(zero spread: ``critical_batch = 1``), a single rung (``a = 0`` assumed).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from curvlens._rng import resolve_generator
from curvlens.diagnostics._checks import check_callback, check_float, check_int
from curvlens.diagnostics._noise_fit import fit_noise_law, fit_variance_law, variance_interval
from curvlens.estimators import probe_vectors
from curvlens.linalg import top_eigenpairs
from curvlens.results import RunInfo, register_result

__all__ = ["NoiseStudyResult", "curvature_noise", "default_batch_sizes", "fit_variance_law", "QUANTITIES"]

QUANTITIES = ("lambda_max", "trace", "directional")


@register_result("noise_study")
@dataclass(frozen=True)
class NoiseStudyResult:
    """Spread of curvature quantities across minibatches, per batch size, and the fitted law.

    Attributes:
        batch_sizes: int64 ``(B,)`` ladder actually measured.
        quantities: names of the ``Q`` quantities (rows below).
        means, stds, rstderr: float64 ``(Q, B)``: mean over draws, std across draws (probe
            noise removed for the trace), and ``std / |full value|``.
        full_values: float64 ``(Q,)`` full-data values.
        fit_a, fit_b: float64 ``(Q,)`` of ``var(B) ~ a + b / B``.
        critical_batch: float64 ``(Q,)`` smallest batch with predicted rstderr <= target (inf
            only with fit status ``"floor_above_target"``, NaN only with ``"not_measured"``).
        target_rstderr: the target relative standard error.
        num_draws: minibatches per rung.
        notes: degenerate cases and budget decisions, one sentence each.
        info: matvecs (full-data equivalents), time, seed.
        rstderr_low, rstderr_high: float64 ``(Q, B)`` chi-square ``confidence`` interval of
            ``rstderr`` (NaN with fewer than 2 draws).
        critical_low, critical_high: float64 ``(Q,)`` bootstrap ``confidence`` interval of
            ``critical_batch`` (see :func:`~curvlens.diagnostics._noise_fit.fit_noise_law`).
        fit_status: per quantity, one of ``FIT_STATUSES`` (``"ok"``, ``"finite_population"``,
            ``"single_rung"``, ``"no_decrease"``, ``"constant"``, ``"floor_above_target"``,
            ``"not_measured"``); the reason is in ``notes`` whenever it is not ``"ok"``.
        confidence: coverage of the intervals.
    """

    batch_sizes: torch.Tensor
    quantities: tuple[str, ...]
    means: torch.Tensor
    stds: torch.Tensor
    rstderr: torch.Tensor
    full_values: torch.Tensor
    fit_a: torch.Tensor
    fit_b: torch.Tensor
    critical_batch: torch.Tensor
    target_rstderr: float
    num_draws: int
    notes: tuple[str, ...]
    info: RunInfo
    rstderr_low: torch.Tensor | None = None
    rstderr_high: torch.Tensor | None = None
    critical_low: torch.Tensor | None = None
    critical_high: torch.Tensor | None = None
    fit_status: tuple[str, ...] = ()
    confidence: float = 0.95

    def critical_interval(self, quantity: str) -> tuple[float, float]:
        """``(critical_low, critical_high)`` of one quantity by name (NaNs when not computed)."""
        if self.critical_low is None or self.critical_high is None:
            return math.nan, math.nan
        i = self.quantities.index(quantity)
        return float(self.critical_low[i]), float(self.critical_high[i])

    def critical(self, quantity: str) -> float:
        """``critical_batch`` of one quantity by name."""
        return float(self.critical_batch[self.quantities.index(quantity)])


def default_batch_sizes(num_samples: int, max_rungs: int = 5) -> list[int]:
    """The ``max_rungs`` largest powers of two ``2 <= B < num_samples``.

    Example:
        >>> default_batch_sizes(2000), default_batch_sizes(10)
        ([64, 128, 256, 512, 1024], [2, 4, 8])
    """
    ladder, b = [], 2
    while b < num_samples:
        ladder.append(b)
        b *= 2
    return ladder[-max_rungs:]


def _exact_trace(op) -> float:
    eye = torch.eye(op.dim, dtype=op.dtype, device=op.device)
    return float(torch.diagonal(op.matmat(eye)).double().sum())


#: probes per operator call of the trace quadratic forms (bounds the transient memory of a
#: batched product, which grows with the number of vectors: 308 MB for 4 against 60 MB for one on
#: a 1.07M-parameter MLP, at the same CPU time per probe)
PROBE_GROUP = 1


def _quadratic_forms(op, Z: torch.Tensor) -> torch.Tensor:
    """``z_i^T A z_i`` for the columns of ``Z`` (float64), :data:`PROBE_GROUP` products at a time."""
    return torch.cat([(Zg * op.matmat(Zg)).sum(dim=0).double()
                      for Zg in (Z[:, i:i + PROBE_GROUP] for i in range(0, Z.shape[1], PROBE_GROUP))])


def _common_probes(op, full_operator, k: int, gen: torch.Generator):
    """Rademacher probes shared by every minibatch, and the full operator's quadratic forms
    ``z_i^T A z_i`` (float64, ``k`` full-data products) when it is given; the products
    themselves are not kept."""
    Z = probe_vectors(op.dim, k, kind="rademacher", dtype=op.dtype, device=op.device, generator=gen)
    if full_operator is None:
        return Z, None, 0
    return Z, _quadratic_forms(full_operator, Z), k


def _probe_trace(op, Z: torch.Tensor, zAz: torch.Tensor | None, full_trace: float | None) -> tuple[float, float]:
    """Minibatch trace from the common probes: a control variate ``tr(A) + mean z^T (A_B - A) z``
    when ``z_i^T A z_i`` and ``tr(A)`` are known (error ~ ||A_B - A||_F), plain Hutchinson
    otherwise. Returns (estimate, estimated variance of its probe error)."""
    q = _quadratic_forms(op, Z)
    base = 0.0
    if zAz is not None and full_trace is not None:
        q = q - zAz
        base = float(full_trace)
    k = q.numel()
    return base + float(q.mean()), (float(q.var(unbiased=True)) / k if k > 1 else 0.0)


def curvature_noise(
    make_operator: Callable[[torch.Tensor], object],
    num_samples: int,
    *,
    full_values: dict[str, float] | None = None,
    direction: torch.Tensor | None = None,
    quantities: Sequence[str] = QUANTITIES,
    batch_sizes: Sequence[int] | None = None,
    num_draws: int = 4,
    target_rstderr: float = 0.1,
    confidence: float = 0.95,
    trace_probes: int = 8,
    eig_max_matvecs: int = 40,
    eig_rtol: float = 1e-3,
    full_operator: object | None = None,
    max_matvecs: float | None = None,
    deadline: float | None = None,
    generator: torch.Generator | int | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> NoiseStudyResult:
    """Measure the minibatch spread of curvature quantities over a ladder of batch sizes.

    Args:
        make_operator: ``make_operator(indices) -> CurvatureOperator`` on the samples ``indices``
            (an int64 tensor of distinct indices into ``range(num_samples)``).
        num_samples: ``N``.
        full_values: full-data value of each quantity (e.g. ``{"lambda_max": ..., "trace": ...,
            "directional": ...}``); quantities without one are dropped with a note.
        direction: full-data top eigenvector ``u`` (needed for ``"directional"``).
        quantities: subset of ``("lambda_max", "trace", "directional")``.
        batch_sizes: the ladder (default :func:`default_batch_sizes`); rungs ``> N`` are dropped.
        num_draws: independent minibatches per rung (>= 2 for a spread).
        target_rstderr: target relative standard error for ``critical_batch`` (default 10%).
        confidence: coverage of the intervals on ``rstderr`` and ``critical_batch`` (default 95%).
        trace_probes: Hutchinson probes per minibatch trace.
        eig_max_matvecs, eig_rtol: budget and tolerance of each minibatch top eigenvalue.
        full_operator: the full-data operator; its products with the common trace probes
            (``trace_probes`` products, counted) make the minibatch traces control variates.
        max_matvecs: budget in full-data product equivalents; draws, then the largest rungs,
            are cut (with a note) to fit.
        deadline: a ``time.perf_counter()`` value after which no new rung is started.
        generator: minibatch indices and probes (Generator, int seed or None).
        callback: ``callback(rungs_done, rungs_total)``.

    Example:
        >>> import torch
        >>> from curvlens.operators import DenseOperator
        >>> d = torch.linspace(1.0, 2.0, 64, dtype=torch.float64)  # per-sample curvature d_i
        >>> make = lambda idx: DenseOperator(torch.diag(d[idx].mean().reshape(1)))
        >>> res = curvature_noise(make, 64, full_values={"trace": float(d.mean())}, quantities=["trace"],
        ...                       num_draws=3, generator=0)
        >>> res.batch_sizes.tolist(), res.quantities
        ([2, 4, 8, 16, 32], ('trace',))
    """
    t0 = time.perf_counter()
    if not callable(make_operator):
        raise TypeError(f"make_operator: expected a callable(indices) -> CurvatureOperator, got {type(make_operator).__name__}")
    N = check_int(num_samples, "num_samples", low=0)
    num_draws = check_int(num_draws, "num_draws", low=1, fix="use num_draws=4 (>= 2 to measure a spread)")
    target = check_float(target_rstderr, "target_rstderr", low=0.0, strict_low=True, fix="use target_rstderr=0.1")
    confidence = check_float(confidence, "confidence", low=0.0, high=1.0, strict_low=True, strict_high=True,
                             fix="use confidence=0.95")
    trace_probes = check_int(trace_probes, "trace_probes", low=2, fix="use trace_probes=8")
    eig_max_matvecs = check_int(eig_max_matvecs, "eig_max_matvecs", low=2, fix="use eig_max_matvecs=40")
    check_callback(callback)
    bad = [q for q in quantities if q not in QUANTITIES]
    if bad or not quantities:
        raise ValueError(f"quantities: expected a non-empty subset of {QUANTITIES}, got {list(quantities)!r}")
    gen = resolve_generator(generator)
    notes: list[str] = []
    full_values = dict(full_values or {})
    qs = []
    for q in dict.fromkeys(quantities):
        if q == "directional" and direction is None:
            notes.append("'directional' skipped: no full-data top eigenvector was given")
        elif q not in full_values or full_values[q] is None or not math.isfinite(float(full_values[q])):
            notes.append(f"'{q}' skipped: no finite full-data value was given")
        else:
            qs.append(q)
    ladder = default_batch_sizes(N) if batch_sizes is None else sorted({check_int(b, "batch_sizes", low=1) for b in batch_sizes})
    dropped = [b for b in ladder if b > N]
    if dropped:
        notes.append(f"batch sizes {dropped} exceed the {N} samples and were dropped")
    ladder = [b for b in ladder if b <= N]
    if N < 2:
        notes.append(f"the noise study needs at least 2 samples, got {N}: nothing to compare")
        ladder = []
    if num_draws < 2:
        notes.append("num_draws=1: no spread can be measured (use num_draws >= 2)")
    per_draw = (eig_max_matvecs if "lambda_max" in qs else 0) + (trace_probes if "trace" in qs else 0) + \
        (1 if "directional" in qs else 0)
    if max_matvecs is not None and ladder:
        def cost(lad, d):
            return sum(d * per_draw * b / N for b in lad)
        while cost(ladder, num_draws) > max_matvecs and num_draws > 2:
            num_draws -= 1
        cut = []
        while cost(ladder, num_draws) > max_matvecs and len(ladder) > 1:
            cut.append(ladder.pop())
        if cut:
            notes.append(f"budget: rungs {sorted(cut)} not measured (raise the budget to include them)")
        if cost(ladder, num_draws) > max_matvecs:
            notes.append(f"budget of {max_matvecs:.0f} matvecs too small for one rung: noise study skipped")
            ladder = []
    Q, nb = len(qs), len(ladder)
    vals = np.full((Q, nb, num_draws), np.nan)
    probe_var = np.zeros((Q, nb))  # mean estimated probe-error variance of the trace, per rung
    spent, unconverged, measured = 0.0, 0, []
    u = None if direction is None else direction.reshape(-1)
    Z = zAz = None  # common trace probes, drawn at the first minibatch
    for j, B in enumerate(ladder):
        if deadline is not None and time.perf_counter() > deadline:
            notes.append(f"time budget: rungs from B={B} on not measured")
            break
        for d in range(num_draws):
            idx = torch.randperm(N, generator=gen)[:B]
            op = make_operator(idx)
            start = op.num_matvecs
            for qi, q in enumerate(qs):
                if q == "lambda_max":
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        r = top_eigenpairs(op, 1, rtol=eig_rtol, max_matvecs=max(eig_max_matvecs, 2), generator=gen)
                    unconverged += int(not bool(r.converged[0]))
                    vals[qi, j, d] = float(r.eigenvalues[0])
                elif q == "trace":
                    if op.dim <= trace_probes:
                        vals[qi, j, d] = _exact_trace(op)
                    else:
                        if Z is None:
                            Z, zAz, extra = _common_probes(op, full_operator, trace_probes, gen)
                            spent += extra
                        vals[qi, j, d], err = _probe_trace(op, Z, zAz, full_values.get("trace"))
                        probe_var[qi, j] += err / num_draws
                else:
                    v = u.to(dtype=op.dtype, device=op.device)
                    vals[qi, j, d] = float((v.double() @ op.matvec(v).double()) / (v.double() @ v.double()))
            spent += (op.num_matvecs - start) * B / N
        measured.append(j)
        if callback is not None:
            callback(j + 1, nb)
    if len(measured) < nb:
        ladder, vals, probe_var = [ladder[j] for j in measured], vals[:, measured], probe_var[:, measured]
    if unconverged:
        notes.append(f"{unconverged} minibatch top eigenvalue(s) not certified within {eig_max_matvecs} products "
                     "(their error adds to the spread; raise eig_max_matvecs)")
    means = vals.mean(axis=2) if vals.size else np.zeros((Q, len(ladder)))
    if num_draws >= 2 and vals.size:
        raw = vals.var(axis=2, ddof=1)
        var = raw - probe_var  # unbiased: E[raw] = minibatch variance + probe-error variance
        low = (var <= 0.1 * raw) & (probe_var > 0)
        if np.any(low):
            notes.append("trace: at some batch sizes the minibatch spread is within the probe error; "
                         "the raw spread (an upper bound) is reported there (raise trace_probes)")
        var = np.where(low, raw, var)
    else:
        var = np.full((Q, len(ladder)), np.nan)
    full = np.array([float(full_values[q]) for q in qs], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rse = np.sqrt(var) / np.abs(full)[:, None]
    fa, fb, crit = np.full(Q, np.nan), np.full(Q, np.nan), np.full(Q, np.nan)
    clo, chi, fit_status = np.full(Q, np.nan), np.full(Q, np.nan), []
    vlo, vhi = variance_interval(raw if num_draws >= 2 and vals.size else var, num_draws, confidence)
    if num_draws >= 2 and vals.size:
        vlo = np.maximum(vlo - probe_var, 0.0)
        vhi = np.where(low, vhi, vhi - probe_var)
    for qi, q in enumerate(qs):
        if len(ladder) == 0 or num_draws < 2:
            fit_status.append("not_measured")
            continue
        f = fit_noise_law(ladder, var[qi], num_samples=N, num_draws=num_draws, full_value=full[qi], target=target,
                          confidence=confidence, seed=int(gen.initial_seed()) + qi)
        fa[qi], fb[qi], crit[qi], clo[qi], chi[qi] = f.a, f.b, f.critical, f.critical_low, f.critical_high
        fit_status.append(f.status)
        if f.status != "ok":
            notes.append(f"'{q}' fit: {f.status}: {f.reason}")
        if math.isfinite(crit[qi]) and crit[qi] > N:
            notes.append(f"'{q}': critical batch {crit[qi]:.0f} exceeds the {N} samples (extrapolated from the fit)")
    status = f"{len(ladder)} batch size(s) x {num_draws} draw(s); quantities {', '.join(qs) or 'none'}"
    info = RunInfo(seed=int(gen.initial_seed()), matvecs=int(math.ceil(spent)), wall_time=time.perf_counter() - t0,
                   converged=unconverged == 0 and len(ladder) > 0, status=status)
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
    return NoiseStudyResult(
        batch_sizes=torch.as_tensor(ladder, dtype=torch.int64), quantities=tuple(qs), means=t(means),
        stds=t(np.sqrt(var)), rstderr=t(rse), full_values=t(full), fit_a=t(fa), fit_b=t(fb), critical_batch=t(crit),
        target_rstderr=target, num_draws=num_draws, notes=tuple(notes), info=info,
        rstderr_low=t(np.sqrt(vlo) / np.abs(full)[:, None]), rstderr_high=t(np.sqrt(vhi) / np.abs(full)[:, None]),
        critical_low=t(clo), critical_high=t(chi), fit_status=tuple(fit_status), confidence=confidence,
    )
