"""lockstep as a client of a real Aeron media driver: `Aeron(dir)` attaches to a running
driver (`lockstep driver`, or any Aeron 1.x C/Java driver) and hands out publications and
subscriptions with the API of lockstep's own, for any Aeron channel (`aeron:ipc`,
`aeron:udp?endpoint=host:port`, multi-destination cast, `aeron-spy:`), over the driver's log
buffers read and written by lockstep's C core."""

from __future__ import annotations

from ..errors import DriverError
from .client import Aeron
from .cnc import default_aeron_dir
from .driver import MediaDriver, build_driver
from .publication import AeronPublication
from .subscription import AeronImage, AeronSubscription

__all__ = ["Aeron", "AeronImage", "AeronPublication", "AeronSubscription", "DriverError", "MediaDriver",
           "build_driver", "default_aeron_dir"]
