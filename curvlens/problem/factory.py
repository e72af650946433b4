"""Import a user object from a spec string: ``'pkg.module:name'`` or ``'path/to/file.py:name'``.

Used for the ``model=``, ``data=`` and ``loss=`` factories of :func:`curvlens.problem.load.load_problem`. Importing user code runs it, so
this is only ever done for specs the user typed.

Example:
    >>> from curvlens.problem.factory import import_object
    >>> import_object("curvlens.data.demo:demo_model").__name__
    'demo_model'
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from curvlens.errors import CheckpointError

__all__ = ["import_object", "call_factory", "is_factory_spec"]


def is_factory_spec(spec: Any) -> bool:
    """True when ``spec`` looks like ``'module:name'`` or ``'file.py:name'`` (not a data file).

    A Windows drive letter (``C:\\data.pt``) is not a factory spec.
    """
    if not isinstance(spec, str) or ":" not in spec:
        return False
    left, _, right = spec.rpartition(":")
    if not left or not right or len(left) == 1:  # 'C:\\x' drive letters
        return False
    return right.replace(".", "_").isidentifier()


def _split(spec: Any) -> tuple[str, str]:
    if not isinstance(spec, str):
        raise TypeError(
            f"spec: expected a string 'pkg.module:name' or 'path/to/file.py:name', got {type(spec).__name__}"
        )
    left, sep, right = spec.rpartition(":")
    if not sep or not left or not right or not right.replace(".", "_").isidentifier():
        raise ValueError(
            f"spec: expected 'pkg.module:name' or 'path/to/file.py:name', got {spec!r}; "
            "add ':' and the name of the object to import, e.g. 'mypkg.models:build_model'"
        )
    return left, right


def _import_file(path_str: str, spec: str) -> Any:
    path = Path(path_str).expanduser()
    if path.is_dir():
        raise CheckpointError(
            f"factory {spec!r}: {str(path)!r} is a directory, expected a Python file; pass "
            f"'{str(path / 'models.py')}:{spec.rsplit(':', 1)[-1]}' (the file that defines the factory)"
        )
    if not path.is_file():
        raise CheckpointError(
            f"factory {spec!r}: file {str(path)!r} does not exist; check the path before ':'"
        )
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"_curvlens_user_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise CheckpointError(f"factory {spec!r}: cannot import {str(path)!r} as a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    # let the file import its neighbours, as `python file.py` would
    parent = str(path.resolve().parent)
    added = parent not in sys.path
    if added:
        sys.path.insert(0, parent)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)
        raise CheckpointError(
            f"factory {spec!r}: importing {str(path)!r} raised {type(e).__name__}: {e}"
        ) from e
    finally:
        if added and parent in sys.path:
            sys.path.remove(parent)
    return module


def _import_module(modname: str, spec: str) -> Any:
    try:
        return importlib.import_module(modname)
    except ModuleNotFoundError as e:
        if e.name and (modname == e.name or modname.startswith(e.name + ".")):
            raise CheckpointError(
                f"factory {spec!r}: no module named {modname!r}; install it, run from the folder "
                "that contains it, or give a file path such as 'path/to/models.py:build_model'"
            ) from e
        raise CheckpointError(
            f"factory {spec!r}: importing {modname!r} failed, it needs the missing module {e.name!r}"
        ) from e
    except Exception as e:
        raise CheckpointError(
            f"factory {spec!r}: importing {modname!r} raised {type(e).__name__}: {e}"
        ) from e


def import_object(spec: str) -> Any:
    """Import and return the object named by ``spec``.

    Args:
        spec: ``'pkg.module:name'`` (a module on ``sys.path``) or ``'path/to/file.py:name'``
            (a Python file, imported under a private module name). ``name`` may be dotted
            (``'pkg.mod:Class.build'``).

    Returns:
        The object (a function, class, module instance, dataset ...).

    Raises:
        TypeError / ValueError: ``spec`` is not a string of that form.
        CheckpointError: the file or module does not exist, importing it raised, or it has
            no attribute ``name``; the message names the spec and the fix.
    """
    left, right = _split(spec)
    if left.endswith(".py") or os.sep in left or "/" in left:
        module = _import_file(left, spec)
    else:
        module = _import_module(left, spec)
    obj = module
    for part in right.split("."):
        if not hasattr(obj, part):
            available = sorted(n for n in dir(module) if not n.startswith("_"))[:12]
            raise CheckpointError(
                f"factory {spec!r}: {left!r} has no attribute {right!r}; "
                f"available names: {', '.join(available) or '(none)'}"
            )
        obj = getattr(obj, part)
    return obj


def call_factory(spec: str | Any, *args: Any, what: str = "object", **kwargs: Any) -> Any:
    """Import ``spec`` (or take a callable) and call it; wrap any exception in CheckpointError.

    Args:
        spec: a spec string for :func:`import_object`, or a callable.
        *args, **kwargs: passed to the factory.
        what: what the factory should build (``"model"``, ``"dataset"``), for messages.

    Raises:
        CheckpointError: the import failed, the object is not callable, or calling it raised.
    """
    obj = import_object(spec) if isinstance(spec, str) else spec
    label = spec if isinstance(spec, str) else getattr(spec, "__qualname__", repr(spec))
    if not callable(obj):
        raise CheckpointError(
            f"factory {label!r}: expected a callable that builds the {what}, got {type(obj).__name__}"
        )
    try:
        return obj(*args, **kwargs)
    except Exception as e:
        raise CheckpointError(
            f"factory {label!r} raised {type(e).__name__} while building the {what}: {e}"
        ) from e
