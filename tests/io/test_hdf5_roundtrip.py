"""HDF5 round-trip of results: every field type, types preserved, layout readable with plain h5py."""

from __future__ import annotations

import dataclasses
import datetime
import json
import math

import h5py
import numpy as np
import pytest
import torch

from curvlens.io.hdf5 import load_result, results_equal, run_metadata, save_result, save_summary, summary_of
from curvlens.linalg import lanczos
from curvlens.operators import DenseOperator
from curvlens.results import RunInfo, register_result


@register_result("_test_io_leaf", schema=2)
@dataclasses.dataclass(frozen=True)
class Leaf:
    value: torch.Tensor
    label: str
    info: RunInfo


@register_result("_test_io_everything")
@dataclasses.dataclass(frozen=True)
class Everything:
    tensors: dict
    arrays: dict
    scalars: dict
    sequences: dict
    nested: Leaf
    leaves: tuple
    maybe: Leaf | None = None
    computed: int = dataclasses.field(default=0, init=False)


def _info(seed=0) -> RunInfo:
    return RunInfo(seed=seed, matvecs=12, wall_time=0.5, converged=False, status="increase num_steps",
                   dtype="torch.float64", device="cpu")


def make_everything() -> Everything:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 4, generator=g, dtype=torch.float64)
    tensors = {
        "f64": base, "f32": base.float(), "f16": base.half(), "bf16": base.bfloat16(),
        "i64": torch.arange(-3, 3), "i32": torch.arange(4, dtype=torch.int32), "u8": torch.arange(5, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]), "c128": torch.complex(base, -base), "c64": torch.tensor([1 + 2j]),
        "zero_d": torch.tensor(math.nan, dtype=torch.float64), "empty": torch.empty(0, 3, dtype=torch.float32),
        "transposed": base.T, "grad": base.clone().requires_grad_(True), "conj": torch.tensor([1 + 1j]).conj(),
        "with_nan_inf": torch.tensor([math.nan, math.inf, -math.inf, -0.0], dtype=torch.float64),
    }
    arrays = {
        "f64": base.numpy().copy(), "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
        "i32": np.array([1, -2], dtype=np.int32), "bool": np.array([[True], [False]]), "zero_d": np.array(2.5),
        "empty": np.zeros((0,), dtype=np.int64), "str": np.array(["a", "βeta", ""]), "c": np.array([1j, 2]),
        "big_endian": np.array([1.0, 2.0], dtype=">f8"),
    }
    scalars = {
        "none": None, "true": True, "false": False, "int": -7, "zero": 0, "int64_max": 2**63 - 1,
        "uint64": 2**64 - 1, "huge": 2**70, "neg_huge": -(2**70), "float": 0.1, "nan": math.nan, "inf": math.inf,
        "neg_zero": -0.0, "complex": 1 - 2j, "str": "lambda_max ≈ 3", "empty_str": "", "long_str": "x" * 40_000,
        "np_f32": np.float32(1.5), "np_i64": np.int64(-3), "np_bool": np.bool_(True), "dtype": torch.bfloat16,
        "key/with/slashes": 1, ".dot": 2, "%25": 3, "": 4, "curvlens-fields": 5, "curvlens-type": "x",
    }
    sequences = {
        "tuple_int": (1, 2, 3), "list_int": [4, 5], "tuple_float": (0.5, math.nan), "list_str": ["conv1", "fc"],
        "tuple_str": ("a",), "list_bool": [True, False], "empty_tuple": (), "empty_list": [],
        "mixed": [1, "a", None, 2.5, True], "int_float": (1, 1.0), "big_ints": [1, 2**64],
        "tensors": (torch.ones(2), torch.zeros(1, dtype=torch.int64)), "nested": [[1, 2], ("x", [None])],
        "long": list(range(5000)), "long_str": [str(i) for i in range(3000)], "dicts": [{"a": 1}, {}],
    }
    leaf = Leaf(torch.tensor([1.0, 2.0]), "leaf", _info(1))
    leaves = (Leaf(torch.tensor(3.0), "a", _info(2)), Leaf(torch.empty(0), "b", _info(None)))
    return Everything(tensors, arrays, scalars, sequences, leaf, leaves)


@pytest.fixture(scope="module")
def everything_file(tmp_path_factory):
    res = make_everything()
    path = save_result(res, tmp_path_factory.mktemp("h5") / "everything.h5", attrs={"model": "tiny.pt"})
    return res, path


def test_roundtrip_every_field_type(everything_file):
    res, path = everything_file
    back = load_result(path)
    assert type(back) is Everything
    assert results_equal(back, res, explain=True) is None
    assert results_equal(back, res)


