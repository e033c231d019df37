"""lockstep.codec's C paths (codec_fast.c): field reads, decode and the encoders give exactly what
struct gives for the same bytes, in every kind of buffer, and hand everything they do not
handle to the Python implementation (the same CodecErrors, no partly written message, no read
of memory a buffer no longer has)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lockstep import codec
from lockstep.codec import CodecError

REG = codec.Registry()
SCHEMA = codec.Schema(91, 2, name="fast", registry=REG)
SCALARS = [("u1", "B"), ("u2", "H"), ("u4", "I"), ("u8", "Q"), ("i1", "b"), ("i2", "h"), ("i4", "i"),
           ("i8", "q"), ("f8", "d"), ("b", "?"), ("s", "5s"), ("f4", "f")]
Scalars = SCHEMA.message("Scalars", 1, [(name, "?" if name == "b" else "S5" if name == "s" else name)
                                        for name, _ in SCALARS])
LAYOUT = struct.Struct("<" + "".join(code for _, code in SCALARS))
Order = SCHEMA.message("Order", 2, [("order_id", "u8"), ("price", "i8"), ("qty", "i4"), ("symbol", "S8")])
ORDER = dict(order_id=7, price=-5, qty=3, symbol=b"IBM")


def buffers(data: bytes) -> list:
    """The same bytes as each kind of buffer users decode."""
    return [data, bytearray(data), memoryview(data), memoryview(bytearray(data)), np.frombuffer(data, np.uint8)]


@given(block=st.binary(min_size=LAYOUT.size, max_size=LAYOUT.size), prefix=st.integers(0, 9))
@settings(max_examples=200)
def test_field_reads_equal_struct_of_the_same_bytes(block, prefix):
    data = bytes(prefix) + struct.pack("<4H", Scalars.block_length, 1, 91, 2) + block
    expected = LAYOUT.unpack(block)
    for buffer in buffers(data):
        for decode in (lambda: codec.decode(buffer, prefix, registry=REG), lambda: Scalars.decode(buffer, prefix),
                       lambda: SCHEMA.decode(buffer, prefix)):
            msg = decode()
            for (name, _), want in zip(SCALARS, expected):
                got = msg[name]
                want = want.rstrip(b"\0") if name == "s" else want
                if name == "f4":  # an exact numpy.float32 (to_dict: a float)
                    assert type(got) is np.float32 and got.tobytes() == block[-4:]  # (the last field)
                    continue
                assert type(got) is type(want) and (got == want or (got != got and want != want)), name
                assert struct.pack("<d", got) == struct.pack("<d", want) if name == "f8" else True
            assert repr(msg.to_dict()) == repr(Scalars._to_dict(buffer, prefix))  # C to_dict == the struct one


@given(values=st.fixed_dictionaries({
    "u1": st.integers(0, 255), "u2": st.integers(0, 2**16 - 1), "u4": st.integers(0, 2**32 - 1),
    "u8": st.integers(0, 2**64 - 1), "i1": st.integers(-128, 127), "i2": st.integers(-2**15, 2**15 - 1),
    "i4": st.integers(-2**31, 2**31 - 1), "i8": st.integers(-2**63, 2**63 - 1),
    "f8": st.floats(allow_nan=False) | st.integers(-2**53, 2**53), "b": st.booleans(),
    "s": st.binary(max_size=5), "f4": st.floats(width=32)}), offset=st.integers(0, 12))
@settings(max_examples=200)
def test_encoders_write_what_struct_writes(values, offset):
    expected = struct.pack("<4H", Scalars.block_length, 1, 91, 2) + LAYOUT.pack(*[values[n] for n, _ in SCALARS])
    assert Scalars.encode(**values) == expected
    out = bytearray(b"\xee" * (offset + len(expected) + 3))
    assert Scalars.encode_into(out, offset, **dict(reversed(values.items()))) == len(expected)  # any order
    assert out[offset:offset + len(expected)] == expected and out[:offset] == b"\xee" * offset
    assert out[offset + len(expected):] == b"\xee" * 3


def test_keywords_by_any_name_object_and_values_the_c_path_hands_on():
    names = {"".join(list(k)): v for k, v in ORDER.items()}  # keys that are not the interned names
    assert Order.encode(**names) == Order.encode(**ORDER)
    numpy_values = dict(ORDER, order_id=np.uint64(2**64 - 1), qty=np.int32(-4), symbol=bytearray(b"AB"))
    out = bytearray(40)
    assert Order.encode_into(out, np.int64(2), **numpy_values) == Order.encoded_length
    assert Order.decode(out, 2).to_dict() == dict(ORDER, order_id=2**64 - 1, qty=-4, symbol=b"AB")
    with pytest.raises(CodecError, match="unknown field prize; missing field price"):
        Order.encode_into(out, 0, **{k: v for k, v in ORDER.items() if k != "price"}, prize=1)
    with pytest.raises(CodecError, match="missing field qty"):
        Order.encode(order_id=1, price=2, symbol=b"")
    with pytest.raises(CodecError, match="buffer is read-only"):
        Order.encode_into(bytes(40), 0, **ORDER)
    with pytest.raises(CodecError, match="buffer too small"):
        Order.encode_into(bytearray(40), 10, **ORDER)


@pytest.mark.parametrize("changes", [dict(qty=2**31), dict(order_id=-1), dict(price=2**63), dict(qty=1.5),
                                     dict(symbol=b"123456789"), dict(symbol="IBM")])
def test_a_value_refused_part_way_leaves_no_message(changes):
    out = bytearray(b"\xee" * 40)
    Order.encode_into(out, 0, **dict(ORDER, order_id=1))
    before = bytes(out)
    with pytest.raises(CodecError, match="Order."):
        Order.encode_into(out, 0, **dict(ORDER, **changes))
    n = Order.encoded_length
    assert out[:n] in (before[:n], bytes(n)) and out[n:] == before[n:]  # the old message or none: no mix


def test_a_released_view_is_never_read():
    data = bytearray(Order.encode(**ORDER))
    view = memoryview(data)
    msg = Order.decode(view)
    assert msg.price == -5
    view.release()  # as a handler's view is after the call
    with pytest.raises(ValueError, match="released"):
        msg.price
    with pytest.raises(CodecError, match="not a contiguous bytes-like buffer"):
        Order.decode(view)
    assert msg.copy  # the object itself stays usable


def test_a_buffer_that_shrank_is_not_read_past_its_end():
    data = bytearray(Order.encode(**ORDER))
    msg = codec.decode(data, registry=REG)
    del data[10:]
    with pytest.raises((CodecError, struct.error)):
        msg.symbol


def test_the_flyweight_reads_the_buffer_on_each_access_and_is_read_only():
    data = bytearray(Order.encode(**ORDER))
    msg = Order.decode(data)
    Order.encode_into(data, 0, **dict(ORDER, price=99))
    assert msg.price == 99 and type(msg.price) is int
    with pytest.raises(AttributeError):
        msg.price = 1
    with pytest.raises(AttributeError, match="Order has no field 'prize'"):
        msg.prize
    with pytest.raises(AttributeError):
        msg.type = None
    kept = msg.copy()
    data[:] = bytes(len(data))
    assert kept.price == 99 and kept.to_dict()["symbol"] == b"IBM" and isinstance(kept, codec.Message)


def test_decode_follows_the_registry_when_a_type_is_declared_again():
    registry = codec.Registry()
    first = codec.Schema(5, 0, name="again", registry=registry).message("Ping", 1, [("n", "u4")])
    data = first.encode(n=1)
    assert registry.decode(data).type is first  # (found, and kept for the next decode)
    second = codec.Schema(5, 0, name="again", registry=registry).message("Ping", 1, [("n", "u4")])
    assert registry.decode(data).type is second and registry.decode(data).n == 1  # the registry's type now
    other = codec.Schema(5, 0, name="again", registry=registry).message("Pong", 2, [("m", "i2")])
    assert registry.decode(other.encode(m=-2)).m == -2 and registry.decode(data).type is second
    with pytest.raises(CodecError, match="unknown template id 3"):
        registry.decode(struct.pack("<4H", 0, 3, 5, 0))
