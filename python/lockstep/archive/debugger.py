"""The `lockstep replay --step` debugger: step through a recording in a state machine, go back,
stop on conditions over the message and the state, print and watch expressions, look into
nested state. A machine that raises stops it at that message; the session goes on."""

from __future__ import annotations

import pprint
import shlex
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import codec
from ..cluster.sequencer import SEQUENCED_HEADER_LENGTH, decode_sequenced
from ..errors import CodecError, LockstepError
from .replay import ApplyError, ReplaySession, _template_of, describe_command
from .state_view import describe_state, describe_value, open_path

__all__ = ["Stepper"]

_HELP = """commands:
  n, next [N]                 apply the next message (or N messages)
  b, back [N]                 go back N messages (default 1): the state as it was there, same hash
  c, continue [POSITION]      apply messages up to and including the one at POSITION (default: to the end,
                              or to just before the next message a breakpoint stops at)
  t, template NAME|ID         apply messages up to and including the next one of that template
  break EXPR                  stop before the message for which EXPR is true; EXPR may use msg (the decoded
                              message, None if not a codec message), name (its template name), state (the
                              machine), pos (the message's position), seq (its sequence)
  delete N                    remove breakpoint (or watch) N
  breaks                      list breakpoints and watches
  print EXPR                  print an expression over state, pos, seq and msg (the last message applied)
  watch EXPR                  print EXPR whenever its value changes after a message (continue stops there)
  s, state, show-state [PATH] print the machine's state and hash, or what is at PATH (children[301], parents.1)
  w, write-snapshot [NAME]    write a snapshot of the state here, next to the recordings
  p, peek                     show the next message without applying it
  h, help                     this text
  q, quit                     stop (the final state hash is printed)"""


@dataclass
class _Expr:
    """A breakpoint or watch: its number, source text and compiled code."""

    number: int
    kind: str  # "break" or "watch"
    text: str
    code: Any
    last: Any = None
    seen: bool = False


def _decoded(command: bytes) -> Any:
    """The command decoded through the codec registry, or None."""
    try:
        return codec.decode(command)
    except CodecError:
        return None


