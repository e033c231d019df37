"""The cluster layer: the sequencer and its client, state machines and replicas, gateways."""

from __future__ import annotations

from .replica import *  # noqa: F401,F403
from .replica import __all__ as _replica_all
from .sequencer import SequencedMessage, Sequencer, SequencerClient, decode_sequenced

__all__ = [*_replica_all, "SequencedMessage", "Sequencer", "SequencerClient", "decode_sequenced"]
