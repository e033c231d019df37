"""Example state machines: small, readable, and used by the tests (start with `orderbook`)."""
