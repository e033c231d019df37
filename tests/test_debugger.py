"""The step debugger (`lockstep replay --step`) driven in a real pseudo-terminal over a real
recording: `back` returns to the very state (hash) first seen there, breakpoints over the
message and the state stop `continue` before the message, `print`/`watch`/`show-state PATH`
look inside the state, a machine that raises stops the debugger before that message (not
consumed, state as before it) and the session goes on; `replay --against` names the first
message after which two versions of a machine differ. Guards are no-progress timeouts."""

from __future__ import annotations

import json
import re
import sys
import textwrap

from helpers import Terminal
from lockstep.archive.replay import ReplaySession
from lockstep.examples.orderbook import OrderBook
from test_archive import MACHINE, _record_orderbook, lockstep_cli


def _step(*extra: str, cwd=None) -> Terminal:
    term = Terminal([sys.executable, "-m", "lockstep.cli", "replay", "0", "--machine", MACHINE, "--step", *extra],
                    cwd=cwd)
    term.expect("(replay @0) ")
    return term


def _hashes_after_each(arch, count: int) -> list[str]:
    """The state hash after each of the first `count` messages, from a plain replay."""
    out = []
    with ReplaySession(arch, 0, OrderBook()) as session:
        for _ in range(count):
            session.step()
            out.append(session.machine.state_hash().hex())
    return out


def _ask(term: Terminal, line: str) -> str:
    """Send one debugger command; what it printed, up to the next prompt."""
    term.send(line)
    return term.expect("(replay @")


def _finish(term: Terminal) -> None:
    term.send("quit")
    term.expect("state hash ")
    assert term.close() == 0


def test_back_returns_to_the_state_first_seen_there(lsdir):
    arch = _record_orderbook(lsdir, 600)
    hashes = _hashes_after_each(arch, 600)
    term = _step()
    try:
        out = _ask(term, "next 40")
        seen = re.findall(r"; hash ([0-9a-f]{32})", out)
        assert seen == hashes[:40]
        out = _ask(term, "back 13")  # within the last checkpoint's reach
        assert f"hash {hashes[26]}" in out and "(sequence 27)" in out
        out = _ask(term, "next")
        assert "seq 28 " in out and f"hash {hashes[27]}" in out
        assert "end of recording" in _ask(term, "continue")
        out = _ask(term, "back 555")  # far back: across many checkpoints, re-applied from one of them
        assert f"hash {hashes[44]}" in out and "(sequence 45)" in out
        out = _ask(term, "back 1000")  # before the first message: the initial state
        assert f"hash {OrderBook().state_hash().hex()}" in out
        _finish(term)
    finally:
        if term.proc.poll() is None:
            term.proc.kill()


def test_going_back_after_thousands_of_messages_gives_the_same_hashes(lsdir):
    """The session's checkpoints thin out as a long replay goes on (at most 64 kept); any
    earlier message can still be returned to, to the same hash."""
    arch = _record_orderbook(lsdir, 3_000)
    hashes = _hashes_after_each(arch, 3_000)
    with ReplaySession(arch, 0, OrderBook(), checkpoints=True) as session:
        session.run()
        assert session.applied == 3_000 and len(session.checkpoints) <= 64
        for target in (2_999, 1_777, 1_024, 3, 1, 2_500):
            session.go_to(target)
            assert session.machine.state_hash().hex() == hashes[target - 1]
            assert session.runner.last_sequence == target
        session.go_to(0)
        assert session.machine.state_hash() == OrderBook().state_hash()
        assert session.run() == 3_000 and session.machine.state_hash().hex() == hashes[-1]


def test_going_back_does_not_count_live_hashes_twice(lsdir):
    arch = _record_orderbook(lsdir, 1_000, hashes="live")
    with ReplaySession(arch, 0, OrderBook(), compare=[lsdir / "live.hashes"], checkpoints=True) as session:
        session.run()
        once = session.compared
        assert once >= 10 and session.divergence is None
        session.go_to(100)
        session.run()
        assert session.compared == once and session.divergence is None


def test_break_continue_print_watch_and_show_state(lsdir):
    arch = _record_orderbook(lsdir, 400)
    with arch.reader(0) as reader:
        messages = list(reader.messages())
    from lockstep import codec
    names = [codec.decode(p[32:]).type.name for p, _ in messages]
    first_cancel = names.index("Cancel")
    term = _step()
    try:
        assert 'breakpoint 1: stop before the message for which name == "Cancel"' in _ask(term, 'break name == "Cancel"')
        out = _ask(term, "continue")
        # stopped *before* the first Cancel: the messages before it applied, not it
        assert f"applied {first_cancel} message(s)" in out and "breakpoint 1" in out
        assert f"next @{messages[first_cancel][1]['position']} seq {first_cancel + 1} " in out
        out = _ask(term, "print state.commands")
        assert f"\n{first_cancel}\n" in out
        out = _ask(term, "print len(state.orders) > 0, pos, seq")
        assert f"(True, {messages[first_cancel - 1][1]['position']}, {first_cancel})" in out
        out = _ask(term, "continue")  # from the breakpoint: on to the next Cancel
        second_cancel = names.index("Cancel", first_cancel + 1)
        assert f"applied {second_cancel - first_cancel} message(s)" in out
        assert "breakpoint 2" in _ask(term, f"break seq == {second_cancel + 3} and state.commands > 0")
        out = _ask(term, "breaks")
        assert "1 break name == \"Cancel\"" in out and f"2 break seq == {second_cancel + 3}" in out
        assert "deleted 1" in _ask(term, "delete 1")
        out = _ask(term, "continue")
        assert f"now at position {messages[second_cancel + 1][1]['position']}" in out and "breakpoint 2" in out
        assert "deleted 2" in _ask(term, "delete 2")
        out = _ask(term, "watch state.commands")
        assert f"watch 3: state.commands = {second_cancel + 2}" in out
        out = _ask(term, "next 2")
        assert f"state.commands: {second_cancel + 2} -> {second_cancel + 3}" in out
        assert f"state.commands: {second_cancel + 3} -> {second_cancel + 4}" in out
        out = _ask(term, "continue")  # a watch's change stops continue
        assert "applied 1 message(s)" in out and "watch 3 (state.commands) changed" in out
        book = OrderBook()
        with ReplaySession(arch, 0, book, until=messages[second_cancel + 4][1]["position"]) as session:
            session.run()
        oid = next(iter(book.orders))
        out = _ask(term, "show-state orders")
        assert f"orders[{oid}] = " in out
        out = _ask(term, f"show-state orders[{oid}]")
        assert f"\n  orders[{oid}]" in out
        out = _ask(term, "show-state orders[123456789]")
        assert "has no '[123456789]'" in out
        out = _ask(term, "print state.no_such_thing")
        assert "AttributeError" in out
        _finish(term)
    finally:
        if term.proc.poll() is None:
            term.proc.kill()


