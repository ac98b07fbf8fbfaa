"""Message formats v0 and v1 (magic 0 and 1), for the clients of a release before Kafka 4.0.

Produce v0-2 carries message sets, which are up-converted to one v2 record batch before the
usual validation and append (Kafka's LogValidator converts on append the same way); Fetch v0-3
gets the stored batches down-converted: magic 0 for v0-1, magic 1 for v2-3.

A message set is a sequence of `offset int64, size int32, message`; a message is
`crc uint32 (zlib CRC-32 of the rest), magic int8, attributes int8, [timestamp int64 from
magic 1], key bytes, value bytes` (bytes: int32 length, -1 for null). A compressed message is a
wrapper whose value is the compressed message set of the inner messages (attributes & 7 is the
codec; in magic 1 the inner offsets are relative, the wrapper carries the last one).

Pure functions, no log state; these old formats are a cold path, so they walk messages one by
one. Headers, which v0/v1 cannot carry, and control batches are dropped on the way down, as
Kafka's down-conversion drops them.
"""

from __future__ import annotations

import struct
import zlib
from typing import Iterator, NamedTuple

from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.records import (
    COMPRESSION_MASK, GZIP, LZ4, NO_COMPRESSION, SNAPPY, TIMESTAMP_TYPE_BIT, ZSTD, Record,
    build_batch, compress, decompress, iter_batches, iter_records,
)

NO_TIMESTAMP = -1
_ENTRY = struct.Struct(">qi")  # offset, message size
_MESSAGE_V0 = struct.Struct(">Ibb")  # crc, magic, attributes
_MESSAGE_V1 = struct.Struct(">Ibbq")  # crc, magic, attributes, timestamp
_INT32 = struct.Struct(">i")
_CRC_COVERS_FROM = 4  # the CRC covers magic .. end of message
_MIN_MESSAGE = {0: _MESSAGE_V0.size + 8, 1: _MESSAGE_V1.size + 8}
_LEGACY_CODECS = (NO_COMPRESSION, GZIP, SNAPPY, LZ4)


class LegacyMessage(NamedTuple):
    magic: int
    timestamp: int  # NO_TIMESTAMP in magic 0
    key: bytes | None
    value: bytes | None
    codec: int  # of the wrapper it came in (NO_COMPRESSION if none)


def _corrupt(message: str) -> KafkaError:
    return KafkaError(ErrorCode.CORRUPT_MESSAGE, message)


def _read_bytes(view: memoryview, pos: int, end: int) -> tuple[bytes | None, int]:
    if pos + 4 > end:
        raise _corrupt("message field runs past the end of the message")
    (length,) = _INT32.unpack_from(view, pos)
    pos += 4
    if length < 0:
        return None, pos
    if pos + length > end:
        raise _corrupt("message field runs past the end of the message")
    return bytes(view[pos:pos + length]), pos + length


def _entries(view: memoryview) -> Iterator[tuple[int, memoryview]]:
    """(offset, message bytes) of each entry of a message set."""
    pos = 0
    while pos < len(view):
        if pos + _ENTRY.size > len(view):
            raise _corrupt("truncated message set")
        offset, size = _ENTRY.unpack_from(view, pos)
        pos += _ENTRY.size
        if size < _MESSAGE_V0.size + 8 or pos + size > len(view):
            raise _corrupt(f"message size {size} does not fit the message set")
        yield offset, view[pos:pos + size]
        pos += size


def _parse_message(message: memoryview, inner_of: int | None) -> Iterator[LegacyMessage]:
    crc, magic, attributes = _MESSAGE_V0.unpack_from(message)
    if magic not in (0, 1):
        raise _corrupt(f"message magic {magic} is not 0 or 1")
    if len(message) < _MIN_MESSAGE[magic]:
        raise _corrupt("message shorter than its header")
    if zlib.crc32(message[_CRC_COVERS_FROM:]) != crc:
        raise _corrupt("message CRC does not match its contents")
    timestamp, pos = NO_TIMESTAMP, _MESSAGE_V0.size
    if magic == 1:
        timestamp, pos = _MESSAGE_V1.unpack_from(message)[3], _MESSAGE_V1.size
    key, pos = _read_bytes(message, pos, len(message))
    value, pos = _read_bytes(message, pos, len(message))
    if pos != len(message):
        raise _corrupt("message length does not match its contents")
    codec = attributes & COMPRESSION_MASK
    if codec == NO_COMPRESSION:
        yield LegacyMessage(magic, timestamp, key, value, NO_COMPRESSION if inner_of is None else inner_of)
        return
    if inner_of is not None:
        raise _corrupt("a compressed message inside a compressed message")
    if codec not in _LEGACY_CODECS or value is None:
        raise _corrupt(f"compression codec {codec} is not valid in message format v{magic}")
    inner = memoryview(decompress(codec, value)).cast("B")
    for _, inner_message in _entries(inner):
        parsed = next(iter(_parse_message(inner_message, codec)))
        if magic == 1 and attributes & TIMESTAMP_TYPE_BIT:  # LogAppendTime: the wrapper's
            parsed = parsed._replace(timestamp=timestamp)
        yield parsed


