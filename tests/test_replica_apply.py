"""The replica's apply loop (C: SequencedApply) does exactly what its Python fallback does: the
machine sees the same context and command bytes, already-applied sequences are skipped, a gap is
an error, own outputs are tracked and queued, hashes and snapshots come every N, a swapped machine
gets the next message; odd input is a LockstepError, never a crash or a silent skip."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings, strategies as st

from lockstep import LockstepError, Replica, StateMachine
from lockstep.cluster.replica import Context, OfflineReplica, _default_origin, latest_snapshot, read_hashes
from lockstep.cluster.sequenced import SEQUENCED_HEADER

I64 = st.integers(-2**63, 2**63 - 1)


class Recorder(StateMachine):
    """Remembers everything it is told; commands starting with b"send" send one output."""

    def __init__(self) -> None:
        self.seen: list[tuple] = []

    def on_message(self, ctx: Context, command: bytes) -> None:
        self.seen.append((ctx.sequence, ctx.position, ctx.timestamp_ns, ctx.origin_id, ctx.origin_sequence,
                          type(command), command))
        if command.startswith(b"send"):
            ctx.send(b"out:" + command)

    def snapshot(self) -> bytes:
        return repr(self.seen).encode()

    def restore(self, data: bytes) -> None:
        self.seen = []


ORIGIN = _default_origin(Recorder())  # a Recorder's own outputs come back with this origin


class Header:
    """A poll header from some other reader: only `.position`."""

    def __init__(self, position: int) -> None:
        self.position = position


def _runner() -> OfflineReplica:
    runner = OfflineReplica(Recorder())
    runner._client = object()  # (only compared with None: outputs are queued, nothing sends them)
    return runner


def _state(runner: OfflineReplica) -> tuple:
    return (runner.machine.seen, runner.last_sequence, runner.last_position, runner.applied, runner._own_sequenced,
            list(runner._pending))


messages = st.lists(st.tuples(st.integers(1, 4), I64, I64, st.integers(-2**31, 2**31 - 1), st.binary(max_size=12),
                              st.booleans(), st.booleans()), max_size=30)


@given(messages=messages, start=st.integers(0, 3))
@settings(max_examples=150, deadline=None)
def test_the_c_loop_and_the_python_apply_agree(messages, start):
    fast, slow = _runner(), _runner()
    python_apply = Replica.apply.__get__(slow)  # the Python implementation
    fast.last_sequence = slow.last_sequence = start  # restored from a snapshot at `start`
    sequence = start
    for step, timestamp, origin_sequence, origin_id, command, own, as_header in messages:
        sequence = max(sequence + step - 2, 1)  # repeats (skipped), the next one, or a gap
        origin_id = ORIGIN if own else origin_id
        payload = SEQUENCED_HEADER.pack(sequence, timestamp, origin_sequence, origin_id, 0) + (b"send" * own) + command
        position = 64 * sequence + (timestamp & 0xFFFF)
        outcomes = []
        for call in (lambda: fast.apply(memoryview(payload), Header(position) if as_header else position),
                     lambda: python_apply(payload, position)):
            try:
                call()
                outcomes.append(None)
            except LockstepError as e:
                outcomes.append(str(e))
        assert outcomes[0] == outcomes[1]
        assert _state(fast) == _state(slow)
        if outcomes[0] is not None:
            assert "sequence gap" in outcomes[0]
            break
    assert all(t is bytes for *_, t, _c in fast.machine.seen)


def test_a_payload_shorter_than_the_sequenced_header_is_a_lockstep_error():
    runner = _runner()
    with pytest.raises(LockstepError, match="position 96: expected at least 32 bytes .* found 31"):
        runner.apply(bytes(31), 96)
    with pytest.raises(LockstepError, match="found 0"):
        runner.apply(memoryview(b""), Header(128))
    assert runner.applied == 0 and runner.machine.seen == []


def test_hashes_and_snapshots_every_n_and_outputs_queued(lsdir):
    with Replica(Recorder(), lsdir, name="every", hash_every=3, snapshot_every=4, send_outputs=False) as replica:
        replica.subscription.close()  # fed by hand
        for sequence in range(1, 11):
            command = b"send" if sequence % 5 == 0 else b"x"
            replica.apply(SEQUENCED_HEADER.pack(sequence, sequence * 10, sequence, ORIGIN, 0) + command, 64 * sequence)
        assert replica.applied == 10 and (replica.last_sequence, replica.last_position) == (10, 640)
        assert replica._own_sequenced == 10 and replica.ctx.timestamp_ns == 100
    records = read_hashes(lsdir / "every.hashes")
    assert [(p, s) for p, s, _ in records] == [(192, 3), (384, 6), (576, 9)]
    snapshot = latest_snapshot(lsdir, "every")
    assert snapshot is not None and (snapshot.sequence, snapshot.position) == (8, 512)


def test_a_swapped_machine_gets_the_next_message_and_the_context_is_settable():
    runner = _runner()
    runner.apply(SEQUENCED_HEADER.pack(1, 5, 1, 9, 0) + b"a", 64)
    other = Recorder()
    runner.machine = other  # as the step debugger does when it rewinds
    runner.apply(SEQUENCED_HEADER.pack(2, 6, 2, 9, 0) + b"b", 128)
    assert [m[-1] for m in other.seen] == [b"b"] and runner.machine is other
    runner.ctx.timestamp_ns = -3
    assert runner.ctx.timestamp_ns == -3 and type(runner.ctx.sequence) is int
    with pytest.raises(TypeError):
        runner.ctx.sequence = "1"
    assert struct.calcsize("<qqqii") == 32


def test_through_a_poll_the_c_header_gives_the_position_and_odd_input_still_raises(lsdir):
    """Polled from a log, the apply reads each message's position from the poll's C Header (no
    Python int per message); a short payload or a gap still reaches the Python apply with that
    position and raises there, as by hand."""
    from lockstep import Publication
    from lockstep.cluster.sequencer import DEFAULT_LOG_STREAM

    with Publication(DEFAULT_LOG_STREAM, lsdir) as log, \
            Replica(Recorder(), lsdir, name="polled", hash_every=0, send_outputs=False) as replica:
        ends = []
        for payload in (SEQUENCED_HEADER.pack(1, 10, 1, 7, 0) + b"one", SEQUENCED_HEADER.pack(2, 20, 2, 7, 0) + b"two",
                        bytes(31), SEQUENCED_HEADER.pack(4, 40, 4, 7, 0)):
            assert log.offer(payload) > 0
            ends.append(log.position)
        with pytest.raises(LockstepError, match=f"position {ends[2]}: expected at least 32 bytes .* found 31"):
            while True:
                replica.do_work()
        assert [(s, p, c) for s, p, _t, _o, _q, _ty, c in replica.machine.seen] == [(1, ends[0], b"one"),
                                                                                     (2, ends[1], b"two")]
        assert (replica.last_sequence, replica.last_position) == (2, ends[1])
        with pytest.raises(LockstepError, match="sequence gap"):
            while True:
                replica.do_work()


class Keeper(StateMachine):
    """Keeps every other command, hashes each one (as a dict key, then dropped)."""

    def __init__(self) -> None:
        self.kept: list[bytes] = []
        self.hashes_ok = True
        self.count = 0

    def on_message(self, ctx: Context, command: bytes) -> None:
        index = {command: self.count}  # its hash taken (and cached in the object)
        self.hashes_ok &= hash(command) == hash(bytes(bytearray(command))) and index[command] == self.count
        del index
        if self.count % 2 == 0:
            self.kept.append(command)
        self.count += 1

    def snapshot(self) -> bytes:
        return b""

    def restore(self, data: bytes) -> None:
        pass


def test_the_command_bytes_a_machine_keeps_stay_as_they_were(lsdir):
    """The C loop reuses the last command's bytes object when the machine kept no reference to
    it (no allocation a message): a kept command never changes, and a reused one hashes as its
    new contents, not as the message before (its cached hash is dropped)."""
    from lockstep import Publication
    from lockstep.cluster.sequencer import DEFAULT_LOG_STREAM

    commands = [i.to_bytes(8, "little") * 2 for i in range(1, 201)]  # all 16 bytes: reusable
    with Publication(DEFAULT_LOG_STREAM, lsdir) as log, \
            Replica(Keeper(), lsdir, name="keeper", hash_every=0, send_outputs=False) as replica:
        for sequence, command in enumerate(commands, 1):
            assert log.offer(SEQUENCED_HEADER.pack(sequence, 0, sequence, 7, 0) + command) > 0
        while replica.applied < len(commands):
            assert replica.do_work() or replica.applied == len(commands)
        machine = replica.machine
        assert machine.count == len(commands) and machine.hashes_ok
        assert machine.kept == commands[::2]
