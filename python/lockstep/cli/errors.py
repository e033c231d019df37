"""`lockstep errors`: the distinct error log of a directory (registered on `lockstep.cli.main`)."""

from __future__ import annotations

import datetime
import json

import click

from .group import main


def _when(ms: int) -> str:
    try:
        return datetime.datetime.fromtimestamp(ms / 1000).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return str(ms)


@main.command()
@click.option("--dir", "dir", type=click.Path(file_okay=False), default=None,
              help="lockstep directory (default: $LOCKSTEP_DIR, else /dev/shm/lockstep-$USER).")
@click.option("--aeron-dir", type=click.Path(file_okay=False), default=None,
              help="Read a real Aeron media driver's error log instead.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def errors(dir: str | None, aeron_dir: str | None, as_json: bool) -> None:
    """The distinct errors every agent of the directory recorded (cnc.dat's error log):
    observation count, first and last observation time, and the error text, one per line in
    the order they were first seen."""
    from ..transport.errorlog import read_errors

    if aeron_dir is not None:
        from ..aeron.stat import driver_errors

        records = driver_errors(aeron_dir)
    else:
        records = read_errors(dir)
    for r in records:
        if as_json:
            click.echo(json.dumps({"count": r.count, "first_ms": r.first_ms, "last_ms": r.last_ms,
                                   "first": _when(r.first_ms), "last": _when(r.last_ms), "text": r.text}))
        else:
            text = r.text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
            click.echo(f"{r.count} observation{'s' if r.count != 1 else ''}  first {_when(r.first_ms)}  "
                       f"last {_when(r.last_ms)}  {text}")
    if not records and not as_json:
        click.echo("no errors recorded", err=True)
