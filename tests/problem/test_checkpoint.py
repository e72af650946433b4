"""load_checkpoint / inspect_checkpoint on tiny checkpoints of every supported format."""

import textwrap

import pytest
import torch
from torch import nn

from curvlens.data.demo import demo_model
from curvlens.errors import CheckpointError
from curvlens.problem.checkpoint import check_double_backward, inspect_checkpoint, load_checkpoint, sniff_format

NUM_PARAMS = (3 * 4 + 4) + (4 * 4 + 4) + (4 * 2 + 2)  # 46
X = torch.randn(5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def make_model(seed=0):
    return demo_model(3, 2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def assert_same_params(a: nn.Module, b: nn.Module):
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.equal(pa[k].detach(), pb[k].detach()), k


def hvp(model, x):
    """Hessian of 0.5*sum(out^2) wrt params times the all-ones vector, flattened."""
    params = list(model.parameters())
    loss = 0.5 * model(x).pow(2).sum()
    grads = torch.autograd.grad(loss, params, create_graph=True)
    out = torch.autograd.grad(sum(g.sum() for g in grads), params)
    return torch.cat([o.reshape(-1) for o in out])


@pytest.fixture(scope="module")
def ref():
    return make_model(0)


@pytest.fixture(scope="module")
def factory(tmp_path_factory):
    path = tmp_path_factory.mktemp("factory") / "arch.py"
    path.write_text(textwrap.dedent(
        """
        import torch
        from curvlens.data.demo import demo_model

        def build():
            return demo_model(3, 2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(99))

        def wider():
            return demo_model(3, 2, 5, dtype=torch.float64)
        """
    ))
    return path


@pytest.mark.parametrize("layout", ["bare", "model", "state_dict", "model_state_dict", "ddp", "compiled", "lightning"])
def test_state_dict_layouts(tmp_path, ref, factory, layout):
    sd = ref.state_dict()
    obj = {
        "bare": sd,
        "model": {"epoch": 3, "model": sd, "optimizer": {"state": {}, "param_groups": []}},
        "state_dict": {"state_dict": sd, "step": 10},
        "model_state_dict": {"model_state_dict": sd, "loss": 0.25},
        "ddp": {"model": {f"module.{k}": v for k, v in sd.items()}},
        "compiled": {f"_orig_mod.{k}": v for k, v in sd.items()},
        "lightning": {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 1},
    }[layout]
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)
    s = inspect_checkpoint(path)
    assert (s.format, s.num_parameters, s.num_elements, s.needs_model, s.needs_trust) == (
        "state_dict", NUM_PARAMS, NUM_PARAMS, True, False)
    assert {r[1] for r in s.tensors} == {tuple(v.shape) for v in sd.values()}
    loaded = load_checkpoint(path, model=f"{factory}:build")
    assert loaded.format == "state_dict" and not loaded.model.training
    assert_same_params(loaded.model, ref)
    if layout in ("model", "state_dict", "model_state_dict"):
        assert s.state_dict_key == layout == loaded.state_dict_key
        assert ("epoch", "int 3") in s.entries or layout != "model"
    if layout in ("ddp", "compiled", "lightning"):
        prefix = {"ddp": "module.", "compiled": "_orig_mod.", "lightning": "model."}[layout]
        assert f"stripped key prefix {prefix!r}" in loaded.notes


def test_legacy_format_and_model_arguments(tmp_path, ref):
    path = tmp_path / "legacy.pt"
    torch.save(ref.state_dict(), path, _use_new_zipfile_serialization=False)
    assert sniff_format(path) == "torch_legacy"
    target = make_model(5)
    loaded = load_checkpoint(path, model=target, eval_mode=False)  # an instance is filled in place
    assert loaded.model is target and target.training
    assert_same_params(target, ref)
    assert_same_params(load_checkpoint(path, model=lambda: make_model(7)).model, ref)


def test_mismatch_strict_and_lenient(tmp_path, ref, factory):
    sd = dict(ref.state_dict())
    sd["extra.weight"] = torch.zeros(2)
    del sd["4.bias"]
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"does not match the model built by '.*arch.py:build': "
                       r"missing keys: 4.bias; unexpected keys: extra.weight; check that model= builds"):
        load_checkpoint(path, model=f"{factory}:build")
    with pytest.raises(CheckpointError, match=r"shape mismatches: 0.weight checkpoint \(4, 3\) vs model \(5, 3\)"):
        load_checkpoint(path, model=f"{factory}:wider")
    loaded = load_checkpoint(path, model=f"{factory}:build", strict=False)
    assert any("missing keys: 4.bias" in n for n in loaded.notes)
    assert torch.equal(loaded.model[0].weight, ref[0].weight)
    assert not torch.equal(loaded.model[4].bias, ref[4].bias)  # kept the factory's value


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript(tmp_path, ref, how):
    path = tmp_path / f"{how}.pt"
    mod = torch.jit.script(ref) if how == "script" else torch.jit.trace(ref, X)
    torch.jit.save(mod, str(path))
    s = inspect_checkpoint(path)
    assert (s.format, s.num_parameters, s.needs_model, len(s.tensors)) == ("torchscript", NUM_PARAMS, False, 6)
    loaded = load_checkpoint(path)
    assert loaded.format == "torchscript" and loaded.double_backward is None
    assert any("double backward not probed" in n for n in loaded.notes)
    loaded = load_checkpoint(path, model="ignored:factory", example_inputs=X)
    assert loaded.double_backward is True and any("model= ignored" in n for n in loaded.notes)
    torch.testing.assert_close(loaded.model(X), ref(X), rtol=0, atol=0)
    for _ in range(3):  # the profiling executor specialises after a few runs: stay exact
        torch.testing.assert_close(hvp(loaded.model, X), hvp(ref, X), rtol=1e-12, atol=1e-12)


