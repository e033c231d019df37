"""lockstep.codec: SBE-style message header + numpy structured blocks.

Round trips for every field type (property tests, floats compared bit for bit), the header's
exact bytes, every malformed input giving a CodecError (never another exception), SBE's
versioning rule (a decoder reads the fields it knows of a longer block), and value checks
on encode (nothing wraps or truncates silently)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lockstep import LockstepError
from lockstep import codec
from lockstep.codec import CodecError

SCALARS = ["i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f4", "f8", "?", "S1", "S8", "S13"]
ARRAYS = [("i8", (4,)), ("u1", (3,)), ("f4", (2, 3)), ("f8", (2,)), ("?", (5,)), ("S4", (2,)), ("i2", 3)]


def kind_of(spec: str) -> np.dtype:
    return np.dtype(spec)


# -- strategies: values of each field type, and their canonical (comparable) forms ---------


def int_values(dtype: np.dtype) -> st.SearchStrategy[int]:
    info = np.iinfo(dtype)
    return st.one_of(st.sampled_from([info.min, info.max, 0, info.min + 1, info.max - 1]),
                     st.integers(info.min, info.max))


def f8_values() -> st.SearchStrategy[float]:
    """Every float64 bit pattern: NaNs with payloads, infinities, -0.0, subnormals."""
    return st.integers(0, 2**64 - 1).map(lambda bits: struct.unpack("<d", struct.pack("<Q", bits))[0])


def f4_values() -> st.SearchStrategy:
    """Every float32 bit pattern as numpy.float32 (kept exactly, signalling NaNs too), and
    Python floats that fit a float32."""
    bits = st.integers(0, 2**32 - 1).map(lambda b: np.array([b], np.uint32).view(np.float32)[0])
    return st.one_of(bits, st.floats(width=32))


def scalar_values(spec: str) -> st.SearchStrategy:
    dtype = np.dtype(spec)
    if dtype.kind in "iu":
        return int_values(dtype)
    if spec == "f8":
        return f8_values()
    if spec == "f4":
        return f4_values()
    if spec == "?":
        return st.booleans()
    return st.binary(max_size=dtype.itemsize)


def array_values(spec: str, shape) -> st.SearchStrategy[np.ndarray]:
    dtype = np.dtype(spec).newbyteorder("<") if np.dtype(spec).itemsize > 1 and spec[0] != "S" else np.dtype(spec)
    shape = (shape,) if isinstance(shape, int) else shape
    if dtype.kind == "f":  # every bit pattern
        ubits = np.dtype(f"<u{dtype.itemsize}")
        return hnp.arrays(ubits, shape).map(lambda a: a.view(dtype))
    return hnp.arrays(dtype, shape)


def canonical_scalar(spec: str, value) -> object:
    """What a field holds after encoding `value`, in a form compared exactly (floats as bits)."""
    if spec == "f8":
        return struct.pack("<d", value)
    if spec == "f4":
        return value.tobytes() if isinstance(value, np.float32) else struct.pack("<f", value)
    if spec == "?":
        return bool(value)
    if spec.startswith("S"):
        return bytes(value).rstrip(b"\0")  # fixed char arrays are NUL padded, like SBE's
    return int(value)


def canonical_decoded(spec: str, value) -> object:
    if spec == "f8":
        return np.float64(value).tobytes()
    if spec == "f4":
        assert isinstance(value, np.float32)
        return value.tobytes()
    if spec == "?":
        return bool(value)
    if spec.startswith("S"):
        return bytes(value)
    return int(value)


def canonical_array(spec: str, value) -> bytes:
    dtype = np.dtype(spec)
    dtype = dtype.newbyteorder("<") if dtype.itemsize > 1 and dtype.kind != "S" else dtype
    return np.ascontiguousarray(value, dtype=dtype).tobytes()


def fname(spec: str, shape=None) -> str:
    base = "f_" + spec.replace("?", "bool")
    return base if shape is None else f"a_{base[2:]}_{'x'.join(map(str, np.atleast_1d(shape)))}"


# -- the types under test, in a registry of their own ------------------------------------------

REG = codec.Registry()
SCHEMA = codec.Schema(77, 3, name="test", registry=REG)
ALL_FIELDS = [(fname(s), s) for s in SCALARS] + [(fname(s, sh), s, sh) for s, sh in ARRAYS]
Everything = SCHEMA.message("Everything", 1, ALL_FIELDS)
SINGLE = {s: SCHEMA.message(f"One_{fname(s)}", 10 + i, [(fname(s), s)]) for i, s in enumerate(SCALARS)}
NewOrder = SCHEMA.message("NewOrder", 2, [("order_id", "u8"), ("price", "i8"), ("qty", "i4"), ("side", "u1"),
                                          ("symbol", "S8")])
Empty = SCHEMA.message("Heartbeat", 3, [])


@st.composite
def everything_values(draw) -> dict:
    values = {fname(s): draw(scalar_values(s)) for s in SCALARS}
    values.update({fname(s, sh): draw(array_values(s, sh)) for s, sh in ARRAYS})
    return values


def assert_everything(msg: codec.Message, values: dict) -> None:
    assert msg.type is Everything
    for s in SCALARS:
        assert canonical_decoded(s, msg[fname(s)]) == canonical_scalar(s, values[fname(s)]), s
    for s, sh in ARRAYS:
        got = getattr(msg, fname(s, sh))
        assert got.shape == ((sh,) if isinstance(sh, int) else sh)
        assert canonical_array(s, got) == canonical_array(s, values[fname(s, sh)]), (s, sh)


# -- layout ---------------------------------------------------------------------------------


def test_dtype_is_packed_little_endian_in_declaration_order():
    dt = Everything.dtype
    assert dt.names == tuple(f[0] for f in ALL_FIELDS)
    assert dt.itemsize == sum(f.size for f in Everything.fields) == Everything.block_length
    offset = 0
    for field in Everything.fields:
        assert dt.fields[field.name][1] == field.offset == offset
        offset += field.size
        assert field.dtype.byteorder in "<|"
    assert Everything.encoded_length == 8 + Everything.block_length
    assert NewOrder.block_length == 8 + 8 + 4 + 1 + 8


def test_header_bytes_are_sbe_message_header_literally():
    data = NewOrder.encode(order_id=1, price=-5, qty=10, side=1, symbol=b"AAPL")
    # uint16 block_length=29, template_id=2, schema_id=77, version=3, little endian
    assert data[:8] == b"\x1d\x00\x02\x00\x4d\x00\x03\x00"
    assert data == bytes.fromhex(
        "1d0002004d000300"          # header
        "0100000000000000"          # order_id u8 = 1
        "fbffffffffffffff"          # price i8 = -5
        "0a000000"                  # qty i4 = 10
        "01"                        # side u1 = 1
        "4141504c00000000")         # symbol S8 = b"AAPL", NUL padded
    assert codec.read_header(data) == codec.MessageHeader(29, 2, 77, 3)
    assert len(data) == NewOrder.encoded_length == 37


def test_default_schema_and_registry_path():
    t = codec.message("DefaultPathProbe", template_id=65001, fields=[("x", "i4")])
    assert t.schema is codec.DEFAULT_SCHEMA and t.schema_id == 0 and t.version == 0
    data = t.encode(x=-7)
    assert data[:8] == b"\x04\x00\xe9\xfd\x00\x00\x00\x00"
    msg = codec.decode(data)
    assert msg.type is t and msg.x == -7
    assert codec.describe(data) == "DefaultPathProbe{x=-7}"
    assert codec.REGISTRY.lookup(0, 65001) is t
    # declaring the identical type again (a module reload) is fine; a different one is not
    assert codec.message("DefaultPathProbe", template_id=65001, fields=[("x", "i4")]).dtype == t.dtype
    with pytest.raises(CodecError, match="already"):
        codec.message("Other", template_id=65001, fields=[("x", "i8")])


# -- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SCALARS)
@given(data=st.data())
def test_scalar_round_trip(spec, data):
    t = SINGLE[spec]
    value = data.draw(scalar_values(spec))
    encoded = t.encode(**{fname(spec): value})
    assert len(encoded) == t.encoded_length
    for msg in (t.decode(encoded), codec.decode(encoded, registry=REG), SCHEMA.decode(encoded)):
        assert msg.type is t
        got = getattr(msg, fname(spec))
        assert canonical_decoded(spec, got) == canonical_scalar(spec, value)
    assert encoded == t.encode(**{fname(spec): value})  # deterministic


@pytest.mark.parametrize("spec", [s for s in SCALARS if s[0] in "iu"])
def test_int_bounds_round_trip_and_one_past_them_fails(spec):
    t, info, name = SINGLE[spec], np.iinfo(spec), fname(spec)
    for v in (info.min, info.max):
        assert t.decode(t.encode(**{name: v}))[name] == v
        assert t.decode(t.encode(**{name: np.array(v, spec)[()]}))[name] == v  # numpy ints too
    for v in (info.min - 1, info.max + 1):
        with pytest.raises(CodecError) as e:
            t.encode(**{name: v})
        assert f"{t.name}.{name}" in str(e.value) and f"[{info.min}, {info.max}]" in str(e.value)
        assert f"found {v}" in str(e.value)


@given(values=everything_values())
@settings(max_examples=150)
def test_everything_round_trip(values):
    encoded = Everything.encode(**values)
    assert len(encoded) == Everything.encoded_length
    assert encoded[:8] == struct.pack("<4H", Everything.block_length, 1, 77, 3)
    assert_everything(Everything.decode(encoded), values)
    assert_everything(codec.decode(encoded, registry=REG), values)
    assert encoded == Everything.encode(**values)


@given(values=everything_values(), offset=st.integers(0, 64), slack=st.integers(0, 16),
       fill=st.integers(0, 255), kind=st.sampled_from(["bytearray", "memoryview", "numpy"]))
@settings(max_examples=150)
def test_encode_into_at_any_offset_writes_exactly_encode(values, offset, slack, fill, kind):
    size = offset + Everything.encoded_length + slack
    raw = bytearray([fill]) * size
    buffer = {"bytearray": raw, "memoryview": memoryview(raw),
              "numpy": np.frombuffer(raw, np.uint8)}[kind]
    n = Everything.encode_into(buffer, offset, **values)
    assert n == Everything.encoded_length
    # every byte of the region is written (dirty buffer or not), none outside it
    assert bytes(raw[offset:offset + n]) == Everything.encode(**values)
    assert raw[:offset] == bytearray([fill]) * offset
    assert raw[offset + n:] == bytearray([fill]) * slack
    assert_everything(Everything.decode(buffer, offset), values)
    assert_everything(codec.decode(raw, offset, registry=REG), values)


@given(values=st.lists(everything_values(), min_size=0, max_size=6), gaps=st.lists(st.integers(0, 40), min_size=7,
                                                                                    max_size=7))
@settings(max_examples=60)
def test_decode_array_matches_single_decodes(values, gaps):
    n = Everything.encoded_length
    buffer = np.zeros(sum(gaps) + n * len(values), np.uint8)
    offsets, pos = [], 0
    for i, v in enumerate(values):
        pos += gaps[i]
        offsets.append(pos)
        Everything.encode_into(buffer, pos, **v)
        pos += n
    arr = Everything.decode_array(buffer, np.array(offsets, np.int32), np.full(len(values), n, np.int32))
    assert arr.dtype == Everything.dtype and arr.shape == (len(values),)
    for row, off in zip(arr, offsets):
        assert row.tobytes() == Everything.decode(buffer, off).record.tobytes()


def test_message_view_api():
    buf = bytearray(NewOrder.encode(order_id=7, price=-1, qty=3, side=2, symbol=b"IBM"))
    msg = codec.decode(buf, registry=REG)
    assert (msg.type, msg.template_id, msg.schema_id, msg.version, msg.block_length) == (NewOrder, 2, 77, 3, 29)
    assert msg.encoded_length == 37
    assert msg.price == -1 and msg["symbol"] == b"IBM" and type(msg.qty) is int  # Python values: no silent wrap
    assert msg.record["qty"] == 3 and msg.record.dtype == NewOrder.dtype  # the numpy view, on demand
    assert msg.tobytes() == bytes(buf)
    assert msg.to_dict() == {"order_id": 7, "price": -1, "qty": 3, "side": 2, "symbol": b"IBM"}
    assert repr(msg) == "NewOrder{order_id=7, price=-1, qty=3, side=2, symbol=b'IBM'}"
    assert codec.describe(buf, registry=REG) == repr(msg)
    with pytest.raises(AttributeError, match="NewOrder has no field 'prize'"):
        msg.prize
    with pytest.raises(KeyError):
        msg["prize"]
    kept = msg.copy()
    NewOrder.encode_into(buf, 0, order_id=8, price=5, qty=4, side=1, symbol=b"X")
    assert msg.order_id == 8 and msg.price == 5 and msg.record["qty"] == 4  # reads the buffer: zero copy
    assert kept.order_id == 7 and kept.to_dict()["symbol"] == b"IBM" and kept.type is NewOrder
    msg.record["qty"] = 9  # the record is a writable view of a writable buffer
    assert msg.qty == 9 and buf[24:28] == b"\x09\x00\x00\x00"
    with pytest.raises(AttributeError):
        msg.price = 1


def test_field_value_types():
    values = {fname(s): 1 for s in SCALARS}
    values.update({fname(s): b"x" for s in SCALARS if s[0] == "S"})
    values.update({fname(s, sh): np.ones(sh, s) for s, sh in ARRAYS})
    values["f_f4"] = np.float32(1.5)
    msg = Everything.decode(Everything.encode(**values))
    for s in SCALARS:
        expected = {"f": float, "?": bool, "S": bytes}.get(s[0], int)
        expected = np.float32 if s == "f4" else expected
        assert type(msg[fname(s)]) is expected, s
    for s, sh in ARRAYS:
        assert isinstance(msg[fname(s, sh)], np.ndarray)
    d = msg.to_dict()
    assert type(d["f_f4"]) is float and d["f_f4"] == 1.5 and d["a_f4_2x3"] == [[1.0] * 3] * 2


def test_arrays_accept_lists_and_give_views():
    values = {fname(s): 0 for s in SCALARS}
    values.update({fname(s): b"" for s in SCALARS if s[0] == "S"})
    values["f_bool"] = False
    values.update({
        "a_i8_4": [1, -2, 3, -(2**63)], "a_u1_3": (255, 0, 1), "a_f4_2x3": [[1.5, 2, 3], [4, 5, np.inf]],
        "a_f8_2": [np.nan, -0.0], "a_bool_5": [True, False, 1, 0, True], "a_S4_2": [b"ab", b"abcd"],
        "a_i2_3": np.array([1, 2, 3], np.int64),
    })
    msg = Everything.decode(Everything.encode(**values))
    d = msg.to_dict()
    assert d["a_i8_4"] == [1, -2, 3, -(2**63)] and d["a_u1_3"] == [255, 0, 1]
    assert d["a_f4_2x3"] == [[1.5, 2.0, 3.0], [4.0, 5.0, float("inf")]]
    assert d["a_bool_5"] == [True, False, True, False, True] and d["a_S4_2"] == [b"ab", b"abcd"]
    assert isinstance(msg.a_i8_4, np.ndarray) and not msg.a_i8_4.flags.writeable  # view of read-only bytes


def test_empty_message():
    data = Empty.encode()
    assert data == b"\x00\x00\x03\x00\x4d\x00\x03\x00"
    msg = codec.decode(data, registry=REG)
    assert msg.type is Empty and msg.to_dict() == {} and repr(msg) == "Heartbeat{}"
    assert Empty.decode_array(data * 2, [0, 8]).shape == (2,)


# -- versions (SBE: read block_length bytes, use the fields you know) -----------------------------


def two_versions():
    old_reg, new_reg = codec.Registry(), codec.Registry()
    old = codec.Schema(9, 0, registry=old_reg).message("Quote", 5, [("bid", "i8"), ("ask", "i8")])
    new = codec.Schema(9, 1, registry=new_reg).message("Quote", 5, [("bid", "i8"), ("ask", "i8"),
                                                                      ("venue", "u2"), ("flags", "S3")])
    return old_reg, old, new_reg, new


def test_old_decoder_reads_newer_longer_block():
    old_reg, old, new_reg, new = two_versions()
    data = new.encode(bid=100, ask=101, venue=7, flags=b"xyz")
    assert codec.read_header(data) == (21, 5, 9, 1)
    for msg in (old.decode(data), codec.decode(data, registry=old_reg)):
        assert msg.type is old and msg.version == 1 and msg.block_length == 21
        assert msg.to_dict() == {"bid": 100, "ask": 101}
        assert msg.encoded_length == len(data)
    # several in a row: the next message starts after the *header's* block length
    stream = data + old.encode(bid=1, ask=2) + data
    first = codec.decode(stream, registry=old_reg)
    second = codec.decode(stream, first.encoded_length, registry=old_reg)
    assert second.version == 0 and second.to_dict() == {"bid": 1, "ask": 2}
    third = codec.decode(stream, first.encoded_length + second.encoded_length, registry=old_reg)
    assert third.to_dict() == {"bid": 100, "ask": 101}
    arr = old.decode_array(stream, [0, 29, 53])
    assert arr["bid"].tolist() == [100, 1, 100]


def test_new_decoder_rejects_older_shorter_block():
    old_reg, old, new_reg, new = two_versions()
    data = old.encode(bid=1, ask=2)
    with pytest.raises(CodecError, match=r"Quote: block length 16 \(version 0\) .* shorter than the 21 bytes"):
        codec.decode(data, registry=new_reg)
    with pytest.raises(CodecError, match="shorter"):
        new.decode(data)


@given(extra=st.binary(max_size=300), values=st.tuples(st.integers(-(2**63), 2**63 - 1),
                                                        st.integers(-(2**63), 2**63 - 1)))
def test_any_trailing_block_bytes_are_skipped(extra, values):
    _, old, _, _ = two_versions()
    block = struct.pack("<qq", *values) + extra
    assume(len(block) <= 0xFFFF)
    data = struct.pack("<4H", len(block), 5, 9, 4) + block
    msg = old.decode(data)
    assert (msg.bid, msg.ask) == values and msg.block_length == len(block) and msg.version == 4


# -- malformed input ----------------------------------------------------------------------------


@pytest.mark.parametrize("n", range(8))
def test_short_header(n):
    with pytest.raises(CodecError, match="too short for the 8-byte message header"):
        codec.decode(bytes(n), registry=REG)
    with pytest.raises(CodecError, match="too short"):
        NewOrder.decode(b"\x1d\x00\x02\x00\x4d\x00\x03\x00"[:n])


def test_header_errors_name_what_is_wrong():
    good = NewOrder.encode(order_id=1, price=2, qty=3, side=4, symbol=b"S")
    with pytest.raises(CodecError, match=r"unknown template id 99 in schema 77 'test' at offset 0; known templates: 1 "
                                         r"Everything, 2 NewOrder"):
        codec.decode(struct.pack("<4H", 29, 99, 77, 3) + good[8:], registry=REG)
    with pytest.raises(CodecError, match=r"unknown schema id 78 \(template 2\) at offset 0; known schemas: 77 'test'"):
        codec.decode(struct.pack("<4H", 29, 2, 78, 3) + good[8:], registry=REG)
    with pytest.raises(CodecError, match=r"wrong schema id 78 at offset 0, expected 77"):
        SCHEMA.decode(struct.pack("<4H", 29, 2, 78, 3) + good[8:])
    with pytest.raises(CodecError, match=r"expected NewOrder \(schema 77, template 2\) at offset 0, found schema 77, "
                                         r"template 3"):
        NewOrder.decode(Empty.encode())
    with pytest.raises(CodecError, match=r"NewOrder: truncated: header at offset 0 says 29-byte block, buffer has 28"):
        codec.decode(good[:-1], registry=REG)
    with pytest.raises(CodecError, match=r"NewOrder: block length 28 \(version 3\) at offset 0 is shorter than the 29"):
        codec.decode(struct.pack("<4H", 28, 2, 77, 3) + good[8:], registry=REG)
    with pytest.raises(CodecError, match="offset must be >= 0"):
        codec.decode(good, -1, registry=REG)
    with pytest.raises(CodecError, match="too short"):
        codec.decode(good, 30, registry=REG)
    with pytest.raises(CodecError, match="no template 42"):
        SCHEMA[42]
    with pytest.raises(CodecError, match="unknown template id 2 in schema 9"):
        REG_9 = codec.Registry()
        codec.Schema(9, registry=REG_9)
        REG_9.lookup(9, 2)
    assert issubclass(CodecError, LockstepError)


@pytest.mark.parametrize("buffer", [
    "not bytes", 12, None, memoryview(bytes(64))[::2], np.zeros((8, 8), np.uint8)[:, :4],
])
def test_decode_of_non_buffers(buffer):
    with pytest.raises(CodecError, match="not a contiguous bytes-like buffer"):
        codec.decode(buffer, registry=REG)


def test_decode_of_other_buffer_kinds():
    data = NewOrder.encode(order_id=1, price=2, qty=3, side=4, symbol=b"S")
    padded = data + bytes(3)  # 40 bytes: a whole number of int32s / 2-D rows
    for buffer in (memoryview(data), np.frombuffer(data, np.uint8), np.frombuffer(padded, np.int32),
                   np.frombuffer(padded, np.uint8).reshape(5, 8), memoryview(padded).cast("I")):
        assert codec.decode(buffer, registry=REG).to_dict()["qty"] == 3


@given(data=st.binary(max_size=200), offset=st.integers(-3, 210))
@settings(max_examples=300)
@example(data=b"\x1d\x00\x02\x00\x4d\x00\x03\x00", offset=0)
@example(data=b"\xff\xff\x01\x00\x4d\x00\x00\x00" + bytes(100), offset=0)
def test_random_bytes_decode_or_codec_error(data, offset):
    _decode_anything(data, offset)


@given(tid=st.sampled_from([1, 2, 3, 4, 10, 21]), sid=st.sampled_from([77, 76, 0]), version=st.integers(0, 0xFFFF),
       block_length=st.one_of(st.integers(0, 400), st.integers(0, 0xFFFF)), body=st.binary(max_size=400),
       prefix=st.binary(max_size=9))
@settings(max_examples=300)
def test_plausible_headers_decode_or_codec_error(tid, sid, version, block_length, body, prefix):
    data = prefix + struct.pack("<4H", block_length, tid, sid, version) + body
    _decode_anything(data, len(prefix))
    _decode_anything(bytearray(data), len(prefix))
    _decode_anything(np.frombuffer(data, np.uint8), len(prefix))


def _decode_anything(data, offset) -> None:
    for decode in (lambda: codec.decode(data, offset, registry=REG), lambda: codec.decode(data, offset),
                   lambda: NewOrder.decode(data, offset), lambda: SCHEMA.decode(data, offset),
                   lambda: Everything.decode_array(data, [offset])):
        try:
            msg = decode()
        except CodecError as e:
            assert str(e)
            continue
        if isinstance(msg, codec.Message):
            assert msg.encoded_length <= len(data) - offset
            repr(msg)
            msg.to_dict()
            codec.describe(data, offset, registry=REG) if msg.type.schema is SCHEMA else None


# -- encode checks --------------------------------------------------------------------------------


def order(**changes):
    values = dict(order_id=1, price=2, qty=3, side=4, symbol=b"ABC")
    values.update(changes)
    return values


@pytest.mark.parametrize("changes, expected", [
    (dict(qty=2**31), r"NewOrder.qty: expected int32 in \[-2147483648, 2147483647\], found 2147483648 \(int\)"),
    (dict(side=-1), r"NewOrder.side: expected uint8 in \[0, 255\], found -1"),
    (dict(order_id=2**64), r"NewOrder.order_id: expected uint64"),
    (dict(price=np.uint64(2**64 - 1)), r"NewOrder.price: expected int64 .* found np.uint64\(18446744073709551615\)"),
    (dict(qty=3.0), r"NewOrder.qty: expected int32 .* found 3.0 \(float\)"),
    (dict(qty="3"), r"NewOrder.qty: expected int32 .* found '3' \(str\)"),
    (dict(symbol="ABC"), r"NewOrder.symbol: expected bytes of at most 8, found 'ABC' \(str\)"),
    (dict(symbol=b"ABCDEFGHI"), r"NewOrder.symbol: expected bytes of at most 8, found b'ABCDEFGHI'"),
])
def test_encode_bad_values(changes, expected):
    with pytest.raises(CodecError, match=expected):
        NewOrder.encode(**order(**changes))
    raw = bytearray(b"\xee" * 50)
    with pytest.raises(CodecError, match=expected):
        NewOrder.encode_into(raw, 5, **order(**changes))
    # nothing that decodes is left behind; bytes outside the region are untouched
    assert raw[:5] == b"\xee" * 5 and raw[42:] == b"\xee" * 8
    assert raw[5:42] in (b"\xee" * 37, bytes(37))
    with pytest.raises(CodecError):
        codec.decode(raw, 5, registry=REG)


def test_encode_bad_values_other_types():
    t = SCHEMA.message("Checks", 50, [("f", "f4"), ("d", "f8"), ("b", "?"), ("a", "i1", 2), ("fa", "f4", 2)])
    ok = dict(f=1.0, d=2.0, b=True, a=[1, 2], fa=[1.0, 2.0])
    t.encode(**ok)
    for changes, expected in [
        (dict(f=1e39), r"Checks.f: expected float32, found 1e\+39"),
        (dict(f="x"), r"Checks.f: expected float32"),
        (dict(d=10**400), r"Checks.d: expected float64"),
        (dict(d=None), r"Checks.d: expected float64, found None"),
        (dict(b=2), r"Checks.b: expected bool, found 2"),
        (dict(b=0.5), r"Checks.b: expected bool"),
        (dict(a=[1, 2, 3]), r"Checks.a: expected shape \(2,\), found \(3,\)"),
        (dict(a=[1, 128]), r"Checks.a: expected array of shape \(2,\) of int8 in \[-128, 127\]"),
        (dict(a=[1.0, 2.0]), r"Checks.a: expected array of shape \(2,\) of int8"),
        (dict(fa=[1e39, 0]), r"Checks.fa: expected array of shape \(2,\) of float32"),
    ]:
        with pytest.raises(CodecError, match=expected):
            t.encode(**{**ok, **changes})
    assert t.decode(t.encode(**{**ok, "b": 1, "d": 3})).to_dict() == {**ok, "b": True, "d": 3.0}


def test_encode_unknown_and_missing_fields():
    with pytest.raises(CodecError, match=r"NewOrder: unknown field prize; missing field price \(fields are order_id, "
                                         r"price, qty, side, symbol\)"):
        NewOrder.encode(order_id=1, prize=2, qty=3, side=4, symbol=b"")
    with pytest.raises(CodecError, match=r"NewOrder: unknown fields a, b"):
        NewOrder.encode(**order(), a=1, b=2)
    with pytest.raises(CodecError, match=r"missing fields qty, symbol"):
        NewOrder.encode_into(bytearray(64), 0, order_id=1, price=2, side=3)


def test_encode_into_bad_buffers():
    with pytest.raises(CodecError, match=r"NewOrder: buffer is read-only \(bytes\)"):
        NewOrder.encode_into(bytes(64), 0, **order())
    with pytest.raises(CodecError, match=r"buffer too small: needs 37 bytes at offset 10, has 30"):
        NewOrder.encode_into(bytearray(40), 10, **order())
    with pytest.raises(CodecError, match=r"buffer too small: needs 37 bytes at offset 0, has 36"):
        NewOrder.encode_into(np.zeros(36, np.uint8), 0, **order())
    with pytest.raises(CodecError, match="offset must be >= 0"):
        NewOrder.encode_into(bytearray(64), -1, **order())
    with pytest.raises(CodecError, match="writable bytes-like"):
        NewOrder.encode_into([0] * 64, 0, **order())
    with pytest.raises(CodecError, match="not contiguous"):
        NewOrder.encode_into(np.zeros((64, 2), np.uint8)[:, 0], 0, **order())


# -- declarations --------------------------------------------------------------------------------


@pytest.mark.parametrize("fields, expected", [
    ([("x", "U4")], r"T.x: unsupported type 'U4'"),
    ([("x", "c16")], r"unsupported type"),
    ([("x", "f2")], r"unsupported type"),
    ([("x", object)], r"unsupported type"),
    ([("x", "M8[ns]")], r"unsupported type"),
    ([("x", ">i4")], r"T.x: fields are little endian"),
    ([("x", "not a type")], r"T.x: not a numpy type"),
    ([("type", "i4")], r"field name 'type' is reserved"),
    ([("offset", "i4")], r"reserved"),
    ([("_x", "i4")], r"identifier not starting with '_'"),
    ([("class", "i4")], r"identifier"),
    ([("x", "i4"), ("x", "i8")], r"field 'x' declared twice"),
    ([("x", "i4", 0)], r"every dimension of shape must be >= 1"),
    ([("x", "i4", "3")], r"shape must be an int or a tuple of ints"),
    ([("x",)], r"a field is \(name, type\) or \(name, type, shape\)"),
    ([("x", "u1", 70000)], r"block of 70000 bytes exceeds"),
])
def test_bad_declarations(fields, expected):
    schema = codec.Schema(5, registry=None)
    with pytest.raises(CodecError, match=expected):
        schema.message("T", 1, fields)


def test_bad_ids_and_clashes():
    with pytest.raises(CodecError, match=r"T: template_id must be an int in \[0, 65535\], found 65536"):
        codec.Schema(5, registry=None).message("T", 65536, [("x", "i4")])
    with pytest.raises(CodecError, match="schema_id must be"):
        codec.Schema(-1, registry=None)
    with pytest.raises(CodecError, match="message name must be an identifier"):
        codec.Schema(5, registry=None).message("not a name", 1, [])
    reg = codec.Registry()
    codec.Schema(5, 0, name="a", registry=reg)
    with pytest.raises(CodecError, match=r"schema id 5 is already registered as Schema\(5, version=0, name='a'\)"):
        codec.Schema(5, 1, name="a", registry=reg)
    s = codec.Schema(6, registry=reg)
    s.message("A", 1, [("x", "i4")])
    with pytest.raises(CodecError, match="template 1 of schema 6 is already"):
        s.message("B", 1, [("x", "i4")])
    assert [t.name for t in reg] == ["A"] and (6, 1) in reg and len(reg) == 1


def test_numpy_type_objects_and_native_order_accepted():
    t = codec.Schema(5, registry=None).message("T", 1, [("a", np.int32), ("b", "=u2"), ("c", np.dtype("<f8")),
                                                       ("d", "(2,)i2"), ("e", bool), ("f", "int64", (2, 2))])
    assert t.dtype == np.dtype([("a", "<i4"), ("b", "<u2"), ("c", "<f8"), ("d", "<i2", (2,)), ("e", "?"),
                                ("f", "<i8", (2, 2))])
    assert [f.shape for f in t.fields] == [(), (), (), (2,), (), (2, 2)]
