"""How :func:`~curvlens.estimators.density.spectral_density` splits a product budget.

At a fixed budget ``M = P * m`` (probes times Lanczos steps) the 1-Wasserstein distance of the
SLQ measure to the exact spectrum has two parts: the quadrature resolution, about the spectral
width over ``m``, and the probe noise. One Rademacher probe's measure puts weight
``(q_i^T z)^2 / D`` on eigenvalue ``i``, so its CDF error shrinks like ``1 / sqrt(P D)``: in high
dimension one probe already averages the spectrum and every product spent on a second probe is a
step of resolution lost. A single probe is also its own deflation pilot: its converged outliers
get their exact mass ``1/D`` (:mod:`curvlens.estimators.slq`), which removes most of its noise
on spectra with outliers, while with ``P >= 2`` the pilot's row is spent on finding them. So a
split into two probes is dominated (measured below), and the rule is:

* ``P = 1`` while ``M <= 5 sqrt(D)``;
* above, ``P = min(10, max(3, ceil(M / (3 sqrt(D)))))``;

``m = M // P``; when ``m`` would exceed ``D`` (the run is exact after ``D`` steps) the spare
products go to more probes. One probe gives no across-probe standard error (NaN).

Mean W1 over 6 seeds (``benchmarks/results/spectral.md`` has the command), dense operators with
known spectra (``tests/linalg/_spectra.py`` ``hessian_like_spectrum``,
``tests/estimators/_density_spectra.py``) and the exact Hessian of the 2,714-parameter benchmark
model; default (deflated) SLQ; "plain" is one probe without deflation; the rule's split is
marked ``*``:

================== ==== ========= ========== ========= ========= ========= =========
spectrum (D)       M    plain 1xM 1 x M      2 x M/2   3 x M/3   4 x M/4   10 x M/10
================== ==== ========= ========== ========= ========= ========= =========
hessian-like 600   50   4.50e-3   1.12e-3 *  1.66e-3   2.73e-3   4.44e-3   9.14e-3
hessian-like 600   100  4.31e-3   8.57e-4 *  1.22e-3   1.05e-3   1.14e-3   5.00e-3
hessian-like 600   200  4.27e-3   8.03e-4    9.62e-4   6.55e-4 * 8.55e-4   1.37e-3
hessian-like 1000  100  2.62e-3   9.27e-4 *  9.87e-4   9.11e-4   1.01e-3   4.87e-3
hessian-like 1000  200  2.58e-3   8.33e-4    7.86e-4   6.48e-4 * 6.56e-4   1.39e-3
benchmark model    50   2.87e-4   2.20e-4 *  4.30e-4   4.25e-4   4.62e-4   1.03e-3
indefinite 400     50   0.161     0.079 *    0.099     0.086     0.093     0.329
indefinite 400     100  0.159     0.081 *    0.092     0.066     0.054     0.134
indefinite 400     200  0.158     0.061      0.090     0.061     0.044 *   0.057
rank-deficient 400 100  0.157     0.081 *    0.105     0.100     0.073     0.064
rank-deficient 400 200  0.157     0.157      0.076     0.087     0.071 *   0.050
clustered 400      100  0.144     0.144 *    0.109     0.090     0.055     0.063
clustered 400      200  0.144     0.118      0.128     0.074     0.068 *   0.062
================== ==== ========= ========== ========= ========= ========= =========

The rule is never worse than one probe of ``M`` steps (plain or deflated) on these spectra
(tested). It is not the best split everywhere: spectra made of a few eigenvalues of high
multiplicity (rank-deficient, clustered) favour many short probes already at ``M = 50-100``
(e.g. clustered 400 at 100 products: 0.144 against 0.055 for 4 x 25), and the rule, which only
sees ``M`` and ``D``, gives those up for the outlier-plus-bulk spectra of curvature matrices.
At ``D = 10^6`` it keeps one probe up to 5,000 products.
"""

from __future__ import annotations

import math

ONE_PROBE = 5.0  # one probe while M <= ONE_PROBE * sqrt(D)
PER_PROBE = 3.0  # above: about PER_PROBE * sqrt(D) products per probe, 3 to 10 probes


def split_budget(num_matvecs: int, dim: int) -> tuple[int, int]:
    """``(num_probes, num_steps)`` for a budget of ``num_matvecs`` products on a ``dim``-dimensional operator.

    Example:
        >>> split_budget(100, 10**6), split_budget(200, 600), split_budget(800, 2714), split_budget(800, 50)
        ((1, 100), (3, 66), (6, 133), (16, 50))
    """
    M, D = int(num_matvecs), max(int(dim), 1)
    root = math.sqrt(D)
    P = 1 if M <= ONE_PROBE * root else min(10, max(3, math.ceil(M / (PER_PROBE * root))), M)
    steps = max(1, M // P)
    if steps > D:
        steps = D
        P = max(P, M // D)
    return P, steps
