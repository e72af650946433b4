"""Every checkpoint failure raises CheckpointError / TypeError with a message naming file and fix."""

import numpy as np
import pytest
import torch

from curvlens.data.demo import demo_model
from curvlens.errors import CheckpointError
from curvlens.problem.checkpoint import inspect_checkpoint, load_checkpoint


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    sd = demo_model(3, 2, 4).state_dict()
    torch.save(sd, d / "good.pt")
    raw = (d / "good.pt").read_bytes()
    (d / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    torch.save(sd, d / "legacy.pt", _use_new_zipfile_serialization=False)
    raw = (d / "legacy.pt").read_bytes()
    (d / "truncated_legacy.pt").write_bytes(raw[: len(raw) // 2])
    (d / "empty.pt").write_bytes(b"")
    (d / "notes.txt").write_text("just some text, not a checkpoint\n")
    np.savez(d / "arrays.npz", x=np.zeros(3))
    import h5py

    h5py.File(d / "result.h5", "w").close()
    torch.save({"epoch": 3, "lr": 0.1}, d / "no_tensors.pt")
    (d / "factories.py").write_text(
        "def not_a_module():\n    return 3\n\ndef raises():\n    raise ValueError('bad width')\n"
    )
    (d / "subdir").mkdir()
    return d


@pytest.mark.parametrize(
    "name, kwargs, exc, match",
    [
        ("missing.pt", {}, CheckpointError, r"checkpoint '.*missing.pt' does not exist; check the path"),
        ("subdir", {}, CheckpointError, r"is a directory; pass the checkpoint file inside it"),
        ("empty.pt", {}, CheckpointError, r"'.*empty.pt' is empty \(0 bytes\)"),
        ("notes.txt", {}, CheckpointError, r"'.*notes.txt' is not a checkpoint: expected a torch.save file"),
        ("arrays.npz", {}, CheckpointError, r"is a NumPy .npz archive, not a model checkpoint; pass data files as data=$"),
        ("result.h5", {}, CheckpointError, r"is an HDF5 file, not a model checkpoint"),
        ("truncated.pt", {}, CheckpointError, r"'.*truncated.pt' is a corrupt or truncated zip archive.*re-save"),
        ("truncated_legacy.pt", {}, CheckpointError, r"'.*truncated_legacy.pt' is corrupt or truncated"),
        ("no_tensors.pt", {}, CheckpointError, r"holds dict \(2 entries\), not a model or a state_dict"),
        ("good.pt", {}, CheckpointError, r"'.*good.pt' holds only weights, not the architecture; pass model='pkg\.module:factory' or model='path/to/file\.py:factory' that builds it$"),
        ("good.pt", {"model": "FACT:not_a_module"}, CheckpointError, r"factory '.*factories.py:not_a_module' returned a int, expected a torch.nn.Module"),
        ("good.pt", {"model": "FACT:raises"}, CheckpointError, r"factory '.*factories.py:raises' raised ValueError while building the model: bad width"),
        ("good.pt", {"model": "FACT:nope"}, CheckpointError, r"has no attribute 'nope'"),
        ("good.pt", {"model": 3}, TypeError, r"model: expected an nn.Module, a factory spec 'pkg.module:factory' or a callable, got int"),
    ],
)
def test_load_errors(files, name, kwargs, exc, match):
    kwargs = {k: v.replace("FACT", str(files / "factories.py")) if isinstance(v, str) else v for k, v in kwargs.items()}
    with pytest.raises(exc, match=match):
        load_checkpoint(files / name, **kwargs)


@pytest.mark.parametrize("name", ["missing.pt", "empty.pt", "notes.txt", "arrays.npz", "truncated.pt", "truncated_legacy.pt"])
def test_inspect_errors_match_load_errors(files, name):
    with pytest.raises(CheckpointError) as a:
        inspect_checkpoint(files / name)
    with pytest.raises(CheckpointError) as b:
        load_checkpoint(files / name)
    assert str(a.value) == str(b.value) and "\n" not in str(a.value)


def test_inspect_no_tensors_and_bad_type(files):
    with pytest.raises(CheckpointError, match=r"holding dict \(2 entries\) but no tensors of a model"):
        inspect_checkpoint(files / "no_tensors.pt")
    with pytest.raises(TypeError, match=r"path: expected a file path, got int"):
        inspect_checkpoint(3)


def test_corrupt_torchscript_and_export(tmp_path):
    m = demo_model(3, 2, 4)
    torch.jit.save(torch.jit.script(m), str(tmp_path / "ts.pt"))
    raw = bytearray((tmp_path / "ts.pt").read_bytes())
    (tmp_path / "ts_cut.pt").write_bytes(bytes(raw[:-300]))
    with pytest.raises(CheckpointError, match=r"corrupt or truncated"):
        load_checkpoint(tmp_path / "ts_cut.pt")
