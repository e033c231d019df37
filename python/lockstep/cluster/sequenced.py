"""The sequenced log's message format: every message starts with the sequencer's header
(sequence, timestamp ns, origin sequence, origin id, reserved), then the command."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from .._native import lib
from ..errors import LockstepError

__all__ = ["DEFAULT_LOG_STREAM", "SEQUENCED_HEADER", "SEQUENCED_HEADER_LENGTH", "SequencedMessage", "decode_sequenced"]

DEFAULT_LOG_STREAM = 100
SEQUENCED_HEADER = struct.Struct("<qqqii")  # sequence, timestamp ns, origin sequence, origin id, reserved
SEQUENCED_HEADER_LENGTH: int = lib.LS_SEQUENCED_HEADER_LENGTH


@dataclass(frozen=True)
class SequencedMessage:
    """One message of the sequenced log, header decoded, command copied."""

    sequence: int
    timestamp_ns: int
    origin_id: int
    origin_sequence: int
    command: bytes
    position: int = 0


def decode_sequenced(data: Any, position: int = 0) -> SequencedMessage:
    """Decode one sequenced-log payload (a LockstepError if it is too short)."""
    if len(data) < SEQUENCED_HEADER_LENGTH:
        raise LockstepError(f"sequenced message: expected at least {SEQUENCED_HEADER_LENGTH} bytes, found {len(data)}")
    sequence, timestamp, origin_sequence, origin_id, _ = SEQUENCED_HEADER.unpack_from(data)
    return SequencedMessage(sequence, timestamp, origin_id, origin_sequence, bytes(data[SEQUENCED_HEADER_LENGTH:]),
                            position)
