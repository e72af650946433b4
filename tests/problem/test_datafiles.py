"""load_data: tensor files (.pt/.npz/.h5), key conventions, factories and every error."""

import textwrap

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from curvlens.errors import CheckpointError
from curvlens.problem.datafiles import load_data, parse_data_keys

g = torch.Generator().manual_seed(0)
X = torch.randn(10, 3, generator=g, dtype=torch.float64)
Y = torch.arange(10) % 3


def _check(x, y, n=10):
    assert torch.equal(x, X[:n].to(x.dtype)) and torch.equal(y, Y[:n])
    assert y.dtype == torch.int64


def test_pt_default_keys(tmp_path):
    path = tmp_path / "d.pt"
    torch.save({"inputs": X, "targets": Y, "meta": "ignored"}, path)
    _check(*load_data(path))
    _check(*load_data(str(path), num_samples=4), n=4)


def test_pt_pair(tmp_path):
    path = tmp_path / "pair.pth"
    torch.save((X, Y), path)
    _check(*load_data(path))


def test_npz_xy_int32_targets_become_int64(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=X.numpy(), y=Y.numpy().astype(np.int32))
    _check(*load_data(path))


def test_h5_capital_x_and_nested_custom_keys(tmp_path):
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f["X"] = X.numpy()
        f["y"] = Y.numpy()
        f.create_group("train")
        f["train/images"] = X.numpy()
        f["train/labels"] = Y.numpy()
    _check(*load_data(path))
    _check(*load_data(path, keys="train/images, train/labels"))
    _check(*load_data(path, keys=("train/images", "train/labels")))


def test_dtype_cast(tmp_path):
    path = tmp_path / "d.pt"
    torch.save({"x": X, "y": X[:, 0]}, path)
    x, y = load_data(path, dtype=torch.float32)
    assert x.dtype == torch.float32 and y.dtype == torch.float32


@pytest.fixture
def factory_file(tmp_path):
    path = tmp_path / "my_data.py"
    path.write_text(textwrap.dedent(
        """
        import torch
        from torch.utils.data import DataLoader, TensorDataset
        g = torch.Generator().manual_seed(0)
        X = torch.randn(10, 3, generator=g, dtype=torch.float64)
        Y = torch.arange(10) % 3

        def pair():
            return X, Y

        def as_dict():
            return {"features": X, "labels": Y}

        def dataset():
            return TensorDataset(X, Y)

        def loader():
            return DataLoader(TensorDataset(X, Y), batch_size=4)

        def generator_of_batches():
            return [(X[:5], Y[:5]), (X[5:], Y[5:])]

        def broken():
            raise FileNotFoundError("/data/imagenet")

        def wrong():
            return 3.5
        """
    ))
    return path


def test_factories(factory_file):
    _check(*load_data(f"{factory_file}:pair"))
    _check(*load_data(f"{factory_file}:as_dict"))
    dl = load_data(f"{factory_file}:dataset", batch_size=3)
    assert isinstance(dl, DataLoader)
    xs, ys = zip(*dl)
    assert [len(b) for b in xs] == [3, 3, 3, 1]
    _check(torch.cat(xs), torch.cat(ys))
    dl = load_data(f"{factory_file}:dataset", num_samples=5)
    _check(*map(torch.cat, zip(*dl)), n=5)
    assert isinstance(load_data(f"{factory_file}:loader"), DataLoader)
    batches = list(load_data(f"{factory_file}:loader", num_samples=6))
    assert [len(b[0]) for b in batches] == [4, 2]
    _check(*map(torch.cat, zip(*batches)), n=6)
    batches = list(load_data(f"{factory_file}:generator_of_batches", num_samples=7))
    _check(*map(torch.cat, zip(*batches)), n=7)


def test_factory_errors(factory_file):
    with pytest.raises(CheckpointError, match=r"raised FileNotFoundError while building the data: /data/imagenet"):
        load_data(f"{factory_file}:broken")
    with pytest.raises(CheckpointError, match=r"returned a float; expected an \(inputs, targets\) pair"):
        load_data(f"{factory_file}:wrong")
    with pytest.raises(CheckpointError, match=r"has no attribute 'nope'"):
        load_data(f"{factory_file}:nope")


def test_file_errors(tmp_path):
    torch.save({"images": X, "labels": Y}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"has no keys 'inputs' and 'targets'.*holds 'images', 'labels'; name the keys with keys='INPUTS,TARGETS'$"):
        load_data(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"has no keys 'a' and 'b'"):
        load_data(tmp_path / "other.pt", keys="a,b")
    torch.save({"x": X, "y": Y[:7]}, tmp_path / "short.pt")
    with pytest.raises(CheckpointError, match=r"inputs have shape \(10, 3\) but targets \(7,\); both need the same number"):
        load_data(tmp_path / "short.pt")
    with pytest.raises(CheckpointError, match=r"data file '.*missing.npz' does not exist"):
        load_data(tmp_path / "missing.npz")
    torch.save(torch.utils.data.TensorDataset(X, Y), tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match=r"holds pickled Python objects.*torch.save\(\{'inputs': X"):
        load_data(tmp_path / "pickled.pt")
    (tmp_path / "trunc.pt").write_bytes((tmp_path / "other.pt").read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"is not a readable torch file \(corrupt or truncated\?\)"):
        load_data(tmp_path / "trunc.pt")
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object), y=np.zeros(1))
    with pytest.raises(CheckpointError, match=r"holds object arrays, which need pickle and are refused"):
        load_data(tmp_path / "obj.npz")
    (tmp_path / "bad.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(CheckpointError, match=r"is not a readable HDF5 file"):
        load_data(tmp_path / "bad.h5")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match=r"holds a list; expected a dict with keys 'inputs' and 'targets'"):
        load_data(tmp_path / "list.pt")
    np.savez(tmp_path / "str.npz", x=np.array(["a", "b"]), y=np.zeros(2))
    with pytest.raises(CheckpointError, match=r"key 'inputs' holds <U1 values, expected numbers"):
        load_data(tmp_path / "str.npz")


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"spec": "data.csv"}, ValueError, r"unsupported file type '.csv' for 'data.csv'; expected .pt"),
        ({"spec": "d.pt", "keys": "only_one"}, ValueError, r"keys: expected two names 'INPUTS,TARGETS'"),
        ({"spec": "d.pt", "num_samples": 0}, ValueError, r"num_samples: expected a positive int or None, got 0"),
        ({"spec": "d.pt", "batch_size": 2.5}, ValueError, r"batch_size: expected a positive int"),
        ({"spec": 3}, TypeError, r"data: expected a file path or 'module:factory' string, got int"),
    ],
)
def test_argument_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        load_data(**kwargs)


def test_parse_data_keys():
    assert parse_data_keys(None) is None
    assert parse_data_keys(" a , b") == ("a", "b")
    with pytest.raises(ValueError, match="keys: expected two names"):
        parse_data_keys(("a", "b", "c"))
