"""`lockstep replay-server`: serve the archive's recordings to other hosts over an Aeron media
driver (`lockstep.archive.ReplayServer`)."""

from __future__ import annotations

import logging
import os

import click

from .group import main


@main.command("replay-server")
@click.option("--aeron-dir", type=click.Path(file_okay=False), default=None,
              help="The media driver's directory (default: $AERON_DIR, else /dev/shm/aeron-$USER).")
@click.option("--channel", required=True,
              help="Control channel the server listens on, e.g. aeron:udp?endpoint=10.42.0.1:40102.")
@click.option("--stream-id", "control_stream_id", type=int, default=102, show_default=True,
              help="Control stream id.")
@click.option("--archive-dir", type=click.Path(file_okay=False), default=None,
              help="Archive directory (default: $LOCKSTEP_ARCHIVE_DIR, else $XDG_DATA_HOME/lockstep/archive).")
@click.option("--max-sessions", type=click.IntRange(1), default=16, show_default=True,
              help="Replays served at once; more are refused (TOO_MANY_SESSIONS).")
@click.option("--connect-timeout", type=click.FloatRange(0, min_open=True), default=5.0, show_default=True,
              help="Seconds a client has to connect its response and replay subscriptions.")
@click.option("--disconnect-timeout", type=click.FloatRange(0), default=2.0, show_default=True,
              help="Seconds a replay may stay disconnected (client gone) before it ends.")
@click.option("-q", "--quiet", is_flag=True, help="Do not log sessions starting and ending on stderr.")
def replay_server(aeron_dir: str | None, channel: str, control_stream_id: int, archive_dir: str | None,
                  max_sessions: int, connect_timeout: float, disconnect_timeout: float, quiet: bool) -> None:
    """Serve replays of the archive's recordings to `lockstep.archive.ReplayClient`s on other
    hosts until Ctrl-C / SIGTERM. Each replay is sent on the client's channel with the
    recording's own stream positions."""
    from ..aeron import Aeron
    from ..archive import ReplayServer
    from ..transport.idle import stop_on_signals

    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="lockstep: %(message)s")
    with stop_on_signals() as stop, Aeron(aeron_dir) as aeron:
        with ReplayServer(archive_dir, aeron=aeron, control_channel=channel, control_stream_id=control_stream_id,
                          max_sessions=max_sessions, connect_timeout_s=connect_timeout,
                          disconnect_timeout_s=disconnect_timeout) as server:
            click.echo(f"lockstep: replay server on {channel} stream {control_stream_id} for {server.archive.dir} "
                       f"(pid {os.getpid()}); Ctrl-C stops", err=True)
            server.run(stop)
            click.echo(f"lockstep: replay server stopped: {dict(server.stats)}", err=True)
