"""RecordBatch v2 (magic 2), the unit the log stores and Produce/Fetch carry.

Hot paths only look at the fixed 61-byte batch header (``BatchHeader.parse``, one
struct unpack) and patch fields in place (``set_base_offset``, ...); records stay opaque.
Cold paths (tests, internal topics, compaction) build batches with ``build_batch`` and
read them with ``iter_records``. Layout and attribute bits: GUIDE.md section 4.

Malformed batches raise ``KafkaError(ErrorCode.CORRUPT_MESSAGE)``: a bad batch is a
per-partition error to report, not a broken connection.
"""

from __future__ import annotations

import struct
import zlib
from functools import cache
from typing import Iterator, NamedTuple

from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.exceptions import CorruptFrame
from kbroker.protocol.primitives import read_varint, write_varint

import cramjam

MAGIC = 2
HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = HEADER.size  # 61
LOG_OVERHEAD = 12  # baseOffset + batchLength, not counted in batchLength
PARTITION_LEADER_EPOCH_OFFSET = 12
MAGIC_OFFSET = 16
CRC_OFFSET = 17
ATTRIBUTES_OFFSET = 21  # the CRC covers attributes..end of batch
MAX_TIMESTAMP_OFFSET = 35

COMPRESSION_MASK = 0x07
NO_COMPRESSION, GZIP, SNAPPY, LZ4, ZSTD = range(5)
TIMESTAMP_TYPE_BIT = 0x08  # 1 = LogAppendTime
TRANSACTIONAL_BIT = 0x10
CONTROL_BIT = 0x20
DELETE_HORIZON_BIT = 0x40

CREATE_TIME, LOG_APPEND_TIME = 0, 1
NO_PRODUCER_ID = -1
NO_SEQUENCE = -1

_INT64 = struct.Struct(">q")
_INT32 = struct.Struct(">i")
_UINT32 = struct.Struct(">I")
_INT16 = struct.Struct(">h")
_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = struct.Struct(">8sii")  # magic, version, compatible version
_XERIAL_BLOCK = 32 * 1024  # snappy-java's default block size


def corrupt(message: str) -> KafkaError:
    return KafkaError(ErrorCode.CORRUPT_MESSAGE, message)


class BatchHeader(NamedTuple):
    """The 61-byte header of one batch. ``parse`` does not check the magic: callers do."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @classmethod
    def parse(cls, buf, offset: int = 0) -> BatchHeader:
        if len(buf) - offset < HEADER_SIZE:
            raise corrupt("record batch shorter than its header")
        return cls._make(HEADER.unpack_from(buf, offset))

    @property
    def size(self) -> int:
        """Bytes of the whole batch, header included."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def last_sequence(self) -> int:
        """Sequence of the last record; sequences wrap from 2**31-1 to 0."""
        if self.base_sequence == NO_SEQUENCE:
            return NO_SEQUENCE
        return (self.base_sequence + self.last_offset_delta) & 0x7FFFFFFF

    @property
    def compression(self) -> int:
        return self.attributes & COMPRESSION_MASK

    @property
    def timestamp_type(self) -> int:
        return LOG_APPEND_TIME if self.attributes & TIMESTAMP_TYPE_BIT else CREATE_TIME

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_BIT)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_BIT)

    @property
    def has_delete_horizon(self) -> bool:
        return bool(self.attributes & DELETE_HORIZON_BIT)


def batch_headers(buf, pos: int = 0) -> Iterator[tuple[int, BatchHeader]]:
    """The batch walker: (position, header) of consecutive batches from ``pos`` for as long as
    a whole header lies in ``buf``.

    Whether a batch's body fits is left to the caller (compare ``pos + header.size`` with its
    end): a file walk reads headers ahead of bodies. A batch length too small to hold the header
    raises CORRUPT_MESSAGE, as the walk cannot go on from it.
    """
    end = len(buf)
    unpack = HEADER.unpack_from
    while end - pos >= HEADER_SIZE:
        header = BatchHeader._make(unpack(buf, pos))
        if header.batch_length < HEADER_SIZE - LOG_OVERHEAD:
            raise corrupt(f"batch length {header.batch_length} is too small")
        yield pos, header
        pos += header.batch_length + LOG_OVERHEAD


def iter_batches(buf, *, allow_partial: bool = False) -> Iterator[tuple[int, BatchHeader]]:
    """(position, header) of each whole batch in ``buf``, without touching records.

    A truncated last batch is an error unless ``allow_partial`` (fetch responses may end
    with one), in which case it is skipped.
    """
    end = len(buf)
    next_pos = 0
    for pos, header in batch_headers(buf):
        next_pos = pos + header.size
        if next_pos > end:
            if allow_partial:
                return
            raise corrupt("record batch runs past the end of the records")
        yield pos, header
    if next_pos != end and not allow_partial:
        raise corrupt("trailing bytes shorter than a batch header")


def _batch_end(buf, offset: int) -> int:
    (batch_length,) = _INT32.unpack_from(buf, offset + 8)
    return offset + LOG_OVERHEAD + batch_length


