"""Helpers for the tests of lockstep's Aeron client (real media drivers, real Aeron C client)."""
