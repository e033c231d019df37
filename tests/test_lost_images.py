"""Lost images are never silent (issue 13, items 1, 2 and 15): a subscriber process paused past
the publisher's liveness timeout is told its image was lost (ImageLostError, or
on_unavailable_image) before any message that follows the gap, rejoins at the live position,
and never writes the position counter a new subscriber took over; any number of subscribers
holds a publisher back; one bad or foreign log file never stops a stream."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest

import lost_workers as lw
from lockstep import (BACK_PRESSURED, BackoffIdleStrategy, FileAccessError, FileFormatError, ImageLostError,
                      Publication, Subscription)
from lockstep.transport.client import TYPE_SUBSCRIBER_POSITION, client_for
from lockstep.transport.errorlog import read_errors
from lockstep.transport.logbuffer import LogBuffer
from lockstep.transport.reader import LogReader
from lockstep.transport.stream_files import check_log_name

TERM = 64 * 1024
STALL_S = 60.0


def _get(q, what: str, timeout: float = STALL_S):
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no {what} within {timeout} s") from None


def _counter_of(lsdir, pub: Publication, pid: int):
    """The position counter of subscriber process `pid` on `pub`'s log, or None."""
    for info in client_for(lsdir).counters.find_stream(TYPE_SUBSCRIBER_POSITION, pub.session_id, pub.stream_id):
        if info.owner_id == pid:
            return info
    return None


def _send(pub: Publication, seqs, readers, idle) -> None:
    """Offer each message with back-off while `readers` (subscriptions of this process) keep up."""
    drain = lambda data, header: None  # noqa: E731
    for seq in seqs:
        deadline = time.monotonic() + STALL_S
        while pub.offer(lw.message(seq)) <= 0:
            assert time.monotonic() < deadline, f"message {seq}: publisher stuck at {pub.position}"
            for r in readers:
                r.poll(drain, 100)
            idle.idle(0)
        idle.reset()
        for r in readers:
            r.poll(drain, 100)


