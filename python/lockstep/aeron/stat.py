"""What a media driver is doing, read from its cnc.dat without disturbing it, the way Aeron's
AeronStat shows it: the driver's liveness and every allocated counter (system counters such
as NAKs and errors, publisher limits, publisher/sender/receiver/subscriber positions)."""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path
from typing import Any

from ..errors import LockstepError
from ..transport.errorlog import ErrorRecord, read_errors
from ..transport.mapped import MappedFile
from ..transport.counters import Counters
from .cnc import CNC_FILE, default_aeron_dir, read_cnc_header, semantic_version

__all__ = ["driver_snapshot", "render_driver", "driver_errors", "COUNTER_TYPES"]

COUNTER_TYPES = {
    0: "system", 1: "pub-lmt", 2: "snd-pos", 3: "rcv-hwm", 4: "sub-pos", 5: "rcv-pos", 6: "snd-channel",
    7: "rcv-channel", 9: "snd-lmt", 10: "per-image", 11: "client-heartbeat", 12: "pub-pos", 13: "snd-bpe",
    14: "local-sockaddr", 17: "fc-receivers", 18: "mdc-num-dest", 19: "snd-naks-received", 20: "rcv-naks-sent",
}


def _directory(dir: str | os.PathLike[str] | None) -> Path:
    return Path(dir) if dir is not None else default_aeron_dir()


def driver_snapshot(dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """One reading of a driver directory as plain data (what `lockstep stat --aeron-dir --json` prints)."""
    directory = _directory(dir)
    path = directory / CNC_FILE
    header = read_cnc_header(path)
    if header is None or header.version == 0:
        raise LockstepError(f"{directory}: no Aeron media driver's cnc.dat here")
    mapped = MappedFile.open(path, writable=False)
    try:
        counters = Counters.over(mapped)
        rows = [{"id": c.id, "type_id": c.type_id, "type": COUNTER_TYPES.get(c.type_id, str(c.type_id)),
                 "label": c.label, "value": c.value, "registration_id": c.registration_id} for c in counters]
    finally:
        mapped.close()
    heartbeat = header.consumer_heartbeat_ms
    return {
        "dir": str(directory), "pid": header.pid, "cnc_version": semantic_version(header.version),
        "start_timestamp_ms": header.start_timestamp_ms,
        "driver_heartbeat_age_ms": None if heartbeat <= 0 else int(time.time() * 1000) - heartbeat,
        "driver_state": "shut down" if heartbeat == -1 else "running",
        "client_liveness_timeout_ms": header.client_liveness_timeout_ns // 1_000_000,
        "counters": rows,
    }


def render_driver(s: dict[str, Any], previous: dict[str, Any] | None = None) -> str:
    """The reading as AeronStat prints it: a header line, then `id: value - label` per counter."""
    now = datetime.datetime.now().strftime("%H:%M:%S")
    age = s["driver_heartbeat_age_ms"]
    lines = [f"{now} - Aeron Stat (CnC v{s['cnc_version']}), pid {s['pid']}, "
             f"{s['driver_state']}, heartbeat age {age if age is not None else '-'} ms  ({s['dir']})",
             "=" * 80]
    lines += [f"{c['id']:3d}: {c['value']:>20,} - {c['label']}" for c in s["counters"]]
    return "\n".join(lines)


def driver_errors(dir: str | os.PathLike[str] | None = None) -> list[ErrorRecord]:
    """The driver's distinct error log (the same layout as lockstep's own)."""
    directory = _directory(dir)
    if read_cnc_header(directory / CNC_FILE) is None:
        raise LockstepError(f"{directory}: no Aeron media driver's cnc.dat here")
    return read_errors(directory)