class Stepper:
    """The `--step` debugger: reads commands with `read(prompt)` (None at end of input),
    writes lines with `write(text)`. The session should keep checkpoints (for `back`)."""

    def __init__(self, session: ReplaySession, read: Callable[[str], str | None], write: Callable[[str], None]) -> None:
        self.session = session
        self.read = read
        self.write = write
        self.exprs: list[_Expr] = []
        self._numbers = 0
        self._last: tuple[bytes, dict] | None = None  # the last message applied
        self._divergence_reported = False
        self._break_here: int | None = None  # the position of the next message, when a break stopped before it
        self._watch_hit: _Expr | None = None  # a watch whose value the last message changed

    # -- expressions -------------------------------------------------------------------------

    def _names(self, message: tuple[bytes, dict] | None) -> dict[str, Any]:
        s = self.session
        names: dict[str, Any] = {"state": s.machine, "msg": None, "name": None, "pos": s.position,
                                 "seq": s.runner.last_sequence}
        if message is not None:
            m = decode_sequenced(message[0], message[1]["position"])
            decoded = _decoded(m.command)
            names.update(msg=decoded, name=decoded.type.name if decoded is not None else None, pos=m.position,
                         seq=m.sequence, command=m.command)
        return names

    def _eval(self, code: Any, message: tuple[bytes, dict] | None) -> Any:
        return eval(code, {"__builtins__": __builtins__}, self._names(message))

    def _add(self, kind: str, text: str) -> None:
        try:
            code = compile(text, f"<{kind}>", "eval")
        except SyntaxError as e:
            self.write(f"? {kind} {text!r}: {e.msg}")
            return
        self._numbers += 1
        expr = _Expr(self._numbers, kind, text, code)
        if kind == "watch":
            expr.last, expr.seen = self._try_eval(expr, self._last), True
            self.write(f"watch {expr.number}: {text} = {expr.last!r}")
        else:
            self.write(f"breakpoint {expr.number}: stop before the message for which {text}")
        self.exprs.append(expr)

    def _try_eval(self, expr: _Expr, message: tuple[bytes, dict] | None) -> Any:
        try:
            return self._eval(expr.code, message)
        except Exception as e:
            return f"<{type(e).__name__}: {e}>"

    def _breaks_at(self, message: tuple[bytes, dict]) -> _Expr | None:
        """The first breakpoint true for `message` (an error in one counts as true: it stops to say so)."""
        for expr in self.exprs:
            if expr.kind != "break":
                continue
            try:
                hit = bool(self._eval(expr.code, message))
            except Exception as e:
                self.write(f"breakpoint {expr.number} ({expr.text}) raised {type(e).__name__}: {e}")
                return expr
            if hit:
                return expr
        return None

    def _watch(self) -> None:
        """Print the watches whose value changed (and note it: `continue` stops there)."""
        for expr in self.exprs:
            if expr.kind == "watch":
                value = self._try_eval(expr, self._last)
                if value != expr.last:
                    self.write(f"watch {expr.number}: {expr.text}: {expr.last!r} -> {value!r} at position "
                               f"{self.session.position} (sequence {self.session.runner.last_sequence})")
                    expr.last = value
                    self._watch_hit = expr

    # -- moving ------------------------------------------------------------------------------

    def _message_line(self, message: tuple[bytes, dict]) -> str:
        payload, header = message
        m = decode_sequenced(payload, header["position"])
        return f"@{m.position} seq {m.sequence} origin {m.origin_id}: {describe_command(m.command)}"

    def _step(self) -> tuple[bytes, dict] | None:
        """Apply one message (None at the end); ApplyError passes through."""
        message = self.session.step()
        if message is not None:
            self._last = message
            self._break_here = None
            if self.exprs:
                self._watch()
        return message

    def _apply(self) -> bool:
        """`next`: one message, with what it changed. False at the end, or when it failed."""
        s = self.session
        before = describe_state(s.machine)
        message = self._step()
        if message is None:
            self.write(f"end of recording at position {s.position}")
            return False
        after = describe_state(s.machine)
        self.write(self._message_line(message))
        changes = [f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in sorted(set(before) | set(after))
                   if before.get(k) != after.get(k)]
        self.write("  changed: " + (", ".join(changes) if changes else "nothing visible") +
                   f"; hash {s.machine.state_hash().hex()}")
        self._report_divergence()
        return s.divergence is None

    def _run(self, until: Callable[[tuple[bytes, dict]], bool] | None = None, *, position: int | None = None
             ) -> tuple[int, str]:
        """`continue` / `template`: apply messages until a breakpoint is true for the next one,
        the one at `position` is applied, `until(message)` after one, a divergence, or the end."""
        s = self.session
        n = 0
        while s.divergence is None:
            nxt = s.peek()
            if nxt is None:
                return n, "end of recording"
            if position is not None and nxt[1]["position"] > position:
                return n, f"stopped after the message at or before {position}"
            if self._break_here != nxt[1]["position"]:
                hit = self._breaks_at(nxt)
                if hit is not None:
                    self._break_here = nxt[1]["position"]
                    return n, f"breakpoint {hit.number} ({hit.text}) before\n  next {self._message_line(nxt)}"
            self._watch_hit = None
            self._step()
            n += 1
            if until is not None and until(nxt):
                return n, ""
            if self._watch_hit is not None:
                return n, f"watch {self._watch_hit.number} ({self._watch_hit.text}) changed"
        return n, "stopped"

    def _report(self, applied: int, what: str) -> None:
        s = self.session
        self.write(f"applied {applied} message(s); now at position {s.position} (sequence "
                   f"{s.runner.last_sequence}); {what}")
        self._report_divergence()

    def _report_divergence(self) -> None:
        d = self.session.divergence
        if d is not None and not self._divergence_reported:
            self._divergence_reported = True
            self.write(f"DIVERGENCE at position {d['position']} (sequence {d['sequence']}): live {d['live']} "
                       f"({d['hashes_file']}), replay {d['replay']}")

    def _failed(self, e: ApplyError) -> None:
        s = self.session
        self.write(f"! {e}")
        self.write(e.traceback.rstrip())
        state = "the state before it" if e.restored else "the state as the machine left it"
        self.write(f"stopped before that message (not applied; 'next' retries it); {state}: position "
                   f"{s.position}, sequence {s.runner.last_sequence}, hash {s.machine.state_hash().hex()}")

    def _back(self, count: int) -> None:
        s = self.session
        target = max(0, s.applied - max(count, 0))
        s.go_to(target)
        self._last = None
        self._break_here = None
        self.write(f"back {count} to position {s.position} (sequence {s.runner.last_sequence}); hash "
                   f"{s.machine.state_hash().hex()}")
        if self.exprs:
            for expr in self.exprs:
                if expr.kind == "watch":
                    expr.last = self._try_eval(expr, None)

    def _show(self, path: str | None) -> None:
        s = self.session
        if path:
            value = open_path(s.machine, path)
            items = describe_value(value)
            if list(items) == ["value"]:
                self.write(f"  {path} = {items['value']!r}")
            else:
                for k, v in items.items():
                    self.write(f"  {path}{k if k.startswith('[') else '.' + k} = {v}")
            return
        for k, v in describe_state(s.machine).items():
            self.write(f"  {k} = {v}")
        self.write(f"  position {s.position}, sequence {s.runner.last_sequence}, hash "
                   f"{s.machine.state_hash().hex()}")

    # -- the loop ----------------------------------------------------------------------------

    def loop(self) -> None:
        s = self.session
        self.write(f"replaying recording {s.recording_id} into {type(s.machine).__name__} from position "
                   f"{s.start_position}; 'help' lists commands")
        while True:
            line = self.read(f"(replay @{s.position}) ")
            if line is None:
                return
            if not line.strip():
                continue
            parts = line.strip().split(maxsplit=1)
            cmd, rest = parts[0].lower(), (parts[1] if len(parts) > 1 else "")
            try:
                if cmd in ("q", "quit", "exit"):
                    return
                self._command(cmd, rest)
            except ApplyError as e:
                self._failed(e)
            except (LockstepError, OSError, ValueError, IndexError) as e:
                self.write(f"? {e}")
            except Exception as e:  # e.g. the machine's describe_state or snapshot raised: say so, go on
                self.write(f"! {type(e).__name__}: {e}")
                self.write(traceback.format_exc().rstrip())

    def _command(self, cmd: str, rest: str) -> None:
        s = self.session
        if cmd in ("break", "watch"):
            if not rest:
                self.write(f"? {cmd} EXPR")
            else:
                self._add(cmd, rest)
            return
        if cmd in ("print", "pp"):
            if not rest:
                self.write("? print EXPR")
                return
            try:
                value = eval(compile(rest, "<print>", "eval"), {"__builtins__": __builtins__}, self._names(self._last))
            except Exception as e:
                self.write(f"? print {rest}: {type(e).__name__}: {e}")
                return
            text = pprint.pformat(value, width=110, compact=True)
            self.write(text if len(text) <= 4000 else text[:4000] + f" ... ({len(text):,} characters)")
            return
        args = shlex.split(rest)
        if cmd in ("n", "next"):
            for _ in range(max(int(args[0]) if args else 1, 1)):
                if not self._apply():
                    break
        elif cmd in ("b", "back"):
            self._back(int(args[0]) if args else 1)
        elif cmd in ("c", "continue", "continue-to-position"):
            n, what = self._run(position=int(args[0]) if args else None)
            self._report(n, what)
        elif cmd in ("t", "template", "continue-to-template"):
            if not args:
                self.write("? template NAME|ID")
                return
            want = args[0]

            def hit(message: tuple[bytes, dict]) -> bool:
                t = _template_of(message[0][SEQUENCED_HEADER_LENGTH:])
                return t is not None and (t[0] == want or str(t[1]) == want)

            n, what = self._run(hit)
            if not what:
                if self._last is not None:  # (the message `hit` stopped after, just applied)
                    self.write(self._message_line(self._last))
                what = f"stopped after the next {want}"
            elif what == "end of recording":
                what = f"no {want} found; end of recording"
            self._report(n, what)
        elif cmd == "delete":
            number = int(args[0]) if args else -1
            kept = [e for e in self.exprs if e.number != number]
            self.write(f"deleted {number}" if len(kept) < len(self.exprs) else f"? no breakpoint or watch {number}")
            self.exprs = kept
        elif cmd in ("breaks", "watches", "info"):
            if not self.exprs:
                self.write("no breakpoints or watches")
            for expr in self.exprs:
                self.write(f"  {expr.number} {expr.kind} {expr.text}"
                           + (f" = {expr.last!r}" if expr.kind == "watch" else ""))
        elif cmd in ("s", "state", "show-state"):
            self._show(rest or None)
        elif cmd in ("w", "write-snapshot", "snapshot"):
            path = s.write_snapshot(args[0] if args else None)
            self.write(f"snapshot at position {s.position} written to {path}")
        elif cmd in ("p", "peek"):
            nxt = s.peek()
            self.write("end of recording" if nxt is None else "next " + self._message_line(nxt))
        elif cmd in ("h", "help", "?"):
            self.write(_HELP)
        else:
            self.write(f"? unknown command {cmd!r}; 'help' lists commands")
