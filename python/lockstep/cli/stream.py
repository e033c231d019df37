"""`lockstep dump` and `lockstep bench`: look at a file; measure between two processes."""

from __future__ import annotations

import json

import click

from ..errors import LockstepError
from .group import main


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--payload-bytes", default=16, show_default=True, help="How much of each payload to show (hex).")
def dump(file: str, as_json: bool, payload_bytes: int) -> None:
    """Print every frame of a log buffer (ours or real Aeron's), message of a ring, or counter
    of a cnc.dat, one per line."""
    from .dump_records import dump_records

    for record in dump_records(file, payload_bytes):
        if as_json:
            click.echo(json.dumps(record))
        else:
            click.echo(" ".join(f"{k}={v}" for k, v in record.items() if k != "kind"))


@main.group()
def bench() -> None:
    """Measure lockstep between two real processes (each run in its own fresh directory)."""


@bench.command("throughput")
@click.option("--size", default=32, show_default=True, help="Payload bytes per message.")
@click.option("--messages", default=1_000_000, show_default=True, help="Messages to send.")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Measure for this long instead of a message count.")
@click.option("--batch", is_flag=True, help="Use the numpy batch path (offer_batch / poll_batch).")
@click.option("--idle", type=click.Choice(["spin", "yield", "backoff"]), default="backoff", show_default=True)
@click.option("--api", type=click.Choice(["poll", "receive", "claim"]), default=None,
              help="What each side calls per message: poll (offer + poll(handler), the Aeron way; the "
              "default, but receive with --idle block), receive (offer + receive()), claim (try_claim + "
              "commit + poll(handler)).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
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
@click.option("--size", default=32, show_default=True, help="Payload bytes per message.")
@click.option("--messages", default=100_000, show_default=True, help="Measured round trips.")
@click.option("--warmup", default=10_000, show_default=True, help="Round trips before measuring.")
@click.option("--rate", type=float, default=None, help="Send at this fixed rate (msgs/s), measuring from the "
              "intended send time (no coordinated omission).")
@click.option("--idle", type=click.Choice(["spin", "yield", "backoff", "block"]), default="spin", show_default=True,
              help="How each side waits for the next message: busy spin, an idle strategy, or block "
              "(receive sleeps on a futex until the writer wakes it: no core burnt).")
@click.option("--api", type=click.Choice(["poll", "receive", "claim"]), default=None,
              help="What each side calls per message: poll (offer + poll(handler), the Aeron way; the "
              "default, but receive with --idle block), receive (offer + receive()), claim (try_claim + "
              "commit + poll(handler)).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
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
@click.option("--commands", default=1_000_000, show_default=True, help="Commands to sequence in total.")
@click.option("--clients", default=2, show_default=True, help="Client processes sending them.")
@click.option("--size", default=32, show_default=True, help="Command bytes (at least 8: the send time).")
@click.option("--rate", type=float, default=None, help="Send at this total rate (msgs/s) to measure latency "
              "without saturation (measured from the intended send time).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_sequencer(commands: int, clients: int, size: int, rate: float | None, as_json: bool) -> None:
    """Commands/s through ingress -> sequencer -> log -> replica, next to the C floor."""
    from ..bench import sequencer

    result = sequencer(commands=commands, clients=clients, size=size, rate=rate)
    if as_json:
        click.echo(json.dumps(result))
        return
    floor = result["c_floor_commands_per_sec"]
    versus = "" if rate else f" (C floor {floor:,.0f}/s, ratio {result['ratio_to_c_floor']:.2f})"
    click.echo(f"{commands:,} commands of {size} B from {clients} clients"
               f"{f' at {rate:,.0f}/s' if rate else ''}: {result['commands_per_sec']:,.0f} commands/s{versus}")
    if rate:
        click.echo(f"send -> apply latency p50 {result['latency_p50_ns'] / 1000:.1f} us, "
                   f"p99 {result['latency_p99_ns'] / 1000:.1f} us")
    click.echo(f"state machine apply rate alone (offline replay): {result['apply_per_sec']:,.0f} msgs/s")
