"""What a running directory is doing, read from its files without disturbing anyone:
streams (publisher position and limit, each subscriber's position and lag), the sequencer,
replicas' last state hashes, and every counter. `lockstep stat` prints it."""

from __future__ import annotations

import os
import time
from typing import Any

from ..transport.client import STREAM_KEY, TYPE_CLIENT_HEARTBEAT, TYPE_PUBLISHER_LIMIT, TYPE_SUBSCRIBER_POSITION, is_alive
from ..cluster.replica import read_hashes
from ..transport.counters import CNC_FILE, Counters
from ..transport.errorlog import read_errors
from ..errors import LockstepError
from ..transport.logbuffer import LogBuffer
from ..transport.mapped import resolve_dir
from ..transport.ring import ManyToOneRing
from ..cluster.sequencer import INGRESS_FILE, TYPE_SEQUENCER

__all__ = ["snapshot_of", "render"]


def snapshot_of(dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """One reading of a directory as plain data (what `lockstep stat --json` prints)."""
    directory = resolve_dir(dir, create=False)
    if not (directory / CNC_FILE).exists():
        raise LockstepError(f"{directory}: no lockstep counters here (nothing has run in this directory)")
    with Counters(directory, create=False) as counters:
        infos = list(counters)
        alive = {i.id: is_alive(counters, i) for i in infos}
    by_stream: dict[tuple[int, int], dict[str, Any]] = {}
    for path in sorted(directory.glob("*.logbuffer")):
        try:
            with LogBuffer.open(path) as log:
                by_stream[(log.stream_id, log.session_id)] = {
                    "file": path.name, "stream_id": log.stream_id, "session_id": log.session_id,
                    "position": log.tail_position, "term_length": log.term_length,
                    "ended": log.end_of_stream_position < (1 << 63) - 1,
                    "publishers": [], "subscribers": []}
        except (LockstepError, OSError) as e:
            by_stream[(0, hash(path.name))] = {"file": path.name, "error": str(e)}
    for info in infos:
        if info.type_id not in (TYPE_PUBLISHER_LIMIT, TYPE_SUBSCRIBER_POSITION):
            continue
        _, session_id, stream_id = STREAM_KEY.unpack_from(info.key)
        stream = by_stream.get((stream_id, session_id))
        if stream is None:
            continue
        entry: dict[str, Any] = {"counter": info.id, "pid": info.owner_id, "alive": alive[info.id]}
        if info.type_id == TYPE_PUBLISHER_LIMIT:
            stream["publishers"].append({**entry, "limit": info.value})
        else:
            stream["subscribers"].append({**entry, "position": info.value, "lag": stream["position"] - info.value})
    sequencer: dict[str, int | str] = {i.label.split(": ", 1)[1]: i.value for i in infos if i.type_id == TYPE_SEQUENCER}
    if (directory / INGRESS_FILE).exists():
        try:
            with ManyToOneRing(directory / INGRESS_FILE) as ring:
                sequencer["ingress_bytes"] = ring.size()
                sequencer["ingress_capacity"] = ring.capacity
        except LockstepError as e:
            sequencer["ingress_error"] = str(e)
    try:
        seen = read_errors(directory)
        errors: dict[str, Any] = {
            "distinct": len(seen), "observations": sum(r.count for r in seen),
            "last": [r.as_dict() for r in sorted(seen, key=lambda r: r.last_ms)[-3:][::-1]]}
    except LockstepError as e:
        errors = {"error": str(e)}
    replicas = {}
    for path in sorted(directory.glob("*.hashes")):
        records = read_hashes(path)
        if records:
            position, sequence, digest = records[-1]
            replicas[path.stem] = {"position": position, "sequence": sequence, "hash": digest.hex()}
    return {
        "dir": str(directory),
        "time_ms": int(time.time() * 1000),
        "streams": list(by_stream.values()),
        "sequencer": sequencer or None,
        "replicas": replicas,
        "clients": [{"pid": i.owner_id, "alive": alive[i.id]} for i in infos if i.type_id == TYPE_CLIENT_HEARTBEAT],
        "counters": [{"id": i.id, "type_id": i.type_id, "label": i.label, "value": i.value, "pid": i.owner_id}
                     for i in infos],
        "errors": errors,
    }


def render(s: dict[str, Any], previous: dict[str, Any] | None = None) -> str:
    """A readable page of one reading; rates come from the previous reading if given."""
    lines = [f"lockstep stat  {s['dir']}  {time.strftime('%H:%M:%S', time.localtime(s['time_ms'] / 1000))}", ""]
    lines.append("streams")
    for st in s["streams"]:
        if "error" in st:
            lines.append(f"  {st['file']}: {st['error']}")
            continue
        state = " ended" if st["ended"] else ""
        lines.append(f"  stream {st['stream_id']} session {st['session_id']}: position {st['position']:,}{state}")
        for p in st["publishers"]:
            lines.append(f"    publisher pid {p['pid']}{'' if p['alive'] else ' (dead)'}: limit {p['limit']:,}")
        for sub in st["subscribers"]:
            lines.append(f"    subscriber pid {sub['pid']}{'' if sub['alive'] else ' (dead)'}: "
                         f"position {sub['position']:,}, lag {sub['lag']:,} B")
    if s["sequencer"]:
        seq = dict(s["sequencer"])
        rate = ""
        if previous and previous.get("sequencer") and "sequenced" in seq:
            dt = (s["time_ms"] - previous["time_ms"]) / 1000
            if dt > 0:
                rate = f", {(seq['sequenced'] - previous['sequencer'].get('sequenced', 0)) / dt:,.0f}/s"
        lines += ["", "sequencer"]
        lines.append("  " + ", ".join(f"{k} {v:,}" for k, v in seq.items() if isinstance(v, int)) + rate)
    if s["replicas"]:
        lines += ["", "replicas (last recorded state hash)"]
        for name, r in s["replicas"].items():
            lines.append(f"  {name}: sequence {r['sequence']:,} position {r['position']:,} hash {r['hash']}")
    others = [c for c in s["counters"] if c["type_id"] not in (TYPE_PUBLISHER_LIMIT, TYPE_SUBSCRIBER_POSITION,
                                                                 TYPE_CLIENT_HEARTBEAT, TYPE_SEQUENCER)]
    if others:
        lines += ["", "counters"]
        lines += [f"  {c['id']:>4} {c['label']}: {c['value']:,}" for c in others]
    lines += ["", f"clients: {sum(c['alive'] for c in s['clients'])} alive, "
              f"{sum(not c['alive'] for c in s['clients'])} dead"]
    errors = s.get("errors") or {}
    if "error" in errors:
        lines.append(f"errors: cannot read the error log: {errors['error']}")
    elif errors:
        lines.append(f"errors: {errors['distinct']} distinct, {errors['observations']} observations"
                     + (" (latest first; `lockstep errors` lists all)" if errors["last"] else ""))
        lines += [f"  {e['count']}x last {_clock(e['last_ms'])}: {e['text'].splitlines()[0] if e['text'] else ''}"
                  for e in errors["last"]]
    return "\n".join(lines)


def _clock(ms: int) -> str:
    try:
        return time.strftime("%H:%M:%S", time.localtime(ms / 1000))
    except (OverflowError, OSError, ValueError):
        return str(ms)
