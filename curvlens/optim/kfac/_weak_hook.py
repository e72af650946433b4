"""Forward hooks that do not keep their owner alive and do not travel with the model.

A module's hooks are part of the module: a hook that held the preconditioner strongly would
keep it (and its factors) alive as long as the model, and ``copy.deepcopy(model)`` or
``torch.save(model)`` would try to copy or pickle the preconditioner. A :class:`WeakHook`
calls its owner's method through a weak reference, removes itself once the owner is gone,
and is copied or pickled as a hook that does nothing (a copy of the model is not
preconditioned by the original's preconditioner).
"""

from __future__ import annotations

import weakref
from typing import Any

__all__ = ["WeakHook"]


def _inert(*args: Any) -> None:
    return None


class WeakHook:
    """``owner.<method>(*args, module, inputs, output)`` while ``owner`` lives; then nothing."""

    def __init__(self, owner: Any, method: str, *args: Any):
        self._owner = weakref.ref(owner)
        self._method = method
        self._args = args
        self.handle = None

    def __call__(self, module, inputs, output):
        owner = self._owner()
        if owner is None:
            if self.handle is not None:
                self.handle.remove()
                self.handle = None
            return None
        return getattr(owner, self._method)(*self._args, module, inputs, output)

    def __deepcopy__(self, memo):
        return _inert

    def __reduce__(self):
        return (_make_inert, ())


def _make_inert():
    return _inert