def _pause_subscriber_past_liveness(lsdir, procs, mp, mode: str, *, sent_while_paused: int, after: int):
    """Issue 13 item 1 as reported: an exclusive publication (liveness 1 s, 64 KiB terms), a
    subscriber process that read messages 0..99, SIGSTOPped for 1.5 s while more are sent (a
    subscriber in this process keeps up), then SIGCONT and more sent. Returns the worker's
    events and the publication's session."""
    stream = 13001
    last = 100 + sent_while_paused + after - 1
    attached, result, stop = mp.Queue(), mp.Queue(), mp.Event()
    idle = BackoffIdleStrategy()
    with Publication(stream, exclusive=True, term_length=TERM, liveness_timeout_ms=1000) as pub, \
            Subscription(stream) as live:
        worker = procs.start(lw.read_and_report, stream, mode, last, attached, stop, result)
        pid = _get(attached, "attached worker")
        deadline = time.monotonic() + STALL_S
        while _counter_of(lsdir, pub, pid) is None:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        _send(pub, range(100), [live], idle)
        while _counter_of(lsdir, pub, pid).value < pub.position:  # the worker read 0..99
            assert time.monotonic() < deadline, "the worker never read the first 100 messages"
            time.sleep(0.001)
        registration = _counter_of(lsdir, pub, pid).registration_id
        os.kill(pid, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            _send(pub, range(100, 100 + sent_while_paused), [live], idle)
            assert pub._evictions.get() == 1, "the paused subscriber was not evicted"
            time.sleep(max(0.0, 1.5 - (time.monotonic() - stopped)))
        finally:
            os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + STALL_S
        while getattr(_counter_of(lsdir, pub, pid), "registration_id", registration) == registration:
            # (evicted: no counter; then told, and joined again: a new image, a new registration)
            assert time.monotonic() < deadline, "the resumed subscriber never joined again"
            time.sleep(0.001)
        _send(pub, range(100 + sent_while_paused, last + 1), [live], idle)
        events = _get(result, "worker's report")
        worker.join(STALL_S)
        assert worker.exitcode == 0
        return events, pub.session_id, last


@pytest.mark.parametrize("mode", lw.MODES)
def test_paused_subscriber_is_told_its_image_was_lost_and_rejoins_live(lsdir, procs, mp, mode):
    """Paused past liveness while the log laps it: before any message after the gap the worker
    is told (ImageLostError from receive/poll/poll_batch, or on_unavailable_image), once, with
    the range from where it stopped; then a new image at the live position gets the rest in
    order. (Before: receive() returned 0..99 then 4192.. silently; poll raised FileFormatError.)"""
    events, session, last = _pause_subscriber_past_liveness(lsdir, procs, mp, mode, sent_while_paused=5000,
                                                          after=1000)
    told, retracted = lw.check_events(events, 0, last)
    # In order up to where the loss starts; the messages after it (a batch a paused handler was
    # still reading from views) are covered by the loss told next, and retracted by the check.
    assert [e[1] for e in events[:100 - retracted]] == list(range(100 - retracted))
    assert events[100][0] == "lost", events[100:103]
    assert told == 1
    _, from_position, to_position, reason = events[100]
    # Where it stopped, nothing after it handed out. (A poll's handler may still have been
    # reading its last batch from views when paused: the loss then starts at that batch.)
    assert from_position == (100 - retracted) * lw.FRAME
    assert retracted == 0 if mode == "receive" else retracted <= 100
    assert to_position >= (100 + 5000) * lw.FRAME  # at least what was sent while it was paused
    assert "evicted" in reason or "lapped" in reason
    resumed_at = events[101][1]
    assert resumed_at >= 5100 and [e[1] for e in events[101:]] == list(range(resumed_at, last + 1))


def test_evicted_subscriber_never_writes_the_counter_a_new_subscriber_took(lsdir, procs, mp):
    """The evicted subscriber's counter record is reused (after the 1 s reuse delay) by a new
    subscriber; the old one, resumed, must not advance it: the new one gets all of 2,000
    messages. (Before: it missed 305 of 2,000; both advanced the same counter.)"""
    stream = 13002
    attached, result, stop = mp.Queue(), mp.Queue(), mp.Event()
    idle = BackoffIdleStrategy()
    with Publication(stream, exclusive=True, term_length=TERM, liveness_timeout_ms=1000) as pub, \
            Subscription(stream) as live:
        # Taken now, freed with the evicted one: the new subscription's first counter takes it,
        # so its image's counter takes the evicted one's record.
        placeholder = client_for(lsdir).counters.allocate(1003, "placeholder")
        worker = procs.start(lw.read_and_report, stream, "receive", 1 << 60, attached, stop, result)
        pid = _get(attached, "attached worker")
        deadline = time.monotonic() + STALL_S
        while _counter_of(lsdir, pub, pid) is None:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        _send(pub, range(100), [live], idle)
        while _counter_of(lsdir, pub, pid).value < pub.position:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        old = _counter_of(lsdir, pub, pid)
        os.kill(pid, signal.SIGSTOP)
        try:
            seq = 100
            while pub._evictions.get() == 0:  # back-pressured until the paused one is evicted
                _send(pub, [seq], [live], idle)
                seq += 1
            placeholder.free()
            _send(pub, range(seq, seq + 3000), [live], idle)  # lap it: it has frames to misread
            seq += 3000
            time.sleep(1.2)  # past the counters' reuse delay
            with Subscription(stream) as new:
                [image] = new.images
                assert image._counter.id == old.id, "the freed record was not the one reused"
                joined_at = image.position
                os.kill(pid, signal.SIGCONT)
                while _counter_of(lsdir, pub, pid) is None:  # resumed, told, joined again
                    assert time.monotonic() < deadline + STALL_S, "the resumed subscriber never joined again"
                    time.sleep(0.001)
                counters = client_for(lsdir).counters
                assert counters.info(old.id).value == joined_at  # it never wrote the new owner's counter
                got = []
                collect = lambda data, header: got.append(lw.seq_of(data))  # noqa: E731
                first = seq
                while len(got) < 2000:
                    if seq < first + 2000:
                        r = pub.offer(lw.message(seq))
                        if r > 0:
                            seq += 1
                    live.poll(lambda d, h: None, 100)
                    if not new.poll(collect, 100):
                        idle.idle(0)
                    assert time.monotonic() < deadline + STALL_S, f"new subscriber stuck at {len(got)} of 2000"
                assert got == list(range(first, first + 2000))
                assert counters.info(old.id).registration_id == image.registration_id
        finally:
            os.kill(pid, signal.SIGCONT)
        stop.set()
        events = _get(result, "worker's report")
        worker.join(STALL_S)
    losses = [e for e in events if e[0] == "lost"]
    assert losses and losses[0][1] == 100 * lw.FRAME, events[98:103]
    assert [e[1] for e in events[:100]] == list(range(100)) and events[100][0] == "lost"


def test_lapped_reader_is_told_lapped_not_corrupt(lsdir):
    """A LogReader with its own position (nothing holds the writers back) that the log went two
    terms past: ImageLostError saying lapped, never FileFormatError, from every read call."""
    stream = 13003
    with Subscription(stream) as live, Publication(stream, exclusive=True, term_length=TERM) as pub:
        idle = BackoffIdleStrategy()
        _send(pub, range(10), [live], idle)
        for call in ("receive", "poll", "poll_batch"):
            start = pub.position
            reader = LogReader(LogBuffer.open(pub.path, writable=True), start)  # the live log, not a snapshot
            _send(pub, [10], [live], idle)
            assert lw.seq_of(reader.receive()) == 10
            _send(pub, range(11, 11 + 3 * TERM // lw.FRAME), [live], idle)
            with pytest.raises(ImageLostError) as lost:
                if call == "receive":
                    reader.receive()
                elif call == "poll":
                    reader.poll(lambda d, h: pytest.fail("handed out a lapped message"), 10)
                else:
                    reader.poll_batch(lambda b: pytest.fail("handed out lapped messages"))
            assert "lapped" in str(lost.value) and lost.value.from_position == start + lw.FRAME
            assert lost.value.to_position == pub.position
            reader.close()


def test_lost_image_without_rejoin_still_reported_once(lsdir):
    """Evicted (counter freed) twice in a row on a quiet stream: each loss raises once, later
    calls return normally; the callbacks variant sees unavailable then available images."""
    stream = 13004
    seen: list[tuple[str, int]] = []
    with Publication(stream, exclusive=True, term_length=TERM) as pub, \
            Subscription(stream, on_available_image=lambda i: seen.append(("available", i.join_position)),
                         on_unavailable_image=lambda i: seen.append(("unavailable", i.lost.from_position))) as told, \
            Subscription(stream) as plain:
        assert pub.offer(lw.message(0)) > 0
        assert lw.seq_of(plain.receive()) == 0 and told.poll(lambda d, h: None) == 1
        counters = client_for(lsdir).counters
        for sub in (told, plain):
            counters.free(sub.images[0]._counter.id)
        assert pub.offer(lw.message(1)) > 0
        with pytest.raises(ImageLostError):
            plain.receive()
        assert plain.receive() is None  # once
        assert told.poll(lambda d, h: None) == 0
        assert seen == [("available", 0), ("unavailable", lw.FRAME), ("available", 2 * lw.FRAME)]
        assert pub.offer(lw.message(2)) > 0
        assert lw.seq_of(plain.receive()) == 2
    [record] = _recorded(lsdir, f"image of session {pub.session_id} lost, evicted")
    assert record.count == 2  # both subscriptions' losses, in `lockstep errors` and `lockstep stat`


# -- item 2: any number of subscribers -------------------------------------------------------------

def test_the_65th_subscriber_is_not_overrun(lsdir):
    """70 subscriptions on one publication, the last never polling: the publisher is held back
    by it (back-pressured a window past it) and it then receives every message from the first.
    (Before: flow control looked at 64 and the 65th received messages 2046.. as if first.)"""
    stream = 13005
    subs: list[Subscription] = []
    try:
        with Publication(stream, exclusive=True, term_length=TERM) as pub:
            subs.extend(Subscription(stream) for _ in range(70))
            assert pub.is_connected
            drain = lambda data, header: None  # noqa: E731
            sent = 0
            while True:
                r = pub.offer(lw.message(sent))
                if r == BACK_PRESSURED:
                    break
                assert r > 0, r
                sent += 1
                assert sent < 4 * TERM // lw.FRAME, "never held back by the subscriber that does not poll"
                for s in subs[:-1]:
                    s.poll(drain, 100)
            assert pub.position <= TERM // 2 + lw.FRAME  # a window past the one that never polled
            got = []
            while subs[-1].poll(lambda data, header: got.append(lw.seq_of(data)), 1000):
                pass
            assert got == list(range(sent))
    finally:
        for s in subs:
            s.close()


# -- item 15: one bad or foreign file never stops a stream -------------------------------------------

def _good_stream_delivers(lsdir, stream: int, count: int = 50) -> None:
    with Subscription(stream) as sub, Publication(stream, exclusive=True, term_length=TERM) as pub:
        for _ in range(5):  # several discovery rounds over the bad file
            sub.discover()
        deadline = time.monotonic() + STALL_S
        while not pub.is_connected:
            assert time.monotonic() < deadline
            sub.discover()
        for i in range(count):
            assert pub.offer(lw.message(i)) > 0
        got = []
        while len(got) < count:
            assert time.monotonic() < deadline
            sub.poll(lambda data, header: got.append(lw.seq_of(data)), 100)
            time.sleep(0.11)  # housekeeping (and rediscovery) runs meanwhile
        assert got == list(range(count))


def _recorded(lsdir, name: str) -> list:
    return [r for r in read_errors(lsdir) if name in r.text]


@pytest.mark.parametrize("content", ["empty", "garbage", "truncated"])
def test_bad_log_file_is_skipped_and_recorded_once(lsdir, content):
    """An empty, garbage or truncated `7-12345.logbuffer` next to a good log of the same stream:
    the good one delivers everything, no call raises, the bad file is recorded once (one
    observation) in the error log that `lockstep errors` prints. (Before: FileFormatError
    every 100 ms from every subscriber of the stream.)"""
    stream = 7
    path = lsdir / f"{stream}-12345.logbuffer"
    data = {"empty": b"", "garbage": os.urandom(3 * TERM + 4096)}.get(content)
    if data is None:
        with Publication(99, term_length=TERM, exclusive=True) as other, Subscription(99):
            data = other.path.read_bytes()[:TERM + 100]
    path.write_bytes(data)
    os.chmod(path, 0o600)
    _good_stream_delivers(lsdir, stream)
    [record] = _recorded(lsdir, path.name)
    assert record.count == 1 and "skipped" in record.text
    out = subprocess.run([sys.executable, "-m", "lockstep", "errors", "--dir", str(lsdir)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and path.name in out.stdout, out.stdout + out.stderr
    out = subprocess.run([sys.executable, "-m", "lockstep", "stat", "--once", "--dir", str(lsdir)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and path.name in out.stdout, out.stdout + out.stderr


def test_log_whose_header_names_another_stream_is_refused(lsdir):
    """A copy of a stream-8 log named as stream 7's is not read as stream 7 (recorded, skipped)."""
    with Publication(8, exclusive=True, term_length=TERM) as pub8, Subscription(8) as sub8:
        assert pub8.offer(lw.message(666)) > 0
        assert sub8.poll(lambda d, h: None) == 1
        copy = lsdir / f"7-{pub8.session_id}.logbuffer"
        shutil.copyfile(pub8.path, copy)
        os.chmod(copy, 0o600)
    _good_stream_delivers(lsdir, 7)
    [record] = _recorded(lsdir, copy.name)
    assert "stream id: expected 7" in record.text and "found 8" in record.text
    with pytest.raises(FileFormatError, match="stream id: expected 7"):
        check_log_name(copy, 8, pub8.session_id)
    with pytest.raises(FileFormatError, match="session id: expected 5"):
        check_log_name(lsdir / "7-5.logbuffer", 7, 6)
    check_log_name(lsdir / "7-shared.logbuffer", 7, 12345)  # any session in a shared log


@pytest.mark.skipif(os.geteuid() != 0, reason="planting another user's file needs root")
def test_another_users_planted_log_is_skipped(lsdir):
    """Another user's 0644 log among ours: skipped and recorded once, never FileAccessError
    from the subscriber every pass."""
    path = lsdir / "7-4242.logbuffer"
    with Subscription(99), Publication(99, exclusive=True, term_length=TERM) as other:
        shutil.copyfile(other.path, path)
    os.chmod(path, 0o644)
    os.chown(path, 65534, 65534)
    _good_stream_delivers(lsdir, 7)
    [record] = _recorded(lsdir, path.name)
    assert record.count == 1 and "uid 65534" in record.text


@pytest.mark.parametrize("mode", [0o1777, 0o777, 0o1733])
def test_world_writable_directory_is_refused_sticky_or_not(tmp_path, mode):
    """Others may plant files in a world-writable directory, sticky (/tmp-like) or not: refused."""
    d = tmp_path / "shared"
    d.mkdir()
    os.chmod(d, mode)
    with pytest.raises(FileAccessError, match="others may write"):
        Subscription(7, d)
    with pytest.raises(FileAccessError, match="others may write"):
        Publication(7, d)
    assert stat.S_IMODE(os.stat(d).st_mode) == mode


def test_loss_found_by_housekeeping_never_drops_a_message_of_another_image(lsdir):
    """Image A evicted while quiet (only housekeeping finds it), image B busy: the receive()
    that raises ImageLostError for A has read nothing, so B loses no message. (Before: the
    message read in that call was dropped with the exception.)"""
    stream = 13006
    with Publication(stream, exclusive=True, term_length=TERM) as a, \
            Publication(stream, exclusive=True, term_length=TERM) as b, Subscription(stream) as sub:
        assert sub.image_count == 2
        counters = client_for(lsdir).counters
        [quiet] = [i for i in sub.images if i.session_id == a.session_id]
        counters.free(quiet._counter.id)
        time.sleep(0.15)  # past housekeeping's rate limit: its next round finds A
        got, told = [], 0
        for seq in range(3000):  # busy: housekeeping runs every 1024 calls
            assert b.offer(lw.message(seq)) > 0
            try:
                data = sub.receive()
            except ImageLostError as e:
                assert e.session_id == a.session_id
                told += 1
                data = sub.receive()  # B's message is still there
            assert data is not None, f"B's message {seq} was dropped"
            got.append(lw.seq_of(data))
        assert told == 1
        assert got == list(range(3000))
