"""Every bad input of `curvlens analyze` ends with one readable line and the right exit code
(2: bad options, 1: failures), a traceback only with -v; failures while writing leave the
previous results in --out byte-identical, with no temporary files."""

from __future__ import annotations

import os
import re
import sys

import pytest

from tests.cli.conftest import MODEL_FILE_SPEC, QUICK, TINY_PY

# (name, args after "analyze" with {f} = files folder and {m} = the model spec, message regex)
FAILURES = [
    ("missing file", ["{f}/nope.pt", "--model", "{m}"], r"checkpoint not found: .*/nope\.pt$"),
    ("not a checkpoint", ["{f}/notes.txt", "--model", "{m}"],
     r"'.*notes\.txt' is not a checkpoint: expected a torch\.save file, a TorchScript or torch\.export archive, "
     r"or a \.safetensors file, but it starts with b'these ar'"),
    ("data file as checkpoint", ["{f}/data.npz", "--model", "{m}"],
     r"is a NumPy \.npz archive, not a model checkpoint; pass data files as --data$"),
    ("hdf5 as checkpoint", ["{f}/data.h5", "--model", "{m}"], r"is an HDF5 file, not a model checkpoint"),
    ("truncated", ["{f}/truncated.pt", "--model", "{m}"],
     r"checkpoint '.*truncated\.pt' is a corrupt or truncated zip archive .*; re-save or re-download it"),
    ("empty", ["{f}/empty.pt", "--model", "{m}"],
     r"checkpoint '.*empty\.pt' is empty \(0 bytes\); the save was probably interrupted"),
    ("no weights inside", ["{f}/no_weights.pt", "--model", "{m}"],
     r"'.*no_weights\.pt' holds dict \(2 entries\), not a model or a state_dict"),
    ("state_dict without --model", ["{f}/bare.pt"],
     r"holds only weights, not the architecture; pass --model pkg\.module:factory or --model "
     r"path/to/file\.py:factory"),
    ("factory file missing", ["{f}/bare.pt", "--model", "{f}/nope.py:make"],
     r"factory '.*nope\.py:make': file '.*nope\.py' does not exist; check the path before ':'"),
    ("factory module missing", ["{f}/bare.pt", "--model", "nopkg_curvlens.nets:make"],
     r"factory 'nopkg_curvlens\.nets:make': no module named 'nopkg_curvlens\.nets'; install it"),
    ("factory name missing", ["{f}/bare.pt", "--model", f"{TINY_PY}:build"],
     r"factory '.*_tiny\.py:build': '.*_tiny\.py' has no attribute 'build'; available names: .*data"),
    ("factory raising", ["{f}/bare.pt", "--model", f"{TINY_PY}:make_raises"],
     r"factory '.*:make_raises' raised RuntimeError while building the model: tiny factory refuses to build"),
    ("factory not a module", ["{f}/bare.pt", "--model", f"{TINY_PY}:make_not_a_module"],
     r"factory '.*:make_not_a_module' returned a int, expected a torch\.nn\.Module"),
    ("state_dict mismatch", ["{f}/nested_model.pt", "--model", f"{TINY_PY}:make_wider"],
     r"checkpoint '.*nested_model\.pt' does not match the model built by '.*:make_wider': shape mismatches: "
     r"0\.weight checkpoint \(4, 3\) vs model \(5, 3\).*; check that --model builds the same architecture"),
    ("pickle without trust", ["{f}/whole.pt"],
     r"is a pickled Python object referring to torch\.nn\.modules\..*; unpickling it runs code from the file, "
     r"so it is refused: pass --trust-checkpoint only if you trust its source, or save model\.state_dict\(\) "
     r"instead and load it with --model pkg\.module:factory$"),
    ("safetensors package missing", ["{f}/weights.safetensors", "--model", "{m}"],
     r"needs the optional package safetensors, which is not installed; install it with: pip install safetensors"),
    ("data/model shape mismatch", ["{f}/bare.pt", "--model", "{m}", "--data", "{f}/wide_inputs.pt"],
     r"data/model shape mismatch: the model cannot take inputs of shape \(8, 5\) \(.*\); "
     r"check --data/--data-keys and --model"),
    ("export with a fixed batch size", ["{f}/program_batch2.pt2", "--data", "{f}/data.pt"],
     r"data/model shape mismatch: the model cannot take inputs of shape \(8, 3\) \(.*size\(\)\[0\] == 2\)"),
    ("no double backward", ["{f}/bare.pt", "--model", f"{TINY_PY}:make_once_differentiable"],
     r"state_dict model '.*bare\.pt' cannot give Hessian-vector products: .*; every operation in the "
     r"model's forward needs a second derivative"),  # once_differentiable: autograd silently drops second derivatives (allow_unused)
    ("loss/target mismatch", ["{f}/bare.pt", "--model", "{m}", "--loss", "mse"],
     r"loss/target mismatch: --loss mse cannot compare outputs of shape \(8, 2\) with targets of shape \(8,\) "
     r"and dtype torch\.int64 .*; pick the loss that matches the targets"),
    ("loss/target shape mismatch", ["{f}/bare.pt", "--model", "{m}", "--data", "{f}/wrong_targets.pt",
                                    "--loss", "mse"],
     r"loss/target mismatch: --loss mse cannot compare outputs of shape \(8, 2\) with targets of shape \(8, 7\)"),
    ("NaN loss", ["{f}/bare.pt", "--model", "{m}", "--data", "{f}/nan_inputs.pt"],
     r"NaN loss: the loss on the first samples is nan; check the data and the checkpoint for NaN/Inf"),
    ("data file missing", ["{f}/bare.pt", "--model", "{m}", "--data", "{f}/nope.npz"],
     r"data file '.*nope\.npz' does not exist; check the path"),
    ("data file type", ["{f}/bare.pt", "--model", "{m}", "--data", "{f}/notes.txt"],
     r"^Error: --data: unsupported file type '\.txt' for '.*notes\.txt'; expected \.pt, \.pth, \.npz, \.h5 or \.hdf5"),
    ("data keys missing", ["{f}/bare.pt", "--model", "{m}", "--data", "{f}/custom_keys.pt"],
     r"data file '.*custom_keys\.pt' has no keys 'inputs' and 'targets' .*; it holds 'images', 'labels'; "
     r"name the keys with --data-keys INPUTS,TARGETS$"),
    ("data keys malformed", ["{f}/bare.pt", "--model", "{m}", "--data-keys", "images"],
     r"--data-keys: expected two names 'INPUTS,TARGETS' \(e\.g\. --data-keys images,labels\), got 'images'$"),
    ("data keys wrong", ["{f}/bare.pt", "--model", "{m}", "--data-keys", "a,b"],
     r"data file '.*data\.pt' has no keys 'a' and 'b'; it holds 'inputs', 'targets'"),
    ("corrupt data file", ["{f}/bare.pt", "--model", "{m}", "--data", "{f}/truncated.pt"],
     r"data file '.*truncated\.pt' is not a readable torch file \(corrupt or truncated\?\)"),
    ("data factory raising", ["{f}/bare.pt", "--model", "{m}", "--data", f"{TINY_PY}:make_raises"],
     r"factory '.*:make_raises' raised RuntimeError while building the data"),
    ("loss function missing", ["{f}/bare.pt", "--model", "{m}", "--loss", f"{TINY_PY}:hinge"],
     r"factory '.*_tiny\.py:hinge': '.*_tiny\.py' has no attribute 'hinge'"),
]


