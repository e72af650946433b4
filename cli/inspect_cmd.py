"""``curvlens inspect CHECKPOINT``: what a checkpoint holds, without running anything."""

from __future__ import annotations

import json
import traceback

import click


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _table(summary, max_rows: int) -> str:
    lines = [
        f"file:        {summary.path} ({_human_bytes(summary.size_bytes)})",
        f"format:      {summary.format}",
    ]
    if summary.state_dict_key:
        lines.append(f"weights at:  [{summary.state_dict_key!r}]")
    params = "unknown (needs unpickling)" if summary.num_parameters is None else f"{summary.num_parameters:,}"
    lines.append(f"parameters:  {params}")
    if summary.num_elements is not None and summary.num_elements != summary.num_parameters:
        lines.append(f"elements:    {summary.num_elements:,} (incl. buffers / non-float tensors)")
    needs = [n for n, flag in (("--model", summary.needs_model), ("--trust-checkpoint", summary.needs_trust)) if flag]
    lines.append(f"loading needs: {', '.join(needs) if needs else 'nothing else (self-contained)'}")
    for note in summary.notes:
        lines.append(f"note:        {note}")
    if summary.entries:
        lines.append("")
        lines.append("top-level keys:")
        width = max(len(k) for k, _ in summary.entries)
        lines += [f"  {k:<{width}}  {d}" for k, d in summary.entries]
    if summary.tensors:
        lines.append("")
        rows = [(n, str(tuple(s)), d) for n, s, d in summary.tensors]
        shown = rows[:max_rows] if max_rows > 0 else rows
        w0 = max(len("tensor"), *(len(r[0]) for r in shown))
        w1 = max(len("shape"), *(len(r[1]) for r in shown))
        lines.append(f"  {'tensor':<{w0}}  {'shape':<{w1}}  dtype")
        lines += [f"  {n:<{w0}}  {s:<{w1}}  {d}" for n, s, d in shown]
        if len(shown) < len(rows):
            lines.append(f"  ... {len(rows) - len(shown)} more tensors (use --max-rows 0 to show all)")
        lines.append(f"  {len(rows)} tensors")
    return "\n".join(lines)


@click.command("inspect")
@click.argument("checkpoint", type=click.Path(dir_okay=True, path_type=str))
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="Output a readable table or JSON.")
@click.option("--max-rows", type=click.IntRange(min=0), default=50, show_default=True,
              help="Tensors listed in the table (0: all).")
@click.option("-v", "--verbose", is_flag=True, help="Show the full traceback on failure.")
def command(checkpoint: str, fmt: str, max_rows: int, verbose: bool) -> None:
    """Show what CHECKPOINT holds: format, keys, tensor shapes, total parameters.

    Reads state_dicts (bare or nested, any prefix), TorchScript archives, torch.export
    programs and .safetensors headers. Runs no model code and never unpickles arbitrary
    objects: a fully pickled module is only scanned for the classes it names.
    """
    from curvlens.errors import CurvlensError
    from curvlens.problem.checkpoint import inspect_checkpoint
    from curvlens_cli._words import to_cli

    try:
        summary = inspect_checkpoint(checkpoint)
    except (CurvlensError, ValueError, TypeError, OSError) as e:
        if verbose:
            click.echo(traceback.format_exc(), err=True)
        raise click.ClickException(to_cli(str(e))) from e
    if fmt == "json":
        click.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        click.echo(_table(summary, max_rows))
