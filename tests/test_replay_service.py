"""The archive's replay service across media drivers: a `ReplayServer` attached to one real
aeronmd serves a recording (made by a `Recorder` from a lockstep `Publication`) to a
`ReplayClient` attached to another, over UDP on loopback and across two network namespaces.
Every replayed message arrives once, in order, with its payload and its position in the
original log; a following replay keeps up with a live recording; bad start positions and a
missing server are clear errors; a SIGKILLed client's session ends and the next client is
served; 5 % loss on the receiving driver changes nothing. Guards are timeouts, never speed
limits."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from helpers import drive
import numpy as np
import pytest
from lockstep import LockstepError, Publication
from lockstep.aeron import Aeron
from lockstep.archive import Archive, Recorder, ReplayClient, ReplayServer
from lockstep.aeron.channel import with_params as channel_with
from lockstep.aeron.replay_client import ReplayOk, SCHEMA, StartReplay
from lockstep.archive.replay_server import replay_channel_params
from lockstep.archive.catalog import RecordingDescriptor
from lockstep.archive.segments import FRAME_HEADER

from aeron.harness import drivers, free_udp_port, netns_pair  # noqa: F401

STREAM = 100
TERM = 1 << 16
STALL_S = 60.0
LOSSY = {"AERON_UDP_CHANNEL_INCOMING_INTERCEPTORS": "loss",
         "AERON_UDP_CHANNEL_TRANSPORT_BINDINGS_LOSS_ARGS": "rate=0.05|seed=7|recv-msg-mask=0x2"}
NAKS_SENT = 5  # system counter (spec §6)
WORKER = Path(__file__).resolve().parent / "replay_client_worker.py"


# -- helpers ------------------------------------------------------------------------------------

def _drive(until, *steps, what: str) -> None:
    """helpers.drive with this module's stall limit."""
    drive(until, *steps, what=what, stall_s=STALL_S)


def _message(rng: np.random.Generator, i: int) -> bytes:
    """Message i: its number then random bytes; sizes from 1 frame to 4 fragments."""
    size = int(rng.choice([8, 17, 100, 1376, 1377, 3000, 5000]))
    return i.to_bytes(8, "little") + bytes(rng.integers(0, 256, size - 8, dtype=np.uint8))


def record(lsdir: Path, archive_dir: Path, count: int, seed: int = 5, stream_id: int = STREAM) -> list[tuple[bytes, int]]:
    """Publish `count` messages on `stream_id` (100) of `lsdir` (64 KiB terms: many terms, padding at
    their ends, fragmented messages) while a Recorder records them into `archive_dir`; the
    recording is stopped. Returns [(payload, position after it)]."""
    rng = np.random.default_rng(seed)
    rec = Recorder(lsdir, stream_id=stream_id, archive_dir=archive_dir)
    pub = Publication(stream_id, lsdir, exclusive=True, term_length=TERM)
    rec.discover()
    sent: list[tuple[bytes, int]] = []
    pending = [_message(rng, 0)]

    def offer() -> int:
        if len(sent) == count:
            return 0
        result = pub.offer(pending[0])
        if result > 0:
            sent.append((pending[0], result))
            pending[0] = _message(rng, len(sent))
            return 1
        return 0

    _drive(lambda: len(sent) == count and rec.position == pub.position, offer, rec.do_work, what="recording")
    rec.close()
    pub.close()
    return sent


