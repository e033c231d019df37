"""The driver's control protocol at byte level (spec/aeron-driver-protocol.md §3-4): command
encoders for the to-driver ring and decoders for the broadcast responses. Every struct is
packed to 4 bytes, so explicit little-endian `struct` formats (no padding) match it exactly."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import InvalidArgumentError

# Commands (client -> driver).
ADD_PUBLICATION = 0x01
REMOVE_PUBLICATION = 0x02
ADD_EXCLUSIVE_PUBLICATION = 0x03
ADD_SUBSCRIPTION = 0x04
REMOVE_SUBSCRIPTION = 0x05
CLIENT_KEEPALIVE = 0x06
ADD_DESTINATION = 0x07
REMOVE_DESTINATION = 0x08
CLIENT_CLOSE = 0x0B
ADD_RCV_DESTINATION = 0x0C
REMOVE_RCV_DESTINATION = 0x0D
TERMINATE_DRIVER = 0x0E

# Responses and events (driver -> clients).
ON_ERROR = 0x0F01
ON_AVAILABLE_IMAGE = 0x0F02
ON_PUBLICATION_READY = 0x0F03
ON_OPERATION_SUCCESS = 0x0F04
ON_UNAVAILABLE_IMAGE = 0x0F05
ON_EXCLUSIVE_PUBLICATION_READY = 0x0F06
ON_SUBSCRIPTION_READY = 0x0F07
ON_COUNTER_READY = 0x0F08
ON_UNAVAILABLE_COUNTER = 0x0F09
ON_CLIENT_TIMEOUT = 0x0F0A
ON_STATIC_COUNTER = 0x0F0B
ON_PUBLICATION_ERROR = 0x0F0C

ERROR_CODES = {
    -1: "UNKNOWN_CODE_VALUE", 0: "UNUSED", 1: "INVALID_CHANNEL", 2: "UNKNOWN_SUBSCRIPTION", 3: "UNKNOWN_PUBLICATION",
    4: "CHANNEL_ENDPOINT_ERROR", 5: "UNKNOWN_COUNTER", 6: "UNKNOWN_COMMAND_TYPE_ID", 7: "MALFORMED_COMMAND",
    8: "NOT_SUPPORTED", 9: "UNKNOWN_HOST", 10: "RESOURCE_TEMPORARILY_UNAVAILABLE", 11: "GENERIC_ERROR",
    12: "STORAGE_SPACE", 13: "IMAGE_REJECTED", 14: "PUBLICATION_REVOKED",
}

MAX_CHANNEL_LENGTH = 4095

_CORRELATED = struct.Struct("<qq")
_PUBLICATION = struct.Struct("<qqii")
_REMOVE_PUBLICATION = struct.Struct("<qqqQ")
_SUBSCRIPTION = struct.Struct("<qqqii")
_REMOVE = struct.Struct("<qqq")
_DESTINATION = struct.Struct("<qqqi")
_TERMINATE = struct.Struct("<qqi")


def channel_bytes(channel: str) -> bytes:
    """The channel as the driver takes it: ASCII, at most 4095 bytes, no NUL."""
    if not isinstance(channel, str):
        raise InvalidArgumentError(f"channel: expected a str such as 'aeron:ipc', found {type(channel).__name__}")
    try:
        data = channel.encode("ascii")
    except UnicodeEncodeError:
        raise InvalidArgumentError(f"channel {channel!r}: expected ASCII") from None
    if not data or len(data) > MAX_CHANNEL_LENGTH or b"\0" in data:
        raise InvalidArgumentError(f"channel: expected 1..{MAX_CHANNEL_LENGTH} ASCII characters without NUL, "
                                   f"found {len(data)} bytes")
    return data


def check_stream_id(stream_id: int) -> int:
    if not isinstance(stream_id, int) or not -(1 << 31) <= stream_id < 1 << 31:
        raise InvalidArgumentError(f"stream_id: expected an int32, found {stream_id!r}")
    return stream_id


def add_publication(client_id: int, correlation_id: int, stream_id: int, channel: bytes) -> bytes:
    return _PUBLICATION.pack(client_id, correlation_id, stream_id, len(channel)) + channel


def remove_publication(client_id: int, correlation_id: int, registration_id: int, revoke: bool = False) -> bytes:
    return _REMOVE_PUBLICATION.pack(client_id, correlation_id, registration_id, 1 if revoke else 0)


def add_subscription(client_id: int, correlation_id: int, stream_id: int, channel: bytes) -> bytes:
    return _SUBSCRIPTION.pack(client_id, correlation_id, -1, stream_id, len(channel)) + channel


def remove(client_id: int, correlation_id: int, registration_id: int) -> bytes:
    """REMOVE_SUBSCRIPTION / REMOVE_COUNTER."""
    return _REMOVE.pack(client_id, correlation_id, registration_id)


def destination(client_id: int, correlation_id: int, registration_id: int, channel: bytes) -> bytes:
    """ADD/REMOVE_(RCV_)DESTINATION."""
    return _DESTINATION.pack(client_id, correlation_id, registration_id, len(channel)) + channel


def correlated(client_id: int, correlation_id: int) -> bytes:
    """CLIENT_KEEPALIVE / CLIENT_CLOSE."""
    return _CORRELATED.pack(client_id, correlation_id)


def terminate_driver(client_id: int, correlation_id: int, token: bytes = b"") -> bytes:
    return _TERMINATE.pack(client_id, correlation_id, len(token)) + token


# -- responses ------------------------------------------------------------------------------

_ERROR = struct.Struct("<qii")
_READY = struct.Struct("<qqiiiii")
_IMAGE = struct.Struct("<qiiqii")
_UNAVAILABLE_IMAGE = struct.Struct("<qqii")
_ID_COUNTER = struct.Struct("<qi")
_ID = struct.Struct("<q")


class MalformedResponse(Exception):
    """A broadcast record too short for its type (never from a correct driver)."""


@dataclass(frozen=True)
class ErrorResponse:
    offending_correlation_id: int
    error_code: int
    message: str


@dataclass(frozen=True)
class PublicationReady:
    correlation_id: int
    registration_id: int
    session_id: int
    stream_id: int
    position_limit_counter_id: int
    channel_status_indicator_id: int
    log_file: str


@dataclass(frozen=True)
class AvailableImage:
    correlation_id: int  # the image's id
    session_id: int
    stream_id: int
    subscription_registration_id: int
    subscriber_position_id: int
    log_file: str
    source_identity: str


@dataclass(frozen=True)
class UnavailableImage:
    correlation_id: int
    subscription_registration_id: int
    stream_id: int
    channel: str


def _string(data: bytes, at: int, length: int) -> str:
    if length < 0 or at + length > len(data):
        raise MalformedResponse(f"string of {length} bytes at {at} in a {len(data)}-byte record")
    return data[at:at + length].decode("ascii", "replace")


def _need(data: bytes, size: int) -> None:
    if len(data) < size:
        raise MalformedResponse(f"record of {len(data)} bytes, expected at least {size}")


def decode_error(data: bytes) -> ErrorResponse:
    _need(data, _ERROR.size)
    corr, code, length = _ERROR.unpack_from(data, 0)
    return ErrorResponse(corr, code, _string(data, _ERROR.size, length))


def decode_publication_ready(data: bytes) -> PublicationReady:
    _need(data, _READY.size)
    corr, reg, session, stream, limit_id, status_id, length = _READY.unpack_from(data, 0)
    return PublicationReady(corr, reg, session, stream, limit_id, status_id, _string(data, _READY.size, length))


def decode_available_image(data: bytes) -> AvailableImage:
    _need(data, _IMAGE.size)
    corr, session, stream, sub_reg, sub_pos_id, log_length = _IMAGE.unpack_from(data, 0)
    log_file = _string(data, _IMAGE.size, log_length)
    at = _IMAGE.size + ((log_length + 3) & ~3)  # the log file name is padded to 4 bytes
    _need(data, at + 4)
    (source_length,) = struct.unpack_from("<i", data, at)
    return AvailableImage(corr, session, stream, sub_reg, sub_pos_id, log_file, _string(data, at + 4, source_length))


def decode_unavailable_image(data: bytes) -> UnavailableImage:
    _need(data, _UNAVAILABLE_IMAGE.size)
    corr, sub_reg, stream, length = _UNAVAILABLE_IMAGE.unpack_from(data, 0)
    return UnavailableImage(corr, sub_reg, stream, _string(data, _UNAVAILABLE_IMAGE.size, length))


def decode_id_counter(data: bytes) -> tuple[int, int]:
    """ON_SUBSCRIPTION_READY / ON_COUNTER_READY / ON_UNAVAILABLE_COUNTER: (correlation id, counter id)."""
    _need(data, _ID_COUNTER.size)
    return _ID_COUNTER.unpack_from(data, 0)


def decode_id(data: bytes) -> int:
    """ON_OPERATION_SUCCESS / ON_CLIENT_TIMEOUT: the one id."""
    _need(data, _ID.size)
    return _ID.unpack_from(data, 0)[0]


def decode_publication_error(data: bytes) -> ErrorResponse:
    """ON_PUBLICATION_ERROR as (original registration id, code, message)."""
    _need(data, 68)
    reg = _ID.unpack_from(data, 0)[0]
    code, length = struct.unpack_from("<ii", data, 60)
    return ErrorResponse(reg, code, _string(data, 68, length))
