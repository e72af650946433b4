"""``curvlens compare A.h5 B.h5 ...``: side-by-side numbers and overlaid densities."""

from __future__ import annotations

import os

import click

from curvlens_cli._common import csv_list, fail_cleanly, quiet_option, setup_logging, verbose_option


@click.command("compare")
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--labels", callback=csv_list, metavar="LIST", help="One label per file (default: file names).")
@click.option("--out", default="curvlens-compare", show_default=True, type=click.Path(path_type=str),
              help="Folder for comparison.html, comparison.png and comparison.json.")
@verbose_option
@quiet_option
@fail_cleanly
def command(results, labels, out, verbose, quiet):
    """Compare analyses of several checkpoints (e.g. along a training run)."""
    setup_logging(verbose)
    if len(results) < 2:
        raise click.UsageError("compare needs at least two results files")
    if labels is not None and len(labels) != len(results):
        raise click.BadParameter(f"expected {len(results)} labels (one per file), got {len(labels)}",
                                 param_hint="--labels")
    from curvlens.io.hdf5 import load_result
    from curvlens.report import comparison_table, write_comparison
    from curvlens.report.figures_series import is_series

    analyses = []
    for path in results:
        if not os.path.exists(path):
            raise click.ClickException(f"results file not found: {path}")
        res = load_result(path)
        if not hasattr(res, "summary") and not is_series(res):
            raise click.ClickException(f"{path} holds a {type(res).__name__}, not an analysis")
        analyses.append(res)
    labels = labels or _labels(results)
    kinds = {is_series(a) for a in analyses}
    if kinds == {True}:  # training monitors' time series: overlaid curves
        paths = write_comparison(analyses, labels, out)
        if not quiet:
            names = sorted(os.path.basename(str(p)) for p in (paths.values() if isinstance(paths, dict) else paths))
            click.echo(f"wrote {', '.join(names)} to {out}/")
        return
    if len(kinds) > 1:
        raise click.UsageError("compare takes either analyses (results.h5 of analyze) or monitor series (run.h5), "
                               "not a mix of both")
    from curvlens_cli._words import analysis_to_cli

    click.echo(analysis_to_cli(comparison_table(analyses, labels)))
    paths = write_comparison(analyses, labels, out)
    if not quiet:
        names = sorted(os.path.basename(str(p)) for p in (paths.values() if isinstance(paths, dict) else paths))
        click.echo(f"\nwrote {', '.join(names)} to {out}/")


def _labels(paths) -> list[str]:
    """Short distinct labels: the file name, or its folder when names repeat (run/e1/results.h5)."""
    names = [os.path.basename(p) for p in paths]
    if len(set(names)) == len(names):
        return names
    return [os.path.basename(os.path.dirname(os.path.abspath(p))) or p for p in paths]
