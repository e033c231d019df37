"""The `lockstep` command line: the click group (`group.main`) and one module per command family,
each registering itself on the group when imported here."""

from __future__ import annotations

from . import archive, demo, driver, errors, replay_server, stat, stream  # noqa: F401  (each registers its commands)
from .group import main

__all__ = ["main"]
