"""Atomic file writes: a temporary file in the same directory, fsync, then ``os.replace``.

An interrupted write (exception, Ctrl-C, crash, full disk) never leaves a broken or
half-written file in place of a good one: the destination either keeps its previous
content or receives the complete new content. The temporary file (named
``.<name>.<random>.tmp`` next to the destination) is removed on any exception.

Three context managers cover every writer in curvlens:

* :func:`atomic_write` yields an open file object (text or binary), for JSON, HTML,
  Markdown, or ``fig.savefig(f, format="png")``.
* :func:`atomic_path` yields the path of the temporary file, for libraries that want a
  file name (``h5py.File(tmp, "w")``, ``torch.save``). Close the file before the block ends.
* :func:`atomic_directory` yields an empty staging folder for a whole set of files (an
  analysis: results, summary, report, figures) that replaces the destination folder as one
  unit, with a manifest written last.

Example:
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> with atomic_write(os.path.join(d, "report.html"), "w") as f:
    ...     _ = f.write("<html></html>")
    >>> open(os.path.join(d, "report.html")).read()
    '<html></html>'
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

__all__ = ["atomic_write", "atomic_path", "atomic_directory", "write_json_atomic", "to_jsonable", "MANIFEST",
           "STAGING_MARK"]

#: file written last into a folder produced by :func:`atomic_directory`: the names and sizes of its files
MANIFEST = "manifest.json"
#: part of the names of :func:`atomic_directory`'s staging folders (``.out.curvlens-staging-PID-XXXX``)
STAGING_MARK = ".curvlens-staging-"


def _check_destination(path: str | os.PathLike) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}; pass a file name")
    dest = Path(path)
    if str(path) == "" or dest.name == "":
        raise ValueError(f"path: expected a file name, got {str(path)!r}; pass e.g. 'results/run.h5'")
    if dest.is_dir():
        raise IsADirectoryError(f"path: {str(dest)!r} is a directory; pass a file name inside it")
    parent = dest.parent
    if not parent.is_dir():
        raise FileNotFoundError(
            f"path: directory {str(parent)!r} of {str(dest)!r} does not exist; create it first "
            f"(mkdir -p {str(parent)!r})"
        )
    return dest


def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)  # pragma: no cover - non-Linux fallback
    os.umask(old)  # pragma: no cover
    return old  # pragma: no cover


def _final_mode(dest: Path) -> int:
    try:
        return dest.stat().st_mode & 0o7777  # keep the permissions of the file we replace
    except OSError:
        return 0o666 & ~_umask()


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":  # pragma: no cover - directories cannot be fsynced on Windows
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse directory fsync
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path`` atomically.

    The caller writes the temporary file (and closes it) inside the ``with`` block. On normal
    exit the file is fsynced and renamed onto ``path`` with ``os.replace`` (atomic on POSIX and
    Windows); the destination keeps the permissions of the file it replaces. On any exception
    (including ``KeyboardInterrupt``) the temporary file is deleted, ``path`` is left untouched
    and the exception propagates.

    Args:
        path: the destination file. Its directory must exist.

    Raises:
        FileNotFoundError: the destination directory does not exist.
        IsADirectoryError: ``path`` is a directory.

    Example:
        >>> import os, tempfile, torch
        >>> dest = os.path.join(tempfile.mkdtemp(), "state.pt")
        >>> with atomic_path(dest) as tmp:
        ...     torch.save({"a": 1}, tmp)
        >>> torch.load(dest)
        {'a': 1}
    """
    dest = _check_destination(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(
                f"atomic_path: the temporary file {str(tmp)!r} was removed inside the with-block; "
                f"write it in place instead of moving it, so that {str(dest)!r} can be replaced"
            )
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _final_mode(dest))
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(dest.parent)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "w", *, encoding: str | None = "utf-8", newline: str | None = None
) -> Iterator[IO[Any]]:
    """Yield an open file that replaces ``path`` atomically when the block ends without error.

    Args:
        path: the destination file. Its directory must exist.
        mode: ``"w"`` (text, default) or ``"wb"`` (binary).
        encoding: text encoding (ignored in binary mode).
        newline: passed to :func:`open` in text mode.

    Raises:
        ValueError: ``mode`` is not ``"w"`` or ``"wb"``.
        FileNotFoundError: the destination directory does not exist.

    Example:
        >>> import os, tempfile
        >>> dest = os.path.join(tempfile.mkdtemp(), "notes.txt")
        >>> with atomic_write(dest) as f:
        ...     _ = f.write("hello")
        >>> open(dest).read()
        'hello'
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode: expected 'w' (text) or 'wb' (binary), got {mode!r}")
    with atomic_path(path) as tmp:
        if mode == "wb":
            with open(tmp, "wb") as f:
                yield f
                f.flush()
        else:
            with open(tmp, "w", encoding=encoding, newline=newline) as f:
                yield f
                f.flush()


def to_jsonable(obj: Any, _where: str = "obj") -> Any:
    """Convert ``obj`` to plain JSON types.

    NaN and infinities become ``None`` (strict JSON has no NaN); numpy / torch scalars become
    python numbers; arrays and tensors become (nested) lists; tuples become lists; dataclasses
    become dicts of their fields; ``pathlib.Path``, ``torch.dtype`` and ``torch.device`` become
    strings. Dict keys are converted to ``str``.

    Raises:
        TypeError: for any other type, naming where in ``obj`` it was found.
    """
    import dataclasses

    import numpy as np

    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else None
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise TypeError(f"{_where}: dict keys must be str or numbers, got {type(k).__name__}")
            out[str(k) if not isinstance(k, str) else k] = to_jsonable(v, f"{_where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, f"{_where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist(), _where)
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name), f"{_where}.{f.name}") for f in dataclasses.fields(obj)}
    import torch

    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().resolve_conj().resolve_neg().tolist(), _where)
    if isinstance(obj, (torch.dtype, torch.device)):
        return str(obj)
    raise TypeError(
        f"{_where}: cannot write {type(obj).__name__} to JSON; convert it to a number, str, list or dict first"
    )


def write_json_atomic(obj: Any, path: str | os.PathLike, *, indent: int | None = 2) -> None:
    """Write ``obj`` as strict JSON to ``path`` atomically (see :func:`to_jsonable`).

    Args:
        obj: dicts / lists / scalars / arrays / tensors / dataclasses.
        path: destination file; its directory must exist.
        indent: JSON indentation (None for compact).

    Example:
        >>> import json, math, os, tempfile
        >>> dest = os.path.join(tempfile.mkdtemp(), "summary.json")
        >>> write_json_atomic({"lambda_max": 3.5, "condition_number": math.nan}, dest)
        >>> json.load(open(dest))
        {'lambda_max': 3.5, 'condition_number': None}
    """
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False, ensure_ascii=False)
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text + "\n")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but owned by someone else
        return True
    return True


def _remove_stale_staging(parent: Path, name: str) -> list[Path]:
    """Remove staging folders of ``parent/name`` left by killed processes (their pid is gone), and
    pid-less ones of older curvlens versions inside the destination itself."""
    import shutil

    removed = []
    candidates = list(parent.glob(f".{name}{STAGING_MARK}*")) + list((parent / name).glob(f"{STAGING_MARK}*"))
    for folder in candidates:
        pid_text = folder.name.rsplit(STAGING_MARK, 1)[-1].split("-", 1)[0]
        if pid_text.isdigit() and _pid_alive(int(pid_text)):
            continue
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directory entries in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False
    when the platform or file system cannot."""
    if not sys.platform.startswith("linux"):  # pragma: no cover - other platforms
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # pragma: no cover - old glibc
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange)
    return rc == 0


