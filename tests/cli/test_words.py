"""The table that turns load_problem's argument names into analyze's options."""

from __future__ import annotations

import inspect

import pytest

from curvlens.problem.load import load_problem
from curvlens_cli._words import ARGUMENT_OPTIONS, to_cli


def test_every_load_problem_argument_has_an_analyze_option():
    from curvlens_cli.analyze import command

    assert set(ARGUMENT_OPTIONS) == set(inspect.signature(load_problem).parameters)
    options = {opt for p in command.params for opt in p.opts}
    for arg, (option, is_flag) in ARGUMENT_OPTIONS.items():
        if option == "CHECKPOINT":
            assert "checkpoint" in options  # the positional argument
        else:
            assert option in options, (arg, option)
            flag = next(p for p in command.params if option in p.opts).is_flag
            assert flag == is_flag, (arg, option)


@pytest.mark.parametrize("api, cli", [
    ("data_keys: expected two names 'INPUTS,TARGETS' (e.g. data_keys='images,labels'), got 'x'",
     "--data-keys: expected two names 'INPUTS,TARGETS' (e.g. --data-keys images,labels), got 'x'"),
    ("checkpoint: expected a file path, got int", "CHECKPOINT: expected a file path, got int"),
    ("holds only weights; pass model='pkg.module:factory' or model='path/to/file.py:factory' that builds it",
     "holds only weights; pass --model pkg.module:factory or --model path/to/file.py:factory that builds it"),
    ("refused: pass trust=True only if you trust its source, or save model.state_dict() instead",
     "refused: pass --trust-checkpoint only if you trust its source, or save model.state_dict() instead"),
    ("mismatch (x); check data=/data_keys= and model=", "mismatch (x); check --data/--data-keys and --model"),
    ("loss/target mismatch: loss='mse' cannot compare", "loss/target mismatch: --loss mse cannot compare"),
    ("for NaN/Inf (or use dtype='float64' if it overflows)", "for NaN/Inf (or use --dtype float64 if it overflows)"),
    ("model= ignored: the torchscript archive holds its own architecture",
     "--model ignored: the torchscript archive holds its own architecture"),
    ("batch_size: expected a positive int or None, got 0", "--batch-size: expected a positive int or None, got 0"),
    ("num_samples=3 and device='cuda:1'", "--num-samples 3 and --device cuda:1"),
    # left alone: other arguments, attribute access, names inside words, a leading name without ': '
    ("load with strict=False; reduction='mean'; model.state_dict(); loss_fn: x; my_model=3; data file 'd.pt'",
     "load with strict=False; reduction='mean'; model.state_dict(); loss_fn: x; my_model=3; data file 'd.pt'"),
    ("data/model shape mismatch: x", "data/model shape mismatch: x"),
])
def test_to_cli(api, cli):
    assert to_cli(api) == cli
