"""curvlens: see the curvature of a neural network's loss, matrix-free.

The public API, grouped by layer (see the README for a tour).
"""

from curvlens._version import __version__
from curvlens.errors import CheckpointError, CurvlensError, NonFiniteLossError, SchemaError
from curvlens.results import RunInfo

# operators
from curvlens.operators import Block, CurvatureOperator, DenseOperator

# linear algebra
from curvlens.linalg import LanczosResult, lanczos

__all__ = [
    "__version__",
    # errors and results
    "CurvlensError", "NonFiniteLossError", "CheckpointError", "SchemaError", "RunInfo",
    # operators
    "CurvatureOperator", "Block", "DenseOperator",
    # linear algebra
    "lanczos", "LanczosResult",
]
