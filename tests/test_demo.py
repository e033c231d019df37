"""`lockstep demo` and the priority side channel, with real processes and mapped files.

The whole demo runs to the end (CLI, --json) with no order reaching a venue after the
halt, every request a halted gateway received declined and the decline in the log, and
replicas equal to each other and to the offline replay of the recording; it survives the
SIGKILL of one Algo and one SOR replica; a halt reaches gateways that have thousands of
messages of backlog in the sequenced log ahead of it (the test builds the backlog); Ctrl-C
leaves no process and no file behind. Guards are no-progress timeouts, never speed limits.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lockstep import SequencerClient
from lockstep.cluster.replica import _default_origin
from lockstep.transport.counters import pid_alive
from lockstep.demo import DemoConfig, run_demo
from lockstep.demo import processes as P
from lockstep.demo.algo import AlgoEngine
from lockstep.demo.messages import SCHEMA, VENUES, ChildOrder, Decline, VenueOrder, VenueStatus
from lockstep.demo.sor import SmartOrderRouter
from lockstep.cluster.gateway import gateways, halt, resume
from lockstep.transport.reader import LogReader
from lockstep.transport.stream_files import stream_logs

STALL_S = 60.0
KEYS = ("orders_to_venues_before_halt", "orders_to_venues_after_halt", "halt_latency_us", "sequenced_halt_delay_us",
        "declines_sequenced", "replica_hashes", "replay_hashes", "messages_sequenced")
_SEQ = struct.Struct("<qqqii")  # the sequencer's header: sequence, timestamp, origin sequence, origin id


def lockstep_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lockstep.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def _log(messages_source) -> list[tuple[bytes, int]]:
    with messages_source as reader:
        return [(payload, header["position"]) for payload, header in reader.messages()]


def _decoded(messages):
    """(position, origin id, origin sequence, decoded demo message or None) per log message."""
    out = []
    for payload, position in messages:
        _, _, origin_sequence, origin_id, _ = _SEQ.unpack_from(payload)
        try:
            msg = SCHEMA.decode(payload[32:]).copy()
        except Exception:
            msg = None
        out.append((position, origin_id, origin_sequence, msg))
    return out


def _check_declines(decoded, reports: dict) -> int:
    """Every request a gateway received after it acted on the halt was declined (never
    sent), and each decline is in the log after its request. Returns requests checked."""
    checked = 0
    for venue, name in enumerate(VENUES):
        report = reports[name]
        first = report["halts"][0]
        sent, declined = set(report["sent_ids"]), set(report["declined_ids"])
        assert not sent & declined, f"{name}: orders both sent to the venue and declined"
        requests = [(pos, m.order_id) for pos, _, _, m in decoded if m is not None and m.type is VenueOrder
                    and m.venue == venue]
        declines = {m.order_id: pos for pos, _, _, m in decoded if m is not None and m.type is Decline
                    and m.venue == venue}
        assert {oid for _, oid in requests} == sent | declined, f"{name}: a request was neither sent nor declined"
        for pos, order_id in requests:
            if pos > first["position_at_act"]:
                assert order_id in declined, f"{name}: request {order_id} received after the halt, not declined"
                checked += 1
            if order_id in declined:
                assert order_id in declines and declines[order_id] > pos, f"{name}: decline of {order_id} not in the log"
        assert len(declines) == len(declined) == report["declined"]
        # Nothing reached the venue once the gateway had acted on the halt.
        import array
        arrivals = array.array("q")
        arrivals.frombytes(report["arrivals"])
        assert all(t < first["acted_ns"] for t in arrivals)
        assert report["received_while_disconnected"] == 0
    return checked


# -- the whole demo ---------------------------------------------------------------------

def _check_kept_recording(s: dict) -> None:
    """The recording outlives the demo, in the archive on disk, listed by `lockstep recordings`;
    the summary's commands replay it to the replicas' hashes and end the text summary."""
    from lockstep.demo import format_summary

    rec = s["recording"]
    assert rec["archive_dir"] == os.environ["LOCKSTEP_ARCHIVE_DIR"]
    listed = [json.loads(line) for line in lockstep_cli("recordings", "--json").stdout.splitlines()]
    assert rec["recording_id"] in [d["recording_id"] for d in listed]
    c = rec["commands"]
    assert c["step_algo"] == f"lockstep replay {rec['recording_id']} --machine lockstep.demo.algo:AlgoEngine --step"
    assert c["step_sor"] == f"lockstep replay {rec['recording_id']} --machine lockstep.demo.sor:SmartOrderRouter --step"
    for kind in ("algo", "sor"):
        out = lockstep_cli(*c[f"replay_{kind}"].split()[1:], "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["hash"] == s["replay_hashes"][kind]
    text = format_summary(s).splitlines()
    assert text[-3].strip().endswith(c["step_algo"]) and text[-1].strip().endswith(c["step_sor"])


def test_demo_json_runs_to_the_end(lsdir, tmp_path):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "rate.png"
    proc = lockstep_cli("demo", "--json", "--plot", str(plot))
    assert proc.returncode == 0, proc.stderr
    [line] = proc.stdout.strip().splitlines()  # one JSON object, nothing else on stdout
    s = json.loads(line)
    for key in KEYS:
        assert key in s, key
    assert s["orders_to_venues_after_halt"] == 0
    assert s["orders_to_venues_before_halt"] > 0
    assert s["halt_latency_us"] > 0 and s["sequenced_halt_delay_us"] > 0
    assert s["declines_sequenced"] > 0
    assert s["declines_sequenced"] == sum(g["declined"] for g in s["gateways"].values())
    for g in s["gateways"].values():
        assert g["requests_after_halt"] > 0
        assert g["requests_after_halt_not_declined"] == 0
        assert g["declines_missing_from_log"] == 0
        assert g["sent_and_declined"] == 0
    hashes = s["replica_hashes"]
    assert sorted(hashes) == ["algo-1", "algo-2", "sor-1", "sor-2"]
    assert hashes["algo-1"] == hashes["algo-2"] == s["replay_hashes"]["algo"]
    assert hashes["sor-1"] == hashes["sor-2"] == s["replay_hashes"]["sor"]
    _check_kept_recording(s)
    assert s["replay_source"].startswith("archive recording")
    assert s["messages_sequenced"] == s["messages_replayed"]
    assert s["duplicate_outputs_in_log"] == 0
    assert s["stop_algo_sequenced"] and s["algo"]["stopped"]
    assert s["sor"]["open_orders"] == 0 and s["algo"]["open_children"] == 0
    assert plot.stat().st_size > 10_000
    assert not list(lsdir.parent.glob("lockstep-demo-*")), "the demo left its directory behind"


def test_demo_carries_on_when_an_algo_and_a_sor_replica_are_killed(lsdir):
    """SIGKILL algo-2 and sor-2 half way through trading: algo-1 and sor-1 keep trading,
    the halt still holds, every output is in the log once, survivors equal the replay;
    and, checked here from the recording and the gateways' own records, every request a
    halted gateway received was declined with the decline in the log."""
    s = run_demo(DemoConfig(kill_replicas=True, keep_dir=True))
    dir = Path(s["dir"])
    assert s["killed"] == ["algo-2", "sor-2"]
    assert sorted(s["replica_hashes"]) == ["algo-1", "sor-1"]
    assert s["replica_hashes"]["algo-1"] == s["replay_hashes"]["algo"]
    assert s["replica_hashes"]["sor-1"] == s["replay_hashes"]["sor"]
    assert s["orders_to_venues_after_halt"] == 0
    # Trading went on after the kill: orders reached venues between the kill and the halt.
    killed_at, halt_at = s["timeline_s"]["killed"], s["_plot"]["halt_s"]
    after_kill = sum(1 for times in s["_plot"]["arrivals_s"].values() for t in times if killed_at < t < halt_at)
    assert after_kill > 100

    from lockstep.archive import Archive
    archive = Archive(s["recording"]["archive_dir"])
    recording = archive.recording(s["recording"]["recording_id"])
    decoded = _decoded(_log(archive.reader(recording.recording_id)))
    # Outputs sequenced once: no (origin, origin sequence) twice; the Algo's children and
    # the SOR's venue orders are exactly what one replica sent.
    keys = [(origin, seq) for _, origin, seq, _ in decoded]
    assert len(keys) == len(set(keys))
    algo_origin, sor_origin = _default_origin(AlgoEngine()), _default_origin(SmartOrderRouter())
    children = [m for _, o, _, m in decoded if m is not None and m.type is ChildOrder]
    assert all(o == algo_origin for _, o, _, m in decoded if m is not None and m.type is ChildOrder)
    assert all(o == sor_origin for _, o, _, m in decoded if m is not None and m.type is VenueOrder)
    assert len(children) == s["algo"]["children_sent"]
    assert len({m.child_id for m in children}) == len(children)
    reports = {}
    for name in VENUES:
        with open(dir / f"{name}.report", "rb") as f:
            reports[name] = pickle.load(f)
    assert _check_declines(decoded, reports) > 0


# -- the side channel overtakes a backlog ----------------------------------------------

def _wait(condition, what: str, shared, procs) -> None:
    last, moved = tuple(shared), time.monotonic()
    while not condition():
        for p in procs.started:
            assert p.exitcode in (None, 0), f"worker {p.name} died with {p.exitcode} while waiting for {what}"
        now = tuple(shared)
        if now != last:
            last, moved = now, time.monotonic()
        assert time.monotonic() - moved < STALL_S, f"waiting for {what}: no progress for {STALL_S} s"
        time.sleep(0.005)


def test_halt_overtakes_thousands_of_messages_of_backlog(lsdir, procs, mp):
    """The test builds the backlog: gateways whose venues take 200 orders/s, then 6,000
    venue orders sequenced at once. The halt (Python call) reaches every gateway while
    thousands of messages are ahead of it in the log, and the gateways act on it before
    reading that far (it was not queued behind them); they then decline the backlog."""
    shared = mp.RawArray("q", 1 + P.SLOT_WIDTH * 4)
    value = lambda slot, i: shared[1 + slot * P.SLOT_WIDTH + i]  # noqa: E731
    procs.start(P.run_sequencer, str(lsdir), "sequencer", shared, 0)
    _wait(lambda: value(0, P.STATE) == P.RUNNING, "the sequencer", shared, procs)
    for i, name in enumerate(VENUES):
        procs.start(P.run_gateway, str(lsdir), name, shared, i + 1, i, 1, {"throttle_per_s": 200.0})
    _wait(lambda: all(value(i + 1, P.STATE) == P.RUNNING for i in range(3)), "the gateways", shared, procs)
    total = 6_000
    with SequencerClient(lsdir, origin_id=77) as client:
        for k in range(total):
            order = VenueOrder.encode(order_id=k + 1, venue=k % 3, side=1, qty=10, price=100)
            while not client.send(order):
                time.sleep(0.0005)
    # 6,000 orders + 3 venue statuses sequenced; the gateways are far behind.
    _wait(lambda: value(0, P.BUSY) == 0 and _sequenced(lsdir) >= total + 3, "the orders to be sequenced",
          shared, procs)
    sent = halt(lsdir, all=True, reason="test")
    assert [g["gateway"] for g in sent["gateways"]] == list(VENUES)
    assert all(g["delivered"] and g["alive"] for g in sent["gateways"])
    tail = sent["log_position"]
    _wait(lambda: all(P.gateway_state(value(i + 1, P.EXTRA))[2] and value(i + 1, P.POSITION) >= tail
                      and value(i + 1, P.BUSY) == 0 for i in range(3)), "the gateways to read the backlog",
          shared, procs)
    # The gateways have sent everything; let the sequencer put the last of it in the log.
    stable = [value(0, P.POSITION), time.monotonic()]

    def settled() -> bool:
        if value(0, P.POSITION) != stable[0] or value(0, P.BUSY):
            stable[:] = [value(0, P.POSITION), time.monotonic()]
        return time.monotonic() - stable[1] > 0.3

    _wait(settled, "the sequencer to drain its ingress", shared, procs)
    shared[P.STOP] = 1
    procs.join_all()
    reports = {}
    for name in VENUES:
        with open(lsdir / f"{name}.report", "rb") as f:
            reports[name] = pickle.load(f)
    for name, report in reports.items():
        [h] = report["halts"]
        assert h["log_position"] == tail and h["sent_ns"] == sent["sent_ns"]
        assert h["position_at_act"] < tail, f"{name} had already read the log to the halt's position"
        assert h["backlog_messages"] >= 2_000, f"{name}: only {h['backlog_messages']} messages of backlog"
        assert h["sent_ns"] < h["acted_ns"] < h["reached_ns"], "acted only after reading the backlog"
        assert report["to_venue"] + report["declined"] == report["requests"] == total // 3
        assert report["declined"] >= 1_000
    [path] = stream_logs(lsdir, 100)
    decoded = _decoded(_log(LogReader(path)))
    assert _check_declines(decoded, reports) >= 3_000
    downs = [m.venue for _, _, _, m in decoded if m is not None and m.type is VenueStatus and not m.up]
    assert sorted(downs) == [0, 1, 2], "each halted gateway tells every machine, in the log"


def _sequenced(dir) -> int:
    paths = stream_logs(dir, 100)
    if not paths:
        return 0
    with LogReader(paths[0]) as reader:
        return sum(1 for _ in reader.messages())


# -- halt / resume from the command line -------------------------------------------------

def test_halt_and_resume_from_the_command_line(lsdir):
    from lockstep import Sequencer
    from lockstep.demo.execution import ExecutionGateway

    with Sequencer(lsdir) as seq, ExecutionGateway(1, lsdir) as gw:
        assert [g.name for g in gateways(lsdir)] == ["beta"]
        proc = lockstep_cli("halt", "--gateway", "beta", "--dir", str(lsdir), "--json")
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert result["command"] == "halt" and result["gateways"] == [{"gateway": "beta", "delivered": True,
                                                                        "alive": True}]
        gw.do_work()
        assert gw.halted and gw.halts[0].sent_ns == result["sent_ns"]
        proc = lockstep_cli("resume", "--all", "--dir", str(lsdir))
        assert proc.returncode == 0, proc.stderr
        assert "resume -> beta" in proc.stdout
        gw.do_work()
        assert not gw.halted and gw.halts[0].resumed_ns > 0
        # The Python call does the same.
        halt(lsdir, gateway="beta")
        gw.do_work()
        assert gw.halted
        resume(lsdir, all=True)
        gw.do_work()
        assert not gw.halted
        seq.do_work()
    for args, message in [(("halt", "--gateway", "nope", "--dir", str(lsdir)), "no gateway 'nope'"),
                          (("halt", "--dir", str(lsdir)), "give --gateway NAME or --all")]:
        proc = lockstep_cli(*args)
        assert proc.returncode != 0 and message in proc.stderr
        assert "Traceback" not in proc.stderr


def test_plot_without_matplotlib_says_how_to_install_it(lsdir, tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from lockstep.cli import main\n"
            "main(['demo', '--plot', sys.argv[1]])")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.png")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("lockstep: error: ") and "pip install 'lockstep[bench]'" in line


# -- Ctrl-C -------------------------------------------------------------------------------

def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to find the demo's processes")
def test_ctrl_c_stops_every_process_and_leaves_nothing_behind(lsdir, tmp_path):
    err = open(tmp_path / "stderr", "w+")
    demo = subprocess.Popen([sys.executable, "-m", "lockstep.cli", "demo"], stdout=subprocess.DEVNULL, stderr=err,
                            start_new_session=True, text=True)
    try:
        deadline = time.monotonic() + 120
        while "malfunction injected" not in (tmp_path / "stderr").read_text():
            assert demo.poll() is None, (tmp_path / "stderr").read_text()
            assert time.monotonic() < deadline, "the demo did not get going"
            time.sleep(0.01)
        children = _descendants(demo.pid)
        assert len(children) >= 10, children
        os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
        assert demo.wait(60) == 1
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    lines = (tmp_path / "stderr").read_text().strip().splitlines()
    assert lines[-1].startswith("lockstep: error: interrupted"), lines
    assert not any("Traceback" in line for line in lines)
    deadline = time.monotonic() + 30
    while any(pid_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in children if pid_alive(p)], "processes outlived the demo"
    assert not list(lsdir.parent.glob("lockstep-demo-*")), "the demo left its directory behind"
    # And the next run is not blocked by anything.
    proc = lockstep_cli("demo", "--json", "--trade-seconds", "0.3")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["orders_to_venues_after_halt"] == 0


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to find the demo's processes")
def test_processes_exit_when_the_driver_is_killed_and_its_directory_is_swept(lsdir, tmp_path):
    from lockstep.demo.run import _demo_dir

    err = tmp_path / "stderr"
    with open(err, "w") as f:
        demo = subprocess.Popen([sys.executable, "-m", "lockstep.cli", "demo"], stdout=subprocess.DEVNULL, stderr=f,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "trading:" not in err.read_text():
            assert demo.poll() is None, err.read_text()
            assert time.monotonic() < deadline, "the demo did not get going"
            time.sleep(0.01)
        children = _descendants(demo.pid)
        assert len(children) >= 10, children
        os.kill(demo.pid, signal.SIGKILL)  # no chance to clean up
        demo.wait(30)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    deadline = time.monotonic() + 30
    while any(pid_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in children if pid_alive(p)], "processes outlived their killed driver"
    [stale] = lsdir.parent.glob("lockstep-demo-*")
    fresh = _demo_dir()  # what the next run does first: remove directories of dead drivers
    assert not stale.exists() and fresh.exists()
