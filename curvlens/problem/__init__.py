"""The problem layer: model + loss + data + parameters, owned by one :class:`Problem`."""

from curvlens.problem.params import Block
from curvlens.problem.load import load_problem
from curvlens.problem.problem import Problem, call_model, resolve_loss_form

__all__ = ["Block", "Problem", "call_model", "load_problem", "resolve_loss_form"]
