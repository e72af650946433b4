"""Pieces shared by the commands: failure handling, verbosity, progress bars."""

from __future__ import annotations

import functools
import logging
import sys
import traceback
from typing import Any, Callable

import click

verbose_option = click.option("-v", "--verbose", is_flag=True, help="More output; full traceback on failure.")
quiet_option = click.option("-q", "--quiet", is_flag=True, help="Only errors and the final summary.")


def fail_cleanly(fn: Callable) -> Callable:
    """Turn any exception into one readable line and exit code 1 (traceback only with -v).

    click's own usage errors (exit 2) pass through untouched.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - the CLI boundary
            if kwargs.get("verbose"):
                click.echo(traceback.format_exc(), err=True)
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise click.ClickException(msg) from e

    return wrapper


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


class Progress:
    """Library callbacks ``(stage, done, total)`` -> one click progress bar per stage on stderr."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.stage: str | None = None
        self.bar: Any = None
        self.done = 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self.stage:
            self.close()
            self.stage, self.done = stage, 0
            self.bar = click.progressbar(length=max(int(total), 1), label=f"{stage:<15}", file=sys.stderr,
                                         show_eta=False, show_percent=True)
            self.bar.__enter__()
        step = max(0, min(int(done), int(total)) - self.done)
        if step:
            self.bar.update(step)
            self.done += step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def csv_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise click.BadParameter("expected a comma-separated list, got an empty value")
    return items


def int_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    items = csv_list(ctx, param, value)
    if items is None:
        return None
    try:
        out = [int(v) for v in items]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated positive integers such as 8,32,128, got {value!r}")
    if any(v < 1 for v in out):
        raise click.BadParameter(f"batch sizes must be positive, got {value!r}")
    return out
