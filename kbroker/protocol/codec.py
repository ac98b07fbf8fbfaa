"""Frames <-> message objects (sans-IO): the entry points the server and tools use.

A *frame* here is what follows the 4-byte size prefix (header + body). Encoders return
complete frames, size prefix included. Decoders and encoders are compiled per
(API key, version) on first use and cached.
"""

from __future__ import annotations

import struct
from typing import TypeVar

from kbroker.protocol.codegen import build_decoder, build_encoder, records_size
from kbroker.protocol.exceptions import CorruptFrame, ProtocolError, UnsupportedVersion
from kbroker.protocol.messages import API_INFO, RequestHeader, ResponseHeader, Struct
from kbroker.protocol.region import FileRegion

__all__ = [
    "CorruptFrame", "ProtocolError", "UnsupportedVersion", "decode_data", "decode_request",
    "decode_request_header", "decode_response", "encode_data", "encode_request", "encode_response",
    "request_header_version", "response_header_version",
]

API_VERSIONS_KEY = 18
CONTROLLED_SHUTDOWN_KEY = 7  # its v0 is the only user of request header v0

_KEY_VERSION = struct.Struct(">hh")
_SIZE = struct.Struct(">i")
_INT16 = struct.Struct(">h")
S = TypeVar("S", bound=Struct)
_HEADER_V0 = struct.Struct(">ii")  # size, correlation id
_HEADER_V1 = struct.Struct(">iiB")  # size, correlation id, empty tagged section

_decoders: dict[tuple[type, int], object] = {}
_encoders: dict[tuple[type, int], object] = {}
_request_decoders: dict[tuple[int, int], object] = {}
_response_encoders: dict[tuple[int, int], tuple[type, object, bool]] = {}


def _decoder(cls: type[Struct], version: int):
    fn = _decoders.get((cls, version))
    if fn is None:
        fn = _decoders[(cls, version)] = build_decoder(cls, version)
    return fn


def _encoder(cls: type[Struct], version: int):
    fn = _encoders.get((cls, version))
    if fn is None:
        fn = _encoders[(cls, version)] = build_encoder(cls, version)
    return fn


def _info(api_key: int, api_version: int):
    info = API_INFO.get(api_key)
    if info is None:
        raise UnsupportedVersion(f"unknown API key {api_key}")
    if not info.supports(api_version):
        raise UnsupportedVersion(f"{info.name} v{api_version} is outside v{info.min_version}-v{info.max_version}")
    return info


def request_header_version(api_key: int, api_version: int) -> int:
    """2 for flexible request versions, 1 otherwise (0 for ControlledShutdown v0).

    An unknown key or version still gets an answer (1, or 2 above an open-ended flexible
    range, as the Java broker does) so the header of any ApiVersionsRequest can be read.
    """
    if api_key == CONTROLLED_SHUTDOWN_KEY and api_version == 0:
        return 0
    info = API_INFO.get(api_key)
    return 2 if info is not None and info.is_flexible(api_version) else 1


def response_header_version(api_key: int, api_version: int) -> int:
    """1 for flexible versions, else 0; ApiVersionsResponse always uses 0 (KIP-511)."""
    if api_key == API_VERSIONS_KEY:
        return 0
    info = API_INFO.get(api_key)
    return 1 if info is not None and info.is_flexible(api_version) else 0


def _decode(fn, frame, pos: int, exact: bool):
    """Run a generated decoder, turning every kind of bad input into CorruptFrame."""
    if type(frame) is not memoryview:
        frame = memoryview(frame)  # records fields become slices of it
    end = len(frame)
    try:
        obj, pos = fn(frame, pos, end)
    except CorruptFrame:
        raise
    except (struct.error, IndexError, ValueError) as e:  # ValueError includes bad UTF-8
        raise CorruptFrame(f"malformed frame: {e}") from e
    if exact and pos != end:
        raise CorruptFrame(f"{end - pos} unexpected bytes after the message")
    return obj, pos


def decode_request_header(frame) -> tuple[RequestHeader, int]:
    """Parse the request header; return it and the offset where the body starts."""
    try:
        api_key, api_version = _KEY_VERSION.unpack_from(frame, 0)
    except struct.error as e:
        raise CorruptFrame("frame shorter than a request header") from e
    version = request_header_version(api_key, api_version)
    return _decode(_decoder(RequestHeader, version), frame, 0, exact=False)


def decode_request(header: RequestHeader, frame, body_offset: int):
    """Decode the body of a request whose header was read by decode_request_header."""
    key = (header.request_api_key, header.request_api_version)
    fn = _request_decoders.get(key)
    if fn is None:
        info = _info(*key)
        fn = _request_decoders[key] = _decoder(info.request, key[1])
    # Like the Java broker, ignore bytes after the body: librdkafka 2.16 pads Metadata v12.
    return _decode(fn, frame, body_offset, exact=False)[0]


