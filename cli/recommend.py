"""``curvlens recommend PATH``: optimizer recommendation from an analysis (results.h5 or summary.json),
or advice along a training run from a monitor's series (run.h5); ``--trial 30s`` re-ranks the top
candidates by short runs on the problem (``--demo`` or ``--checkpoint/--model/--data``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click


def _load_summary(path: str):
    """Summary dict from a summary.json (flat, or a document with a "summary" entry); from a results.h5
    the AnalysisResult itself, or a CurvatureSeries (a monitor's run.h5)."""
    p = Path(path)
    if not p.exists():
        raise click.ClickException(f"cannot read {path}: no such file; pass a results.h5 or summary.json")
    if p.is_dir():
        raise click.ClickException(f"cannot read {path}: it is a directory; pass the results.h5 or summary.json "
                                   "inside it")
    if p.suffix.lower() == ".json":
        try:
            doc = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise click.ClickException(f"cannot read {path}: not valid JSON ({e})") from None
        if not isinstance(doc, dict):
            raise click.ClickException(f"cannot read {path}: expected a JSON object of summary keys, got "
                                       f"{type(doc).__name__}")
        return doc
    try:
        from curvlens.io import hdf5
    except ImportError as e:  # pragma: no cover - depends on the build
        raise click.ClickException(f"cannot read {path}: HDF5 support is unavailable ({e}); pass a summary.json")
    try:
        result = hdf5.load_result(p)
    except Exception as e:  # SchemaError, OSError...
        msg = (str(e).splitlines() or [type(e).__name__])[0]
        raise click.ClickException(f"cannot read {path}: {msg}") from None
    summary_of = getattr(hdf5, "summary_of", None)
    if hasattr(result, "steps") and isinstance(getattr(result, "columns", None), dict):
        return result  # a training monitor's curvature series
    if callable(getattr(result, "summary", None)):
        return result
    if summary_of is not None:
        return dict(summary_of(result))
    raise click.ClickException(f"cannot read {path}: the file holds a {type(result).__name__}, not an analysis")


def _memory(ctx, param, value):
    if value is None:
        return None
    from curvlens.recommend import parse_memory

    try:
        return parse_memory(value)
    except (ValueError, TypeError) as e:
        raise click.BadParameter(str(e).replace("memory: ", ""), ctx=ctx, param=param) from None


def _duration(ctx, param, value):
    if value is None:
        return None
    from curvlens.recommend import parse_duration

    try:
        return parse_duration(value)
    except (ValueError, TypeError) as e:
        raise click.BadParameter(str(e).replace("time_budget: ", ""), ctx=ctx, param=param) from None


def _finite(ctx, param, value):
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"expected a finite number, got {value}", ctx=ctx, param=param)
    return value


@click.command("recommend")
@click.argument("path", type=click.Path(dir_okay=True, path_type=str))
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Training batch size.")
@click.option("--dataset-size", type=click.IntRange(min=1), default=None, help="Number of training samples.")
@click.option("--lr", type=float, default=None, callback=_finite, help="Current learning rate.")
@click.option("--momentum", type=float, default=None, callback=_finite, help="Current momentum, in [0, 1).")
@click.option("--phase", type=click.Choice(["early", "mid", "fine-tuning"]), default=None,
              help="Training phase.")
@click.option("--memory", "memory", default=None, callback=_memory, metavar="SIZE",
              help="Memory budget, e.g. 8GB, 512MiB.")
@click.option("--optimizer", default=None, help="Optimizer in use now (sgd, adamw, ...).")
@click.option("--time-budget", default=None, callback=_duration, metavar="DURATION",
              help="Training time available, e.g. 90s, 30m, 2h.")
@click.option("--layers", default=None, metavar="LIST", help="Comma list of layer types, e.g. linear,conv2d,layernorm.")
@click.option("--trial", default=None, callback=_duration, metavar="DURATION",
              help="CPU time for trial runs of the top candidates, e.g. 30s (needs --demo or --checkpoint).")
