"""``curvlens analyze CHECKPOINT``: curvature diagnostics of a saved model, with a report."""

from __future__ import annotations

import dataclasses
import os
import tempfile
import warnings

import click

from curvlens_cli._common import Progress, csv_list, fail_cleanly, int_list, quiet_option, setup_logging, verbose_option

ANALYSES = ("conditioning", "sharpness", "saddle", "density", "trace", "noise", "gradient_noise", "per_layer")


def _check_out(out: str) -> None:
    """Fail before any work if ``out`` could not be written; creates nothing (a failed run leaves
    no empty folder behind: the folder appears only with the complete results)."""
    target = os.path.abspath(out)
    if os.path.exists(target) and not os.path.isdir(target):
        raise click.ClickException(f"--out {out} exists and is not a folder; pass a folder path")
    existing = target
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise click.ClickException(f"output directory not writable: {out} (Not a directory); pass a writable --out")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".curvlens-write-test-"):
            pass
    except OSError as e:
        raise click.ClickException(
            f"output directory not writable: {out} ({e.strerror or e}); pass a writable --out"
        ) from e


def _check_budget_and_loss(budget: str | None, loss: str):
    """Bad --budget / --loss values are usage errors (exit 2), found before any loading."""
    from curvlens.diagnostics.driver import parse_budget
    from curvlens.problem.factory import is_factory_spec
    from curvlens.problem.losses import resolve_loss

    if budget is not None and budget.strip().isdigit():
        budget = int(budget)  # a plain number counts products; the library parses only durations from str
    try:
        parse_budget(budget)
    except ValueError as e:
        raise click.BadParameter(f"{e}; e.g. --budget 600 or --budget 2m", param_hint="--budget") from e
    if not is_factory_spec(loss):
        try:
            resolve_loss(loss)
        except ValueError as e:  # "loss: ..." -> "Invalid value for --loss: ..."
            raise click.BadParameter(str(e).removeprefix("loss: "), param_hint="--loss") from e
    return budget, loss


@click.command("analyze")
@click.argument("checkpoint", required=False, type=click.Path(path_type=str))
@click.option("--demo", is_flag=True, help="Analyze the built-in demo model and data (no files needed).")
@click.option("--model", "model_spec", metavar="MODULE:FACTORY",
              help="Builds the architecture for a state_dict: 'pkg.module:factory' or 'file.py:factory'.")
@click.option("--data", "data_spec", metavar="FILE|MODULE:FACTORY",
              help="Evaluation data: .pt/.npz/.h5 with inputs/targets, or a factory returning a dataset/loader.")
@click.option("--data-keys", metavar="INPUTS,TARGETS", help="Keys of inputs and targets in the data file.")
@click.option("--loss", default="cross_entropy", show_default=True,
              help="cross_entropy, nll (log-probabilities), mse, bce_with_logits (logits), bce_probs "
                   "(probabilities), or module:function.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Batch size for products (and the training batch size for recommendations).")
@click.option("--num-samples", type=click.IntRange(min=1), help="Use only the first N samples.")
@click.option("--budget", default=None, metavar="MATVECS|DURATION",
              help="Total budget: curvature products (e.g. 600) or time (e.g. 90s, 2m).  [default: 300 products; "
                   "--demo: 800]")