@contextlib.contextmanager
def serving(aeron_dir: Path, archive_dir: Path, channel: str, **kwargs: Any) -> Iterator[ReplayServer]:
    """A ReplayServer on `channel` through the driver in `aeron_dir`, run by a thread."""
    aeron = Aeron(aeron_dir)
    server = ReplayServer(archive_dir, aeron=aeron, control_channel=channel, **kwargs)
    stop = threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            server.run(stop)
        except BaseException as e:  # noqa: BLE001 (reported by the test)
            failures.append(e)

    thread = threading.Thread(target=run, name="replay-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(30)
        server.close()
        aeron.close()
    assert not failures, failures


def receive(replay, until, what: str) -> list[tuple[bytes, int]]:
    """Poll the replay until `until(got)`; got: [(payload, header.position)]."""
    got: list[tuple[bytes, int]] = []
    _drive(lambda: until(got), lambda: replay.poll(lambda data, header: got.append((bytes(data), header.position)),
                                                    50), what=what)
    return got


def wait_for(condition, what: str, timeout: float = STALL_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.01)


def udp(port_host: str = "127.0.0.1", port: int | None = None) -> str:
    return f"aeron:udp?endpoint={port_host}:{port if port is not None else free_udp_port()}"


@pytest.fixture
def archive_dir(tmp_path: Path) -> Path:
    return tmp_path / "replay-archive"


# -- unit: channel parameters ----------------------------------------------------------------------

def test_replay_channel_parameters_put_the_publication_at_the_recorded_position():
    desc = RecordingDescriptor(recording_id=0, stream_id=1, session_id=9, start_position=0, stop_position=0,
                               start_timestamp=0, stop_timestamp=0, term_length=TERM, segment_length=TERM, mtu=1408,
                               initial_term_id=(1 << 31) - 2, state="stopped")
    params = replay_channel_params(desc, 3 * TERM + 4096, 77)
    assert params == {"term_length": TERM, "mtu": 1408, "init_term_id": (1 << 31) - 2, "term_id": -(1 << 31) + 1,
                      "term_offset": 4096, "session_id": 77}  # the term id wraps as an int32
    assert channel_with("aeron:udp?endpoint=h:1|mtu=9000", ("session-id",), mtu=1408, term_offset=0) == \
        "aeron:udp?endpoint=h:1|mtu=1408|term-offset=0"
    assert channel_with("aeron:ipc", session_id=5) == "aeron:ipc?session-id=5"
    assert SCHEMA.schema_id == 7410 and [t.template_id for t in SCHEMA.types] == [1, 2, 3, 4]
    assert ReplayOk.decode(ReplayOk.encode(correlation_id=1, replay_session_id=2, recording_id=3, start_position=4,
                                           stop_position=-1)).stop_position == -1


# -- replays across two drivers ------------------------------------------------------------------

def _exact_replay(drivers, lsdir, archive_dir, server_driver, client_driver, control, response) -> None:
    sent = record(lsdir, archive_dir, 400)
    positions = [0] + [p for _, p in sent]
    start, stop = positions[37], positions[351]  # after message 36, up to message 350
    with serving(server_driver.dir, archive_dir, control) as server, Aeron(client_driver.dir) as aeron:
        client = ReplayClient(aeron, control, response)
        with client.start_replay(STREAM, start_position=start, stop_position=stop, timeout=30) as replay:
            assert (replay.start_position, replay.stop_position, replay.recording_id) == (start, stop, 0)
            got = receive(replay, lambda got: replay.is_done, "replay start..stop")
            assert replay.position == stop
        assert got == sent[37:351]  # exactly those messages, in order, with the recording's positions
        # A second replay of everything to the same client (its own stream), the recording's end by default.
        with client.start_replay(STREAM, timeout=30) as replay:
            assert replay.stop_position == positions[-1]
            got = receive(replay, lambda got: replay.is_done, "replay of the whole recording")
        assert got == sent
        wait_for(lambda: not server.sessions, "the server ending its sessions")
        assert [why for _, why in server.ended] == ["stop position reached"] * 2
        client.close()


def test_replay_from_a_message_to_a_stop_position_is_exact(drivers, lsdir, archive_dir):
    host1, host2 = drivers.start("archive-host"), drivers.start("replica-host")
    _exact_replay(drivers, lsdir, archive_dir, host1, host2, udp(), udp())


def test_replay_across_network_namespaces_is_exact(drivers, lsdir, archive_dir, netns_pair):
    host1 = drivers.start("archive-host", netns=netns_pair.a)
    host2 = drivers.start("replica-host", netns=netns_pair.b)
    _exact_replay(drivers, lsdir, archive_dir, host1, host2, udp(netns_pair.address_a, 40102),
                  udp(netns_pair.address_b, 40103))


def test_replay_with_5_percent_loss_on_the_receiving_driver_is_exact(drivers, lsdir, archive_dir):
    host1, host2 = drivers.start("archive-host"), drivers.start("lossy-replica-host", **LOSSY)
    sent = record(lsdir, archive_dir, 600, seed=11)
    control, response = udp(), udp()
    with serving(host1.dir, archive_dir, control), Aeron(host2.dir) as aeron:
        client = ReplayClient(aeron, control, response)
        with client.start_replay(STREAM, timeout=30) as replay:
            got = receive(replay, lambda got: replay.is_done, "replay over a lossy link")
        assert got == sent
        assert aeron.counters.get(NAKS_SENT) > 0  # the loss was real, and repaired
        client.close()


def test_a_following_replay_keeps_up_with_a_live_recording_until_the_client_stops(drivers, lsdir, archive_dir):
    host1, host2 = drivers.start("archive-host"), drivers.start("replica-host")
    sent: list[tuple[bytes, int]] = []
    stop_writing = threading.Event()
    failures: list[BaseException] = []

    def write_and_record() -> None:  # a live publisher, recorded as it goes (an active recording)
        try:
            rng = np.random.default_rng(3)
            rec = Recorder(lsdir, stream_id=STREAM, archive_dir=archive_dir)
            pub = Publication(STREAM, lsdir, exclusive=True, term_length=TERM)
            rec.discover()
            message = _message(rng, 0)
            while not stop_writing.is_set() and len(sent) < 2_000_000:  # (goes on until the test is done)
                result = pub.offer(message)
                if result > 0:
                    sent.append((message, result))
                    message = _message(rng, len(sent))
                rec.do_work()
                time.sleep(0.0005)
            rec.close()
            pub.close()
        except BaseException as e:  # noqa: BLE001
            failures.append(e)

    writer = threading.Thread(target=write_and_record, name="writer", daemon=True)
    writer.start()
    control, response = udp(), udp()
    try:
        wait_for(lambda: Archive(archive_dir).recordings() and len(sent) > 50, "an active recording")
        with serving(host1.dir, archive_dir, control) as server, Aeron(host2.dir) as aeron:
            client = ReplayClient(aeron, control, response)
            replay = client.start_replay(STREAM, timeout=30)  # stop -1: follow
            assert replay.stop_position is None
            written_at_start = len(sent)
            got = receive(replay, lambda got: len(got) >= written_at_start + 300, "following the live recording")
            assert not replay.is_done
            assert got == sent[:len(got)]  # every message, in order, recorded positions, also those written later
            replay.close()  # StopReplay
            wait_for(lambda: not server.sessions, "the server ending the stopped session")
            assert [why for _, why in server.ended] == ["stopped by the client"]
            client.close()
    finally:
        stop_writing.set()
        writer.join(30)
    assert not failures, failures


def test_concurrent_replays_do_not_mix_and_a_failing_one_ends_alone(drivers, lsdir, archive_dir):
    """Three replays to one client at once (two of one recording, one of a recording damaged
    in the middle): the good ones are exact; the damaged one ends with the server's error."""
    host1, host2 = drivers.start("archive-host"), drivers.start("replica-host")
    sent = record(lsdir, archive_dir, 300)                           # recording 0, stream 100
    other = record(lsdir, archive_dir, 300, seed=9, stream_id=101)   # recording 1, stream 101
    damaged = 150
    [segment] = Archive(archive_dir).segment_files(1)
    with segment.open("r+b") as f:  # the frame after message 150 (0-based): a wrong term offset field
        f.seek(other[damaged][1] + 8)  # (the segment starts at position 0)
        f.write(b"\x01\x02\x03\x04")
    control, response = udp(), udp()
    with serving(host1.dir, archive_dir, control) as server, Aeron(host2.dir) as aeron:
        client = ReplayClient(aeron, control, response)
        whole = client.start_replay(STREAM, timeout=30)
        bad = client.start_replay(101, timeout=30)
        part = client.start_replay(STREAM, start_position=sent[99][1], stop_position=sent[199][1], timeout=30)
        assert len({whole.replay_session_id, bad.replay_session_id, part.replay_session_id}) == 3
        got: dict[str, list[tuple[bytes, int]]] = {"whole": [], "bad": [], "part": []}
        errors: list[LockstepError] = []

        def step(name: str, replay) -> int:
            if name == "bad" and errors or replay.is_done:
                return 0
            try:
                return replay.poll(lambda data, header: got[name].append((bytes(data), header.position)), 20)
            except LockstepError as e:
                errors.append(e)
                return 1

        _drive(lambda: whole.is_done and part.is_done and errors, lambda: step("whole", whole),
               lambda: step("bad", bad), lambda: step("part", part), what="three replays at once")
        assert got["whole"] == sent
        assert got["part"] == sent[100:200]
        assert got["bad"] == other[:len(got["bad"])] and len(got["bad"]) <= damaged + 1
        assert "term offset field" in str(errors[0]), errors[0]
        for replay in (whole, bad, part):
            replay.close()
        wait_for(lambda: not server.sessions, "the server ending its sessions")
        assert server.stats["failed"] == 1 and server.stats["ended"] == 3
        client.close()


def test_a_start_position_that_is_not_a_message_boundary_is_refused(drivers, lsdir, archive_dir):
    host1, host2 = drivers.start("archive-host"), drivers.start("replica-host")
    sent = record(lsdir, archive_dir, 100)
    with Archive(archive_dir).reader(0) as reader:
        frames = list(reader.frames())
    middle = next(pos for pos, frame in frames if FRAME_HEADER.unpack_from(frame)[2] == 0x40)  # a last fragment
    inside = next(pos for pos, frame in frames if FRAME_HEADER.unpack_from(frame)[0] > 1000) + 64  # in a frame
    control, response = udp(), udp()
    with serving(host1.dir, archive_dir, control) as server, Aeron(host2.dir) as aeron:
        client = ReplayClient(aeron, control, response)
        for start, why in [(middle, "inside a fragmented message"), (inside, "inside a frame"),
                           (sent[3][1] + 8, "not a frame boundary"), (sent[-1][1] + 4096, "outside")]:
            with pytest.raises(LockstepError, match=f"{why}.*expected a message boundary"):
                client.start_replay(STREAM, start_position=start, timeout=30)
        with pytest.raises(LockstepError, match="no recording 5"):
            client.start_replay(STREAM, recording_id=5, timeout=30)
        with pytest.raises(LockstepError, match="no recording of stream 7"):
            client.start_replay(7, timeout=30)
        with pytest.raises(LockstepError, match="beyond recording 0's stop position"):
            client.start_replay(STREAM, stop_position=sent[-1][1] + 32, timeout=30)
        # Still serving: a good request after the refusals.
        with client.start_replay(STREAM, start_position=sent[49][1], stop_position=sent[60][1], timeout=30) as replay:
            assert receive(replay, lambda got: replay.is_done, "replay after refusals") == sent[50:61]
        assert server.stats["refused"] == 7
        client.close()


def test_no_server_is_an_error_within_the_timeout(drivers):
    host2 = drivers.start("replica-host")
    control = udp()
    with Aeron(host2.dir) as aeron:
        client = ReplayClient(aeron, control, udp())
        with pytest.raises(LockstepError, match=re.escape(f"{control} stream 102: no replay server connected within 1.0 s")):
            client.start_replay(STREAM, timeout=1.0)
        client.close()


def test_a_response_channel_longer_than_the_field_is_refused(drivers):
    host2 = drivers.start("replica-host")
    with Aeron(host2.dir) as aeron:
        with pytest.raises(LockstepError, match="expected at most 200 bytes"):
            ReplayClient(aeron, udp(), udp() + "|alias=" + "x" * 200)


def test_a_sigkilled_client_loses_its_session_and_the_next_client_is_served(drivers, lsdir, archive_dir, tmp_path):
    """Real processes: the server is `lockstep replay-server` (one session at a time), the first
    client a separate program, SIGKILLed while its replay is back-pressured."""
    host1, host2 = drivers.start("archive-host"), drivers.start("replica-host")
    sent = record(lsdir, archive_dir, 600)  # far more than the receiver's flow-control window
    control = udp()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log = (tmp_path / "server.log").open("w+")
    server = subprocess.Popen([sys.executable, "-m", "lockstep.cli", "replay-server", "--aeron-dir", str(host1.dir),
                               "--channel", control, "--archive-dir", str(archive_dir), "--max-sessions", "1",
                               "--disconnect-timeout", "0.5"], stderr=log, env=env)
    victim = subprocess.Popen([sys.executable, str(WORKER), str(host2.dir), control, udp(), "20"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = victim.stdout.readline()
        assert line.startswith("got 20 "), (line, victim.poll(), victim.stderr.read() if victim.poll() else "")
        victim_position = int(line.split()[2])
        assert victim_position == sent[19][1]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(30)
        with Aeron(host2.dir) as aeron:
            client = ReplayClient(aeron, control, udp())
            refused = 0
            deadline = time.monotonic() + STALL_S
            while True:  # refused (one session at most) until the server has ended the dead client's
                try:
                    replay = client.start_replay(STREAM, timeout=30)
                    break
                except LockstepError as e:
                    assert "too many replay sessions" in str(e)
                    refused += 1
                    assert time.monotonic() < deadline, f"the dead client's session never ended (refused {refused} times)"
                    time.sleep(0.2)
            with replay:
                got = receive(replay, lambda got: replay.is_done, "the next client's replay")
            assert got == sent
            client.close()
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
        log.seek(0)
        output = log.read()
        assert "client went away" in output, output
        assert "stop position reached" in output, output
        assert "replay server stopped" in output, output
    finally:
        for p in (victim, server):
            if p.poll() is None:
                p.kill()
                p.wait()
        log.close()


def test_malformed_requests_are_dropped_and_an_absent_subscriber_times_out(drivers, lsdir, archive_dir):
    host1, host2 = drivers.start("archive-host"), drivers.start("replica-host")
    sent = record(lsdir, archive_dir, 30)
    control, response = udp(), udp()
    with serving(host1.dir, archive_dir, control, connect_timeout_s=1.0) as server, Aeron(host2.dir) as aeron:
        raw = aeron.add_publication(control, 102)
        wait_for(lambda: raw.is_connected, "control publication")
        bad = [b"\x01\x02\x03", StartReplay.encode(correlation_id=1, recording_id=0, start_position=0,
                                                   stop_position=-1, stream_id=STREAM, control_response_stream_id=103,
                                                   replay_stream_id=104, response_channel=b"not a channel")]
        for data in bad:
            while raw.offer(data) < 0:
                time.sleep(0.001)
        wait_for(lambda: server.stats["malformed"] == 2, "the server dropping both")
        client = ReplayClient(aeron, control, response)
        with client.start_replay(STREAM, timeout=30) as replay:
            assert receive(replay, lambda got: replay.is_done, "replay after malformed requests") == sent
        # A client that takes the answer but never subscribes to its replay: ended after the timeout.
        while raw.offer(StartReplay.encode(correlation_id=2, recording_id=0, start_position=0, stop_position=-1,
                                           stream_id=STREAM, control_response_stream_id=103, replay_stream_id=150,
                                           response_channel=response.encode())) < 0:
            time.sleep(0.001)
        wait_for(lambda: any("did not subscribe" in why for _, why in server.ended), "the server ending it")
        assert not server.sessions
        raw.close()
        client.close()


# -- the command line ---------------------------------------------------------------------------------

def test_replay_server_help():
    result = subprocess.run([sys.executable, "-m", "lockstep.cli", "replay-server", "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    assert "--aeron-dir" in result.stdout and "--channel" in result.stdout and "--archive-dir" in result.stdout