@cache
def _crc32c_function():
    import crc32c  # on first use: importing it reads package metadata, ~20 ms of a broker's start
    return crc32c.crc32c


def crc32c(data, value: int = 0) -> int:
    """CRC-32C of data, continuing from value."""
    return _crc32c_function()(data, value)


def compute_crc(buf, offset: int = 0) -> int:
    """CRC-32C of the batch at ``offset`` over attributes..end (of the batch or of ``buf``, when
    it holds only the start of the batch), as stored in its crc field."""
    return crc32c(memoryview(buf)[offset + ATTRIBUTES_OFFSET:_batch_end(buf, offset)])


def crc_is_valid(buf, offset: int = 0) -> bool:
    return compute_crc(buf, offset) == _UINT32.unpack_from(buf, offset + CRC_OFFSET)[0]


def set_base_offset(buf, base_offset: int, offset: int = 0) -> None:
    """Assign the batch its log offset (outside the CRC, so nothing else changes)."""
    _INT64.pack_into(buf, offset, base_offset)


def set_partition_leader_epoch(buf, epoch: int, offset: int = 0) -> None:
    """Stamp the leader epoch (outside the CRC)."""
    _INT32.pack_into(buf, offset + PARTITION_LEADER_EPOCH_OFFSET, epoch)


def set_max_timestamp(buf, max_timestamp: int, *, log_append_time: bool = False, offset: int = 0,
                      body=b"") -> None:
    """Set maxTimestamp (and the LogAppendTime bit if asked), then fix the CRC they are under.

    ``body``: the rest of the batch when ``buf`` holds only its header (the append path patches
    a copy of the header and writes the producer's records as they came).
    """
    if log_append_time:
        (attributes,) = _INT16.unpack_from(buf, offset + ATTRIBUTES_OFFSET)
        _INT16.pack_into(buf, offset + ATTRIBUTES_OFFSET, attributes | TIMESTAMP_TYPE_BIT)
    _INT64.pack_into(buf, offset + MAX_TIMESTAMP_OFFSET, max_timestamp)
    _UINT32.pack_into(buf, offset + CRC_OFFSET, crc32c(body, compute_crc(buf, offset)))


class Record(NamedTuple):
    """One record. ``offset_delta`` None in build_batch means "its index in the batch";
    ``headers`` is a sequence of (str key, bytes-or-None value)."""

    offset_delta: int | None = None
    timestamp: int = 0
    key: bytes | None = None
    value: bytes | None = None
    headers: tuple = ()


class StoredRecord(NamedTuple):
    """A record read from a batch (iter_records): unlike a Record to build, its offset delta is known."""

    offset_delta: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple


def _encode_bytes(data) -> bytes:
    return write_varint(-1) if data is None else write_varint(len(data)) + bytes(data)


def _encode_record(record: Record, offset_delta: int, base_timestamp: int) -> bytes:
    body = bytearray(b"\x00")  # record attributes: unused
    body += write_varint(record.timestamp - base_timestamp)
    body += write_varint(offset_delta)
    body += _encode_bytes(record.key)
    body += _encode_bytes(record.value)
    body += write_varint(len(record.headers))
    for key, value in record.headers:
        body += _encode_bytes(key.encode())
        body += _encode_bytes(value)
    return write_varint(len(body)) + bytes(body)


def build_batch(
    records, *, base_offset: int = 0, producer_id: int = NO_PRODUCER_ID, producer_epoch: int = -1,
    base_sequence: int = NO_SEQUENCE, transactional: bool = False, control: bool = False,
    timestamp_type: int = CREATE_TIME, compression: int = NO_COMPRESSION, partition_leader_epoch: int = -1,
    delete_horizon_ms: int | None = None, last_offset_delta: int | None = None,
    compression_level: int | None = None,
) -> bytes:
    """Serialize ``records`` (a non-empty sequence of Record) as one batch, CRC included.

    The log cleaner rewrites batches keeping their last offset (``last_offset_delta``) and may
    stamp a delete horizon, which then is the base timestamp the records' deltas refer to.
    """
    records = list(records)
    if not records:
        raise ValueError("a record batch needs at least one record")
    base_timestamp = records[0].timestamp if delete_horizon_ms is None else delete_horizon_ms
    deltas = [i if r.offset_delta is None else r.offset_delta for i, r in enumerate(records)]
    body = b"".join(_encode_record(r, d, base_timestamp) for r, d in zip(records, deltas))
    body = compress(compression, body, compression_level)
    attributes = (
        compression
        | (TIMESTAMP_TYPE_BIT if timestamp_type == LOG_APPEND_TIME else 0)
        | (TRANSACTIONAL_BIT if transactional else 0)
        | (CONTROL_BIT if control else 0)
        | (DELETE_HORIZON_BIT if delete_horizon_ms is not None else 0)
    )
    batch = bytearray(HEADER.pack(
        base_offset, HEADER_SIZE - LOG_OVERHEAD + len(body), partition_leader_epoch, MAGIC, 0, attributes,
        max(deltas) if last_offset_delta is None else last_offset_delta, base_timestamp,
        max(r.timestamp for r in records), producer_id, producer_epoch,
        base_sequence, len(records),
    ))
    batch += body
    _UINT32.pack_into(batch, CRC_OFFSET, compute_crc(batch))
    return bytes(batch)


