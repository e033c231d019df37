"""Fixed-layout messages: numpy structured dtypes behind SBE's 8-byte message header.

A message is the standard SBE ``messageHeader`` (little endian ``uint16 block_length,
uint16 template_id, uint16 schema_id, uint16 version``) followed by a block of
``block_length`` bytes holding the fields, packed, little endian, in declaration order::

    from lockstep import codec

    NewOrder = codec.message("NewOrder", template_id=1, fields=[
        ("order_id", "u8"), ("price", "i8"), ("qty", "i4"), ("side", "u1"),
        ("symbol", "S8"), ("levels", "i8", (4,)),
    ])
    data = NewOrder.encode(order_id=1, price=-5, qty=10, side=1, symbol=b"AAPL", levels=[1, 2, 3, 4])
    n = NewOrder.encode_into(claim.buffer, 0, order_id=1, ...)   # zero copy, returns bytes written
    msg = codec.decode(data)              # any registered type, found by its header
    msg.type is NewOrder, msg.price       # -5: read from `data` on access, nothing copied
    msg.record                            # the same block as a numpy structured scalar (a view)
    NewOrder.decode_array(buf, offsets)   # many messages -> one structured array
    codec.describe(data)                  # "NewOrder{order_id=1, price=-5, ...}"

Types belong to a `Schema` (schema id + version); schemas register their types in a
`Registry` (by default the module's `REGISTRY`) that maps (schema_id, template_id) to the
type, so tools can decode any message. `DEFAULT_SCHEMA` (id 0) is for users who do not care.

Versioning follows SBE: a decoder reads the fields it knows and skips the rest of a longer
block (a newer version that appended fields); a block shorter than its known fields is an
error. Encoding is deterministic: every byte of the written region is set, byte strings are
NUL padded, and values are checked (never silently wrapped or truncated).
"""

from __future__ import annotations

import keyword
import operator
import struct
from dataclasses import dataclass
from types import MethodType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, NamedTuple, Sequence, Union

import numpy as np

from ._native import fast_method
from ._native._fastpath import Decoder, Encoder, FieldReader, MessageBase
from .errors import CodecError

__all__ = [
    "DEFAULT_SCHEMA", "HEADER_LENGTH", "REGISTRY", "CodecError", "Field", "Message", "MessageHeader",
    "MessageType", "Registry", "Schema", "decode", "describe", "message", "read_header",
]

HEADER_LENGTH = 8
"""Bytes of the SBE message header in front of every block."""

_HEADER = struct.Struct("<HHHH")
_U16_MAX = 0xFFFF
_F4 = struct.Struct("<f")

# Names a field may not take: the attributes of `Message` and the arguments of encode_into.
_RESERVED = frozenset({
    "type", "record", "version", "block_length", "template_id", "schema_id", "to_dict", "copy",
    "buffer", "offset", "encoded_length", "tobytes",
})

_INT_CODES = {("i", 1): "b", ("i", 2): "h", ("i", 4): "i", ("i", 8): "q",
              ("u", 1): "B", ("u", 2): "H", ("u", 4): "I", ("u", 8): "Q"}

# The C readers' and encoders' field kinds (codec_fast.c's enum codec_kind), by (dtype kind, size).
_FAST_KINDS = {("u", 1): 0, ("u", 2): 1, ("u", 4): 2, ("u", 8): 3, ("i", 1): 4, ("i", 2): 5, ("i", 4): 6,
               ("i", 8): 7, ("f", 4): 8, ("f", 8): 9, ("b", 1): 10}
_FAST_BYTES = 11

FieldSpec = Union[tuple[str, Any], tuple[str, Any, Union[int, Sequence[int]]]]


class MessageHeader(NamedTuple):
    """The 8-byte SBE message header in front of every block."""

    block_length: int
    template_id: int
    schema_id: int
    version: int


def read_header(buffer: Any, offset: int = 0) -> MessageHeader:
    """The message header at `offset` of `buffer` (for tools that route by header)."""
    view, size = _byte_view(buffer)
    return MessageHeader(*_read_header(view, size, offset))


@dataclass(frozen=True)
class Field:
    """One field of a message block: its name, little-endian numpy dtype of one element,
    shape (``()`` for a scalar) and byte offset within the block."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int

    @property
    def size(self) -> int:
        """Bytes the field takes in the block."""
        return self.dtype.itemsize * int(np.prod(self.shape, dtype=np.int64))

    def describe_type(self) -> str:
        """The field's type as a user reads it, e.g. ``int32 in [-2147483648, 2147483647]``."""
        base = _type_name(self.dtype)
        return base if not self.shape else f"array of shape {self.shape} of {base}"