def _manifest(folder: Path) -> dict[str, Any]:
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)
    return {"files": {n: (folder / n).stat().st_size for n in files}}


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, owned: Any = ()) -> Iterator[Path]:
    """Yield an empty staging folder that replaces the folder ``path`` as a whole when the block ends.

    The staging folder is a hidden sibling of ``path`` (``.NAME.curvlens-staging-PID-XXXX``). On
    normal exit :data:`MANIFEST` (file names and sizes) is written into it last, and then:

    * when ``path`` is missing, or holds only files named in ``owned`` (and an old manifest), the
      complete staging folder takes the place of ``path`` in one rename (an atomic exchange on
      Linux, else two renames): readers see the old set or the new one, never a mix;
    * otherwise (``path`` also holds files of its own, which must be kept) the files are moved in
      one by one, ``owned`` files this run did not write are removed, and the manifest is moved
      in last (the old one is removed first), so a folder without a manifest is an incomplete set.

    On any exception the staging folder is removed, ``path`` is untouched, folders created
    for it are removed again, and the exception propagates. Staging folders of killed runs
    (their process is gone) are removed when the next one starts.

    Args:
        path: the destination folder (created, with parents, only on success).
        owned: names of files that a previous run of the same writer may have left in ``path``.

    Example:
        >>> import os, tempfile
        >>> out = os.path.join(tempfile.mkdtemp(), "report")
        >>> with atomic_directory(out) as stage:
        ...     _ = (stage / "a.txt").write_text("new")
        >>> sorted(os.listdir(out))
        ['a.txt', 'manifest.json']
    """
    import shutil

    if not isinstance(path, (str, os.PathLike)) or str(path) == "":
        raise TypeError(f"path: expected a folder path (str or os.PathLike), got {path!r}; pass e.g. 'runs/report'")
    dest = Path(os.path.abspath(path))
    if dest.exists() and not dest.is_dir():
        raise NotADirectoryError(f"path: {str(path)!r} exists and is not a folder; pass a folder path")
    owned = set(owned) | {MANIFEST}
    created = [q for q in [dest.parent, *dest.parent.parents] if not q.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(dest.parent, dest.name)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}{STAGING_MARK}{os.getpid()}-", dir=dest.parent))
    try:
        yield stage
        write_json_atomic(_manifest(stage), stage / MANIFEST)
        if not dest.exists():
            os.rename(stage, dest)
        elif all(p.name in owned or STAGING_MARK in p.name for p in dest.iterdir()):
            if not _exchange(stage, dest):
                old = Path(tempfile.mkdtemp(prefix=f".{dest.name}{STAGING_MARK}{os.getpid()}-old-", dir=dest.parent))
                os.rmdir(old)
                os.rename(dest, old)
                try:
                    os.rename(stage, dest)
                except BaseException:
                    os.rename(old, dest)
                    raise
                stage = old
        else:
            with contextlib.suppress(FileNotFoundError):
                (dest / MANIFEST).unlink()
            new = set(_manifest(stage)["files"])
            for name in sorted(new):
                os.replace(stage / name, dest / name)
            for name in owned - new - {MANIFEST}:
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    (dest / name).unlink()
            os.replace(stage / MANIFEST, dest / MANIFEST)
        _fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for q in created:  # innermost first
            with contextlib.suppress(OSError):
                q.rmdir()
        raise
    shutil.rmtree(stage, ignore_errors=True)
