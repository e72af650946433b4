"""HDF5 failure modes: corrupt / truncated / foreign / newer files, bad inputs, interrupted writes."""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np
import pytest
import torch

import curvlens.io._h5codec as h5codec
from curvlens.errors import SchemaError
from curvlens.io.hdf5 import load_result, results_equal, save_result
from curvlens.results import RESULT_KINDS, RunInfo, register_result


@register_result("_test_io_errors_payload")
@dataclasses.dataclass(frozen=True)
class Payload:
    first: torch.Tensor
    extra: object
    info: RunInfo


def _info(seed=3):
    return RunInfo(seed=seed, matvecs=2, wall_time=0.1, converged=True, status="ok")


def _payload(seed=3, extra=None):
    return Payload(torch.arange(200, dtype=torch.float64) * seed, extra, _info(seed))


@pytest.fixture()
def good(tmp_path):
    res = _payload()
    return res, save_result(res, tmp_path / "good.h5")


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# ------------------------------------------------------------ interrupted writes
def test_write_killed_midway_keeps_previous_file(good, monkeypatch):
    res, path = good
    before = path.read_bytes()
    real = h5codec._write_value
    calls = []

    def dying(g, key, v, where, compression):
        calls.append(where)
        if len(calls) == 3:  # after the first fields were written to the temporary file
            raise KeyboardInterrupt
        return real(g, key, v, where, compression)

    monkeypatch.setattr(h5codec, "_write_value", dying)
    with pytest.raises(KeyboardInterrupt):
        save_result(_payload(seed=5), path)
    monkeypatch.undo()
    assert len(calls) == 3
    assert path.read_bytes() == before
    assert results_equal(load_result(path), res)
    assert _leftovers(path.parent) == []


def test_unsupported_field_midway_keeps_previous_file(good):
    res, path = good
    with pytest.raises(TypeError, match=r"result\.extra\[1\]\['k'\]: cannot store a value of type set in HDF5"):
        save_result(_payload(seed=7, extra=[1, {"k": {1, 2}}]), path)
    assert results_equal(load_result(path), res)
    assert _leftovers(path.parent) == []


def test_write_without_previous_file_leaves_nothing(tmp_path):
    with pytest.raises(TypeError, match="result.extra"):
        save_result(_payload(extra=object()), tmp_path / "new.h5")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------ unreadable files
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"load_result: no such file .*nope\.h5.*check the path"):
        load_result(tmp_path / "nope.h5")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        load_result(tmp_path)


@pytest.mark.parametrize("keep", [0, 8, 100, 0.5, 0.9])
def test_truncated_file_gives_schema_error_naming_the_file(good, keep):
    _, path = good
    data = path.read_bytes()
    n = keep if isinstance(keep, int) else int(len(data) * keep)
    path.write_bytes(data[:n])
    with pytest.raises(SchemaError, match=r"good\.h5.*(truncated|corrupt)") as exc:
        load_result(path)
    assert "\n" not in str(exc.value)


def test_not_hdf5(tmp_path):
    path = tmp_path / "summary.h5"
    path.write_text('{"lambda_max": 3}')
    with pytest.raises(SchemaError, match=r"summary\.h5.* is not a readable HDF5 file .*regenerate it"):
        load_result(path)


def test_corrupted_bytes_in_the_middle(good):
    _, path = good
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 3, len(data)):
        data[i] = 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(SchemaError, match=r"good\.h5"):
        load_result(path)


def test_hdf5_but_not_curvlens(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(SchemaError, match="is an HDF5 file but not a curvlens results file"):
        load_result(path)


def _edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda f: f["result"].attrs.__setitem__("curvlens-kind", "hessian_spectrum_v9"),
         r"unknown result kind 'hessian_spectrum_v9' .*upgrade curvlens"),
        (lambda f: f["result"].attrs.__setitem__("curvlens-schema", 2),
         r"kind '_test_io_errors_payload' has schema 2, newer than the schema 1 .*upgrade curvlens"),
        (lambda f: f["result/info"].attrs.__setitem__("curvlens-schema", 7),
         r"result\.info: result kind 'run_info' has schema 7.*upgrade curvlens"),
        (lambda f: f.attrs.__setitem__("curvlens-format", 3), "uses file format 3, newer than 1; upgrade curvlens"),
        (lambda f: f["result"].attrs.__setitem__("curvlens-fields", '[["first", "sparse_tensor"]]'),
         r"result\.first: unknown value type 'sparse_tensor'.*upgrade curvlens"),
        (lambda f: f["result"].attrs.__setitem__("curvlens-fields", '[["first", "tensor"], ["bogus", "int"]]'),
         r"corrupt curvlens results file \(KeyError"),
        (lambda f: f["result"].attrs.__setitem__("curvlens-fields", "[[not json"),
         r"corrupt curvlens results file \(JSONDecodeError"),
        (lambda f: f["result"].attrs.__delitem__("curvlens-kind"), "has no curvlens-kind/curvlens-schema"),
        (lambda f: f["result"].attrs.__setitem__("curvlens-fields", '[["first", "tensor"]]'),
         r"do not match Payload \(schema 1\): missing \['extra', 'info'\]"),
        (lambda f: f["result/first"].attrs.__setitem__("torch-dtype", "float128"), "unknown torch dtype"),
    ],
)
def test_foreign_or_newer_content(good, edit, match):
    _, path = good
    _edit(path, edit)
    with pytest.raises(SchemaError, match=match) as exc:
        load_result(path)
    assert "good.h5" in str(exc.value) and "\n" not in str(exc.value)


