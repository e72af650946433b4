"""curvlens.hooks: curvature measured during training (:class:`CurvatureMonitor`).

Names are imported lazily so that ``import curvlens.hooks`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CurvatureMonitor": "curvlens.hooks.monitor",
    "MonitorRecord": "curvlens.hooks.monitor",
    "Alert": "curvlens.hooks.alerts",
    "AlertTracker": "curvlens.hooks.alerts",
    "Schedule": "curvlens.hooks.schedule",
    "OptimizerView": "curvlens.hooks.optimizer_view",
    "read_optimizer": "curvlens.hooks.optimizer_view",
    "CurvatureSeries": "curvlens.io.series",
    "load_series": "curvlens.io.series",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'curvlens.hooks' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
