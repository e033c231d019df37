"""`lockstep dump` and `lockstep bench`: look at a file; measure between two processes."""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator, TypeVar

import click

from ..errors import LockstepError
from .group import main

F = TypeVar("F", bound=Callable[..., object])

# The options the bench commands share (each a decorator: click makes a new option per use).
_as_json = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
_api = click.option("--api", type=click.Choice(["poll", "receive", "claim"]), default=None,
                    help="What each side calls per message: poll (offer + poll(handler), the Aeron way; the "
                    "default, but receive with --idle block), receive (offer + receive()), claim (try_claim + "
                    "commit + poll(handler)).")


def _size_and_messages(messages: int, messages_help: str) -> Callable[[F], F]:
    """--size (payload bytes per message) then --messages (how many, `messages` by default)."""
    size = click.option("--size", type=click.IntRange(min=1), default=32, show_default=True,
                        help="Payload bytes per message.")
    count = click.option("--messages", type=click.IntRange(min=1), default=messages, show_default=True,
                         help=messages_help)

    def apply(f: F) -> F:
        return size(count(f))
    return apply


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=str), required=False)
@click.option("--recording", "recording", type=int, default=None,
              help="Dump this recording of the archive (every segment, in order) instead of a FILE.")
@click.option("--archive-dir", type=click.Path(file_okay=False), default=None,
              help="The archive of --recording (default: $LOCKSTEP_ARCHIVE_DIR, else "
                   "$XDG_DATA_HOME/lockstep/archive).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--payload-bytes", type=click.IntRange(min=0), default=16, show_default=True, help="How much of each payload to show (hex).")
def dump(file: str | None, recording: int | None, archive_dir: str | None, as_json: bool, payload_bytes: int) -> None:
    """Print every frame of a log buffer (ours or real Aeron's), archive segment or recording,
    message of a ring, or counter of a cnc.dat, one per line."""
    from .dump_records import dump_records
    from .progress import progress_bar

    if (file is None) == (recording is None):
        raise click.UsageError("give a FILE or --recording ID")
    records: Iterator[dict[str, Any]]
    if recording is not None:
        from ..archive import Archive

        archive = Archive(archive_dir)
        desc = archive.recording(recording)
        records = (r for segment in archive.segment_files(recording) for r in dump_records(segment, payload_bytes))
        start, bar = desc.start_position, progress_bar(desc.stop_position - desc.start_position, desc="dump",
                                                       quiet=as_json)
    else:
        assert file is not None  # (a FILE or a recording: checked above)
        records, start, bar = dump_records(file, payload_bytes), None, progress_bar(None, desc="dump", unit="record",
                                                                                    quiet=as_json)
    try:
        for i, record in enumerate(records):
            if as_json:
                click.echo(json.dumps(record))
            else:
                click.echo(" ".join(f"{k}={v}" for k, v in record.items() if k != "kind"))
            if not i & 255:
                bar.update(record["position"] - start - bar.n if start is not None and "position" in record else
                           256 if i else 1)
    finally:
        bar.close()


@main.group()
def bench() -> None:
    """Measure lockstep between two real processes (each run in its own fresh directory)."""


@bench.command("throughput")
@_size_and_messages(1_000_000, "Messages to send.")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Measure for this long instead of a message count.")
@click.option("--batch", is_flag=True, help="Use the numpy batch path (offer_batch / poll_batch).")
@click.option("--idle", type=click.Choice(["spin", "yield", "backoff"]), default="backoff", show_default=True)
@_api
@_as_json
def bench_throughput(size: int, messages: int, seconds: float | None, batch: bool, idle: str, api: str | None,
                     as_json: bool) -> None:
    """One-way throughput: a producer process offers, this process polls (one handler call per
    message), receives (one call per message), or takes numpy batches."""
    from ..bench import throughput

    result = throughput(size=size, messages=messages, batch=batch, idle=idle, seconds=seconds, api=api)
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"{result['messages']:,} messages of {size} B in {result['seconds']:.3f} s"
                   f"{' (batch)' if batch else ' via ' + result['api']}: {result['msgs_per_sec']:,.0f} msgs/s, "
                   f"{result['mb_per_sec']:,.1f} MB/s")
        click.echo(f"  {result['ns_per_msg']:.0f} ns/msg = {result['ns_per_msg'] / result['noop_call_ns']:.1f} x an "
                   f"empty cffi call ({result['noop_call_ns']:.0f} ns); C floor {result['c_floor_msgs_per_sec']:,.0f} "
                   f"msgs/s (ratio {result['ratio_to_c_floor']:.2f})")


