"""`lockstep demo`, `lockstep halt`, `lockstep resume` (registered on `lockstep.cli.main`)."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from .group import main
from ..errors import LockstepError


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False), default=None,
              help="Draw the order rate per venue over time, halt marked, into FILE (needs matplotlib).")
@click.option("--keep-running", is_flag=True,
              help="Flood without the risk monitor's halt: halt it yourself with `lockstep halt --all` from "
                   "another terminal (the demo prints the directory); Ctrl-C ends the demo.")
@click.option("--seed", default=7, show_default=True, help="Seed of the venue simulators.")
@click.option("--trade-seconds", default=1.0, show_default=True, help="Normal trading before the malfunction.")
@click.option("--flood", default=150, show_default=True, help="Extra child orders per tick once malfunctioning.")
@click.option("--venue-throttle", default=1500.0, show_default=True,
              help="Orders/s each venue session accepts (the gateways wait beyond it, so the log backs up).")
@click.option("--risk-limit", default=3000.0, show_default=True, help="Child orders/s that trip the risk monitor.")
@click.option("--kill-replicas", is_flag=True, help="SIGKILL one Algo and one SOR replica half way through "
              "trading: the others carry on.")
@click.option("--keep-dir", is_flag=True, help="Leave the demo's private directory (log, hashes files, reports) "
              "for inspection; later demos leave it too. The recording is kept in the archive either way.")
@click.option("--hosts", type=click.IntRange(1, 2), default=1, show_default=True,
              help="2: split the scenario over two hosts, each with its own Aeron media driver (built once by "
                   "`lockstep driver`), over UDP: network namespaces joined by a veth pair when they can be made "
                   "(root), else loopback.")
@click.option("--loss", type=click.FloatRange(0.0, 0.5), default=0.0, show_default=True,
              help="With --hosts 2: the receiving drivers drop this fraction of data frames (Aeron's loss "
                   "generator); Aeron repairs it.")
@click.option("--loopback", is_flag=True, help="With --hosts 2: both drivers on loopback, even as root.")
def demo(as_json: bool, plot_file: str | None, keep_running: bool, seed: int, trade_seconds: float, flood: int,
         venue_throttle: float, risk_limit: float, kill_replicas: bool, keep_dir: bool, hosts: int, loss: float,
         loopback: bool) -> None:
    """The trading scenario lockstep exists for: a runaway Algo halted through the priority
    side channel while total order and replication stay intact.

    Runs a sequencer, 2 Algo replicas, 2 SOR replicas, 3 gateways with simulated venues,
    a recorder and a risk monitor as separate processes in a private directory; lets them
    trade; makes the Algo flood; the risk monitor halts the gateways (side channel) and
    stops the Algo (sequenced StopAlgo); everything drains and stops; prints what happened
    and the commands that replay and step through the recording it keeps in the archive
    ($LOCKSTEP_ARCHIVE_DIR, else ~/.local/share/lockstep/archive).

    With --hosts 2, host 1 runs the sequencer, recorder, risk monitor, one Algo and one SOR;
    host 2 the other Algo and SOR and the three gateways; the log, the commands and the halt
    cross between their media drivers.
    """
    from ..demo import DemoConfig, format_summary, run_demo

    if plot_file is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise LockstepError("--plot needs matplotlib: pip install 'lockstep[bench]' (or pip install matplotlib)") \
                from None
    if hosts == 1 and (loss or loopback):
        raise click.UsageError("--loss and --loopback go with --hosts 2")
    config = DemoConfig(seed=seed, trade_s=trade_seconds, flood_per_tick=flood, venue_throttle_per_s=venue_throttle,
                        risk_limit_per_s=risk_limit, keep_running=keep_running, kill_replicas=kill_replicas,
                        keep_dir=keep_dir, hosts=hosts, loss=loss, netns=False if loopback else None)
    try:
        summary = run_demo(config, log=None if as_json else lambda text: click.echo(text, err=True))
    except KeyboardInterrupt:
        raise LockstepError("interrupted: every demo process stopped and its directory removed") from None
    if plot_file is not None:
        from ..demo.plot import plot_summary

        plot_summary(summary, plot_file)
    public = {k: v for k, v in summary.items() if not k.startswith("_")}
    if as_json:
        click.echo(json.dumps(public))
    else:
        click.echo(format_summary(public))
        if plot_file is not None:
            click.echo(f"\n  plot: {plot_file}")


def _gateway_dir(dir_: str | None) -> Any:
    from ..cluster.gateway import find_gateway_dirs
    from ..transport.mapped import default_dir

    if dir_ is not None or os.environ.get("LOCKSTEP_DIR"):
        return dir_
    found = find_gateway_dirs()
    if len(found) > 1:
        raise LockstepError(f"gateways are running in several directories ({', '.join(map(str, found))}): "
                            f"pick one with --dir")
    return found[0] if found else default_dir()


def _priority_command(name: str) -> Any:
    @click.option("--gateway", "gateway", default=None, metavar="NAME", help=f"{name.capitalize()} one gateway.")
    @click.option("--all", "all_", is_flag=True, help=f"{name.capitalize()} every gateway of the directory, and "
                  "of the other hosts its deployment.json lists (their priority streams).")
    @click.option("--dir", "dir_", type=click.Path(file_okay=False), default=None,
                  help="The lockstep directory (default: $LOCKSTEP_DIR, else the one directory with running "
                       "gateways: the default one or a running demo's).")
    @click.option("--reason", default="", help="A note carried with the command (32 bytes).")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    def command(gateway: str | None, all_: bool, dir_: str | None, reason: str, as_json: bool) -> None:
        from ..cluster import gateway as gw

        if (gateway is None) == (not all_):
            raise click.UsageError("give --gateway NAME or --all")
        fn = gw.halt if name == "halt" else gw.resume
        result = fn(_gateway_dir(dir_), gateway, all=all_, reason=reason or f"lockstep {name} (cli)")
        if as_json:
            click.echo(json.dumps(result))
            return
        for g in result["gateways"]:
            if "host" in g:  # a host of the deployment, through its priority stream
                state = "" if g["delivered"] else (" (NOT delivered: no gateway of that host is listening)"
                                                   if not g["connected"] else " (NOT delivered: back-pressured)")
                who = "every gateway" if g["gateway"] == "*" else g["gateway"]
                click.echo(f"{name} -> {who} on {g['host']} (priority stream){state}")
                continue
            state = "" if g["alive"] else " (not running: the command waits in its side channel)"
            if not g["delivered"]:
                state = " (NOT delivered: its side channel is full)"
            click.echo(f"{name} -> {g['gateway']}{state}")
        if name == "halt" and result["log_position"] >= 0:
            click.echo(f"sent through the side channel to {result['dir']}; the sequenced log was at position "
                       f"{result['log_position']:,}")
        else:
            click.echo(f"sent through the side channel to {result['dir']}")

    return command


main.command("halt", help="Halt execution gateways through the priority side channel: each disconnects from "
             "its venue at once, ahead of anything queued in the sequenced log, and declines every request "
             "(declines go through the sequencer).")(_priority_command("halt"))
main.command("resume", help="Resume halted gateways through the priority side channel: each reconnects to its "
             "venue.")(_priority_command("resume"))
