"""Ring micro benchmarks from Python, one process: what one message costs through the
cffi binding, next to the floor (an empty cffi call) measured in the same run.

Run: pytest bench/ --benchmark-only   (see bench/README.md)
"""

from __future__ import annotations

import pytest

from lockstep import ControlledAction, ManyToOneRing, OneToOneRing

PAYLOAD = bytes(range(32))
BATCH = 256
RINGS = [pytest.param(OneToOneRing, id="one_to_one"), pytest.param(ManyToOneRing, id="many_to_one")]


def _noop_handler(msg_type_id, data):
    pass


@pytest.mark.benchmark(group="write+read")
@pytest.mark.parametrize("ring_cls", RINGS)
def test_write_read_one_message(benchmark, lsdir, ring_cls):
    """Write one 32-byte message and read it back (handler called with a view)."""
    with ring_cls(lsdir / "ring", 1 << 16) as ring:
        write, read = ring.write, ring.read

        def write_read():
            write(1, PAYLOAD)
            return read(_noop_handler)

        assert benchmark(write_read) == 1
        assert ring.size() == 0


@pytest.mark.benchmark(group="write")
@pytest.mark.parametrize("ring_cls", RINGS)
def test_write_only(benchmark, lsdir, ring_cls):
    """Write 256 x 32-byte messages per round (the ring is drained between rounds, untimed)."""
    with ring_cls(lsdir / "ring", 1 << 16) as ring:
        write = ring.write

        def write_batch():
            for _ in range(BATCH):
                write(1, PAYLOAD)

        def drain():
            ring.read(_noop_handler)

        benchmark.extra_info["messages_per_call"] = BATCH
        benchmark.pedantic(write_batch, setup=drain, rounds=2000, iterations=1, warmup_rounds=20)
        assert ring.read(_noop_handler) == BATCH  # every write of the last round succeeded


@pytest.mark.benchmark(group="read")
@pytest.mark.parametrize("ring_cls", RINGS)
def test_read_batch_of_256(benchmark, lsdir, ring_cls):
    """One read() call handing 256 x 32-byte messages to a handler (filled untimed)."""
    with ring_cls(lsdir / "ring", 1 << 16) as ring:
        write, read = ring.write, ring.read

        def fill():
            for _ in range(BATCH):
                write(1, PAYLOAD)

        benchmark.extra_info["messages_per_call"] = BATCH
        n = benchmark.pedantic(read, args=(_noop_handler, BATCH), setup=fill, rounds=2000, iterations=1,
                               warmup_rounds=20)
        assert n == BATCH
        assert ring.size() == 0


@pytest.mark.benchmark(group="write+read")
@pytest.mark.parametrize("ring_cls", RINGS)
def test_try_claim_commit_read_one_message(benchmark, lsdir, ring_cls):
    """try_claim(1, 32), fill, commit, read(handler): writing in place (the claim object reused)."""
    with ring_cls(lsdir / "ring", 1 << 16) as ring:
        try_claim, read = ring.try_claim, ring.read

        def claim_read():
            claim = try_claim(1, 32)
            claim.buffer[:] = PAYLOAD
            claim.commit()
            return read(_noop_handler)

        assert benchmark(claim_read) == 1
        assert ring.size() == 0


@pytest.mark.benchmark(group="write+read")
@pytest.mark.parametrize("ring_cls", RINGS)
def test_write_controlled_read_one_message(benchmark, lsdir, ring_cls):
    """write one message, controlled_read(handler) it (the handler returns an action)."""
    with ring_cls(lsdir / "ring", 1 << 16) as ring:
        write, controlled_read = ring.write, ring.controlled_read
        action = ControlledAction.CONTINUE

        def continue_handler(msg_type_id, data):
            return action

        def write_read():
            write(1, PAYLOAD)
            return controlled_read(continue_handler)

        assert benchmark(write_read) == 1
        assert ring.size() == 0
