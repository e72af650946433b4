"""The click group. Each command lives in its own module ``curvlens_cli.<name>`` exposing a
``command`` object; modules are imported lazily so ``curvlens --help`` stays fast."""

from __future__ import annotations

import importlib

import click

from curvlens._version import __version__

#: command name -> module (inside curvlens_cli) holding ``command``
COMMANDS = {
    "analyze": "analyze",
    "inspect": "inspect_cmd",
    "report": "report",
    "compare": "compare",
    "recommend": "recommend",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(n for n in COMMANDS if self._load(n) is not None)

    def get_command(self, ctx, name):
        return self._load(name)

    def _load(self, name):
        mod = COMMANDS.get(name)
        if mod is None:
            return None
        try:
            module = importlib.import_module(f"curvlens_cli.{mod}")
        except ModuleNotFoundError as e:
            if e.name == f"curvlens_cli.{mod}":
                return None  # command not available in this build
            raise
        return module.command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="curvlens")
def cli() -> None:
    """curvlens: matrix-free curvature diagnostics for PyTorch models."""


def main() -> None:  # console-script entry point
    cli()


if __name__ == "__main__":
    main()