@bench.command("ping")
@_size_and_messages(100_000, "Measured round trips.")
@click.option("--warmup", type=click.IntRange(min=0), default=10_000, show_default=True, help="Round trips before measuring.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None, help="Send at this fixed rate (msgs/s), measuring from the "
              "intended send time (no coordinated omission).")
@click.option("--idle", type=click.Choice(["spin", "yield", "backoff", "block"]), default="spin", show_default=True,
              help="How each side waits for the next message: busy spin, an idle strategy, or block "
              "(receive sleeps on a futex until the writer wakes it: no core burnt).")
@_api
@_as_json
@click.option("--plot", "plot_file", metavar="FILE", help="Write the percentile distribution (and the C floor's) "
              "as a picture: PNG, SVG or PDF by suffix (needs matplotlib: pip install 'lockstep[bench]').")
def bench_ping(size: int, messages: int, warmup: int, rate: float | None, idle: str, api: str | None,
               as_json: bool, plot_file: str | None) -> None:
    """Round-trip latency to an echoing process over two streams."""
    from ..bench import ping, write_ping_plot

    try:
        result = ping(size=size, messages=messages, warmup=warmup, idle=idle, rate=rate, api=api)
    except LockstepError as e:
        raise click.UsageError(str(e)) from None
    if plot_file:
        said = write_ping_plot(result, plot_file)
        if not said.startswith("wrote"):
            raise click.ClickException(said)
        click.echo(said, err=as_json)
    result.pop("samples")
    result.pop("c_floor_samples")
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"{messages:,} round trips of {size} B ({idle}"
                   f"{f', {rate:,.0f} msgs/s' if rate else ''}) via {result['api']}: " + "  ".join(
                       f"{k[:-3]} {result[k] / 1000:.2f} us" for k in ("p50_ns", "p90_ns", "p99_ns", "p999_ns", "max_ns")))
        click.echo(f"  C floor (same loop in C threads): p50 {result['c_floor_p50_ns'] / 1000:.2f} us, "
                   f"p99 {result['c_floor_p99_ns'] / 1000:.2f} us; ratio p50 "
                   f"{result['p50_ns'] / max(result['c_floor_p50_ns'], 1):.1f}x")


@bench.command("sequencer")
@click.option("--commands", type=click.IntRange(min=1), default=1_000_000, show_default=True, help="Commands to sequence in total.")
@click.option("--clients", type=click.IntRange(min=1), default=2, show_default=True, help="Client processes sending them.")
@click.option("--size", type=click.IntRange(min=8), default=32, show_default=True, help="Command bytes (at least 8: the send time).")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None, help="Send at this total rate (msgs/s) to measure latency "
              "without saturation (measured from the intended send time).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Commands per SequencerClient.send_batch call (1: one send per command); not with --rate.")
@click.option("--round-trips", type=click.IntRange(min=0), default=5_000, show_default=True,
              help="With --rate: blocking round trips measured after, the yardstick of the latency (0: none).")
