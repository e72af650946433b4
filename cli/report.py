"""``curvlens report RESULTS.h5``: rebuild the HTML report and figures from a results file."""

from __future__ import annotations

import os

import click

from curvlens_cli._common import fail_cleanly, quiet_option, setup_logging, verbose_option


@click.command("report")
@click.argument("results", type=click.Path(path_type=str))
@click.option("--out", type=click.Path(path_type=str), help="Output folder (default: the results file's folder).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Training batch size, for the recommendation section.")
@click.option("--title", help="Page title.")
@verbose_option
@quiet_option
@fail_cleanly
def command(results, out, batch_size, title, verbose, quiet):
    """Rebuild report.html and the PNG figures from RESULTS (a results.h5 written by analyze)."""
    setup_logging(verbose)
    if not os.path.exists(results):
        raise click.ClickException(f"results file not found: {results}")
    from curvlens.io.hdf5 import load_result
    from curvlens.recommend import recommend
    from curvlens.report import summary_table, write_report

    result = load_result(results)
    from curvlens.report.figures_series import is_series, write_series_report

    if is_series(result):  # a training monitor's time series: its curves
        out = out or os.path.dirname(os.path.abspath(results))
        paths = write_series_report(result, out, title=title)
        if not quiet:
            click.echo(f"wrote {', '.join(sorted(os.path.basename(str(p)) for p in paths.values()))} to {out}/")
        return
    if not hasattr(result, "summary") or not hasattr(result, "curvature"):
        raise click.ClickException(
            f"{results} holds a {type(result).__name__}, not an analysis; write one with `curvlens analyze`"
        )
    out = out or os.path.dirname(os.path.abspath(results))
    rec = recommend(result, {"batch_size": batch_size, "lr": result.lr, "momentum": result.momentum})
    paths = write_report(result, out, recommendation=rec, title=title)
    click.echo(summary_table(result))
    if not quiet:
        click.echo(f"\nwrote {', '.join(sorted(os.path.basename(str(p)) for p in paths.values()))} to {out}/")