def _args(args, files):
    out = [a.format(f=files, m=MODEL_FILE_SPEC) for a in args]
    if "--data" not in out:
        out += ["--data", str(files / "data.pt")]
    return out


@pytest.mark.parametrize("name, args, message", FAILURES, ids=[f[0] for f in FAILURES])
def test_failure_is_one_line_with_exit_code_1(run_cli, files, tmp_path, name, args, message, monkeypatch):
    if name == "safetensors package missing":  # the test extra installs it: hide it
        monkeypatch.setitem(sys.modules, "safetensors", None)
        monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    r = run_cli("analyze", *_args(args, files), "--out", tmp_path / "out", *QUICK)
    assert r.exit_code == 1, r
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r
    assert re.search(message, lines[0]), r
    assert "Traceback" not in r.stderr


def test_traceback_only_with_verbose(run_cli, files, tmp_path):
    args = [files / "bare.pt", "--model", f"{TINY_PY}:make_raises", "--data", files / "data.pt", "--out", tmp_path]
    quiet = run_cli("analyze", *args, "-q")
    loud = run_cli("analyze", *args, "-q", "-v")
    assert quiet.exit_code == loud.exit_code == 1
    assert "Traceback" not in quiet.stderr
    assert "Traceback (most recent call last)" in loud.stderr
    assert "RuntimeError: tiny factory refuses to build: no such GPU" in loud.stderr
    assert loud.stderr.strip().splitlines()[-1] == quiet.stderr.strip()


