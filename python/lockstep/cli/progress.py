"""A progress bar for long replays and dumps: tqdm on stderr, shown only on a terminal, only
after a second, never under --json (so pipes and JSON readers see nothing of it)."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["progress_bar"]


class _NoBar:
    """What `progress_bar` hands out when there is no bar to draw."""

    n = 0

    def update(self, n: int = 1) -> None:
        """Nothing to draw."""

    def close(self) -> None:
        """Nothing to close."""


def progress_bar(total: int | None, *, desc: str, unit: str = "B", quiet: bool = False) -> Any:
    """A tqdm bar of `total` units (bytes by default; None: a counter) on stderr when it is a
    terminal and not `quiet`, appearing after one second; else an object with the same update/close."""
    if quiet or not sys.stderr.isatty() or (total is not None and total <= 0):
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, delay=1.0, leave=False, file=sys.stderr,
                dynamic_ncols=True)