def parse_message_set(records) -> list[LegacyMessage]:
    """Every message of a Produce v0-2 payload, wrappers opened; KafkaError(CORRUPT_MESSAGE)
    for a bad CRC, a truncated message or a v2 batch where messages are expected."""
    view = memoryview(records).cast("B")
    messages = [m for _, message in _entries(view) for m in _parse_message(message, None)]
    if not messages:
        raise _corrupt("empty message set")
    return messages


def up_convert(records) -> bytes:
    """A Produce v0-2 payload as one v2 record batch (offsets and LogAppendTime are then the
    append's business); compressed with the producer's codec, which `compression.type`
    may change on append as for any batch."""
    messages = parse_message_set(records)
    codec = next((m.codec for m in messages if m.codec != NO_COMPRESSION), NO_COMPRESSION)
    return build_batch([Record(timestamp=m.timestamp, key=m.key, value=m.value) for m in messages],
                       compression=codec)


def _message(magic: int, offset: int, timestamp: int, attributes: int,
             key: bytes | None, value: bytes | None) -> bytes:
    body = bytes([magic, attributes])
    if magic == 1:
        body += struct.pack(">q", timestamp)
    for field in (key, value):
        body += _INT32.pack(-1) if field is None else _INT32.pack(len(field)) + field
    message = struct.pack(">I", zlib.crc32(body)) + body
    return _ENTRY.pack(offset, len(message)) + message


def _batch_messages(batch, header, magic: int, fetch_offset: int) -> list[bytes]:
    """One stored batch as messages of `magic`: a wrapper with the batch's codec around its
    records if it is compressed (inner offsets relative in magic 1, absolute in magic 0), else
    a message per record from `fetch_offset` on. lz4 goes uncompressed into magic 0, whose lz4
    framing clients read in Kafka 0.8's non-standard way (KAFKA-3160)."""
    timestamp_type = TIMESTAMP_TYPE_BIT if magic == 1 and header.timestamp_type else 0
    records = list(iter_records(batch))
    codec = header.compression
    if codec == NO_COMPRESSION or (codec == LZ4 and magic == 0):
        return [_message(magic, header.base_offset + r.offset_delta, r.timestamp, timestamp_type,
                         r.key, r.value)
                for r in records if header.base_offset + r.offset_delta >= fetch_offset]
    inner = b"".join(
        _message(magic, r.offset_delta if magic == 1 else header.base_offset + r.offset_delta,
                 r.timestamp, 0, r.key, r.value) for r in records)
    last = header.base_offset + records[-1].offset_delta
    return [_message(magic, last, header.max_timestamp, codec | timestamp_type, None,
                     compress(codec, inner))]


def down_convert(stored, magic: int, fetch_offset: int, max_bytes: int) -> bytes:
    """Stored v2 batches as a message set of `magic` (0 or 1) for an old Fetch, as Kafka
    down-converts: each compressed batch as one wrapper message, whole messages up to
    `max_bytes` (at least one, so that a consumer always progresses). A zstd batch cannot be
    expressed (Kafka answers UNSUPPORTED_COMPRESSION_TYPE): KafkaError."""
    out = bytearray()
    for position, header in iter_batches(stored, allow_partial=True):
        if header.is_control or header.last_offset < fetch_offset:
            continue
        if header.compression == ZSTD:
            raise KafkaError(ErrorCode.UNSUPPORTED_COMPRESSION_TYPE,
                             "zstd-compressed records cannot be down-converted")
        batch = memoryview(stored)[position:position + header.size]
        for message in _batch_messages(batch, header, magic, fetch_offset):
            if out and len(out) + len(message) > max_bytes:
                return bytes(out)
            out += message
    return bytes(out)
