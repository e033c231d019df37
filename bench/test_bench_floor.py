"""The floor every micro benchmark is compared with: one empty Python -> C call through cffi."""

from __future__ import annotations

import pytest

from lockstep._native import lib


@pytest.mark.benchmark(group="floor")
def test_noop_cffi_call(benchmark):
    """One call of an empty C function (`ls_noop`)."""
    benchmark(lib.ls_noop)