@_as_json
def bench_sequencer(commands: int, clients: int, size: int, rate: float | None, batch: int, round_trips: int,
                    as_json: bool) -> None:
    """Commands/s through ingress -> sequencer -> log -> replica, next to the C floor."""
    from ..bench import sequencer

    if rate and batch > 1:
        raise click.UsageError("--batch goes without --rate (the latency run sends one command at a time)")
    result = sequencer(commands=commands, clients=clients, size=size, rate=rate, batch=batch,
                       round_trips=round_trips if rate else 0)
    if as_json:
        click.echo(json.dumps(result))
        return
    floor = result["c_floor_commands_per_sec"]
    versus = "" if rate else f" (C floor {floor:,.0f}/s, ratio {result['ratio_to_c_floor']:.2f})"
    click.echo(f"{commands:,} commands of {size} B from {clients} client{'s' if clients != 1 else ''}"
               f"{f' in send_batch calls of {batch}' if batch > 1 else ''}"
               f"{f' at {rate:,.0f}/s' if rate else ''}: {result['commands_per_sec']:,.0f} commands/s{versus}")
    if rate:
        trip = result.get("round_trip_p50_ns")

        def versus_trip(ns: int) -> str:
            return f" ({ns / trip:.1f}x a blocking round trip's p50)" if trip else ""

        click.echo(f"intended send -> apply latency p50 {result['latency_p50_ns'] / 1000:.1f} us, "
                   f"p99 {result['latency_p99_ns'] / 1000:.1f} us{versus_trip(result['latency_p99_ns'])}")
        if "from_send_p99_ns" in result:
            click.echo(f"client's send -> apply latency p50 {result['from_send_p50_ns'] / 1000:.1f} us, "
                       f"p99 {result['from_send_p99_ns'] / 1000:.1f} us{versus_trip(result['from_send_p99_ns'])}"
                       f"; the client late p99 {result['client_late_p99_ns'] / 1000:.1f} us")
        if trip:
            click.echo(f"blocking round trip (ping --idle block), same run: p50 {trip / 1000:.1f} us")
    click.echo(f"state machine apply rate alone (offline replay): {result['apply_per_sec']:,.0f} msgs/s")


@bench.command("halt")
@click.option("--halts", type=click.IntRange(min=1), default=200, show_default=True, help="Halts (each followed by a resume) to send.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=20_000.0, show_default=True, help="Messages/s written to the log.")
@click.option("--venue-rate", type=click.FloatRange(min=0, min_open=True), default=5_000.0, show_default=True,
              help="Requests/s the gateway's venue takes (below --rate: the log backs up).")
@click.option("--gap-ms", default=10.0, show_default=True, help="Backlog built between a resume and the next halt.")
@click.option("--round-trips", default=5_000, show_default=True, help="Blocking round trips measured after.")
@_as_json
def bench_halt(halts: int, rate: float, venue_rate: float, gap_ms: float, round_trips: int, as_json: bool) -> None:
    """Halts through a gateway's side channel while its log is backlogged: sent -> acted,
    next to the delay each would have had queued in the log and a blocking round trip."""
    from ..bench import halt

    result = halt(halts=halts, rate=rate, venue_rate=venue_rate, gap_ms=gap_ms, round_trips=round_trips)
    if as_json:
        click.echo(json.dumps(result))
        return

    def line(d: dict) -> str:
        return "  ".join(f"{k[:-3]} {d[k] / 1000:,.1f} us" for k in ("p50_ns", "p99_ns", "max_ns"))

    click.echo(f"{result['halts']} halts to a gateway ({result['gateway_idle']}) behind a log written at "
               f"{rate:,.0f}/s, read at {venue_rate:,.0f}/s (backlog p50 {result['backlog_messages_p50']:,} messages)")
    click.echo(f"  side channel, sent -> acted     {line(result['side_channel'])}")
    click.echo(f"  same halt queued in the log     {line(result['queued_in_log'])}  (read at a halted gateway's pace)")
    click.echo(f"    ... at the venue's pace       {line(result['queued_at_venue_pace'])}  (backlog / venue rate)")
    click.echo(f"  resume, sent -> acted           {line(result['resume'])}")
    click.echo(f"  blocking round trip (ping)      {line(result['round_trip_block'])}")
    click.echo(f"  side channel p99 = {result['p99_to_round_trip_p50']:.1f}x a round trip's p50; the log "
               f"p50 {result['log_delay_to_side_channel_p50']:,.0f}x the side channel's")
