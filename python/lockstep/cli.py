"""The `lockstep` command line (click). Every command has --help; reports take --json."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from . import __version__
from .errors import LockstepError


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


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--payload-bytes", default=16, show_default=True, help="How much of each payload to show (hex).")
def dump(file: str, as_json: bool, payload_bytes: int) -> None:
    """Print every frame of a log buffer (ours or real Aeron's), message of a ring, or counter
    of a cnc.dat, one per line."""
    from .dump import dump_records

    for record in dump_records(file, payload_bytes):
        if as_json:
            click.echo(json.dumps(record))
        else:
            click.echo(" ".join(f"{k}={v}" for k, v in record.items() if k != "kind"))


if __name__ == "__main__":
    main()