def test_without_quiet_only_progress_lines_precede_the_error(run_cli, files, tmp_path):
    r = run_cli("analyze", files / "truncated.pt", "--model", MODEL_FILE_SPEC, "--data", files / "data.pt",
                "--out", tmp_path / "out")
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[0] == "loading ..."
    assert r.stderr.strip().splitlines()[-1].startswith("Error: checkpoint ")


# --- output folder ----------------------------------------------------------------------------------


def test_out_under_a_regular_file(run_cli, files, tmp_path):
    (tmp_path / "afile").write_text("x")
    r = run_cli("analyze", files / "bare.pt", "--model", MODEL_FILE_SPEC, "--data", files / "data.pt",
                "--out", tmp_path / "afile" / "out", *QUICK)
    assert r.exit_code == 1, r
    assert re.fullmatch(r"Error: output directory not writable: .*afile/out \(Not a directory\); "
                        r"pass a writable --out", r.stderr.strip()), r
    assert (tmp_path / "afile").read_text() == "x"


def test_out_read_only_folder(run_cli, files, tmp_path):
    """A 0o500 folder: refused with the message for normal users; root may write anyway, and then succeeds."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        writable = os.access(ro, os.W_OK)  # True when running as root
        r = run_cli("analyze", files / "bare.pt", "--model", MODEL_FILE_SPEC, "--data", files / "data.pt",
                    "--out", ro, *QUICK)
    finally:
        ro.chmod(0o700)
    if writable:
        assert r.exit_code == 0, r
        assert (ro / "summary.json").is_file()
    else:
        assert r.exit_code == 1, r
        assert re.fullmatch(r"Error: output directory not writable: .*ro \(Permission denied\); pass a writable --out",
                            r.stderr.strip()), r
    assert not [p.name for p in ro.iterdir() if p.name.startswith(".")]


def _snapshot(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def _fail_on_html(monkeypatch):
    """Make writing report.html fail after the PNGs were written (a failure in the middle of writing)."""
    import curvlens.report.html as html

    real = html.atomic_write

    def failing(path, *a, **k):
        if str(path).endswith("report.html"):
            raise OSError(28, "No space left on device (injected)")
        return real(path, *a, **k)

    monkeypatch.setattr(html, "atomic_write", failing)


def _fail_on_h5(monkeypatch):
    import curvlens.io.hdf5 as hdf5

    def failing(*a, **k):
        raise OSError(5, "Input/output error (injected)")

    monkeypatch.setattr(hdf5, "save_result", failing)


@pytest.mark.parametrize("inject, message", [(_fail_on_html, "No space left on device (injected)"),
                                             (_fail_on_h5, "Input/output error (injected)")])
def test_failed_rewrite_keeps_previous_results(run_cli, files, tmp_path, monkeypatch, inject, message):
    out = tmp_path / "out"
    common = ["--model", MODEL_FILE_SPEC, "--data", files / "data.pt", "--out", out, "--budget", "120",
              "--only", "conditioning,trace,density", "-q"]
    first = run_cli("analyze", files / "bare.pt", *common)
    assert first.exit_code == 0, first
    before = _snapshot(out)
    assert {"results.h5", "summary.json", "report.html", "density.png"} <= set(before)
    inject(monkeypatch)
    second = run_cli("analyze", files / "other.pt", *common)
    assert second.exit_code == 1, second
    assert message in second.stderr and len(second.stderr.strip().splitlines()) == 1
    assert _snapshot(out) == before  # same names (no temp files, no staging folder), same bytes
    monkeypatch.undo()
    third = run_cli("analyze", files / "other.pt", *common)
    assert third.exit_code == 0, third
    after = _snapshot(out)
    assert set(after) == set(before) and after["summary.json"] != before["summary.json"]


# --- bad options: exit code 2 -------------------------------------------------------------------------

BAD_OPTIONS = [
    (["--demo", "--only", "conditioning,bogus"], r"Invalid value for --only: unknown analysis 'bogus'; choose from "
                                                 r"conditioning, sharpness, saddle, density, trace"),
    (["--demo", "--skip", "noize"], r"Invalid value for --skip: unknown analysis 'noize'"),
    (["--demo", "--only", ","], r"expected a comma-separated list, got an empty value"),
    (["--demo", "--momentum", "1.5"], r"Invalid value for '--momentum': 1\.5 is not in the range 0<=x<1"),
    (["--demo", "--lr", "-1"], r"Invalid value for '--lr': -1\.0 is not in the range x>0"),
    (["{f}/bare.pt", "--model", "{m}"], r"missing --data: the curvature of a loss needs data"),
    (["{f}/bare.pt", "--demo"], r"pass either CHECKPOINT or --demo, not both"),
    ([], r"missing CHECKPOINT \(or use --demo for the built-in example\)"),
    (["--demo", "--curvature", "fim"], r"Invalid value for '--curvature': 'fim' is not one of 'hessian', 'ggn', 'fisher'"),
    (["--demo", "--dtype", "float16"], r"Invalid value for '--dtype': 'float16' is not one of"),
    (["--demo", "--batch-size", "0"], r"Invalid value for '--batch-size': 0 is not in the range x>=1"),
    (["--demo", "--batch-sizes", "8,x"], r"expected comma-separated positive integers such as 8,32,128, got '8,x'"),
    (["--demo", "--budget", "lots"], r"Invalid value for --budget: budget: expected a positive duration like "
                                     r"'300s', '2m' or '1h', or an int number of matvecs, got 'lots'"),
    (["--demo", "--budget", "1"], r"Invalid value for --budget: budget: expected at least 2 matvecs, got 1"),
    (["{f}/bare.pt", "--model", "{m}", "--data", "{f}/data.pt", "--loss", "hinge"],
     r"Invalid value for --loss: unknown loss 'hinge'; expected one of cross_entropy, nll, mse, bce_with_logits, "
     r"bce_probs or 'pkg\.module:function'"),
    (["{f}/bare.pt", "--model", "{m}", "--data", "{f}/binary.pt", "--loss", "bce"],
     r"Invalid value for --loss: 'bce' is ambiguous \(logits or probabilities\?\); use 'bce_with_logits' "
     r"\(BCEWithLogitsLoss, the model outputs logits\) or 'bce_probs' \(BCELoss, the model outputs probabilities\)$"),
    (["--demo", "--frobnicate"], r"No such option '--frobnicate'"),
]


@pytest.mark.parametrize("args, message", BAD_OPTIONS, ids=[" ".join(a[-2:]) or "nothing" for a, _ in BAD_OPTIONS])
def test_bad_option_exit_code_2(run_cli, files, tmp_path, args, message):
    out = tmp_path / "out"
    r = run_cli("analyze", *[a.format(f=files, m=MODEL_FILE_SPEC) for a in args], "--out", out)
    assert r.exit_code == 2, r
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 1 and re.search(message, errors[0]), r
    assert "Try 'curvlens analyze --help' for help." in r.stderr
    assert "Traceback" not in r.stderr and "loading" not in r.stderr
    assert not out.exists()  # rejected before anything was created


def test_unknown_command_exit_code_2(run_cli):
    r = run_cli("analyse", "--demo")
    assert r.exit_code == 2 and "No such command 'analyse'" in r.stderr