def _decode_bytes(buf, pos: int) -> tuple[bytes | None, int]:
    length, pos = read_varint(buf, pos)
    if length < 0:
        return None, pos
    end = pos + length
    if end > len(buf):
        raise corrupt("record field runs past the end of the batch")
    return bytes(buf[pos:end]), end


def _decode_record(buf, pos: int, header: BatchHeader) -> tuple[StoredRecord, int]:
    length, pos = read_varint(buf, pos)
    end = pos + length
    pos += 1  # attributes
    timestamp_delta, pos = read_varint(buf, pos, 10)
    offset_delta, pos = read_varint(buf, pos)
    key, pos = _decode_bytes(buf, pos)
    value, pos = _decode_bytes(buf, pos)
    count, pos = read_varint(buf, pos)
    if count < 0 or count > end - pos:
        raise corrupt("bad record header count")
    headers = []
    for _ in range(count):
        name, pos = _decode_bytes(buf, pos)
        if name is None:
            raise corrupt("null record header key")
        header_value, pos = _decode_bytes(buf, pos)
        headers.append((name.decode(), header_value))
    if pos != end:
        raise corrupt("record length does not match its contents")
    if header.timestamp_type == LOG_APPEND_TIME:
        timestamp = header.max_timestamp
    else:
        timestamp = header.base_timestamp + timestamp_delta
    return StoredRecord(offset_delta, timestamp, key, value, tuple(headers)), pos


def iter_records(batch) -> Iterator[StoredRecord]:
    """Decode the records of one batch (cold path: tests, internal topics, compaction)."""
    header = BatchHeader.parse(batch)
    if header.magic != MAGIC:
        raise corrupt(f"record batch magic {header.magic} is not 2")
    if header.size > len(batch):
        raise corrupt("record batch runs past the end of the buffer")
    body = decompress(header.compression, memoryview(batch)[HEADER_SIZE:header.size])
    pos = 0
    for _ in range(header.records_count):
        try:
            record, pos = _decode_record(body, pos, header)
        except (IndexError, CorruptFrame, UnicodeDecodeError) as e:
            raise corrupt(f"malformed record: {e}") from e
        yield record
    if pos != len(body):
        raise corrupt("bytes left after the last record")


def _require_codec(compression: int):
    if compression not in (SNAPPY, LZ4, ZSTD):
        raise corrupt(f"unknown compression type {compression}")
    return {SNAPPY: cramjam.snappy, LZ4: cramjam.lz4, ZSTD: cramjam.zstd}[compression]


def compress(compression: int, data: bytes, level: int | None = None) -> bytes:
    """Compress a batch body the way Kafka clients do (gzip stream, xerial snappy, lz4 frame, zstd),
    at `level` (compression.<codec>.level; None: the codec's default; snappy has none)."""
    if compression == NO_COMPRESSION:
        return data
    if compression == GZIP:
        packer = zlib.compressobj(-1 if level is None else level, wbits=31)  # 31: gzip container
        return packer.compress(data) + packer.flush()
    codec = _require_codec(compression)
    if compression == SNAPPY:
        blocks = [_XERIAL_HEADER.pack(_XERIAL_MAGIC, 1, 1)]
        for start in range(0, len(data), _XERIAL_BLOCK):
            block = bytes(codec.compress_raw(data[start:start + _XERIAL_BLOCK]))
            blocks.append(_INT32.pack(len(block)) + block)
        return b"".join(blocks)
    return bytes(codec.compress(data) if level is None else codec.compress(data, level=level))


def decompress(compression: int, data) -> bytes | memoryview:
    if compression == NO_COMPRESSION:
        return data
    try:
        if compression == GZIP:
            return zlib.decompress(data, wbits=47)  # 47: gzip or zlib header, auto-detected
        codec = _require_codec(compression)
        if compression == SNAPPY:
            return _snappy_decompress(codec, bytes(data))
        return bytes(codec.decompress(bytes(data)))
    except KafkaError:
        raise
    except Exception as e:  # each library raises its own error types
        raise corrupt(f"cannot decompress batch: {e}") from e


def _snappy_decompress(snappy, data: bytes) -> bytes:
    """Java clients frame snappy the xerial way; others may send one raw block."""
    if not data.startswith(_XERIAL_MAGIC):
        return bytes(snappy.decompress_raw(data))
    out, pos = [], _XERIAL_HEADER.size
    while pos < len(data):
        (length,) = _INT32.unpack_from(data, pos)
        pos += 4
        out.append(bytes(snappy.decompress_raw(data[pos:pos + length])))
        pos += length
    return b"".join(out)
