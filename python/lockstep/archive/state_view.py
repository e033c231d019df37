"""Looking inside a state machine's state for the debugger: a one-level summary of any object
(`describe_state`, `describe_value`), a dotted/indexed path into nested state (`open_path`:
`children[301]`, `parents.1`), and where two states differ (`state_diff`)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..cluster.replica import StateMachine
from ..errors import InvalidArgumentError

__all__ = ["describe_state", "describe_value", "open_path", "shown", "state_diff"]

_SCALARS = (bool, int, float, str, type(None))
_MAX_ITEMS = 50
_INLINE = 8
_PATH_PART = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_]*)|\[([^\]]*)\]|\.(-?\d+)")


def shown(value: Any) -> Any:
    """A value as one summary line shows it: scalars as they are, a short list or tuple of
    scalars in full, other containers as `<dict of 32>`."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, bytes):
        return value.hex() if len(value) <= 32 else f"<{len(value)} bytes>"
    if isinstance(value, (list, tuple)) and len(value) <= _INLINE and all(isinstance(v, _SCALARS) for v in value):
        return value
    try:
        return f"<{type(value).__name__} of {len(value)}>"
    except TypeError:
        return f"<{type(value).__name__}>"


def _items(value: Any) -> list[tuple[str, Any]] | None:
    """(label, item) pairs one level into `value`, or None for a leaf."""
    if isinstance(value, (*_SCALARS, bytes)):
        return None
    if isinstance(value, Mapping):
        return [(f"[{k!r}]", v) for k, v in value.items()]
    if isinstance(value, (Sequence, set, frozenset)):
        return [(f"[{i}]", v) for i, v in enumerate(value)]
    attrs = getattr(value, "__dict__", None)
    if attrs is not None:
        return [(k, v) for k, v in sorted(attrs.items()) if not k.startswith("_")]
    return None


def describe_value(value: Any) -> dict[str, Any]:
    """One level of `value`: its attributes, keys or items (the first 50) with nested
    containers summarised; a leaf as {"value": it}."""
    items = _items(value)
    if items is None:
        return {"value": value}
    out = {label: shown(item) for label, item in items[:_MAX_ITEMS]}
    if len(items) > _MAX_ITEMS:
        out["..."] = f"{len(items) - _MAX_ITEMS} more"
    return out


def describe_state(machine: Any) -> dict[str, Any]:
    """What `show-state` prints: the machine's `describe_state()` if it has one, else its
    public scalar attributes and the sizes of its containers."""
    custom = getattr(machine, "describe_state", None)
    if callable(custom):
        return dict(custom())
    return {name: shown(value) for name, value in sorted(vars(machine).items()) if not name.startswith("_")}


def _key(container: Any, text: str) -> Any:
    """`text` as the key it names in `container`: an int when it reads as one and the container
    has it (or is a sequence), else the string."""
    try:
        number = int(text)
    except ValueError:
        number = None
    text = text.strip("'\"")
    if isinstance(container, Mapping):
        if number is not None and number in container:
            return number
        return text
    if number is None:
        raise InvalidArgumentError(f"[{text}]: a {type(container).__name__} takes an integer index")
    return number


def open_path(root: Any, path: str) -> Any:
    """The object at `path` inside `root`: attributes by `.name`, keys and indexes by `[k]`
    or `.k` (`children[301]`, `parents.1.qty`); InvalidArgumentError naming the part that fails."""
    value, done, at = root, "", 0
    path = path.strip()
    while at < len(path):
        m = _PATH_PART.match(path, at)
        if m is None:
            raise InvalidArgumentError(f"{path!r}: cannot read a path part at {path[at:]!r}")
        attr, key, dotted = m.groups()
        at = m.end()
        try:
            if attr is not None and not isinstance(value, Mapping):
                value = getattr(value, attr)
            else:
                part = attr if attr is not None else key if key is not None else dotted
                value = value[_key(value, part)]
        except (AttributeError, KeyError, IndexError, TypeError) as e:
            raise InvalidArgumentError(f"{path!r}: {done or 'state'} has no {m.group(0).lstrip('.')!r} "
                                       f"({type(e).__name__})") from None
        done = path[:at]
    return value


def state_diff(a: Any, b: Any, path: str = "state", limit: int = 20) -> list[str]:
    """Where `a` and `b` differ, as `path: a -> b` lines (at most `limit`), descending into
    attributes, keys and items (two machines of different classes are compared attribute by attribute)."""
    out: list[str] = []
    _diff(a, b, path, out, limit)
    return out


def _diff(a: Any, b: Any, path: str, out: list[str], limit: int) -> None:
    if len(out) >= limit:
        return
    ia, ib = _items(a), _items(b)
    same_kind = type(a) is type(b) or (isinstance(a, StateMachine) and isinstance(b, StateMachine))
    if ia is None or ib is None or not same_kind:
        if a != b:
            out.append(f"{path}: {shown(a)!r} -> {shown(b)!r}")
        return
    da, db = dict(ia), dict(ib)
    for label in list(da) + [k for k in db if k not in da]:
        sub = f"{path}{label}" if label.startswith("[") else f"{path}.{label}"
        if label not in db:
            out.append(f"{sub}: {shown(da[label])!r} -> (absent)")
        elif label not in da:
            out.append(f"{sub}: (absent) -> {shown(db[label])!r}")
        else:
            _diff(da[label], db[label], sub, out, limit)
        if len(out) >= limit:
            return
