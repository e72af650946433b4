"""import_object / call_factory / is_factory_spec."""

import textwrap

import pytest
from torch import nn

from curvlens.errors import CheckpointError
from curvlens.problem.factory import call_factory, import_object, is_factory_spec


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_models.py"
    path.write_text(textwrap.dedent(
        """
        from torch import nn

        class Builders:
            @staticmethod
            def small():
                return nn.Linear(3, 2)

        def build():
            return nn.Linear(3, 2)

        def broken():
            raise RuntimeError("no GPU here")

        NOT_CALLABLE = 42
        """
    ))
    return path


def test_module_spec():
    from curvlens.data.demo import demo_model

    assert import_object("curvlens.data.demo:demo_model") is demo_model


def test_file_spec_and_dotted_name(user_file):
    assert isinstance(call_factory(f"{user_file}:build"), nn.Linear)
    assert isinstance(call_factory(f"{user_file}:Builders.small"), nn.Linear)
    # importing twice returns the same module object
    assert import_object(f"{user_file}:build") is import_object(f"{user_file}:build")


def test_file_imported_module_can_import_its_neighbours(tmp_path):
    (tmp_path / "helper_mod_e.py").write_text("WIDTH = 7\n")
    (tmp_path / "uses_helper.py").write_text("import helper_mod_e\ndef width():\n    return helper_mod_e.WIDTH\n")
    assert call_factory(f"{tmp_path / 'uses_helper.py'}:width") == 7


@pytest.mark.parametrize(
    "spec, exc, match",
    [
        ("curvlens.data.demo", ValueError, r"spec: expected 'pkg.module:name'.*add ':'"),
        ("curvlens.data.demo:", ValueError, r"spec: expected"),
        (":demo_model", ValueError, r"spec: expected"),
        (123, TypeError, r"spec: expected a string"),
        ("no_such_pkg_e.models:build", CheckpointError, r"no module named 'no_such_pkg_e.models'.*file path"),
        ("curvlens.data.demo:nope", CheckpointError, r"has no attribute 'nope'; available names: .*demo_model"),
        ("/does/not/exist.py:build", CheckpointError, r"file '/does/not/exist.py' does not exist"),
    ],
)
def test_import_errors(spec, exc, match):
    with pytest.raises(exc, match=match):
        import_object(spec)


def test_file_that_raises_on_import(tmp_path):
    bad = tmp_path / "bad_import.py"
    bad.write_text("raise ImportError('needs torchvision')\n")
    with pytest.raises(CheckpointError, match=r"importing '.*bad_import.py' raised ImportError: needs torchvision"):
        import_object(f"{bad}:x")


def test_module_with_missing_dependency(tmp_path, monkeypatch):
    (tmp_path / "needs_dep_e.py").write_text("import not_installed_dep_e\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(CheckpointError, match=r"needs the missing module 'not_installed_dep_e'"):
        import_object("needs_dep_e:x")


def test_call_factory_errors(user_file):
    with pytest.raises(CheckpointError, match=r"raised RuntimeError while building the model: no GPU here"):
        call_factory(f"{user_file}:broken", what="model")
    with pytest.raises(CheckpointError, match=r"expected a callable that builds the model, got int"):
        call_factory(f"{user_file}:NOT_CALLABLE", what="model")


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("pkg.mod:build", True),
        ("path/to/file.py:build", True),
        ("pkg.mod:Cls.method", True),
        ("data.pt", False),
        ("C:\\data\\x.pt", False),
        ("pkg.mod:", False),
        ("pkg.mod:not-an-identifier", False),
        (None, False),
    ],
)
def test_is_factory_spec(spec, expected):
    assert is_factory_spec(spec) is expected
