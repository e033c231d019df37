"""`ControlledAction`: what a controlled handler (a ring's `controlled_read`, a log's
`controlled_poll`) returns for each message: Aeron's ControlledPollAction, the same values."""

from __future__ import annotations

import enum

__all__ = ["ControlledAction"]


class ControlledAction(enum.IntEnum):
    """What a `controlled_read` / `controlled_poll` handler says of the message it was given.
    A handler that returns anything else (None) continues."""

    ABORT = 1  # stop; the message stays unread (handed out again next time)
    BREAK = 2  # consume it and stop
    COMMIT = 3  # consume everything so far now (a log: the position is stored), continue
    CONTINUE = 4  # continue; consume at the end of the read
