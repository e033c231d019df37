"""`lockstep record`, `lockstep recordings`, `lockstep replay`: the archive's commands,
added to the `lockstep` group (registered by one import at the end of cli.py)."""

from __future__ import annotations

import datetime
import json
import sys
import time
from typing import TYPE_CHECKING

import click

from ..errors import LockstepError
from .group import main

if TYPE_CHECKING:  # (imported where used: `lockstep --help` stays quick)
    from ..archive import Archive
    from ..archive.recorder import Durability
    from ..archive.replay import ReplaySession
    from ..cluster.replica import StateMachine


def _archive(dir: str | None, archive_dir: str | None) -> Archive:
    """--archive-dir, else the archive inside --dir when given (`<dir>/archive`), else the default one."""
    from ..archive import Archive

    if archive_dir:
        return Archive(archive_dir)
    return Archive.for_dir(dir) if dir else Archive()


def _when(ns: int) -> str:
    return datetime.datetime.fromtimestamp(ns / 1e9).isoformat(timespec="milliseconds") if ns > 0 else "-"


_dir_option = click.option("--dir", "dir", type=click.Path(file_okay=False), default=None,
                           help="lockstep directory (default: $LOCKSTEP_DIR, else /dev/shm/lockstep-$USER).")
_archive_option = click.option("--archive-dir", type=click.Path(file_okay=False), default=None,
                               help="Archive directory (default: $LOCKSTEP_ARCHIVE_DIR, else "
                                    "$XDG_DATA_HOME/lockstep/archive, i.e. ~/.local/share/lockstep/archive).")
_archive_dir_option = click.option("--dir", "dir", type=click.Path(file_okay=False), default=None,
                                   help="Read the archive kept inside this lockstep directory (<dir>/archive) "
                                        "instead of the default archive.")


@main.command()
@click.option("--stream", "stream_id", type=int, default=100, show_default=True, help="Stream id to record.")
@_dir_option
@_archive_option
@click.option("--segment-length", type=int, default=None, help="Bytes per segment file: a power of two, a multiple "
              "of the term length (default 128 MiB or the term length).")
@click.option("--durability", type=click.Choice(["none", "segment", "interval"]), default="none", show_default=True,
              help="none: no fsync; segment: fsync each full segment; interval: fsync every --fsync-interval-ms.")
@click.option("--fsync-interval-ms", type=int, default=1000, show_default=True)
@click.option("--duration", type=float, default=None, help="Stop after this many seconds (default: until "
              "Ctrl-C / SIGTERM).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def record(stream_id: int, dir: str | None, archive_dir: str | None, segment_length: int | None, durability: Durability,
           fsync_interval_ms: int, duration: float | None, as_json: bool) -> None:
    """Record a stream into the archive until Ctrl-C / SIGTERM (or --duration). A recorder
    restarted on the same stream extends its recording where it stopped."""
    from ..archive import Recorder
    from ..transport.idle import stop_on_signals

    with stop_on_signals() as stop:  # SIGINT/SIGTERM end the duty cycle; close() marks recordings stopped
        recorder = Recorder(dir, stream_id=stream_id, archive_dir=archive_dir, segment_length=segment_length,
                            durability=durability, fsync_interval_ms=fsync_interval_ms)
        try:
            for d in recorder.repaired:
                click.echo(f"repaired recording {d.recording_id}: stop position {d.stop_position}", err=True)
            click.echo(f"recording stream {stream_id} into {recorder.archive.dir} (pid {__import__('os').getpid()}); "
                       f"Ctrl-C stops", err=True)
            deadline = None if duration is None else time.monotonic() + duration
            recorder.run(lambda: stop.is_set() or (deadline is not None and time.monotonic() >= deadline))
        finally:
            recorder.close()
    recordings = recorder.archive.recordings()
    mine = [d for d in recordings if d.recording_id in set(recorder.recording_ids)]
    if as_json:
        click.echo(json.dumps({"stream_id": stream_id, "archive_dir": str(recorder.archive.dir),
                               "recordings": [d.as_dict() for d in mine]}))
    else:
        if not mine:
            click.echo(f"no publisher appeared on stream {stream_id}: nothing recorded")
        for d in mine:
            click.echo(f"recording {d.recording_id}: stream {d.stream_id} session {d.session_id} positions "
                       f"{d.start_position}..{d.stop_position} ({d.stop_position - d.start_position:,} bytes)")


@main.command()
@_archive_dir_option
@_archive_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def recordings(dir: str | None, archive_dir: str | None, as_json: bool) -> None:
    """List the archive's recordings (id, stream, session, positions, times, lengths, state)."""
    archive = _archive(dir, archive_dir)
    for d in archive.recordings():
        if as_json:
            click.echo(json.dumps(d.as_dict()))
        else:
            click.echo(f"{d.recording_id} stream={d.stream_id} session={d.session_id} start={d.start_position} "
                       f"stop={d.stop_position} state={d.state} started={_when(d.start_timestamp)} "
                       f"stopped={_when(d.stop_timestamp)} term_length={d.term_length} "
                       f"segment_length={d.segment_length} mtu={d.mtu} initial_term_id={d.initial_term_id} "
                       f"segments={len(archive.segment_files(d.recording_id))}")


@main.command()
@click.argument("recording", type=int)
@click.option("--machine", required=True, help="The state machine class, module:Class "
              "(e.g. lockstep.examples.orderbook:OrderBook).")
@click.option("--against", "against", default=None, metavar="OLD",
              help="Another machine class (e.g. the code that ran in production): run both over the recording "
                   "side by side, stop at the first message after which their state hashes differ, print it and "
                   "the state difference (exit status 1 when they differ).")
