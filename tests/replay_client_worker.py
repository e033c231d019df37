"""A replay client as a separate program (the replay service tests SIGKILL it mid-replay):
`replay_client_worker.py AERON_DIR CONTROL_CHANNEL RESPONSE_CHANNEL COUNT` starts a replay of
the newest recording of stream 100, reads COUNT messages, prints `got COUNT <position>`, then
stops reading (its replay stays open, back-pressured) until it is killed."""

from __future__ import annotations

import sys
import time

from lockstep.aeron import Aeron
from lockstep.archive import ReplayClient


def main() -> None:
    aeron_dir, control, response, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    aeron = Aeron(aeron_dir)
    client = ReplayClient(aeron, control, response)
    replay = client.start_replay(100, timeout=30)
    got = 0
    deadline = time.monotonic() + 60
    while got < count:
        n = replay.poll(lambda data, header: None, min(10, count - got))
        got += n
        if not n:
            if time.monotonic() > deadline:
                raise SystemExit(f"replay client: only {got} of {count} messages in 60 s")
            time.sleep(0.001)
    print(f"got {got} {replay.position}", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
