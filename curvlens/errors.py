"""Exceptions that callers may want to catch.

Bad arguments raise the built-in ``ValueError`` / ``TypeError`` with a message that names
the argument, what was expected, what was got and how to fix it. The classes below are for
failures that are not simply a bad argument.
"""

from __future__ import annotations


class CurvlensError(Exception):
    """Base class of every curvlens-specific error."""


class NonFiniteLossError(CurvlensError, ValueError):
    """The loss (or a curvature product) became NaN or infinite on some batch."""


class CheckpointError(CurvlensError):
    """A checkpoint, data file or factory could not be loaded."""


class SchemaError(CurvlensError):
    """A results file was written by a newer, unknown or corrupt schema."""


class ConvergenceWarning(UserWarning):
    """An iterative estimate stopped before meeting its tolerance (the result says
    ``converged=False`` and what to increase); never raised as an error."""
