"""How :class:`~curvlens.optim.NewtonCG` computes its curvature products on each step.

Two exact routes give the same Gauss-Newton products:

- ``"autograd"``: the live double-backward operators (:class:`~curvlens.operators.GGNOperator`
  and the Hessian / Fisher operators): every product is two backward passes on retained graphs.
- ``"jacobian"``: :class:`~curvlens.operators.ggn_jacobian.JacobianGGNOperator` materializes the
  output Jacobian ``J`` (``M x D``) once per step, after which a product is one or two dense
  matvecs and the exact GGN diagonal is free. It pays off when ``M * D`` is small (linear
  models, small physics-informed networks) and is used for ``curvature="ggn"`` only.

``"auto"`` takes the Jacobian route when ``M * D <= max_entries`` and a per-sample Jacobian can
be built: by ``torch.func`` (``vmap``) or, for models that ``torch.func`` cannot transform (a
``forward`` calling ``torch.autograd.grad``), by vmapped one-hot backward passes on sub-batches
(``batched``, ``O(M c)``). One-hot backward passes on the full batch's graph (``M`` backwards of
the whole batch per step, ``O(M^2)``) are used only with ``product="jacobian"``. The per-sample
Jacobian is checked once against the autograd product (it assumes samples do not interact);
when the check fails, or the Jacobian cannot be built, the chooser falls back to autograd for
the rest of the run and says why in :attr:`ProductChooser.reason`. On a process group ``M`` is
summed over the shards and the Jacobian method is agreed by all ranks, so every rank takes the
same route (an empty shard contributes an empty Jacobian).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from curvlens.errors import NonFiniteLossError
from curvlens.operators.ggn_jacobian import DEFAULT_MAX_ENTRIES, JacobianGGNOperator, output_entries
from curvlens.optim._distributed import group_total

__all__ = ["PRODUCTS", "ProductChooser"]

log = logging.getLogger(__name__)

PRODUCTS = ("auto", "autograd", "jacobian")


class ProductChooser:
    """Per-step choice of the product route (state: the Jacobian method found to work).

    Args:
        product: ``"auto"``, ``"autograd"`` or ``"jacobian"`` (see the module docstring).
        curvature: the optimizer's curvature (the Jacobian route is for ``"ggn"``).
        max_entries: ceiling on ``M * D`` for the Jacobian route.
    """

    def __init__(self, product: str, curvature: str, max_entries: int = DEFAULT_MAX_ENTRIES):
        self.product, self.curvature, self.max_entries = product, curvature, int(max_entries)
        self.method: str = "auto"  # the Jacobian method: "auto" until one has worked
        self.verified = False
        self.disabled = product == "autograd" or curvature != "ggn"
        self.reason = "autograd products requested" if product == "autograd" else (
            f"curvature={curvature!r}: the Jacobian route is for the GGN" if curvature != "ggn" else "")
        self.last_route = "autograd"
        self._per_sample: dict = {}  # per-sample output sizes by input shape (see output_entries)

    def _jacobian_fits(self, problem) -> bool:
        entries = group_total(output_entries(problem, self._per_sample), problem) * problem.dim  # same on every rank
        if entries > self.max_entries:
            if self.product == "jacobian":
                raise ValueError(f"product: the Jacobian would have {entries} entries (M * D), more than "
                                 f"max_jacobian_entries={self.max_entries}; pass product='auto' or raise the limit")
            return False
        return True

    def operator(self, problem, fallback: Callable[[], Any]) -> Any:
        """The curvature operator for this step's curvature ``problem`` (``fallback()`` builds the
        autograd one)."""
        if not self.disabled and problem.loss_form == "criterion" and problem.num_samples > 0 \
                and self._jacobian_fits(problem):
            # "auto" takes only a per-sample Jacobian (vmap, else sub-batches): one-hot backward
            # passes on the full batch cost M backwards of it, more than a typical CG run
            method = self.method
            try:
                op = JacobianGGNOperator(problem, max_entries=self.max_entries, method=method,
                                         verify=not self.verified)
            except NonFiniteLossError:
                raise
            except (RuntimeError, TypeError, ValueError) as exc:
                if self.product == "jacobian":
                    raise
                self.disabled, self.reason = True, f"Jacobian route unavailable ({str(exc).splitlines()[0]})"
                log.info("NewtonCG: %s; using autograd products", self.reason)
            else:
                if self.product == "auto" and op.method_used == "backward":  # exact, but O(M^2) per step
                    self.disabled = True
                    self.reason = "Jacobian route unavailable (no per-sample Jacobian: the samples interact)"
                    log.info("NewtonCG: %s; using autograd products from the next step", self.reason)
                    self.last_route = "jacobian"
                    return op
                self.method, self.verified = op.method_used, True
                self.reason = f"Jacobian route ({op.method_used}, {'dense G' if op.is_dense else 'J and H J'})"
                self.last_route = "jacobian"
                return op
        self.last_route = "autograd"
        return fallback()
