"""The diagonal preconditioner of Hessian-free optimization: ``(diag + lambda)^xi``.

Reference: J. Martens, "Deep learning via Hessian-free optimization" (ICML 2010), Sec. 4.7:
``M = [diag(sum_i g_i g_i^T) + lambda I]^xi`` with ``xi = 0.75``, the diagonal of the
empirical Fisher from per-sample gradients ``g_i``. Alternatives: a Hutchinson estimate of
the curvature's own diagonal (Bekas, Kokiopoulou and Saad 2007), clamped at 0, or its exact
diagonal (``D`` products; small models only). ``"auto"`` takes the exact diagonal where the
operator has it for free (the Jacobian product route) and the empirical Fisher otherwise.
"""

from __future__ import annotations

import logging

import torch

from curvlens.problem.batches import batch_size, subset_batch

__all__ = ["PRECONDITIONERS", "curvature_diagonal", "empirical_fisher_diagonal"]

log = logging.getLogger(__name__)

PRECONDITIONERS = ("auto", "empirical_fisher", "hutchinson", "exact", None)


def empirical_fisher_diagonal(problem, *, max_loop_samples: int = 128) -> torch.Tensor:
    """``mean_i g_i**2`` over the samples of ``problem`` (weighted as its loss is: mean or sum).

    Uses :meth:`~curvlens.Problem.per_sample_gradients` (``vmap``); for a model without a
    batching rule (e.g. one that differentiates with respect to its inputs inside
    ``forward``) it falls back to a loop over at most ``max_loop_samples`` evenly spaced
    samples of each batch.
    """
    if getattr(problem, "process_group", None) is not None:  # one reduction, no collective per sample
        from curvlens.optim._distributed import group_empirical_fisher_diagonal

        return group_empirical_fisher_diagonal(problem, max_loop_samples=max_loop_samples)
    scale = 1.0 / problem.num_samples if problem.reduction == "mean" else 1.0
    try:
        acc = torch.zeros(problem.dim, dtype=problem.dtype, device=problem.device)
        chunk_size = int(min(4096, max(64, 2**24 // max(problem.dim, 1))))  # <= 16M entries per chunk
        for chunk in problem.per_sample_gradients(chunk_size=chunk_size):
            acc += (chunk.detach() ** 2).sum(0)
        return acc * scale
    except (RuntimeError, TypeError, ValueError) as exc:  # no vmap rule: loop over samples
        log.debug("per-sample gradients by vmap failed (%s); looping over samples", exc)
    acc = torch.zeros(problem.dim, dtype=problem.dtype, device=problem.device)
    count = 0
    for b in problem.batches:
        n = batch_size(b, 0)
        m = min(n, max_loop_samples)
        idx = torch.linspace(0, n - 1, m).round().long().unique()
        for i in idx.tolist():
            g = problem.with_data(subset_batch(b, torch.tensor([i]))).gradient(flat=True)
            acc += g.detach() ** 2
            count += 1
    # mean over the visited samples, rescaled to the loss's reduction
    return acc / count * (problem.num_samples * scale)


def curvature_diagonal(kind: str | None, problem, op, *, num_probes: int, generator: torch.Generator):
    """The estimated diagonal of the curvature (before damping) for preconditioner ``kind``;
    None for no preconditioner."""
    if kind is None:
        return None
    if kind in ("auto", "exact") and callable(getattr(op, "diagonal", None)):
        return op.diagonal().clamp_min(0)  # exact and free (the Jacobian route)
    if kind in ("auto", "empirical_fisher"):
        return empirical_fisher_diagonal(problem)
    if kind == "hutchinson":
        from curvlens.estimators import hutchinson_diagonal

        return hutchinson_diagonal(op, num_probes, generator=generator).estimate.clamp_min(0)
    from curvlens.estimators import exact_diagonal

    return exact_diagonal(op).estimate.clamp_min(0)