@click.option("--snapshot", "snapshot", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Start from this snapshot file (replay goes on after its position).")
@click.option("--until", type=int, default=None, help="Stop exactly after the message at this position.")
@click.option("--step", is_flag=True, help="Interactive step debugger (next, back, continue, break, print, watch, "
              "template, show-state, write-snapshot; 'help' lists them).")
@click.option("--compare", "compare", multiple=True, type=click.Path(dir_okay=False, exists=True),
              help="A replica's <name>.hashes file: check the state hash at every position it recorded and name "
                   "the first divergent position (exit status 1 when they diverge, or when no position of the "
                   "file was replayed). Repeatable.")
@click.option("--write-snapshot", is_flag=True, help="Write a snapshot of the final state next to the recordings.")
@_archive_dir_option
@_archive_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def replay(recording: int, machine: str, against: str | None, snapshot: str | None, until: int | None, step: bool,
           compare: tuple[str, ...], write_snapshot: bool, dir: str | None, archive_dir: str | None,
           as_json: bool) -> None:
    """Feed a recording of the sequenced log into a state machine (the same code replicas run
    live) and print the final state hash."""
    from ..archive.debugger import Stepper
    from ..archive.replay import ReplaySession, load_machine

    instance = load_machine(machine)
    archive = _archive(dir, archive_dir)
    if against is not None:
        if step or compare or snapshot or write_snapshot:
            raise click.UsageError("--against runs two machines from the recording's start: it takes no --step, "
                                   "--compare, --snapshot or --write-snapshot")
        _replay_against(archive, recording, machine, instance, against, until, as_json)
        return
    with ReplaySession(archive, recording, instance, snapshot=snapshot, until=until,
                       compare=list(compare), checkpoints=step) as session:
        if step:
            def read(prompt: str) -> str | None:
                click.echo(prompt, nl=False)
                sys.stdout.flush()
                line = sys.stdin.readline()
                return None if not line else line.rstrip("\n")

            Stepper(session, read, click.echo).loop()
        else:
            _run_with_progress(session, until, as_json)
        written = session.write_snapshot() if write_snapshot else None
        result = session.result(written)
    if compare and result.compared == 0:
        raise LockstepError(f"compared 0 live hashes: no position recorded in {', '.join(compare)} was replayed "
                            f"(positions {result.start_position}..{result.position}): nothing was checked")
    if as_json:
        click.echo(json.dumps(result.as_dict()))
    else:
        click.echo(f"recording {recording}: {result.messages:,} messages replayed into {machine} from position "
                   f"{result.start_position} to {result.position} (sequence {result.sequence})")
        if written:
            click.echo(f"snapshot written: {written}")
        if compare:
            d = result.divergence
            click.echo(f"compared {result.compared} live hashes: " + (
                "all equal" if d is None else
                f"FIRST DIVERGENCE at position {d['position']} (sequence {d['sequence']}): live {d['live']} "
                f"({d['hashes_file']}), replay {d['replay']}"))
        click.echo(f"state hash {result.hash}")
    if result.divergence is not None:
        sys.exit(1)


def _span(archive: Archive, recording: int, start: int, until: int | None) -> int:
    """Bytes a replay from `start` goes through (for its progress bar)."""
    stop = archive.recording(recording).stop_position
    return max(0, (min(stop, until) if until is not None else stop) - start)


def _run_with_progress(session: ReplaySession, until: int | None, quiet: bool) -> None:
    """session.run() with a progress bar (terminal only, after a second, never under --json)."""
    from .progress import progress_bar

    start = session.start_position
    bar = progress_bar(_span(session.archive, session.recording_id, start, until), desc="replay", quiet=quiet)
    count = [0]

    def tick(message: tuple[bytes, dict]) -> bool:
        count[0] += 1
        if not count[0] & 63:
            bar.update(message[1]["position"] - start - bar.n)
        return False

    try:
        session.run(tick)
    finally:
        bar.close()


def _replay_against(archive: Archive, recording: int, new_spec: str, new: StateMachine, old_spec: str,
                    until: int | None, as_json: bool) -> None:
    """`replay --against`: the first message after which two machines differ (exit 1), or none."""
    from ..archive.replay import compare_machines, load_machine
    from .progress import progress_bar

    old = load_machine(old_spec)
    start = archive.recording(recording).start_position
    bar = progress_bar(_span(archive, recording, start, until), desc="replay x2", quiet=as_json)
    try:
        difference, a, b = compare_machines(archive, recording, new, old, until=until,
                                            progress=lambda p: bar.update(p - start - bar.n))
    finally:
        bar.close()
    with a, b:
        result = {"recording_id": recording, "machine": new_spec, "against": old_spec, "messages": a.applied,
                  "position": a.position, "hash": a.machine.state_hash().hex(),
                  "against_hash": b.machine.state_hash().hex(),
                  "difference": difference.as_dict() if difference else None}
    if as_json:
        click.echo(json.dumps(result))
    elif difference is None:
        click.echo(f"recording {recording}: {new_spec} and {old_spec} agree after each of {a.applied:,} messages "
                   f"(to position {a.position}); state hash {result['hash']}")
    else:
        click.echo(f"recording {recording}: {new_spec} and {old_spec} first differ after message "
                   f"{difference.messages:,}:")
        click.echo(f"  {difference.message}")
        click.echo(f"  state hash {difference.hashes[0]} ({new_spec})")
        click.echo(f"  state hash {difference.hashes[1]} ({old_spec})")
        click.echo(f"  state difference ({old_spec} -> {new_spec}):")
        for line in difference.differences or ["(no visible attribute differs: the snapshots differ)"]:
            click.echo(f"    {line}")
    if difference is not None:
        sys.exit(1)
