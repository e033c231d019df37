"""Codec micro benchmarks: encoding a 5-field message into a buffer and decoding it back
(header lookup + zero-copy view), next to the floor (an empty cffi call) measured in the
same run. Each timed call loops over 100 messages (reported per message), so the timer's
own cost does not swamp sub-microsecond figures.

Run: pytest bench/test_bench_codec.py --benchmark-only   (see bench/README.md)
"""

from __future__ import annotations

import numpy as np
import pytest

from lockstep import codec

REGISTRY = codec.Registry()
SCHEMA = codec.Schema(1, 0, name="bench", registry=REGISTRY)
NewOrder = SCHEMA.message("NewOrder", 1, [("order_id", "u8"), ("price", "i8"), ("qty", "i4"), ("side", "u1"),
                                          ("symbol", "S8")])
FIELDS = dict(order_id=123456789, price=-1050, qty=300, side=1, symbol=b"AAPL")
LOOP = 100
BATCH = 256


def _per_message(benchmark, fn, count=LOOP):
    benchmark.extra_info["messages_per_call"] = count
    return benchmark(fn)


@pytest.mark.benchmark(group="codec encode")
def test_codec_encode_into(benchmark):
    """Header + 5 checked fields written in place into a memoryview (as into a claim)."""
    buffer = memoryview(bytearray(1024))
    encode_into = NewOrder.encode_into

    def run():
        for _ in range(LOOP):
            encode_into(buffer, 64, order_id=123456789, price=-1050, qty=300, side=1, symbol=b"AAPL")

    _per_message(benchmark, run)
    assert codec.decode(buffer, 64, registry=REGISTRY).to_dict() == FIELDS


@pytest.mark.benchmark(group="codec encode")
def test_codec_encode_bytes(benchmark):
    """The same message encoded to a new bytes object."""
    encode = NewOrder.encode

    def run():
        for _ in range(LOOP):
            encode(order_id=123456789, price=-1050, qty=300, side=1, symbol=b"AAPL")

    _per_message(benchmark, run)


@pytest.mark.benchmark(group="codec decode")
def test_codec_decode_registry(benchmark):
    """codec.decode: header read, (schema, template) lookup, checks, zero-copy view."""
    buffer = memoryview(bytearray(NewOrder.encode(**FIELDS)))
    decode = REGISTRY.decode

    def run():
        for _ in range(LOOP):
            decode(buffer)

    _per_message(benchmark, run)
    assert decode(buffer).type is NewOrder


@pytest.mark.benchmark(group="codec decode")
def test_codec_decode_typed(benchmark):
    """NewOrder.decode: the same, checking the header names NewOrder."""
    buffer = memoryview(bytearray(NewOrder.encode(**FIELDS)))
    decode = NewOrder.decode

    def run():
        for _ in range(LOOP):
            decode(buffer)

    _per_message(benchmark, run)


@pytest.mark.benchmark(group="codec decode")
def test_codec_decode_and_read_two_fields(benchmark):
    """Decode, then read two fields, as a handler would."""
    buffer = memoryview(bytearray(NewOrder.encode(**FIELDS)))
    decode = REGISTRY.decode

    def run():
        for _ in range(LOOP):
            msg = decode(buffer)
            msg.price * msg.qty

    _per_message(benchmark, run)


@pytest.mark.benchmark(group="codec decode")
def test_codec_decode_to_dict(benchmark):
    """Decode and convert every field to Python values."""
    buffer = memoryview(bytearray(NewOrder.encode(**FIELDS)))
    decode = REGISTRY.decode

    def run():
        for _ in range(LOOP):
            decode(buffer).to_dict()

    _per_message(benchmark, run)
    assert decode(buffer).to_dict() == FIELDS


@pytest.mark.benchmark(group="codec decode")
def test_codec_decode_array_256(benchmark):
    """decode_array: 256 messages at 64-byte strides (a log batch) into one structured array."""
    buffer = np.zeros(BATCH * 64, np.uint8)
    for i in range(BATCH):
        NewOrder.encode_into(buffer, i * 64, **FIELDS)
    offsets = np.arange(BATCH, dtype=np.int32) * 64
    lengths = np.full(BATCH, NewOrder.encoded_length, np.int32)
    benchmark.extra_info["messages_per_call"] = BATCH
    arr = benchmark(NewOrder.decode_array, buffer, offsets, lengths)
    assert arr.shape == (BATCH,) and (arr["qty"] == 300).all()
