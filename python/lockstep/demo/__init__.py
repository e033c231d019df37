"""The demo lockstep exists for: halting a runaway Algo without breaking total order.

`run_demo()` (and `lockstep demo`) starts a sequencer, 2 Algo replicas, 2 SOR replicas,
3 execution gateways with simulated venues, a recorder and a risk monitor as separate
processes; lets them trade; makes the Algo flood; and shows the risk monitor's halt on the
priority side channel reaching the gateways at once while the same halt, sequenced, would
have waited behind the flood. Modules: `messages` (the schema), `venue` (the simulator),
`algo` and `sor` (replicated state machines), `execution` (the gateway), `risk`,
`processes` (one function per process), `run` (the driver and summary), `plot`.
"""

from __future__ import annotations

from .run import DemoConfig, format_summary, run_demo

__all__ = ["DemoConfig", "run_demo", "format_summary"]
