"""lockstep: Aeron-style log-based messaging for Python with a C core.

Rings (Agrona format) and logs (Aeron format) live in memory-mapped files in
`$LOCKSTEP_DIR` (default `/dev/shm/lockstep-$USER`), shared by processes on one host.
"""

from __future__ import annotations

from . import codec
from .transport.counters import Counter, CounterInfo, Counters
from .errors import (
    ClosedError,
    CodecError,
    DriverError,
    FileAccessError,
    FileFormatError,
    ImageLostError,
    InvalidArgumentError,
    LockstepError,
)
from .errors import NoSpaceError, ResourceLimitError
from .transport.idle import (
    BackoffIdleStrategy,
    BlockingIdleStrategy,
    BusySpinIdleStrategy,
    IdleStrategy,
    NoOpIdleStrategy,
    SleepingIdleStrategy,
    YieldingIdleStrategy,
    idle_strategy,
)
from .transport.logbuffer import LogBuffer
from .transport.mapped import default_dir
from .transport.publication import (
    ADMIN_ACTION,
    BACK_PRESSURED,
    CLOSED,
    MAX_POSITION_EXCEEDED,
    NOT_CONNECTED,
    BufferClaim,
    OfferStatus,
    Publication,
    status_name,
)
from .transport.ring import ControlledAction, ManyToOneRing, OneToOneRing, RingClaim
from .transport.subscription import Batch, Header, Image, Subscription
from .cluster.sequencer import SequencedMessage, Sequencer, SequencerClient, decode_sequenced
from .cluster.replica import Context, Replica, Snapshot, StateMachine, check_determinism, first_divergence, replay

from .aeron import Aeron

__version__ = "0.1.0"

__all__ = [
    "Context", "Replica", "SequencedMessage", "Sequencer", "SequencerClient", "Snapshot", "StateMachine",
    "check_determinism", "decode_sequenced", "first_divergence", "replay",
    "codec", "CodecError",
    "Aeron", "DriverError",
    "ADMIN_ACTION", "BACK_PRESSURED", "CLOSED", "MAX_POSITION_EXCEEDED", "NOT_CONNECTED", "OfferStatus",
    "Batch", "BufferClaim", "Header", "Image", "LogBuffer", "Publication", "Subscription", "status_name",
    "BackoffIdleStrategy", "BlockingIdleStrategy", "BusySpinIdleStrategy", "ClosedError", "ControlledAction", "Counter",
    "CounterInfo", "Counters", "FileAccessError", "FileFormatError", "IdleStrategy",
    "ImageLostError", "InvalidArgumentError", "LockstepError", "ManyToOneRing", "NoOpIdleStrategy", "OneToOneRing",
    "RingClaim", "SleepingIdleStrategy", "YieldingIdleStrategy", "default_dir", "idle_strategy",
]
__all__ += ["NoSpaceError", "ResourceLimitError"]
