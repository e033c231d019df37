"""The client of a real Aeron media driver (attach, commands, responses, channel URIs):
filled in by the Aeron-client work; empty until then."""
