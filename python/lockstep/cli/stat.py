"""`lockstep stat`: a live view of a directory, like AeronStat."""

from __future__ import annotations

import json
import time

import click

from .group import main


@main.command()
@click.option("--dir", "dir_", type=click.Path(file_okay=False), default=None,
              help="The lockstep directory (default: $LOCKSTEP_DIR or /dev/shm/lockstep-$USER).")
@click.option("--aeron-dir", type=click.Path(file_okay=False), default=None,
              help="Show a real Aeron media driver's directory instead (its counters, as AeronStat does).")
@click.option("--once", is_flag=True, help="Print one reading and exit.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per reading.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between readings.")
def stat(dir_: str | None, aeron_dir: str | None, once: bool, as_json: bool, interval: float) -> None:
    """Streams (positions, limits, lag), the sequencer, replicas' hashes and counters."""
    from .stat_view import render, snapshot_of

    if aeron_dir is not None:
        from ..aeron.stat import driver_snapshot, render_driver

        dir_, snapshot_of, render = aeron_dir, driver_snapshot, render_driver

    previous = None
    while True:
        reading = snapshot_of(dir_)
        if as_json:
            click.echo(json.dumps(reading))
        else:
            page = render(reading, previous)
            click.echo(page if once else "\x1b[H\x1b[2J" + page)
        if once:
            return
        previous = reading
        try:
            time.sleep(interval)
        except KeyboardInterrupt:
            return
