"""Aeron channel URIs (`aeron:udp?endpoint=host:port|term-length=...`): adding parameters and
reading them, and the parameters that start a publication at a given stream position."""

from __future__ import annotations

from ..errors import InvalidArgumentError

__all__ = ["with_params", "channel_param", "position_params"]


def _split(channel: str) -> tuple[str, dict[str, str]]:
    if not channel.startswith(("aeron:", "aeron-spy:")):
        raise InvalidArgumentError(f"channel: expected an Aeron URI (aeron:udp?..., aeron:ipc), found {channel!r}")
    media, _, query = channel.partition("?")
    params: dict[str, str] = {}
    for item in filter(None, query.split("|")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgumentError(f"channel {channel!r}: expected key=value parameters, found {item!r}")
        params[key] = value
    return media, params


def channel_param(channel: str, key: str) -> str | None:
    """The value of parameter `key` in `channel` (None when absent)."""
    return _split(channel)[1].get(key)


def with_params(channel: str, drop: tuple[str, ...] = (), **params: object) -> str:
    """`channel` with the `drop` keys removed, then `params` added or replaced (in a keyword `_`
    stands for `-`: term_length=...)."""
    media, current = _split(channel)
    for key in drop:
        current.pop(key, None)
    current.update({k.replace("_", "-"): str(v) for k, v in params.items()})
    return media + ("?" + "|".join(f"{k}={v}" for k, v in current.items()) if current else "")


def position_params(position: int, *, term_length: int, initial_term_id: int, mtu: int) -> dict[str, int]:
    """Channel parameters of an exclusive publication whose first message lands at `position`
    of a log with these dimensions: the same positions on every host, as Aeron Archive's replay."""
    term_id = (initial_term_id + position // term_length + (1 << 31)) % (1 << 32) - (1 << 31)
    return {"term_length": term_length, "mtu": mtu, "init_term_id": initial_term_id, "term_id": term_id,
            "term_offset": position % term_length}
