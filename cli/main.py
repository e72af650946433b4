"""The click group; each command lives in its own module and is registered here."""

from __future__ import annotations

import click

from curvlens._version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="curvlens")
def cli() -> None:
    """curvlens: matrix-free curvature diagnostics for PyTorch models."""


def main() -> None:  # console-script entry point
    cli()


if __name__ == "__main__":
    main()
