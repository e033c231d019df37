"""The archive: records a stream into segment files plus a catalog (Aeron Archive's
layout: `<recording_id>-<segment_base_position>.rec` holding the frames as they were in the
term), and reads recordings back as subscriptions, onto live streams, or into state
machines (`lockstep.archive.replay`).

    from lockstep.archive import Recorder, Archive
    rec = Recorder(stream_id=100)             # records into default_archive_dir() (on disk)
    rec.run(stop_event)                       # or rec.do_work() in your own loop
    arch = Archive()                          # $LOCKSTEP_ARCHIVE_DIR, else $XDG_DATA_HOME/lockstep/archive
    for d in arch.recordings(): print(d.recording_id, d.start_position, d.stop_position)
    with arch.reader(0, start=None, stop=None) as r:
        for payload, header in r.messages(): ...
"""

from __future__ import annotations

from .archive import Archive, default_archive_dir
from .catalog import CATALOG_FILE, RecordingDescriptor
from .reader import RecordingHeader, RecordingReader
from .recorder import DURABILITY, Recorder
from ..aeron.replay_client import Replay, ReplayClient
from .replay_server import ReplayServer

__all__ = [
           "CATALOG_FILE",
           "DURABILITY",
           "Archive",
           "Recorder",
           "Replay",
           "ReplayClient",
           "ReplayServer",
           "RecordingDescriptor",
           "RecordingHeader",
           "RecordingReader",
           "default_archive_dir",
]
