"""Monitor records as TensorBoard scalars, through ``torch.utils.tensorboard.SummaryWriter``.

Every finite value of a record goes to ``curvature/<column>`` at the record's step (per-layer
columns ``layer_lambda_max:<block>`` become ``curvature/layer_lambda_max/<block>``). Needs the
``tensorboard`` package (``pip install curvlens[tensorboard]``).
"""

from __future__ import annotations

import math
import os
from typing import Any

__all__ = ["TensorBoardLogger"]


def _summary_writer_cls():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ImportError("tensorboard: writing TensorBoard scalars needs the tensorboard package; install it "
                          "with pip install 'curvlens[tensorboard]'") from e
    return SummaryWriter


class TensorBoardLogger:
    """Write monitor records to TensorBoard.

    Args:
        writer: a ``SummaryWriter`` (kept open on :meth:`close`, only flushed) or a log directory
            (a writer is created there and closed on :meth:`close`).
        prefix: tag prefix.
    """

    def __init__(self, writer: Any, *, prefix: str = "curvature"):
        if isinstance(writer, (str, os.PathLike)):
            self.writer, self._owned = _summary_writer_cls()(log_dir=str(writer)), True
        elif callable(getattr(writer, "add_scalar", None)):
            self.writer, self._owned = writer, False
        else:
            raise TypeError(f"writer: expected a SummaryWriter or a log directory, got {type(writer).__name__}")
        self.prefix = prefix

    def tag(self, column: str) -> str:
        return f"{self.prefix}/{column.replace(':', '/')}"

    def write(self, step: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            if math.isfinite(v):
                self.writer.add_scalar(self.tag(k), float(v), global_step=int(step))
        self.writer.flush()

    def close(self) -> None:
        if self._owned:
            self.writer.close()
        else:
            self.writer.flush()