_FAILING = """
from lockstep.examples.orderbook import OrderBook

class Failing(OrderBook):
    '''The order book, with a bug: at sequence {seq} it changes its state, then raises.'''
    def on_message(self, ctx, command):
        super().on_message(ctx, command)
        if ctx.sequence == {seq}:
            raise {error}("boom at {seq}")
"""


def test_a_machine_that_raises_stops_the_debugger_before_that_message_and_the_session_goes_on(lsdir, tmp_path):
    arch = _record_orderbook(lsdir, 200)
    hashes = _hashes_after_each(arch, 200)
    for error in ("ValueError", "RuntimeError"):
        (tmp_path / f"failing_{error}.py").write_text(textwrap.dedent(_FAILING.format(seq=50, error=error)))
        term = Terminal([sys.executable, "-m", "lockstep.cli", "replay", "0", "--machine",
                         f"failing_{error}:Failing", "--step"], cwd=str(tmp_path))
        try:
            term.expect("(replay @0) ")
            out = _ask(term, "continue")
            assert f"Failing failed on the message at position" in out and "(sequence 50)" in out
            assert f"{error}: boom at 50" in out and "Traceback" in out and f"failing_{error}.py" in out
            # the state before it: what 49 messages make, though the machine changed it before raising
            assert f"sequence 49, hash {hashes[48]}" in out
            out = _ask(term, "peek")  # not consumed: still the next message
            assert "next @" in out and " seq 50 " in out
            out = _ask(term, "next")  # deterministic: it fails again, and again the session stays
            assert "(sequence 50)" in out and f"hash {hashes[48]}" in out
            out = _ask(term, "write-snapshot ../../x")
            assert "not a plain file name" in out
            out = _ask(term, "back 9")
            assert f"hash {hashes[39]}" in out
            out = _ask(term, "next")
            assert " seq 41 " in out
            _finish(term)
        finally:
            if term.proc.poll() is None:
                term.proc.kill()


_CHANGED = """
from lockstep.examples.orderbook import OrderBook

class KeepsCancelled(OrderBook):
    '''Today's fix under test: ignores Cancel (a deliberate difference).'''
    def on_message(self, ctx, command):
        from lockstep import codec
        if codec.decode(command).type.name == "Cancel":
            self.commands += 1
            return
        super().on_message(ctx, command)
"""


def test_replay_against_names_the_first_message_after_which_two_machines_differ(lsdir, tmp_path):
    arch = _record_orderbook(lsdir, 400)
    with arch.reader(0) as reader:
        messages = list(reader.messages())
    from lockstep import codec
    first_cancel = [codec.decode(p[32:]).type.name for p, _ in messages].index("Cancel")
    (tmp_path / "changed.py").write_text(textwrap.dedent(_CHANGED))
    same = lockstep_cli("replay", "0", "--machine", MACHINE, "--against", MACHINE)
    assert same.returncode == 0, same.stderr
    assert "agree after each of 400 messages" in same.stdout
    import subprocess
    proc = subprocess.run([sys.executable, "-m", "lockstep.cli", "replay", "0", "--machine", "changed:KeepsCancelled",
                           "--against", MACHINE], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1, proc.stderr
    position = messages[first_cancel][1]["position"]
    assert f"first differ after message {first_cancel + 1}" in proc.stdout
    assert f"@{position} seq {first_cancel + 1} " in proc.stdout and "Cancel{" in proc.stdout
    assert "state difference" in proc.stdout and "state.orders[" in proc.stdout
    out = json.loads(subprocess.run([sys.executable, "-m", "lockstep.cli", "replay", "0", "--machine",
                                     "changed:KeepsCancelled", "--against", MACHINE, "--json"],
                                    capture_output=True, text=True, cwd=tmp_path, timeout=120).stdout)
    assert out["difference"]["position"] == position and out["difference"]["sequence"] == first_cancel + 1
    assert out["difference"]["hashes"][0] != out["difference"]["hashes"][1]
    assert any(line.startswith("state.orders[") for line in out["difference"]["differences"])