class Message(MessageBase):
    """A decoded message: reads its fields straight from the buffer it was decoded from.

    Fields read as attributes (``msg.price``) or items (``msg["price"]``): ints, floats,
    bools and bytes (trailing NULs stripped, as SBE pads fixed char arrays) as Python
    values; float32 fields as exact ``numpy.float32``; array fields as numpy views. Nothing
    is copied, so a message is only valid while its buffer is (a handler's buffer: only
    inside the call); keep `copy()` or `to_dict()` beyond that.

    A flyweight (`_fastpath.MessageBase`: type, buffer, offset, version, block_length): each
    scalar field of a type's class is a C descriptor reading its bytes at a fixed offset."""

    __slots__ = ()
    type: MessageType

    @property
    def template_id(self) -> int:
        return self.type.template_id

    @property
    def schema_id(self) -> int:
        return self.type.schema_id

    @property
    def encoded_length(self) -> int:
        """Bytes of the message in its buffer: header + the header's block length."""
        return HEADER_LENGTH + self.block_length

    @property
    def record(self) -> np.void:
        """The known fields as a numpy structured scalar: a writable view when the buffer is."""
        try:
            return self._record
        except AttributeError:  # first use
            self._record = np.ndarray((), self.type.dtype, self._buffer, self._offset + HEADER_LENGTH)[()]
            return self._record

    if TYPE_CHECKING:  # fields are the type's own (MessageBase says which are not there)
        def __getattr__(self, name: str) -> Any: ...

    def __getitem__(self, name: str) -> Any:
        if name not in self.type._field_set:
            raise KeyError(f"{self.type.name} has no field {name!r}")
        return getattr(self, name)

    # to_dict(): MessageBase's, in C (its class's `_readers`), else the type's generated one.

    def tobytes(self) -> bytes:
        """The message as it is in the buffer: header + the header's block (unknown fields too)."""
        view = memoryview(self._buffer)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        return bytes(view[self._offset:self._offset + HEADER_LENGTH + self.block_length])

    def copy(self) -> Message:
        """The same message in memory of its own, detached from the buffer."""
        return type(self)(self.type, self.tobytes(), 0, self.version, self.block_length)

    def __repr__(self) -> str:
        return self.type.name + "{" + ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items()) + "}"


_PACK_ERRORS = (struct.error, OverflowError, TypeError, ValueError, BufferError)


