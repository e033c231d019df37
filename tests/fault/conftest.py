"""Options of the fault-injection campaign.

Rounds: 50 by default (CI). More for a soak run: `pytest tests/fault --soak 1000`, or the
environment variable LOCKSTEP_SOAK_ROUNDS=1000 (which also works with `pytest tests`, where
this conftest is not loaded early enough to add a command-line option). The seed:
LOCKSTEP_FAULT_SEED (default: random, printed, and named in any failure).
"""

from __future__ import annotations


def pytest_addoption(parser):
    parser.addoption("--soak", type=int, default=None, metavar="N",
                     help="fault campaign: run N kill/restart rounds (default 50 or $LOCKSTEP_SOAK_ROUNDS)")
