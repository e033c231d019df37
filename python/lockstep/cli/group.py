"""The `lockstep` command line (click). Every command has --help; reports take --json."""

from __future__ import annotations

import sys
from typing import Any

import click

from .. import __version__
from ..errors import LockstepError


class _Group(click.Group):
    """Turns a LockstepError into one line on stderr and exit status 1, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LockstepError as e:
            click.echo(f"lockstep: error: {e}", err=True)
            ctx.exit(1)
        except BrokenPipeError:  # e.g. `lockstep dump ... | head`
            sys.stderr.close()
            ctx.exit(0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lockstep")
def main() -> None:
    """lockstep: log-based messaging over shared memory (rings, logs, sequencer, replay)."""