class MessageType:
    """One message type of a schema: a name, template id, version and packed block layout.

    Made by `Schema.message` (or `message`); encodes keyword fields and decodes views."""

    # The C entries of encode, encode_into and decode (see `fast_method`), set in __init__.
    __slots__ = ("_encode_fast", "_encode_into_fast", "_decode_fast", "__dict__", "__weakref__")

    def __init__(self, name: str, template_id: int, fields: Iterable[FieldSpec], schema: Schema,
                 version: int) -> None:
        if not isinstance(name, str) or not name.isidentifier():
            raise CodecError(f"message name must be an identifier, found {name!r}")
        _check_u16(f"{name}: template_id", template_id)
        _check_u16(f"{name}: version", version)
        self.name = name
        self.template_id = int(template_id)
        self.schema = schema
        self.schema_id = schema.schema_id
        self.version = int(version)
        self.fields: tuple[Field, ...] = _parse_fields(name, fields)
        self.names: tuple[str, ...] = tuple(f.name for f in self.fields)
        self.dtype: np.dtype = np.dtype({
            "names": list(self.names),
            "formats": [(f.dtype, f.shape) if f.shape else f.dtype for f in self.fields],
            "offsets": [f.offset for f in self.fields],
            "itemsize": sum(f.size for f in self.fields),
        })
        self.block_length: int = self.dtype.itemsize
        if self.block_length > _U16_MAX:
            raise CodecError(f"{name}: block of {self.block_length} bytes exceeds the header's limit of {_U16_MAX}")
        self.encoded_length: int = HEADER_LENGTH + self.block_length  # header + block
        self._field_set = frozenset(self.names)
        codes, fixups = zip(*(_field_code(name, f) for f in self.fields)) if self.fields else ((), ())
        self._struct = struct.Struct("<HHHH" + "".join(codes))
        assert self._struct.size == self.encoded_length
        # per field without a fixup: a Struct packing it alone, to say which value struct refused
        self._checks = [None if fix is not None else struct.Struct("<" + code) for code, fix in zip(codes, fixups)]
        # Encoders and field readers are generated per type (as dataclasses and attrs do):
        # one struct call per message, no per-field Python loop. The C encoders pack the
        # keyword fields straight into the buffer and hand anything else to these.
        encode, encode_into = _compile_encoders(self, fixups)
        self.__class__ = type(f"{name}Type", (MessageType,), {
            "__module__": __name__, "__slots__": (), "__doc__": MessageType.__doc__})
        self._encode_fast, self._encode_into_fast = _fast_encoders(self, encode, encode_into)
        self._message_class = _compile_message_class(self)
        self._to_dict = _compile_to_dict(self)
        self._decode_fast = Decoder({_fast_key(self): _fast_entry(self)}, MethodType(MessageType.decode, self))

    # -- encode (the API; each instance's C Encoder runs, the generated ones its fallback) ----

    def encode(self, **fields: Any) -> bytes:
        """The message (header + block) as bytes; every field must be given, in range."""
        raise NotImplementedError  # pragma: no cover - each instance's _encode_fast runs

    def encode_into(self, buffer: Any, offset: int = 0, **fields: Any) -> int:
        """Write the message (header + block) into writable `buffer` at `offset`, zero copy;
        returns the bytes written (`encoded_length`). On error the region holds no message."""
        raise NotImplementedError  # pragma: no cover - each instance's _encode_into_fast runs

    encode = fast_method("_encode_fast", encode)
    encode_into = fast_method("_encode_into_fast", encode_into)

    def _fields_error(self, fields: dict[str, Any]) -> CodecError:
        unknown = sorted(fields.keys() - self._field_set)
        missing = [n for n in self.names if n not in fields]
        problems = []
        if unknown:
            problems.append(f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
        if missing:
            problems.append(f"missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        return CodecError(f"{self.name}: {'; '.join(problems)} (fields are {', '.join(self.names)})")

    def _value_error(self, values: list[Any], cause: BaseException) -> CodecError:
        for field, check, value in zip(self.fields, self._checks, values):
            if check is None:
                continue
            try:
                check.pack(value)
            except (struct.error, OverflowError, TypeError, ValueError):
                return _bad_value(self.name, field, value)
        return CodecError(f"{self.name}: cannot encode: {cause}")

    def _encode_into_error(self, buffer: Any, offset: Any, values: list[Any], cause: BaseException) -> CodecError:
        try:
            view = memoryview(buffer)
        except TypeError:
            return CodecError(f"{self.name}: buffer must be a writable bytes-like object, found "
                              f"{type(buffer).__name__}")
        if view.readonly:
            return CodecError(f"{self.name}: buffer is read-only ({type(buffer).__name__})")
        if not view.c_contiguous:
            return CodecError(f"{self.name}: buffer is not contiguous")
        try:
            offset = operator.index(offset)
        except TypeError:
            return CodecError(f"{self.name}: offset must be an int, found {type(offset).__name__}")
        if offset < 0:
            return CodecError(f"{self.name}: offset must be >= 0, found {offset}")
        if view.nbytes - offset < self.encoded_length:
            return CodecError(f"{self.name}: buffer too small: needs {self.encoded_length} bytes at offset "
                              f"{offset}, has {max(view.nbytes - offset, 0)}")
        # A value failed part way: the struct may have written some fields; leave no message.
        view.cast("B")[offset:offset + self.encoded_length] = bytes(self.encoded_length)
        return self._value_error(values, cause)

    # -- decode ---------------------------------------------------------------------------

    def decode(self, buffer: Any, offset: int = 0) -> Message:
        """A zero-copy view of the message at `offset`; CodecError unless its header names this type."""
        kind = type(buffer)
        if kind is bytes or kind is bytearray:
            view, size = buffer, len(buffer)
        else:
            view, size = _byte_view(buffer)
        if offset < 0 or offset + HEADER_LENGTH > size:
            _read_header(view, size, offset)  # raises
        block_length, template_id, schema_id, version = _HEADER.unpack_from(view, offset)
        if template_id != self.template_id or schema_id != self.schema_id:
            raise CodecError(f"expected {self.name} (schema {self.schema_id}, template {self.template_id}) at "
                             f"offset {offset}, found schema {schema_id}, template {template_id}")
        if block_length < self.block_length or offset + HEADER_LENGTH + block_length > size:
            self._view(view, size, offset, block_length, version)  # raises
        return self._message_class(self, view, offset, version, block_length)

    decode = fast_method("_decode_fast", decode)  # the C Decoder; this for errors and odd buffers

    def _view(self, view: Any, size: int, offset: int, block_length: int, version: int) -> Message:
        if block_length < self.block_length:
            raise CodecError(f"{self.name}: block length {block_length} (version {version}) at offset {offset} is "
                             f"shorter than the {self.block_length} bytes of its fields (version {self.version})")
        if offset + HEADER_LENGTH + block_length > size:
            raise CodecError(f"{self.name}: truncated: header at offset {offset} says {block_length}-byte block, "
                             f"buffer has {size - offset - HEADER_LENGTH} bytes after the header")
        return self._message_class(self, view, offset, version, block_length)

    def decode_array(self, buffer: Any, offsets: Any, lengths: Any = None) -> np.ndarray:
        """The messages at `offsets` of `buffer` (each with its header, all of this type) as one
        structured array of `dtype` (a copy); with `lengths`, each must fit in its length.
        Fits `Subscription` batches: ``decode_array(batch.buffer, batch.offsets, batch.lengths)``."""
        view, size = _byte_view(buffer)
        data = np.frombuffer(view, np.uint8, size)
        offs = np.asarray(offsets)
        if offs.ndim != 1 or (offs.size and offs.dtype.kind not in "iu"):
            raise CodecError(f"{self.name}: offsets must be a 1-D sequence of ints, found {offs.dtype}{offs.shape}")
        offs = offs.astype(np.int64)
        n = len(offs)
        if n == 0:
            return np.zeros(0, self.dtype)
        bad = np.flatnonzero((offs < 0) | (offs > size - HEADER_LENGTH))
        if bad.size:
            i = int(bad[0])
            raise CodecError(f"{self.name}: message {i}: no room for an 8-byte header at offset {int(offs[i])} "
                             f"of a {size}-byte buffer")
        headers = data[offs[:, None] + np.arange(HEADER_LENGTH)].view("<u2")  # (n, 4)
        block_lengths = headers[:, 0].astype(np.int64)
        ends = offs + HEADER_LENGTH + block_lengths
        limit = np.full(n, size, np.int64)
        if lengths is not None:
            lens = np.asarray(lengths).astype(np.int64)
            if lens.shape != offs.shape:
                raise CodecError(f"{self.name}: {len(lens)} lengths for {n} offsets")
            limit = np.minimum(limit, offs + lens)
        bad = np.flatnonzero((headers[:, 1] != self.template_id) | (headers[:, 2] != self.schema_id)
                             | (block_lengths < self.block_length) | (ends > limit))
        if bad.size:
            i = int(bad[0])
            try:
                self.decode(data[:int(limit[i])], int(offs[i]))
            except CodecError as e:
                raise CodecError(f"message {i}: {e}") from None
            raise CodecError(f"{self.name}: message {i} at offset {int(offs[i])}: does not fit its length "
                             f"{int(limit[i] - offs[i])}")  # pragma: no cover - decode() always objects first
        if self.block_length == 0:
            return np.zeros(n, self.dtype)
        rows = data[(offs + HEADER_LENGTH)[:, None] + np.arange(self.block_length)]
        return rows.view(self.dtype).reshape(n)

    def __repr__(self) -> str:
        return (f"MessageType({self.name}, schema_id={self.schema_id}, template_id={self.template_id}, "
                f"version={self.version}, block_length={self.block_length})")

    def _same_layout(self, other: MessageType) -> bool:
        return (self.name, self.dtype, self.version) == (other.name, other.dtype, other.version)


class Registry:
    """Maps (schema_id, template_id) to a `MessageType`, so any registered message can be
    decoded and printed from its header alone."""

    __slots__ = ("_types", "_schemas", "_fast", "_decode_fast")

    def __init__(self) -> None:
        self._types: dict[tuple[int, int], MessageType] = {}
        self._schemas: dict[int, Schema] = {}
        self._fast: dict[int, tuple[type[Message], MessageType, int]] = {}  # the C Decoder's view of _types
        self._decode_fast = Decoder(self._fast, MethodType(Registry.decode, self))

    def _add_schema(self, schema: Schema) -> None:
        known = self._schemas.get(schema.schema_id)
        if known is not None and (known.version, known.name) != (schema.version, schema.name):
            raise CodecError(f"schema id {schema.schema_id} is already registered as {known!r}, "
                             f"cannot register {schema!r}")
        self._schemas.setdefault(schema.schema_id, schema)

    def _add(self, mtype: MessageType) -> None:
        key = (mtype.schema_id, mtype.template_id)
        known = self._types.get(key)
        if known is not None and known is not mtype and not known._same_layout(mtype):
            raise CodecError(f"template {mtype.template_id} of schema {mtype.schema_id} is already "
                             f"{known!r}, cannot register {mtype!r}")
        self._types[key] = mtype
        self._fast[_fast_key(mtype)] = _fast_entry(mtype)

    def lookup(self, schema_id: int, template_id: int) -> MessageType:
        """The type registered for (schema_id, template_id); CodecError when there is none."""
        mtype = self._types.get((schema_id, template_id))
        if mtype is None:
            raise self._unknown(schema_id, template_id, None)
        return mtype

    def __contains__(self, key: tuple[int, int]) -> bool:
        return key in self._types

    def __iter__(self) -> Iterator[MessageType]:
        """The registered types, by (schema_id, template_id)."""
        return iter([self._types[k] for k in sorted(self._types)])

    def __len__(self) -> int:
        return len(self._types)

    def decode(self, buffer: Any, offset: int = 0) -> Message:
        """A zero-copy view of the message at `offset`, of whichever type its header names."""
        # the hot path, inlined: _byte_view, _read_header, MessageType._view
        kind = type(buffer)
        if kind is bytes or kind is bytearray:
            view, size = buffer, len(buffer)
        else:
            view, size = _byte_view(buffer)
        if offset < 0 or offset + HEADER_LENGTH > size:
            _read_header(view, size, offset)  # raises
        block_length, template_id, schema_id, version = _HEADER.unpack_from(view, offset)
        mtype = self._types.get((schema_id, template_id))
        if mtype is None:
            raise self._unknown(schema_id, template_id, offset)
        if block_length < mtype.block_length or offset + HEADER_LENGTH + block_length > size:
            mtype._view(view, size, offset, block_length, version)  # raises
        return mtype._message_class(mtype, view, offset, version, block_length)

    decode = fast_method("_decode_fast", decode)  # the C Decoder; this for errors and odd buffers

    def describe(self, buffer: Any, offset: int = 0) -> str:
        """The message at `offset` as ``Name{field=value, ...}``."""
        return repr(self.decode(buffer, offset))

    def _unknown(self, schema_id: int, template_id: int, offset: int | None) -> CodecError:
        where = "" if offset is None else f" at offset {offset}"
        schema = self._schemas.get(schema_id)
        if schema is None:
            known = ", ".join(f"{s.schema_id} {s.name!r}" for s in sorted(self._schemas.values(),
                                                                          key=lambda s: s.schema_id))
            return CodecError(f"unknown schema id {schema_id} (template {template_id}){where}; "
                              f"known schemas: {known or 'none'}")
        known = ", ".join(f"{t.template_id} {t.name}" for t in self if t.schema_id == schema_id)
        return CodecError(f"unknown template id {template_id} in schema {schema_id} {schema.name!r}{where}; "
                          f"known templates: {known or 'none'}")


REGISTRY = Registry()
"""The registry schemas join by default; `decode` and `describe` use it."""


class Schema:
    """A group of message types sharing a schema id and version (SBE's messageSchema).

    Its types join `registry` (default `REGISTRY`; None keeps them private to this schema)."""

    def __init__(self, schema_id: int, version: int = 0, *, name: str | None = None,
                 registry: Registry | None = REGISTRY) -> None:
        _check_u16("schema_id", schema_id)
        _check_u16("schema version", version)
        self.schema_id = int(schema_id)
        self.version = int(version)
        self.name = name if name is not None else f"schema{schema_id}"
        self.registry = registry
        self._types: dict[int, MessageType] = {}
        self._fast: dict[int, tuple[type[Message], MessageType, int]] = {}  # the C Decoder's view of _types
        self._decode_fast = Decoder(self._fast, MethodType(Schema.decode, self))
        if registry is not None:
            registry._add_schema(self)

    def message(self, name: str, template_id: int, fields: Iterable[FieldSpec], *,
                version: int | None = None) -> MessageType:
        """Declare a message type: `fields` are ``(name, type)`` or ``(name, type, shape)``
        with type one of int8..int64 ("i1".."i8"), uint8..uint64 ("u1".."u8"), float32/64
        ("f4", "f8"), bool ("?"), or fixed bytes "S<n>". `version` (written in every header)
        defaults to the schema's."""
        mtype = MessageType(name, template_id, fields, self, self.version if version is None else version)
        known = self._types.get(mtype.template_id)
        if known is not None and not known._same_layout(mtype):
            raise CodecError(f"template {mtype.template_id} of schema {self.schema_id} is already "
                             f"{known!r}, cannot declare {mtype!r}")
        if self.registry is not None:
            self.registry._add(mtype)
        self._types[mtype.template_id] = mtype
        self._fast[_fast_key(mtype)] = _fast_entry(mtype)
        return mtype

    @property
    def types(self) -> tuple[MessageType, ...]:
        """The schema's types, by template id."""
        return tuple(self._types[k] for k in sorted(self._types))

    def __getitem__(self, template_id: int) -> MessageType:
        try:
            return self._types[template_id]
        except KeyError:
            raise CodecError(f"no template {template_id} in schema {self.schema_id} {self.name!r}") from None

    def decode(self, buffer: Any, offset: int = 0) -> Message:
        """A zero-copy view of the message at `offset`, which must belong to this schema."""
        view, size = _byte_view(buffer)
        block_length, template_id, schema_id, version = _read_header(view, size, offset)
        if schema_id != self.schema_id:
            raise CodecError(f"wrong schema id {schema_id} at offset {offset}, expected {self.schema_id} "
                             f"({self.name!r})")
        mtype = self._types.get(template_id)
        if mtype is None:
            known = ", ".join(f"{t.template_id} {t.name}" for t in self.types)
            raise CodecError(f"unknown template id {template_id} in schema {self.schema_id} {self.name!r} at "
                             f"offset {offset}; known templates: {known or 'none'}")
        return mtype._view(view, size, offset, block_length, version)

    decode = fast_method("_decode_fast", decode)  # the C Decoder; this for errors and odd buffers

    def __repr__(self) -> str:
        return f"Schema({self.schema_id}, version={self.version}, name={self.name!r})"


def message(name: str, template_id: int, fields: Iterable[FieldSpec], *, version: int | None = None,
            schema: Schema | None = None) -> MessageType:
    """Declare a message type in `schema` (default `DEFAULT_SCHEMA`); see `Schema.message`."""
    return (DEFAULT_SCHEMA if schema is None else schema).message(name, template_id, fields, version=version)


def decode(buffer: Any, offset: int = 0, *, registry: Registry | None = None) -> Message:
    """A zero-copy view of the message at `offset` of `buffer`, of the type its header names in
    `registry` (default `REGISTRY`). CodecError for anything that is not such a message."""
    return (REGISTRY if registry is None else registry).decode(buffer, offset)


def describe(buffer: Any, offset: int = 0, *, registry: Registry | None = None) -> str:
    """The message at `offset` as ``Name{field=value, ...}`` for tools and logs."""
    return repr(decode(buffer, offset, registry=registry))


# -- helpers --------------------------------------------------------------------------------


def _byte_view(buffer: Any) -> tuple[Any, int]:
    """`buffer` as a flat byte buffer and its size; CodecError for anything else."""
    kind = type(buffer)
    if kind is bytes or kind is bytearray:
        return buffer, len(buffer)
    try:
        if kind is memoryview and buffer.c_contiguous:
            return buffer, buffer.nbytes
        view = memoryview(buffer)
        if not view.c_contiguous:
            raise BufferError("not C-contiguous")
    except (TypeError, ValueError, BufferError) as e:
        raise CodecError(f"not a contiguous bytes-like buffer: {type(buffer).__name__} ({e})") from None
    return view, view.nbytes


def _read_header(view: Any, size: int, offset: int) -> tuple[int, int, int, int]:
    if offset < 0 or offset + HEADER_LENGTH > size:
        raise CodecError(f"buffer too short for the 8-byte message header at offset {offset}: "
                         f"{size} bytes" if offset >= 0 else f"offset must be >= 0, found {offset}")
    return _HEADER.unpack_from(view, offset)


def _check_u16(what: str, value: Any) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 0 <= value <= _U16_MAX:
        raise CodecError(f"{what} must be an int in [0, {_U16_MAX}], found {value!r}")


def _parse_fields(type_name: str, specs: Iterable[FieldSpec]) -> tuple[Field, ...]:
    fields: list[Field] = []
    seen: set[str] = set()
    offset = 0
    for spec in specs:
        if not isinstance(spec, tuple) or len(spec) not in (2, 3):
            raise CodecError(f"{type_name}: a field is (name, type) or (name, type, shape), found {spec!r}")
        name, kind = spec[0], spec[1]
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
            raise CodecError(f"{type_name}: field name must be an identifier not starting with '_', found {name!r}")
        if name in _RESERVED:
            raise CodecError(f"{type_name}: field name {name!r} is reserved (taken by Message or encode_into: "
                             f"{', '.join(sorted(_RESERVED))})")
        if name in seen:
            raise CodecError(f"{type_name}: field {name!r} declared twice")
        seen.add(name)
        try:
            dtype = np.dtype(kind)
        except TypeError as e:
            raise CodecError(f"{type_name}.{name}: not a numpy type: {kind!r} ({e})") from None
        shape: tuple[int, ...] = ()
        if dtype.subdtype is not None:
            dtype, shape = dtype.subdtype
        if len(spec) == 3:
            extra = (spec[2],) if isinstance(spec[2], (int, np.integer)) else spec[2]
            try:
                shape = shape + tuple(operator.index(d) for d in extra)
            except TypeError:
                raise CodecError(f"{type_name}.{name}: shape must be an int or a tuple of ints, "
                                 f"found {spec[2]!r}") from None
        if any(d < 1 for d in shape):
            raise CodecError(f"{type_name}.{name}: every dimension of shape must be >= 1, found {shape}")
        dtype = _field_dtype(type_name, name, kind, dtype)
        field = Field(name, dtype, shape, offset)
        offset += field.size
        fields.append(field)
    return tuple(fields)


def _field_dtype(type_name: str, name: str, kind: Any, dtype: np.dtype) -> np.dtype:
    allowed = ("int8/16/32/64 ('i1'..'i8'), uint8/16/32/64 ('u1'..'u8'), float32/64 ('f4', 'f8'), "
               "bool ('?') or bytes 'S<n>'")
    ok = ((dtype.kind in "iu" and dtype.itemsize in (1, 2, 4, 8)) or (dtype.kind == "f" and dtype.itemsize in (4, 8))
          or dtype.kind == "b" or (dtype.kind == "S" and dtype.itemsize >= 1))
    if not ok or dtype.fields is not None:
        raise CodecError(f"{type_name}.{name}: unsupported type {kind!r}; expected {allowed}")
    if dtype.byteorder == ">" or (dtype.byteorder == "=" and np.little_endian is False):
        raise CodecError(f"{type_name}.{name}: fields are little endian, found big-endian {kind!r}")
    return dtype.newbyteorder("<") if dtype.itemsize > 1 and dtype.kind != "S" else dtype


def _type_name(dtype: np.dtype) -> str:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return f"{dtype.name} in [{info.min}, {info.max}]"
    if dtype.kind == "S":
        return f"bytes of at most {dtype.itemsize}"
    if dtype.kind == "b":
        return "bool"
    return dtype.name


def _bad_value(type_name: str, field: Field, value: Any) -> CodecError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return CodecError(f"{type_name}.{field.name}: expected {field.describe_type()}, "
                      f"found {shown} ({type(value).__name__})")


def _field_code(type_name: str, field: Field) -> tuple[str, Callable[[Any], Any] | None]:
    """The struct code packing `field` and, when struct alone would be lax, a function that
    checks (and converts) the value first."""
    dtype = field.dtype
    if field.shape:
        return f"{field.size}s", _array_fixup(type_name, field)
    if dtype.kind in "iu":
        return _INT_CODES[(dtype.kind, dtype.itemsize)], None
    if dtype.kind == "f" and dtype.itemsize == 8:
        return "d", None
    if dtype.kind == "f":
        def f4(value: Any) -> bytes:
            if type(value) is np.float32:
                return value.tobytes()  # exact bits, signalling NaNs included
            try:
                return _F4.pack(value)
            except (struct.error, OverflowError, TypeError, ValueError):
                raise _bad_value(type_name, field, value) from None
        return "4s", f4
    if dtype.kind == "b":
        def boolean(value: Any) -> bool:
            if value is True or value is False:
                return value
            if isinstance(value, np.bool_):
                return bool(value)
            if isinstance(value, (int, np.integer)) and value in (0, 1):
                return bool(value)
            raise _bad_value(type_name, field, value)
        return "?", boolean
    n = dtype.itemsize

    def byte_string(value: Any) -> Any:
        if isinstance(value, (bytes, bytearray)) and len(value) <= n:
            return value
        if isinstance(value, memoryview) and value.nbytes <= n:
            return value.tobytes()
        raise _bad_value(type_name, field, value)
    return f"{n}s", byte_string


def _array_fixup(type_name: str, field: Field) -> Callable[[Any], bytes]:
    dtype, shape = field.dtype, field.shape
    kind = dtype.kind

    def array(value: Any) -> bytes:
        try:
            a = np.asarray(value)
        except (ValueError, TypeError):
            raise _bad_value(type_name, field, value) from None
        if a.shape != shape:
            raise CodecError(f"{type_name}.{field.name}: expected shape {shape}, found {a.shape}")
        if kind in "iu":
            if a.dtype.kind not in "iub" and not (a.dtype.kind == "O" and all(
                    isinstance(v, (int, np.integer)) for v in a.ravel().tolist())):
                raise _bad_value(type_name, field, value)
            info = np.iinfo(dtype)
            flat = a.ravel().tolist()
            if flat and (min(flat) < info.min or max(flat) > info.max):
                raise _bad_value(type_name, field, value)
            return np.array(flat, dtype).tobytes()
        if kind == "f":
            if a.dtype.kind not in "iufb":
                raise _bad_value(type_name, field, value)
            with np.errstate(over="ignore", invalid="ignore"):
                out = a.astype(dtype)
            if np.any(np.isinf(out) & np.isfinite(a)):
                raise _bad_value(type_name, field, value)
            return out.tobytes()
        if kind == "b":
            if a.dtype.kind == "b":
                return a.astype(dtype).tobytes()
            if a.dtype.kind in "iu" and np.all((a == 0) | (a == 1)):
                return a.astype(dtype).tobytes()
            raise _bad_value(type_name, field, value)
        # bytes: a numpy 'S' array (a list of bytes becomes one) whose items fit
        if a.dtype.kind != "S" or a.dtype.itemsize > dtype.itemsize:
            if a.dtype.kind == "O" and all(isinstance(v, (bytes, bytearray)) and len(v) <= dtype.itemsize
                                           for v in a.ravel().tolist()):
                return np.array(a.ravel().tolist(), dtype).tobytes()
            raise _bad_value(type_name, field, value)
        return a.astype(dtype).tobytes()
    return array


# -- generated code: one encoder / reader per type ------------------------------------------


def _compile(source: str, namespace: dict[str, Any], filename: str) -> dict[str, Any]:
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - names are checked identifiers
    return namespace


def _compile_encoders(mtype: MessageType, fixups: Sequence[Callable[[Any], Any] | None]) -> tuple[Any, Any]:
    """`encode(**fields)` and `encode_into(buffer, offset=0, **fields)` for `mtype`: fetch each
    field, check what struct would let through (bytes length, bool, float32, arrays), then
    one struct call writes header + block."""
    n = len(mtype.fields)
    values = [f"v{i}" for i in range(n)]
    fetch = [f"        v{i} = fields[{f.name!r}]" for i, f in enumerate(mtype.fields)] or ["        pass"]
    namespace: dict[str, Any] = {
        "_pack": mtype._struct.pack, "_pack_into": mtype._struct.pack_into, "_PACK_ERRORS": _PACK_ERRORS,
        "_fields_error": mtype._fields_error, "_value_error": mtype._value_error,
        "_encode_into_error": mtype._encode_into_error, "CodecError": CodecError,
    }
    checks = []
    for i, (f, fix) in enumerate(zip(mtype.fields, fixups)):
        if fix is None:
            continue
        namespace[f"_fix{i}"] = fix
        if f.dtype.kind == "S" and not f.shape:  # the common case inline: bytes that fit
            checks.append(f"    if v{i}.__class__ is not bytes or len(v{i}) > {f.dtype.itemsize}:")
            checks.append(f"        v{i} = _fix{i}(v{i})")
        elif f.dtype.kind == "b" and not f.shape:
            checks.append(f"    if v{i} is not True and v{i} is not False:")
            checks.append(f"        v{i} = _fix{i}(v{i})")
        else:
            checks.append(f"    v{i} = _fix{i}(v{i})")
    header = ", ".join(str(x) for x in (mtype.block_length, mtype.template_id, mtype.schema_id, mtype.version))
    args = ", ".join([header] + values)
    listed = "[" + ", ".join(values) + "]"
    prologue = [
        f"    if len(fields) != {n}:",
        "        raise _fields_error(fields)",
        "    try:",
        *fetch,
        "    except KeyError:",
        "        raise _fields_error(fields) from None",
        *checks,
    ]
    source = "\n".join([
        "def encode(**fields):",
        *prologue,
        "    try:",
        f"        return _pack({args})",
        "    except _PACK_ERRORS as e:",
        f"        raise _value_error({listed}, e) from None",
        "",
        "def encode_into(buffer, offset=0, **fields):",
        *prologue,
        "    try:",
        "        if offset < 0:",
        "            raise ValueError",
        f"        _pack_into(buffer, offset, {args})",
        "    except _PACK_ERRORS as e:",
        f"        raise _encode_into_error(buffer, offset, {listed}, e) from None",
        f"    return {mtype.encoded_length}",
    ])
    ns = _compile(source, namespace, f"<lockstep.codec encoders of {mtype.name}>")
    encode, encode_into = ns["encode"], ns["encode_into"]
    for fn, doc in ((encode, MessageType.encode), (encode_into, MessageType.encode_into)):
        fn.__doc__ = doc.__doc__
        fn.__qualname__ = f"{mtype.name}.{fn.__name__}"
    return encode, encode_into


def _fast_key(mtype: MessageType) -> int:
    """The C Decoder's key of a type: (schema_id, template_id) as one int."""
    return mtype.schema_id << 16 | mtype.template_id


def _fast_entry(mtype: MessageType) -> tuple[type[Message], MessageType, int]:
    """What the C Decoder needs of a type: the class to make, the type, its block length."""
    return mtype._message_class, mtype, mtype.block_length


def _fast_kind(field: Field) -> int | None:
    """The C kind of a scalar field (codec_fast.c), or None when it stays in Python (arrays)."""
    if field.shape:
        return None
    if field.dtype.kind == "S":
        return _FAST_BYTES
    return _FAST_KINDS[(field.dtype.kind, field.dtype.itemsize)]


def _fast_encoders(mtype: MessageType, encode: Callable[..., bytes],
                   encode_into: Callable[..., int]) -> tuple[Callable[..., bytes], Callable[..., int]]:
    """The C encoders of `mtype` (falling back to the generated `encode` / `encode_into`), or
    those two themselves when a field is an array."""
    found = [_fast_kind(f) for f in mtype.fields]
    kinds = tuple(k for k in found if k is not None)
    if len(kinds) != len(found):
        return encode, encode_into
    header = _HEADER.pack(mtype.block_length, mtype.template_id, mtype.schema_id, mtype.version)
    sizes, ats = tuple(f.size for f in mtype.fields), tuple(HEADER_LENGTH + f.offset for f in mtype.fields)
    return (Encoder(mtype.names, kinds, sizes, ats, header, False, encode),
            Encoder(mtype.names, kinds, sizes, ats, header, True, encode_into))


def _read_code(field: Field) -> str:
    """The struct code that reads `field` into a Python value (arrays: raw bytes)."""
    if field.shape or field.dtype.kind == "S":
        return f"{field.size}s"
    if field.dtype.kind == "b":
        return "?"
    if field.dtype.kind == "f":
        return "f" if field.dtype.itemsize == 4 else "d"
    return _INT_CODES[(field.dtype.kind, field.dtype.itemsize)]


def _compile_message_class(mtype: MessageType) -> type[Message]:
    """A `Message` subclass with one C `FieldReader` per scalar field (its struct reader the
    fallback), float32 and array fields a property reading the numpy record (exact)."""
    namespace: dict[str, Any] = {}
    lines = []
    for i, f in enumerate(mtype.fields):
        at = HEADER_LENGTH + f.offset
        if f.shape or (f.dtype.kind == "f" and f.dtype.itemsize == 4):
            lines.append(f"def {f.name}(self):\n    return self.record[{f.name!r}]")
            continue
        namespace[f"_u{i}"] = struct.Struct("<" + _read_code(f)).unpack_from
        strip = '.rstrip(b"\\0")' if f.dtype.kind == "S" else ""
        lines.append(f"def {f.name}(self, _u=_u{i}):\n    return _u(self._buffer, self._offset + {at})[0]{strip}")
    ns = _compile("\n".join(lines), namespace, f"<lockstep.codec readers of {mtype.name}>")
    attrs: dict[str, Any] = {"__slots__": (), "__module__": __name__,
                             "__doc__": f"A decoded {mtype.name} message (see `Message`)."}
    readers = []
    for f in mtype.fields:
        doc = f"{f.name}: {f.describe_type()}"
        kind = _fast_kind(f)
        reader = None if kind is None else FieldReader(kind, f.size, HEADER_LENGTH + f.offset, ns[f.name], doc)
        # float32 reads as an exact numpy.float32 (to_dict's C reader gives a float, as struct does)
        attrs[f.name] = property(ns[f.name], doc=doc) if kind in (None, _FAST_KINDS[("f", 4)]) else reader
        readers.append((f.name, reader))
    if all(reader is not None for _, reader in readers):  # arrays: the type's generated to_dict
        attrs["_readers"] = tuple(readers)
    return type(f"{mtype.name}Message", (Message,), attrs)


def _compile_to_dict(mtype: MessageType) -> Callable[[Any, int], dict[str, Any]]:
    """A function reading all fields of the message at (buffer, offset) with one struct call."""
    if not mtype.fields:
        return lambda buffer, offset: {}
    unpack = struct.Struct("<" + "".join(_read_code(f) for f in mtype.fields)).unpack_from
    namespace: dict[str, Any] = {"_unpack": unpack}
    items = []
    for i, f in enumerate(mtype.fields):
        if f.shape:
            namespace[f"_a{i}"] = lambda raw, dtype=f.dtype, shape=f.shape: np.frombuffer(raw, dtype).reshape(
                shape).tolist()
            items.append(f"{f.name!r}: _a{i}(v{i})")
        elif f.dtype.kind == "S":
            items.append(f'{f.name!r}: v{i}.rstrip(b"\\0")')
        else:
            items.append(f"{f.name!r}: v{i}")
    values = ", ".join(f"v{i}" for i in range(len(mtype.fields)))
    source = (f"def to_dict(buffer, offset):\n    {values}, = _unpack(buffer, offset + {HEADER_LENGTH})\n"
              f"    return {{{', '.join(items)}}}")
    return _compile(source, namespace, f"<lockstep.codec to_dict of {mtype.name}>")["to_dict"]


DEFAULT_SCHEMA = Schema(0, 0, name="default")
"""The schema `message` declares into when none is given (id 0, version 0)."""