@click.option("--only", callback=csv_list, metavar="LIST", help=f"Run only these: {','.join(ANALYSES)}.")
@click.option("--skip", callback=csv_list, metavar="LIST", help="Skip these analyses.")
@click.option("--per-layer/--no-per-layer", default=True, show_default=True, help="Per-layer breakdown.")
@click.option("--batch-sizes", callback=int_list, metavar="LIST", help="Ladder of the noise study, e.g. 16,64,256.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Your learning rate (sharpness vs 2/lr).")
@click.option("--momentum", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random choice.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, ...")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), help="Convert model and data (default: as saved).")
@click.option("--curvature", type=click.Choice(["hessian", "ggn", "fisher"]), default="hessian", show_default=True)
@click.option("--trust-checkpoint", is_flag=True,
              help="Allow unpickling a fully pickled model. Unpickling runs code from the file: only for files you trust.")
@click.option("--out", default="curvlens-report", show_default=True, type=click.Path(path_type=str),
              help="Output folder for results.h5, summary.json, report.html and figures.")
@verbose_option
@quiet_option
@fail_cleanly
def command(checkpoint, demo, model_spec, data_spec, data_keys, loss, batch_size, num_samples, budget, only, skip,
            per_layer, batch_sizes, lr, momentum, seed, device, dtype, curvature, trust_checkpoint, out,
            verbose, quiet):
    """Measure the curvature of CHECKPOINT's loss and write a report to --out.

    \b
    Examples:
      curvlens analyze --demo
      curvlens analyze net.pt --model mypkg.nets:make_net --data val.npz --lr 0.1
      curvlens analyze scripted.pt --data val.pt --curvature ggn --budget 2m
    """
    setup_logging(verbose)
    for name, items in (("--only", only), ("--skip", skip)):
        bad = [i for i in items or [] if i not in ANALYSES]
        if bad:
            raise click.BadParameter(f"unknown analysis {bad[0]!r}; choose from {', '.join(ANALYSES)}",
                                     param_hint=name)
    if demo and checkpoint:
        raise click.UsageError("pass either CHECKPOINT or --demo, not both")
    if not demo and not checkpoint:
        raise click.UsageError("missing CHECKPOINT (or use --demo for the built-in example)")
    if not demo and not data_spec:
        raise click.UsageError("missing --data: the curvature of a loss needs data (a .pt/.npz/.h5 file or module:factory)")
    if checkpoint and not os.path.exists(checkpoint):
        raise click.ClickException(f"checkpoint not found: {checkpoint}")
    budget, _ = _check_budget_and_loss(budget, loss)
    _check_out(out)

    from curvlens_cli import _problem
    from curvlens_cli._words import analysis_to_cli, to_cli

    if not quiet:
        click.echo("loading ...", err=True)
    with warnings.catch_warnings(record=True) as load_warnings:  # torch's own warnings: shown with -v
        warnings.simplefilter("always")
        try:
            if demo:
                prob, demo_lr, demo_momentum = _problem.demo(seed, dtype)
            else:
                prob = _problem.load(checkpoint, model=model_spec, data=data_spec, data_keys=data_keys, loss=loss,
                                     batch_size=batch_size, num_samples=num_samples, trust=trust_checkpoint,
                                     device=device, dtype=dtype)
        finally:
            if verbose:
                for w in load_warnings:
                    click.echo(f"warning: {w.category.__name__}: {w.message}", err=True)
    notes = list(prob.notes)
    notes.append(_problem.eval_mode_note(prob.model))
    if demo:
        if budget is None:
            budget = _problem.DEMO_BUDGET
        if lr is None:
            lr, momentum = demo_lr, demo_momentum
            notes.append(f"demo: sharpness is compared with the optimizer that trained the model (full-batch SGD, "
                         f"lr={lr:g}, momentum={momentum:g}); pass lr= to compare with another")
    too_big = [b for b in batch_sizes or [] if b > prob.num_samples]
    if too_big:
        raise click.BadParameter(
            f"{too_big[0]} is larger than the data ({prob.num_samples} samples), so a minibatch of that size "
            f"cannot be drawn; pass sizes up to {prob.num_samples}, e.g. "
            f"{','.join(str(b) for b in _problem.ladder(prob.num_samples))}", param_hint="--batch-sizes")
    for note in prob.notes:
        click.echo(f"note: {to_cli(note)}", err=True)
    if demo and not quiet:
        click.echo(f"note: {to_cli(notes[-1])}", err=True)

    from curvlens.diagnostics import analyze

    from curvlens_cli import _distributed

    rank, world = (_distributed.init(device) if _distributed.launched_by_torchrun() else (0, 1))
    if world > 1:  # torchrun: this rank's shard, products summed over the ranks; rank 0 reports
        subject = _distributed.shard_problem(prob, rank, world)
        quiet = quiet or rank != 0
        notes.append(f"analyzed on {world} processes (torch.distributed); each held a shard of the "
                     f"{prob.num_samples} samples")
    else:
        subject = prob
    progress = Progress(enabled=not quiet)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            args = (subject,) if world > 1 else (prob.model, prob.loss_fn, _problem.analysis_data(prob))
            result = analyze(*args, curvature=curvature, which=only,
                             skip=skip, budget=budget, lr=lr, momentum=momentum, batch_sizes=batch_sizes,
                             per_layer=per_layer, generator=seed, callback=progress)
        finally:
            progress.close()
    result = dataclasses.replace(result, notes=tuple(notes[len(prob.notes):]) + tuple(result.notes))
    if result.per_layer is not None:  # module types beside the module paths ("0" -> "0 · Linear 2→32")
        labels = tuple(_problem.layer_label(prob.model, n) for n in result.per_layer.block_names)
        result = dataclasses.replace(result, per_layer=dataclasses.replace(result.per_layer, block_names=labels))
    ours = [w for w in caught if "curvlens" in (w.filename or "") or str(w.message).startswith("analyze")]
    for w in caught:
        if verbose:
            click.echo(f"warning: {analysis_to_cli(str(w.message))}", err=True)
    if ours and not verbose and not quiet:
        click.echo(f"note: {len(ours)} estimate(s) stopped before their tolerance within the budget "
                   "(marked in the table); raise --budget, details with -v", err=True)
    if rank != 0:  # the other ranks computed the same result; rank 0 writes it
        return
    written = write_outputs(result, out, batch_size=batch_size, title=f"curvlens: {prob.source}",
                            words=analysis_to_cli)

    from curvlens.report import summary_table

    click.echo(summary_table(result, words=analysis_to_cli))
    if not quiet:
        click.echo(f"\nwrote {', '.join(sorted(os.path.basename(str(p)) for p in written))} to {out}/")


def write_outputs(result, out: str, *, batch_size: int | None = None, title: str | None = None,
                  words=None) -> list:
    """results.h5, summary.json, report.html, figures and manifest.json into ``out``, as one unit.

    Everything is written into a staging folder beside ``out``; only when every file is
    complete does it replace ``out`` (:func:`curvlens.io.atomic.atomic_directory`: one rename
    of the whole folder when ``out`` holds only curvlens outputs, else file by file with the
    manifest last). A failure while writing leaves the previous results untouched, no staging
    folder and, for a new ``out``, no folder at all.
    """
    from curvlens.io.atomic import atomic_directory, write_json_atomic
    from curvlens.io.hdf5 import save_result
    from curvlens.recommend import recommend
    from curvlens.report import write_report
    from curvlens.report.html import FIGURES, REPORT_FILE

    rec = recommend(result, {"batch_size": batch_size, "lr": result.lr, "momentum": result.momentum})
    owned = {"results.h5", "summary.json", REPORT_FILE, *(f[1] for f in FIGURES)}
    with atomic_directory(out, owned=owned) as stage:
        save_result(result, os.path.join(stage, "results.h5"))
        write_json_atomic(result.summary(), os.path.join(stage, "summary.json"))
        kw = {} if words is None else {"words": words}
        paths = write_report(result, stage, recommendation=rec, title=title, **kw)
        names = ["results.h5", "summary.json", *(os.path.basename(str(p)) for p in paths.values())]
    return [os.path.join(out, n) for n in [*names, "manifest.json"]]