@click.option("--demo", is_flag=True, help="Run trials on the built-in demo problem.")
@click.option("--checkpoint", default=None, metavar="FILE", help="Model checkpoint for trials.")
@click.option("--model", "model_spec", default=None, metavar="MODULE:FACTORY", help="Model factory for trials.")
@click.option("--data", "data_spec", default=None, metavar="FILE|MODULE:FACTORY", help="Training data for trials.")
@click.option("--data-keys", default=None, metavar="INPUTS,TARGETS", help="Keys of inputs and targets in --data.")
@click.option("--loss", default="cross_entropy", show_default=True, help="Loss name for trials.")
@click.option("--trust-checkpoint", is_flag=True, help="Allow pickled (non-weights-only) checkpoints.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the trial runs.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks on errors.")
def command(path, batch_size, dataset_size, lr, momentum, phase, memory, optimizer, time_budget, layers, trial,
            demo, checkpoint, model_spec, data_spec, data_keys, loss, trust_checkpoint, seed, fmt, verbose):
    """Recommend an optimizer from an analysis (PATH: results.h5 or summary.json), or advise
    whether to switch now from a training monitor's series (PATH: run.h5).

    Ranked candidates with suggested hyperparameters, the two lines of Python that build each,
    cost per step and confidence; warnings; rejected candidates with why; and what to measure
    to raise confidence. With --trial the top candidates are run briefly and re-ranked.
    """
    from curvlens.recommend.advice import advise_run
    from curvlens.recommend.context import RecommendationContext
    from curvlens.recommend.engine import recommend

    try:
        ctx = RecommendationContext(optimizer=optimizer, lr=lr, momentum=momentum, batch_size=batch_size,
                                    dataset_size=dataset_size, memory_bytes=memory, phase=phase,
                                    time_budget_s=time_budget, layer_types=layers)
    except (ValueError, TypeError) as e:
        raise click.UsageError(_as_option(str(e))) from None
    summary = _load_summary(path)
    kw = {}
    if trial is not None:
        kw = dict(_trial_problem(demo, checkpoint, model_spec, data_spec, data_keys, loss, trust_checkpoint,
                                 batch_size), trial=trial, seed=seed)
    elif demo or checkpoint:
        raise click.UsageError("--demo/--checkpoint: expected together with --trial DURATION, got no --trial; "
                               "add e.g. --trial 30s")
    try:
        if hasattr(summary, "steps"):
            advice = advise_run(summary, ctx, **kw)
            if fmt == "json":
                click.echo(json.dumps({"switch_now": advice.switch_now, "current": advice.current,
                                       "switch_to": advice.switch_to, "step": advice.step,
                                       "reasons": list(advice.reasons),
                                       "recommendation": advice.recommendation.to_dict()}, indent=2, allow_nan=False))
            else:
                from curvlens_cli._words import recommend_to_cli

                click.echo(recommend_to_cli(advice.to_text()))
            return
        rec = recommend(summary, ctx, **kw)
    except (ValueError, TypeError) as e:
        if verbose:
            raise
        raise click.ClickException(f"cannot recommend from {path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - one readable line unless -v
        if verbose:
            raise
        raise click.ClickException(f"{type(e).__name__}: {e} (rerun with -v for the traceback)") from None
    if fmt == "json":
        click.echo(json.dumps(rec.to_dict(), indent=2, allow_nan=False))
    else:
        from curvlens_cli._words import recommend_to_cli

        click.echo(recommend_to_cli(rec.to_text()))


def _trial_problem(demo, checkpoint, model_spec, data_spec, data_keys, loss, trust, batch_size) -> dict:
    """model, loss_fn and data for --trial, from --demo or --checkpoint/--model/--data."""
    if demo == bool(checkpoint):
        raise click.UsageError("--trial: expected the problem to run on, got "
                               + ("both --demo and --checkpoint" if demo else "neither --demo nor --checkpoint")
                               + "; pass --demo, or --checkpoint FILE --model MODULE:FACTORY --data FILE")
    from curvlens_cli import _problem

    if demo:
        problem = _problem.demo(0, None)
        problem = problem[0] if isinstance(problem, tuple) else problem  # (problem, lr, momentum)
    else:
        if data_spec is None:
            raise click.UsageError("--data: expected the training data for --trial, got none; pass --data FILE")
        try:
            problem = _problem.load(checkpoint, model=model_spec, data=data_spec, data_keys=data_keys, loss=loss,
                                    batch_size=None, num_samples=None, trust=trust, device="cpu", dtype=None)
        except Exception as e:  # noqa: BLE001 - one line for the user
            raise click.ClickException(f"cannot load the trial problem: {(str(e).splitlines() or [''])[0]}") from None
    return dict(model=problem.model, loss_fn=problem.loss_fn, data=_problem.analysis_data(problem))


def _as_option(message: str) -> str:
    """Rename library argument names to the CLI option names in an error message."""
    for arg, opt in (("batch_size", "--batch-size"), ("dataset_size", "--dataset-size"), ("layer_types", "--layers"),
                     ("memory_bytes", "--memory"), ("time_budget_s", "--time-budget"), ("momentum", "--momentum"),
                     ("optimizer", "--optimizer"), ("trial", "--trial"), ("lr", "--lr")):
        message = message.replace(f"{arg}:", f"{opt}:").replace(f"{arg}=", f"{opt} ")
    return message
