"""A PyTorch Lightning callback running a :class:`~curvlens.hooks.CurvatureMonitor`.

Needs ``pytorch_lightning`` (or ``lightning``): ``pip install 'curvlens[lightning]'``.

Example (not run here)::

    from curvlens.integrations.lightning import CurvatureCallback
    cb = CurvatureCallback(nn.CrossEntropyLoss(), (x_monitor, y_monitor), every=100, out="run.h5")
    Trainer(callbacks=[cb], max_steps=10_000).fit(module, loader)
"""

from __future__ import annotations

from typing import Any

__all__ = ["CurvatureCallback"]  # noqa: F822 - built on first access (subclasses Lightning's Callback)


def _callback_base():
    try:
        from pytorch_lightning import Callback
    except ImportError:
        try:
            from lightning.pytorch import Callback
        except ImportError as e:
            raise ImportError("CurvatureCallback needs PyTorch Lightning; install it with "
                              "pip install 'curvlens[lightning]'") from e
    return Callback


class _CurvatureCallback:
    """Measure curvature of the LightningModule during ``Trainer.fit``.

    The monitor is built at ``on_fit_start`` (the module on its device, ``model=pl_module``),
    reads the learning rate from ``trainer.optimizers[0]``, and is called after every optimizer
    step with ``trainer.global_step``. ``loss_fn`` and ``data`` are as in
    :class:`~curvlens.hooks.CurvatureMonitor`: a criterion on ``pl_module(inputs)``, or
    ``loss_fn(model, batch)``.

    Args:
        loss_fn: the loss of the monitoring subset.
        data: the fixed monitoring subset.
        **monitor_kwargs: options of :class:`~curvlens.hooks.CurvatureMonitor` (``every``,
            ``overhead``, ``metrics``, ``per_layer``, ``out``, ``tensorboard``, ``generator``, ...).

    Attributes:
        monitor: the :class:`~curvlens.hooks.CurvatureMonitor` (None before ``fit``).
    """

    def __init__(self, loss_fn: Any, data: Any, **monitor_kwargs: Any):
        from curvlens.hooks.schedule import Schedule

        Schedule(monitor_kwargs.get("every", 100), monitor_kwargs.get("overhead"))  # fail early on bad options
        self.loss_fn, self.data, self.monitor_kwargs = loss_fn, data, monitor_kwargs
        self.monitor = None
        self._last_step: int | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        from curvlens.hooks.monitor import CurvatureMonitor

        self.monitor = CurvatureMonitor(pl_module, self.loss_fn, self.data, **self.monitor_kwargs)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = int(trainer.global_step)
        if self.monitor is None or step == self._last_step:  # gradient accumulation: no optimizer step yet
            return
        self._last_step = step
        opts = getattr(trainer, "optimizers", None) or [None]
        self.monitor.step(step, optimizer=opts[0])

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.monitor is not None:
            self.monitor.close()


def __getattr__(name: str) -> Any:
    if name == "CurvatureCallback":
        cls = type("CurvatureCallback", (_CurvatureCallback, _callback_base()), {"__doc__": _CurvatureCallback.__doc__,
                                                                              "__module__": __name__})
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
