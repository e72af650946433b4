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
