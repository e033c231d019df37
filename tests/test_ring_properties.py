"""Property test: a ring under random operations behaves like an exact model of the Agrona
algorithm (a list of records with positions): same messages in the same order, full
exactly when the model's byte accounting says so, same positions and size."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lockstep import ControlledAction, ManyToOneRing, OneToOneRing

HEADER = 8
BATCH = 256  # the most messages one controlled_read looks at


def align8(n: int) -> int:
    return (n + 7) & ~7


@dataclass
class Record:
    type_id: int  # -1 = padding
    payload: bytes
    length: int  # aligned bytes in the ring


@dataclass
class Model:
    capacity: int
    head: int = 0
    tail: int = 0
    records: list[Record] = field(default_factory=list)  # from head to tail

    def claim(self, type_id: int, payload: bytes) -> bool:
        """Agrona's claim_capacity: room for the record, and for a record that would cross
        the end, room for it at index 0 too (the rest of the lap becomes padding)."""
        required = align8(len(payload) + HEADER)
        if required > self.capacity - (self.tail - self.head):
            return False
        to_end = self.capacity - self.tail % self.capacity
        if required > to_end:
            if required > self.head % self.capacity:
                return False
            self.records.append(Record(-1, b"", to_end))
            self.tail += to_end
        self.records.append(Record(type_id, payload, required))
        self.tail += required
        return True

    def consume_until(self, index: int) -> None:
        """Consume the first `index` records."""
        self.head += sum(r.length for r in self.records[:index])
        del self.records[:index]

    def scan(self, limit: int) -> list[tuple[int, int]]:
        """(record index, message) pairs a scan of up to `limit` messages visits; the scan
        stops right after the limit-th message, else at the end of the written records."""
        out = []
        for i, r in enumerate(self.records):
            if len(out) == limit:
                break
            if r.type_id != -1:
                out.append(i)
        return out

    def messages(self) -> list[tuple[int, bytes]]:
        return [(r.type_id, r.payload) for r in self.records if r.type_id != -1]


ACTIONS = [ControlledAction.ABORT, ControlledAction.BREAK, ControlledAction.COMMIT, ControlledAction.CONTINUE]

_write = st.tuples(st.just("write"), st.integers(0, 140), st.integers(1, 5))
# Writes outnumber reads so rings fill, wrap and refuse; small read limits leave the head
# just past index 0, the case where a wrapping record needs room at the start.
op = st.one_of(
    _write, _write, _write, _write,
    st.tuples(st.just("commit"), st.integers(0, 140), st.integers(1, 5)),
    st.tuples(st.just("abort"), st.integers(0, 140), st.integers(1, 5)),
    st.tuples(st.just("read"), st.integers(0, 3), st.just(0)),
    st.tuples(st.just("read_all"), st.just(0), st.just(0)),
    st.tuples(st.just("controlled"), st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=8), st.integers(1, 10)),
)

_names = itertools.count()


@pytest.mark.parametrize("ring_cls", [OneToOneRing, ManyToOneRing], ids=["one_to_one", "many_to_one"])
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(capacity=st.sampled_from([64, 128, 256, 1024]), ops=st.lists(op, min_size=30, max_size=150))
# Records at 0, 8, 24, 40; head moves to 8; 16 bytes are free in total but a 16-byte
# record does not fit in the 8 before the end nor in the 8 before the head: full.
@example(capacity=64, ops=[("write", 0, 1), ("write", 8, 1), ("write", 8, 1), ("write", 8, 1),
                           ("read", 1, 0), ("write", 8, 2), ("commit", 8, 2), ("read_all", 0, 0),
                           ("write", 8, 3), ("read_all", 0, 0)])
def test_ring_matches_model(ring_cls, lsdir, capacity, ops):
    path = lsdir / f"prop-{next(_names)}"
    ring = ring_cls(path, capacity)
    model = Model(capacity)
    seq = 0
    try:
        for kind, a, b in ops:
            if kind in ("write", "commit", "abort"):
                length = a % (ring.max_message_length + 1)
                payload = bytes([seq % 256]) * length
                seq += 1
                if kind == "write":
                    ok = ring.write(b, payload)
                    assert ok == model.claim(b, payload), (kind, length, model)
                else:
                    claim = ring.try_claim(b, length)
                    fits = model.claim(b if kind == "commit" else -1, payload)
                    assert (claim is not None) == fits, (kind, length, model)
                    if claim is not None:
                        claim.buffer[:] = payload
                        if kind == "commit":
                            claim.commit()
                        else:
                            claim.abort()
                            model.records[-1].payload = b""
            elif kind in ("read", "read_all"):
                got = []
                handler = lambda t, d: got.append((t, bytes(d)))  # noqa: E731
                if kind == "read":
                    n = ring.read(handler, a)
                    visited = model.scan(a)
                else:
                    n = ring.read(handler)
                    visited = model.scan(len(model.records))
                expected = [(model.records[i].type_id, model.records[i].payload) for i in visited]
                assert got == expected and n == len(expected)
                if kind == "read" and len(visited) == a:
                    model.consume_until(visited[-1] + 1 if visited else 0)
                else:
                    model.consume_until(len(model.records))
            else:  # controlled read: the i-th message gets actions[i], CONTINUE after them
                actions, limit = a, b
                got = []

                def handler(t, d):
                    got.append((t, bytes(d)))
                    return actions[len(got) - 1] if len(got) <= len(actions) else ControlledAction.CONTINUE

                n = ring.controlled_read(handler, limit)
                window = min(limit, BATCH)
                visited = model.scan(window)
                scan_end = visited[-1] + 1 if len(visited) == window else len(model.records)
                handled, done, end, delivered = 0, 0, scan_end, len(visited)
                for k, i in enumerate(visited):
                    action = actions[k] if k < len(actions) else ControlledAction.CONTINUE
                    if action == ControlledAction.ABORT:
                        end, delivered = (visited[k - 1] + 1 if k else 0), k + 1
                        break
                    handled += 1
                    if action == ControlledAction.BREAK:
                        end, delivered = i + 1, k + 1
                        break
                    if action == ControlledAction.COMMIT:
                        done = i + 1
                expected = [(model.records[i].type_id, model.records[i].payload) for i in visited[:delivered]]
                assert got == expected
                assert n == handled
                model.consume_until(max(end, done))
            # Invariants after every operation.
            assert ring.producer_position == model.tail
            assert ring.consumer_position == model.head
            assert ring.size() == model.tail - model.head
        # Everything still in the model comes out, in order.
        rest = []
        ring.read(lambda t, d: rest.append((t, bytes(d))))
        assert rest == model.messages()
        assert ring.size() == 0
    finally:
        ring.close()
        path.unlink()
