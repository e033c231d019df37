"""Codec micro benchmarks: encoding a 5-field message into a buffer and decoding it back
(header lookup + zero-copy view), next to the references measured in the same run: the same
fields read with one `struct.unpack_from` and written with one `struct.pack_into` (header
included) of the same buffer. Each timed call loops over 100 messages (reported per message),
so the timer's own cost does not swamp sub-microsecond figures. Targets (issue 15): decode +
two field reads <= 2x the unpack_from row; encode_into no slower than encode.

Run: pytest bench/test_bench_codec.py --benchmark-only   (see bench/README.md)
"""

from __future__ import annotations

import struct
import time

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
PRICE_QTY = struct.Struct("<qi")  # price and qty: adjacent in the block, 8 bytes after the header
PRICE_AT = codec.HEADER_LENGTH + 8
WHOLE = struct.Struct("<HHHHQqiB8s")  # header + the five fields, as NewOrder lays them out


def _per_message(benchmark, fn, count=LOOP):
    benchmark.extra_info["messages_per_call"] = count
    return benchmark(fn)


def _encode_into_loop(buffer):
    encode_into = NewOrder.encode_into

    def run():
        for _ in range(LOOP):
            encode_into(buffer, 64, order_id=123456789, price=-1050, qty=300, side=1, symbol=b"AAPL")
    return run


def _pack_into_loop(buffer):
    pack_into = WHOLE.pack_into
    b, t, s, v = NewOrder.block_length, NewOrder.template_id, NewOrder.schema_id, NewOrder.version

    def run():
        for _ in range(LOOP):
            pack_into(buffer, 64, b, t, s, v, 123456789, -1050, 300, 1, b"AAPL")
    return run


def _encode_loop():
    encode = NewOrder.encode

    def run():
        for _ in range(LOOP):
            encode(order_id=123456789, price=-1050, qty=300, side=1, symbol=b"AAPL")
    return run


def _read_two_loop(buffer):
    decode = REGISTRY.decode

    def run():
        for _ in range(LOOP):
            msg = decode(buffer)
            msg.price * msg.qty
    return run


def _unpack_two_loop(buffer):
    unpack_from = PRICE_QTY.unpack_from

    def run():
        for _ in range(LOOP):
            price, qty = unpack_from(buffer, PRICE_AT)
            price * qty
    return run


@pytest.mark.benchmark(group="codec encode")
def test_codec_encode_into(benchmark):
    """Header + 5 checked fields written in place into a memoryview (as into a claim)."""
    buffer = memoryview(bytearray(1024))
    _per_message(benchmark, _encode_into_loop(buffer))
    assert codec.decode(buffer, 64, registry=REGISTRY).to_dict() == FIELDS


@pytest.mark.benchmark(group="codec encode")
def test_codec_encode_reference_struct_pack_into(benchmark):
    """Reference: one struct.pack_into of the header and the same five values, same buffer."""
    buffer = memoryview(bytearray(1024))
    _per_message(benchmark, _pack_into_loop(buffer))
    assert codec.decode(buffer, 64, registry=REGISTRY).to_dict() == FIELDS


@pytest.mark.benchmark(group="codec encode")
def test_codec_encode_bytes(benchmark):
    """The same message encoded to a new bytes object."""
    _per_message(benchmark, _encode_loop())


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
    _per_message(benchmark, _read_two_loop(memoryview(bytearray(NewOrder.encode(**FIELDS)))))


@pytest.mark.benchmark(group="codec decode")
def test_codec_decode_reference_struct_unpack_from(benchmark):
    """Reference: the same two fields of the same buffer read with one struct.unpack_from."""
    buffer = memoryview(bytearray(NewOrder.encode(**FIELDS)))
    _per_message(benchmark, _unpack_two_loop(buffer))
    assert PRICE_QTY.unpack_from(buffer, PRICE_AT) == (FIELDS["price"], FIELDS["qty"])


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


@pytest.mark.benchmark(group="codec ratio")
def test_codec_ratios_same_run(benchmark, capsys):
    """Issue 15's codec figures, robust to a shared machine: each path and its struct reference
    (the loops of the rows above, same buffer) timed in alternating rounds of the same run, best
    of each, printed as ratios."""
    buffer = memoryview(bytearray(1024))
    NewOrder.encode_into(buffer, 0, **FIELDS)
    paths = {"decode + 2 fields": _read_two_loop(buffer), "struct.unpack_from of the 2": _unpack_two_loop(buffer),
             "encode_into": _encode_into_loop(buffer), "encode": _encode_loop(),
             "struct.pack_into of the 5": _pack_into_loop(buffer)}
    best = {name: float("inf") for name in paths}

    def rounds():
        for name, run in paths.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], (time.perf_counter() - start) / LOOP)

    benchmark.pedantic(rounds, rounds=200, iterations=1)
    ns = {name: t * 1e9 for name, t in best.items()}
    ratios = {"decode + 2 fields / unpack_from": ns["decode + 2 fields"] / ns["struct.unpack_from of the 2"],
              "encode_into / pack_into": ns["encode_into"] / ns["struct.pack_into of the 5"],
              "encode / pack_into": ns["encode"] / ns["struct.pack_into of the 5"],
              "encode_into / encode": ns["encode_into"] / ns["encode"]}
    benchmark.extra_info.update(ns_per_message=ns, ratios=ratios)
    with capsys.disabled():
        print("\ncodec, same run, best of 200 alternating rounds (ns/message): "
              + ", ".join(f"{k} {v:.0f}" for k, v in ns.items()))
        print("codec ratios: " + ", ".join(f"{k} = {v:.2f}x" for k, v in ratios.items())
              + "  (targets: decode + 2 fields <= 2x unpack_from; encode_into <= encode)")
