"""Atomic writes: an interrupted write never replaces a good file with a broken one."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from curvlens.io.atomic import atomic_path, atomic_write, to_jsonable, write_json_atomic


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_text_and_binary(tmp_path):
    with atomic_write(tmp_path / "a.txt") as f:
        f.write("héllo")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo"
    with atomic_write(tmp_path / "b.bin", "wb") as f:
        f.write(b"\x00\x01\xff")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01\xff"
    assert _leftovers(tmp_path) == []


def test_atomic_write_replaces_existing_file(tmp_path):
    dest = tmp_path / "r.html"
    dest.write_text("old")
    with atomic_write(str(dest)) as f:
        f.write("new")
    assert dest.read_text() == "new"


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_exception_midway_keeps_previous_file(tmp_path, exc):
    dest = tmp_path / "report.html"
    dest.write_text("good old content")
    with pytest.raises(type(exc)):
        with atomic_write(dest) as f:
            f.write("half of the new cont")
            f.flush()
            raise exc
    assert dest.read_text() == "good old content"
    assert _leftovers(tmp_path) == []


def test_exception_midway_without_previous_file_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="inside"):
        with atomic_write(tmp_path / "new.json") as f:
            f.write("{")
            raise ValueError("inside")
    assert list(tmp_path.iterdir()) == []


def test_failing_rename_keeps_previous_file(tmp_path, monkeypatch):
    dest = tmp_path / "x.txt"
    dest.write_text("previous")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        with atomic_write(dest) as f:
            f.write("next")
    assert dest.read_text() == "previous"
    assert _leftovers(tmp_path) == []


def test_atomic_path_for_libraries_that_want_a_file_name(tmp_path):
    dest = tmp_path / "state.pt"
    with atomic_path(dest) as tmp:
        assert tmp.parent == tmp_path and tmp != dest
        torch.save({"a": torch.arange(3)}, tmp)
        assert not dest.exists()
    assert torch.equal(torch.load(dest)["a"], torch.arange(3))


def test_atomic_path_temp_file_removed_by_caller_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="was removed inside the with-block"):
        with atomic_path(tmp_path / "y.bin") as tmp:
            tmp.unlink()
    assert not (tmp_path / "y.bin").exists()


def test_permissions_kept_on_replace_and_umask_on_create(tmp_path):
    dest = tmp_path / "p.txt"
    dest.write_text("a")
    os.chmod(dest, 0o640)
    with atomic_write(dest) as f:
        f.write("b")
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640
    fresh = tmp_path / "fresh.txt"
    with atomic_write(fresh) as f:
        f.write("c")
    old = os.umask(0o022)
    os.umask(old)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~old


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda d: atomic_write(d / "missing" / "a.txt"), FileNotFoundError, r"directory .*missing.* does not exist"),
        (lambda d: atomic_write(d), IsADirectoryError, "is a directory"),
        (lambda d: atomic_write(d / "a.txt", "a"), ValueError, r"mode: expected 'w' \(text\) or 'wb'"),
        (lambda d: atomic_write(3), TypeError, "path: expected a str or os.PathLike, got int"),
        (lambda d: atomic_path(""), ValueError, "path: expected a file name"),
    ],
)
def test_bad_arguments(tmp_path, call, exc, match):
    with pytest.raises(exc, match=match):
        with call(tmp_path):
            pass
    assert _leftovers(tmp_path) == []


@dataclasses.dataclass
class _Point:
    x: float
    tags: tuple


def test_write_json_atomic_converts_to_strict_json(tmp_path):
    obj = {
        "nan": math.nan, "inf": float("inf"), "ninf": -math.inf, "f": 1.5, "i": 3, "b": True, "none": None,
        "np_f32": np.float32(0.25), "np_i": np.int64(7), "np_b": np.bool_(False), "np_nan": np.float64("nan"),
        "t0": torch.tensor(2.5, dtype=torch.float64), "t_int": torch.tensor(4), "t": torch.tensor([1.0, math.nan]),
        "arr": np.array([[1, 2], [3, 4]]), "tup": (1, "a"), "path": Path("a") / "b", "dtype": torch.float32,
        "dc": _Point(math.inf, ("u",)), 5: "int key", "nested": {"x": [math.nan, 1]},
    }
    dest = tmp_path / "summary.json"
    write_json_atomic(obj, dest)
    text = dest.read_text(encoding="utf-8")

    def reject(name):
        raise AssertionError(f"non-strict JSON constant {name}")

    back = json.loads(text, parse_constant=reject)
    assert back == {
        "nan": None, "inf": None, "ninf": None, "f": 1.5, "i": 3, "b": True, "none": None,
        "np_f32": 0.25, "np_i": 7, "np_b": False, "np_nan": None, "t0": 2.5, "t_int": 4, "t": [1.0, None],
        "arr": [[1, 2], [3, 4]], "tup": [1, "a"], "path": str(Path("a") / "b"), "dtype": "torch.float32",
        "dc": {"x": None, "tags": ["u"]}, "5": "int key", "nested": {"x": [None, 1]},
    }
    assert type(back["np_i"]) is int and type(back["np_b"]) is bool


def test_write_json_atomic_bad_value_names_where_and_keeps_old_file(tmp_path):
    dest = tmp_path / "s.json"
    write_json_atomic({"ok": 1}, dest)
    with pytest.raises(TypeError, match=r"obj\['a'\]\[1\]: cannot write object to JSON"):
        write_json_atomic({"a": [1, object()]}, dest)
    assert json.loads(dest.read_text()) == {"ok": 1}
    with pytest.raises(TypeError, match="dict keys must be str or numbers, got tuple"):
        to_jsonable({(1, 2): 3})


# --- atomic_directory: a whole set of files replaces a folder as one unit ----------------------------

from curvlens.io.atomic import MANIFEST, STAGING_MARK, atomic_directory  # noqa: E402


def test_atomic_directory_new_folder_and_manifest(tmp_path):
    out = tmp_path / "a" / "b" / "report"
    with atomic_directory(out) as stage:
        assert stage.parent == out.parent and STAGING_MARK in stage.name and not out.exists()
        (stage / "x.txt").write_text("1")
        (stage / "y.bin").write_bytes(b"22")
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "x.txt", "y.bin"]
    assert json.loads((out / MANIFEST).read_text()) == {"files": {"x.txt": 1, "y.bin": 2}}
    assert sorted(p.name for p in out.parent.iterdir()) == ["report"]  # no staging folder left


def test_atomic_directory_swaps_an_owned_folder_as_a_whole(tmp_path):
    out = tmp_path / "out"
    with atomic_directory(out) as stage:
        (stage / "old.png").write_text("old")
        (stage / "r.txt").write_text("old")
    inode_before = out.stat().st_ino
    with atomic_directory(out, owned={"old.png", "r.txt"}) as stage:
        (stage / "r.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "r.txt"]  # the stale figure went with the swap
    assert (out / "r.txt").read_text() == "new" and out.stat().st_ino != inode_before  # a new folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_directory_keeps_foreign_files_and_writes_the_manifest_last(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("user data")
    (out / "r.txt").write_text("old")
    (out / "stale.png").write_text("old")
    order = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (order.append(Path(b).name), real(a, b))[1])
    with atomic_directory(out, owned={"r.txt", "stale.png"}) as stage:
        (stage / "r.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "mine.txt", "r.txt"]
    assert (out / "mine.txt").read_text() == "user data" and order[-1] == MANIFEST


def test_atomic_directory_failure_leaves_everything_as_it_was(tmp_path):
    out = tmp_path / "out"
    with atomic_directory(out) as stage:
        (stage / "r.txt").write_text("old")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(out, owned={"r.txt"}) as stage:
            (stage / "r.txt").write_text("half")
            raise KeyboardInterrupt
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    fresh = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(OSError, match="disk full"):
        with atomic_directory(fresh):
            raise OSError("disk full")
    assert not (tmp_path / "new").exists()  # no empty folders left behind


def test_atomic_directory_removes_staging_of_dead_processes_only(tmp_path):
    out = tmp_path / "out"
    dead = tmp_path / f".out{STAGING_MARK}999999999-abc"  # no such pid
    alive = tmp_path / f".out{STAGING_MARK}{os.getpid()}-abc"  # a concurrent writer (this process)
    legacy = tmp_path / "out" / f"{STAGING_MARK}xyz"  # old layout: inside the folder, no pid
    for d in (dead, alive, legacy):
        d.mkdir(parents=True)
        (d / "partial.h5").write_bytes(b"x")
    with atomic_directory(out, owned={"partial.h5"}) as stage:
        (stage / "r.txt").write_text("new")
    assert not dead.exists() and alive.exists() and not legacy.exists()
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "r.txt"]


@pytest.mark.parametrize("path, exc, match", [
    ("", TypeError, r"path: expected a folder path"),
    (3, TypeError, r"path: expected a folder path \(str or os.PathLike\), got 3"),
])
def test_atomic_directory_bad_path(path, exc, match):
    with pytest.raises(exc, match=match):
        with atomic_directory(path):
            pass


def test_atomic_directory_refuses_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="exists and is not a folder"):
        with atomic_directory(tmp_path / "f"):
            pass
