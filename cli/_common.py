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


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


class Progress:
    """Library callbacks ``(stage, done, total)`` -> progress with percentage and ETA on stderr.

    On a terminal one bar per stage is redrawn in place (``top  [#####-----]  50%  ETA 0:04``);
    otherwise (a log file, CI) one line is written when a stage starts, at most every
    ``interval`` seconds while it runs, and when it ends with its duration. The fraction done is
    ``done / total`` of the latest call, never going back (a stage that restarts its counter,
    e.g. one Lanczos run per probe, keeps its progress); the ETA is the elapsed time scaled by
    the fraction left.
    """

    WIDTH = 24

    def __init__(self, enabled: bool, *, stream: Any = None, tty: bool | None = None, interval: float = 10.0,
                 clock: Callable[[], float] | None = None):
        import time

        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else tty
        self.interval = interval
        self.clock = clock or time.perf_counter
        self.stage: str | None = None
        self.fraction = 0.0
        self.started = self.last_line = 0.0

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _eta(self, now: float) -> str:
        if self.fraction <= 0:
            return "ETA --:--"
        return f"ETA {_clock((now - self.started) * (1 - self.fraction) / self.fraction)}"

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if stage != self.stage:
            self.close()
            self.stage, self.fraction, self.started = stage, 0.0, now
            self.last_line = now
            if not self.tty:
                self._write(f"{stage}: started\n")
        total = max(int(total), 1)
        self.fraction = max(self.fraction, min(max(int(done), 0) / total, 1.0))
        pct = f"{100 * self.fraction:3.0f}%"
        if self.tty:
            filled = int(round(self.WIDTH * self.fraction))
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            self._write(f"\r{stage:<15} [{bar}] {pct}  {self._eta(now)}  ")
        elif now - self.last_line >= self.interval and self.fraction < 1.0:
            self.last_line = now
            self._write(f"{stage}: {pct.strip()} done, {self._eta(now)}\n")

    def close(self) -> None:
        """End the current stage's bar (or write its closing line)."""
        if self.stage is None:
            return
        took = _clock(self.clock() - self.started)
        self._write(f"\r{self.stage:<15} [{'#' * self.WIDTH}] 100%  in {took}    \n" if self.tty
                    else f"{self.stage}: done in {took}\n")
        self.stage = None


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