def test_older_schema_is_upgraded_by_class_hook(tmp_path):
    @register_result("_test_io_versioned", schema=1)
    @dataclasses.dataclass(frozen=True)
    class V1:
        x: float

    path = save_result(V1(2.0), tmp_path / "v1.h5")

    @register_result("_test_io_versioned", schema=2)
    @dataclasses.dataclass(frozen=True)
    class V1:  # noqa: F811  same qualname, new schema: a new release of the class
        x: float
        y: float

        @classmethod
        def __curvlens_upgrade__(cls, schema, values):
            return {**values, "y": values["x"] * 10}

    try:
        back = load_result(path)
        assert type(back) is V1 and back == V1(2.0, 20.0)
    finally:
        RESULT_KINDS.pop("_test_io_versioned")


# ------------------------------------------------------------ bad inputs to save_result
@register_result("_test_io_errors_dictkeys")
@dataclasses.dataclass(frozen=True)
class DictKeys:
    table: dict


@dataclasses.dataclass(frozen=True)
class NotRegistered:
    x: int


@pytest.mark.parametrize(
    "result, kwargs, exc, match",
    [
        ({"a": 1}, {}, TypeError, "result: expected a registered curvlens result dataclass, got dict"),
        (NotRegistered(1), {}, TypeError, r"NotRegistered is not a registered result; decorate it with"),
        (Payload(torch.ones(1), NotRegistered(1), _info()), {}, TypeError,
         r"result\.extra: NotRegistered is not a registered result"),
        (DictKeys({1: "a"}), {}, TypeError, r"result\.table: dict keys must be str, got int key 1; convert"),
        (Payload(torch.ones(2).to_sparse(), None, _info()), {}, TypeError,
         r"result\.first: cannot store a torch.sparse_coo tensor; convert it with .to_dense\(\)"),
        (Payload(torch.ones(1), np.array([object()]), _info()), {}, TypeError,
         r"result\.extra: cannot store a numpy array of dtype object"),
        (_payload(), {"attrs": [1]}, TypeError, "attrs: expected a dict of str -> number/str, got list"),
        (_payload(), {"attrs": {"curvlens-kind": "x"}}, ValueError, "attrs: keys must be str not starting with"),
        (_payload(), {"attrs": {"model": None}}, TypeError, r"attrs\['model'\]: expected a number, str, bool"),
    ],
)
def test_save_bad_inputs(tmp_path, result, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        save_result(result, tmp_path / "bad.h5", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_save_into_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        save_result(_payload(), tmp_path / "no" / "r.h5")


def test_load_bad_path_type():
    with pytest.raises(TypeError, match="path: expected a str or os.PathLike, got int"):
        load_result(3)


def test_user_attrs_written(tmp_path):
    attrs = {"model": "m.pt", "sizes": [1, 2], "n": np.int64(4), "big": 2**64 - 1}
    path = save_result(_payload(), tmp_path / "a.h5", attrs=attrs)
    with h5py.File(path, "r") as f:
        assert f.attrs["model"] == "m.pt" and list(f.attrs["sizes"]) == [1, 2] and f.attrs["n"] == 4
        assert int(f.attrs["big"]) == 2**64 - 1
        assert json.loads(f["result"].attrs["curvlens-fields"])[0] == ["first", "tensor"]


@pytest.mark.parametrize("checksum", [True, False])
def test_flipped_data_byte_is_detected_by_checksum(good, checksum):
    res, path = good
    save_result(res, path, checksum=checksum)
    with h5py.File(path, "r") as f:
        ds = f["result/first"]
        assert (ds.fletcher32, ds.chunks is not None) == (checksum, checksum)
        offset = ds.id.get_chunk_info(0).byte_offset if checksum else ds.id.get_offset()
    data = bytearray(path.read_bytes())
    data[offset + 17] ^= 0x40
    path.write_bytes(bytes(data))
    if checksum:
        damaged = r"good\.h5.*: result\.first: damaged dataset, the file is corrupt .*failed checksum"
        with pytest.raises(SchemaError, match=damaged):
            load_result(path)
    else:  # without checksums HDF5 cannot see the damage: the value silently differs
        assert results_equal(load_result(path), res, explain=True) == "result.first: tensor values differ"


class _Measured(float):
    __slots__ = ("stderr",)


def test_float_subclass_with_state_is_refused_not_silently_truncated(tmp_path):
    x = _Measured(0.5)
    x.stderr = 0.1
    with pytest.raises(TypeError, match=r"result\.extra: cannot store _Measured \(a subclass of float\) without "
                                        r"losing its extra state"):
        save_result(_payload(extra=x), tmp_path / "m.h5")
