"""lockstep: Aeron-style log-based messaging for Python with a C core.

Rings (Agrona format) and, later, logs (Aeron format) live in memory-mapped files in
`$LOCKSTEP_DIR` (default `/dev/shm/lockstep-$USER`), shared by processes on one host.
"""

from __future__ import annotations

from .counters import Counter, CounterInfo, Counters
from .errors import (
    ClosedError,
    FileAccessError,
    FileFormatError,
    InvalidArgumentError,
    LockstepError,
)
from .idle import (
    BackoffIdleStrategy,
    BusySpinIdleStrategy,
    IdleStrategy,
    NoOpIdleStrategy,
    SleepingIdleStrategy,
    YieldingIdleStrategy,
    idle_strategy,
)
from .mapped import default_dir
from .ring import ControlledAction, ManyToOneRing, OneToOneRing, RingClaim

__version__ = "0.1.0"

__all__ = [
    "BackoffIdleStrategy", "BusySpinIdleStrategy", "ClosedError", "ControlledAction", "Counter",
    "CounterInfo", "Counters", "FileAccessError", "FileFormatError", "IdleStrategy",
    "InvalidArgumentError", "LockstepError", "ManyToOneRing", "NoOpIdleStrategy", "OneToOneRing",
    "RingClaim", "SleepingIdleStrategy", "YieldingIdleStrategy", "default_dir", "idle_strategy",
]