def test_roundtrip_preserves_python_and_tensor_types(everything_file):
    res, path = everything_file
    back = load_result(path)
    s, q, t, a = back.scalars, back.sequences, back.tensors, back.arrays
    assert s["none"] is None and s["true"] is True and type(s["int"]) is int and type(s["float"]) is float
    assert s["uint64"] == 2**64 - 1 and s["huge"] == 2**70 and s["neg_huge"] == -(2**70) and type(s["huge"]) is int
    assert math.copysign(1.0, s["neg_zero"]) == -1.0 and math.isnan(s["nan"]) and s["inf"] == math.inf
    assert type(s["np_f32"]) is np.float32 and type(s["np_bool"]) is np.bool_ and s["dtype"] is torch.bfloat16
    assert type(s["complex"]) is complex and s["complex"] == 1 - 2j and len(s["long_str"]) == 40_000
    assert list(s) == list(res.scalars)  # dict order kept
    assert type(q["tuple_int"]) is tuple and type(q["list_int"]) is list and type(q["empty_tuple"]) is tuple
    assert type(q["int_float"][0]) is int and type(q["int_float"][1]) is float
    assert q["mixed"][:3] == [1, "a", None] and q["mixed"][4] is True and q["long"] == list(range(5000))
    assert type(q["nested"][1]) is tuple and q["nested"][1][1] == [None]
    for name, tensor in res.tensors.items():
        assert t[name].dtype == tensor.dtype and t[name].shape == tensor.shape, name
        assert t[name].device.type == "cpu" and not t[name].requires_grad
    assert t["zero_d"].ndim == 0 and t["transposed"].shape == (4, 3)
    assert torch.equal(t["conj"], torch.tensor([1 - 1j]))
    assert a["str"].dtype == np.dtype("<U4") and a["big_endian"].dtype == np.dtype(">f8") and a["zero_d"].ndim == 0
    assert type(back.leaves) is tuple and back.leaves[1].info.seed is None and back.maybe is None
    assert back.nested.info == res.nested.info


def test_plain_h5py_layout(everything_file):
    res, path = everything_file
    with h5py.File(path, "r") as f:
        assert f.attrs["curvlens-format"] == 1
        assert f.attrs["curvlens-version"] == run_metadata()["curvlens"]
        assert f.attrs["torch-version"] == torch.__version__ and f.attrs["model"] == "tiny.pt"
        created = datetime.datetime.fromisoformat(f.attrs["created"])
        assert created.utcoffset() == datetime.timedelta(0)
        g = f["result"]
        assert g.attrs["curvlens-kind"] == "_test_io_everything" and g.attrs["curvlens-schema"] == 1
        fields = json.loads(g.attrs["curvlens-fields"])
        names = ["tensors", "arrays", "scalars", "sequences", "nested", "leaves", "maybe"]
        assert [name for name, _ in fields] == names
        ds = g["tensors/f64"]
        assert ds.attrs["curvlens-type"] == "tensor" and ds.attrs["torch-dtype"] == "float64"
        np.testing.assert_array_equal(ds[()], res.tensors["f64"].numpy())
        assert g["tensors/bf16"].dtype == np.float32 and g["tensors/bf16"].attrs["torch-dtype"] == "bfloat16"
        assert g["scalars"].attrs["float"] == 0.1 and g["scalars"].attrs["str"] == "lambda_max ≈ 3"
        assert isinstance(g["scalars"].attrs["none"], h5py.Empty)
        assert "key%2Fwith%2Fslashes" in g["scalars"].attrs
        assert list(g["sequences"].attrs["list_str"]) == ["conv1", "fc"]
        assert g["nested"].attrs["curvlens-kind"] == "_test_io_leaf" and g["nested"].attrs["curvlens-schema"] == 2
        assert g["nested/info"].attrs["curvlens-kind"] == "run_info" and g["nested/info"].attrs["matvecs"] == 12
        assert g["leaves/1/info"].attrs["status"] == "increase num_steps"


def test_results_equal_detects_differences():
    a = make_everything()
    assert results_equal(a, make_everything())
    changed = make_everything()
    changed.tensors["f64"][1, 2] += 1e-15
    assert results_equal(a, changed, explain=True) == "result.tensors['f64']: tensor values differ"
    cases = [
        ("tensors", "f32", a.tensors["f32"].double(), "float32"),
        ("tensors", "zero_d", torch.tensor(0.0, dtype=torch.float64), "tensor values differ"),
        ("arrays", "f32", np.arange(6, dtype=np.float64).reshape(2, 3), "float32"),
        ("scalars", "nan", 1.0, "nan vs 1.0"),
        ("scalars", "int", -7.0, "int vs float"),
        ("sequences", "tuple_int", [1, 2, 3], "tuple vs list"),
        ("sequences", "long", list(range(4999)), "length 5000 vs 4999"),
    ]
    for group, key, value, why in cases:
        b = make_everything()
        getattr(b, group)[key] = value
        d = results_equal(a, b, explain=True)
        assert d is not None and why in d, (key, d)
        assert not results_equal(a, b)
    other_info = dataclasses.replace(a, nested=Leaf(a.nested.value, "leaf", _info(99)))
    assert "result.nested.info.seed: 1 vs 99" == results_equal(a, other_info, explain=True)