def _encode_body(cls: type[Struct], version: int, body, encoder, buf: bytearray) -> list:
    """Append ``body`` to ``buf``; return the (offset, value) records to splice in."""
    if type(body) is not cls:
        raise TypeError(f"expected a {cls.__name__}, got {type(body).__name__}")
    big: list = []
    try:
        encoder(body, buf, big)
    except (struct.error, AttributeError, TypeError) as e:
        raise ValueError(f"cannot encode {cls.__name__} v{version}: {e}") from e
    return big


def _parts(buf: bytearray, big: list) -> list:
    """Fill in the size prefix and splice large records between slices of ``buf``."""
    total = len(buf) - 4
    for _, value in big:
        total += records_size(value)
    _SIZE.pack_into(buf, 0, total)
    if not big:
        return [buf]
    view = memoryview(buf)
    parts, start = [], 0
    for offset, value in big:
        if offset > start:
            parts.append(view[start:offset])
        parts.append(value)
        start = offset
    if start < len(buf):
        parts.append(view[start:])
    return parts


def encode_response(api_key: int, api_version: int, correlation_id: int, body) -> list:
    """Encode a response frame as a list of bytes-like objects and FileRegions.

    The first item starts with the size prefix and the response header. Records values
    that are FileRegions or larger than codegen.INLINE_RECORDS_MAX are items of their own.
    """
    entry = _response_encoders.get((api_key, api_version))
    if entry is None:
        info = _info(api_key, api_version)
        flexible_header = response_header_version(api_key, api_version) == 1
        entry = (info.response, _encoder(info.response, api_version), flexible_header)
        _response_encoders[(api_key, api_version)] = entry
    cls, encoder, flexible_header = entry
    if flexible_header:
        buf = bytearray(_HEADER_V1.pack(0, correlation_id, 0))
    else:
        buf = bytearray(_HEADER_V0.pack(0, correlation_id))
    big = _encode_body(cls, api_version, body, encoder, buf)
    return _parts(buf, big)


def _join(parts: list) -> bytes:
    if any(type(p) is FileRegion for p in parts):
        raise TypeError("a FileRegion cannot be joined into bytes")
    return b"".join(parts)


def encode_request(api_key: int, api_version: int, correlation_id: int, client_id: str | None, body) -> bytes:
    """Encode a complete request frame (size prefix included), as a client would send it."""
    info = _info(api_key, api_version)
    header_version = request_header_version(api_key, api_version)
    header = RequestHeader(
        request_api_key=api_key, request_api_version=api_version,
        correlation_id=correlation_id, client_id=client_id,
    )
    buf = bytearray(4)
    _encode_body(RequestHeader, header_version, header, _encoder(RequestHeader, header_version), buf)
    big = _encode_body(info.request, api_version, body, _encoder(info.request, api_version), buf)
    return _join(_parts(buf, big))


def decode_response(api_key: int, api_version: int, frame) -> tuple[int, object]:
    """Decode a response frame (without its size prefix): (correlation_id, body)."""
    info = _info(api_key, api_version)
    header_version = response_header_version(api_key, api_version)
    header, pos = _decode(_decoder(ResponseHeader, header_version), frame, 0, exact=False)
    body, _ = _decode(_decoder(info.response, api_version), frame, pos, exact=True)
    return header.correlation_id, body


def encode_data(obj, version: int, prefix: int | None = None) -> bytes:
    """Serialize an embedded format (e.g. ConsumerProtocolAssignment): int16 prefix + body.

    The prefix is the version, except for coordinator record keys, which put their record
    type there and always use version 0.
    """
    cls = type(obj)
    assert cls._valid_versions is not None, f"{cls.__name__} is not a versioned data format"
    lo, hi = cls._valid_versions
    if not lo <= version <= hi:
        raise UnsupportedVersion(f"{cls.__name__} v{version} is outside v{lo}-v{hi}")
    buf = bytearray(_INT16.pack(version if prefix is None else prefix))
    _encode_body(cls, version, obj, _encoder(cls, version), buf)
    return bytes(buf)


def decode_data(cls: type[S], data) -> tuple[int, S]:
    """Parse an embedded format: (version written, object).

    A version newer than we know is parsed with our newest one and its extra trailing
    bytes ignored, as Kafka's consumer protocol requires.
    """
    try:
        (version,) = _INT16.unpack_from(data, 0)
    except struct.error as e:
        raise CorruptFrame(f"{cls.__name__} shorter than its version") from e
    assert cls._valid_versions is not None, f"{cls.__name__} is not a versioned data format"
    lo, hi = cls._valid_versions
    if version < lo:
        raise UnsupportedVersion(f"{cls.__name__} v{version} is older than v{lo}")
    newer = version > hi
    obj, _ = _decode(_decoder(cls, min(version, hi)), data, 2, exact=not newer)
    return version, obj


def decode_struct(cls: type[Struct], version: int, data, offset: int = 0):
    """Parse a message body that fills `data` from `offset` (no prefix), at a known version."""
    obj, _ = _decode(_decoder(cls, version), data, offset, exact=True)
    return obj