def test_torch_export_dynamic(tmp_path, ref):
    path = tmp_path / "prog.pt2"
    ep = torch.export.export(ref, (X,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, str(path))
    s = inspect_checkpoint(path)
    assert (s.format, s.num_parameters, s.needs_model) == ("torch_export", NUM_PARAMS, False)
    assert any(n.startswith("input shapes: (") and n.endswith(", 3)") for n in s.notes)
    loaded = load_checkpoint(path)
    assert loaded.format == "torch_export" and loaded.double_backward is True
    torch.testing.assert_close(loaded.example_inputs[0], X)
    x7 = torch.cat([X, X[:2]])
    torch.testing.assert_close(loaded.model(x7), ref(x7), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hvp(loaded.model, x7), hvp(ref, x7), rtol=1e-12, atol=1e-12)


def test_torch_export_static_shape_message(tmp_path, ref):
    path = tmp_path / "static.pt2"
    torch.export.save(torch.export.export(ref, (X,)), str(path))
    assert load_checkpoint(path).double_backward is True  # its own sample inputs fit
    with pytest.raises(CheckpointError, match=r"forward on inputs of shape \(3, 3\) failed: .*fixed input shape: "
                       r"re-export with torch.export.export\(..., dynamic_shapes=...\)"):
        load_checkpoint(path, example_inputs=X[:3])


def _write_safetensors(path, sd):
    import json

    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for k, v in sd.items():
        raw = v.to(torch.float32).contiguous().numpy().tobytes()
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"".join(blobs))


def test_safetensors_inspect_without_package_and_load_message(tmp_path, ref, monkeypatch):
    path = tmp_path / "model.safetensors"
    _write_safetensors(path, ref.state_dict())
    s = inspect_checkpoint(path)
    assert (s.format, s.num_parameters, s.needs_model) == ("safetensors", NUM_PARAMS, True)
    assert ("0.weight", (4, 3), "F32") in s.tensors and 'metadata: {"format": "pt"}' in s.notes
    monkeypatch.setitem(__import__("sys").modules, "safetensors", None)  # as if not installed
    monkeypatch.setitem(__import__("sys").modules, "safetensors.torch", None)
    with pytest.raises(CheckpointError, match=r"reading safetensors file '.*model.safetensors' needs the optional "
                       r"package safetensors.*pip install safetensors"):
        load_checkpoint(path, model=make_model)


def test_safetensors_load_with_the_package(tmp_path, ref):
    from safetensors.torch import save_file  # in the test extra

    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    assert inspect_checkpoint(path).format == "safetensors"
    loaded = load_checkpoint(path, model=make_model(seed=5))  # different init: weights must come from the file
    for (n, a), (_, b) in zip(ref.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), n


class OnceDifferentiableSquare(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


class FirstOrderOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2, dtype=torch.float64)

    def forward(self, x):
        return OnceDifferentiableSquare.apply(self.lin(x))


def test_pickled_module_refused_then_trusted(tmp_path, ref):
    path = tmp_path / "whole.pt"
    torch.save(ref, path)
    s = inspect_checkpoint(path)
    assert (s.format, s.needs_trust, s.num_parameters) == ("pickled_module", True, None)
    assert "torch.nn.modules.container.Sequential" in s.notes[0]
    with pytest.raises(CheckpointError, match=r"is a pickled Python object referring to .*Sequential.*"
                       r"runs code from the file, so it is refused: pass trust=True only if you trust its source, "
                       r"or save model\.state_dict\(\) instead and load it with model='pkg\.module:factory'"):
        load_checkpoint(path)
    loaded = load_checkpoint(path, trust=True, example_inputs=X)
    assert loaded.format == "pickled_module" and loaded.double_backward is True
    assert_same_params(loaded.model, ref)
    torch.save({"model": ref, "epoch": 2}, tmp_path / "dict_with_module.pt")
    loaded = load_checkpoint(tmp_path / "dict_with_module.pt", trust=True)
    assert loaded.state_dict_key == "model"
    assert_same_params(loaded.model, ref)


def test_double_backward_probe(tmp_path, ref):
    assert check_double_backward(ref, X) is None
    net = FirstOrderOnly()
    assert "double backward failed: model: a Hessian-vector product needs second derivatives, but the model contains an operation that can only be differentiated once" in (
        check_double_backward(net, (X,)))
    path = tmp_path / "first_order.pt"
    torch.save(net, path)
    with pytest.raises(CheckpointError, match=r"pickled_module model '.*first_order.pt' cannot give Hessian-vector "
                       r"products: double backward failed: .*every operation in the model's forward needs a second "
                       r"derivative"):
        load_checkpoint(path, trust=True, example_inputs=X)
    assert "forward on inputs of shape (5, 4) failed" in check_double_backward(ref, torch.zeros(5, 4, dtype=torch.float64))
    frozen = make_model()
    frozen.requires_grad_(False)
    assert check_double_backward(frozen, X) == "the model has no parameters that require grad"
