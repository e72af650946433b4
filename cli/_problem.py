"""The :class:`curvlens.problem.Problem` of ``curvlens analyze``: the built-in demo, or
:func:`curvlens.problem.load.load_problem` with its messages in CLI words.

Every loading failure is a :class:`curvlens.errors.CheckpointError` (or ``ValueError`` /
``TypeError``) with one sentence naming what did not fit and the option to change; the
command turns it into exit code 1.
"""

from __future__ import annotations

from curvlens_cli._words import to_cli

DTYPES = ("float32", "float64")

#: products of ``analyze --demo`` without --budget: enough for every headline number to converge
DEMO_BUDGET = 800


def demo(seed: int, dtype: str | None):
    """The demo :class:`~curvlens.problem.Problem`, with the lr and momentum that trained it."""
    import torch

    from curvlens.data import demo_problem
    from curvlens.problem import Problem

    p = demo_problem(seed=seed, dtype={"float32": torch.float32, "float64": torch.float64}[dtype or "float32"])
    return Problem(p.model, p.loss_fn, p.data, source=f"built-in demo: {p.description}"), p.lr, p.momentum


def ladder(num_samples: int) -> list[int]:
    """Up to four powers of two below ``num_samples`` (a valid --batch-sizes example)."""
    sizes = [2**k for k in range(1, 20) if 2**k < num_samples]
    return sizes[-4:] or [1]


def load(checkpoint: str, *, model: str | None, data: str, data_keys: str | None, loss: str,
         batch_size: int | None, num_samples: int | None, trust: bool, device: str, dtype: str | None):
    """:func:`~curvlens.problem.load.load_problem` of the options; its errors in CLI words (notes:
    print them through :func:`curvlens_cli._words.to_cli`)."""
    from curvlens.problem.load import load_problem

    try:
        problem = load_problem(checkpoint, model=model, data=data, data_keys=data_keys, loss=loss,
                               batch_size=batch_size, num_samples=num_samples, trust=trust, device=device,
                               dtype=dtype)
    except Exception as e:  # noqa: BLE001 - same exception, reworded; fail_cleanly makes it one line
        if e.args and isinstance(e.args[0], str):
            e.args = (to_cli(e.args[0]), *e.args[1:])
        raise
    return problem


def analysis_data(problem):
    """The data to hand to :func:`curvlens.diagnostics.analyze`: the one batch, or the list of batches."""
    return problem.batches[0] if len(problem.batches) == 1 else problem.batches


def layer_label(model, name: str) -> str:
    """``'0 · Linear 2→32'``: a block (module path) with its module's type and shape, for the report."""
    import torch

    try:
        module = model.get_submodule(name) if name else model
    except (AttributeError, TypeError):
        return name
    kind = type(module).__name__
    shape = ""
    if isinstance(module, torch.nn.Linear):
        shape = f" {module.in_features}→{module.out_features}"
    elif isinstance(module, torch.nn.modules.conv._ConvNd):
        shape = f" {module.in_channels}→{module.out_channels}, {'x'.join(map(str, module.kernel_size))}"
    return f"{name} · {kind}{shape}" if name else f"{kind}{shape}"


def eval_mode_note(model) -> str:
    """What evaluating in eval mode means for this model (dropout, normalization layers)."""
    import torch

    dropout = sum(isinstance(m, torch.nn.modules.dropout._DropoutNd) for m in model.modules())
    norms = sum(isinstance(m, torch.nn.modules.batchnorm._NormBase) for m in model.modules())
    parts = [f"{dropout} dropout layer(s) off" if dropout else "",
             f"{norms} normalization layer(s) with their running statistics" if norms else ""]
    detail = "; ".join(p for p in parts if p)
    return ("model evaluated in eval mode (as at inference" + (f": {detail}" if detail else "")
            + "); its train/eval flags and buffers are left as they were")
