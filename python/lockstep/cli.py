"""The `lockstep` command line."""

from __future__ import annotations

import click

from . import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lockstep")
def main() -> None:
    """lockstep: log-based messaging over shared memory (rings, logs, sequencer, replay)."""