def _lanczos_result(store_basis=True):
    op = DenseOperator(torch.diag(torch.tensor([-2.0, 0.5, 1.0, 3.0, 7.0], dtype=torch.float64)))
    g = torch.Generator()
    g.seed()  # a 64-bit OS seed: may not fit in int64
    return lanczos(op, 4, generator=g, store_basis=store_basis, reorth=store_basis)


@pytest.mark.parametrize("store_basis", [True, False])
def test_lanczos_and_runinfo_roundtrip(tmp_path, store_basis):
    res = _lanczos_result(store_basis)
    back = load_result(save_result(res, tmp_path / "lanczos.h5"))
    assert results_equal(back, res, explain=True) is None
    assert back.info == res.info and (back.basis is None) == (not store_basis)
    np.testing.assert_array_equal(back.ritz()[0], res.ritz()[0])
    info = load_result(save_result(res.info, tmp_path / "info.h5"))
    assert info == res.info
    with h5py.File(tmp_path / "lanczos.h5", "r") as f:
        assert f.attrs["matvecs"] == res.info.matvecs and f.attrs["wall_time"] == res.info.wall_time
        assert int(f.attrs["seed"]) == res.info.seed


def test_gzip_compression_roundtrip(tmp_path):
    res = _lanczos_result()
    path = save_result(res, tmp_path / "c.h5", compression="gzip")
    with h5py.File(path, "r") as f:
        assert f["result/basis"].compression == "gzip"
    assert results_equal(load_result(path), res)


def test_save_overwrites_and_returns_path(tmp_path):
    path = tmp_path / "r.h5"
    first, second = _lanczos_result(), _lanczos_result()
    assert save_result(first, str(path)) == path
    save_result(second, path)
    assert results_equal(load_result(path), second) and not results_equal(load_result(path), first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.h5"]


def test_summary_json(tmp_path):
    res = _lanczos_result()
    path = save_summary(res, tmp_path / "summary.json", attrs={"model": "m.pt"})
    doc = json.loads(path.read_text())
    assert doc["curvlens-kind"] == "lanczos" and doc["attrs"] == {"model": "m.pt"}
    assert doc["versions"]["torch"] == torch.__version__ and "hostname" not in json.dumps(doc).lower()
    assert doc["summary"]["matvecs"] == 4 and doc["summary"]["seed"] == res.info.seed
    assert doc["summary"]["residual_norm"] == res.residual_norm and doc["summary"]["breakdown"] is res.breakdown


def test_summary_uses_summary_method_and_writes_nan_as_null(tmp_path):
    @register_result("_test_io_with_summary")
    @dataclasses.dataclass(frozen=True)
    class WithSummary:
        lam: float
        info: RunInfo

        def summary(self):
            return {"lambda_max": self.lam, "condition_number": math.nan, "noise_batch_sizes": [8, 16],
                    "num_params": 1234, "num_samples": 64}

    res = WithSummary(3.0, _info())
    got = summary_of(res)
    assert math.isnan(got.pop("condition_number"))
    assert got == {"lambda_max": 3.0, "noise_batch_sizes": [8, 16], "num_params": 1234, "num_samples": 64}
    doc = json.loads(save_summary(res, tmp_path / "s.json").read_text())
    assert doc["summary"] == {"lambda_max": 3.0, "condition_number": None, "noise_batch_sizes": [8, 16],
                              "num_params": 1234, "num_samples": 64}
    path = save_result(res, tmp_path / "w.h5")
    assert results_equal(load_result(path), res)
    with h5py.File(path, "r") as f:  # model and data size as top-level attributes
        assert (f.attrs["num_params"], f.attrs["num_samples"]) == (1234, 64)
        assert (f.attrs["seed"], f.attrs["matvecs"], f.attrs["converged"]) == (0, 12, False)


def test_run_metadata_has_versions_only():
    meta = run_metadata()
    assert set(meta) >= {"curvlens", "torch", "numpy", "python"}
    assert all(isinstance(v, str) for v in meta.values())
