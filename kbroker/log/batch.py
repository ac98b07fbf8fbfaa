"""RecordBatch v2 header layout as the log needs it: fixed offsets, one struct, CRC-32C.

The log treats batches as opaque bytes; it only reads and patches the 61-byte header.
"""

from __future__ import annotations

import struct

import crc32c

# baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes, lastOffsetDelta,
# baseTimestamp, maxTimestamp, producerId, producerEpoch, baseSequence, recordsCount
HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = HEADER.size  # 61
LOG_OVERHEAD = 12  # baseOffset + batchLength: bytes not counted by batchLength
MIN_LENGTH_FIELD = 14  # Kafka's LegacyRecord.RECORD_OVERHEAD_V0: smaller length fields are corrupt
MAGIC_OFFSET = 16
CRC_OFFSET = 17
ATTRIBUTES_OFFSET = 21  # the CRC covers attributes..end
MAX_TIMESTAMP_OFFSET = 35

COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_BIT = 0x08  # LogAppendTime
TRANSACTIONAL_BIT = 0x10
CONTROL_BIT = 0x20

NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1
NO_TIMESTAMP = -1

CONTROL_ABORT = 0
CONTROL_COMMIT = 1

_CONTROL_KEY = struct.Struct(">hh")
_CONTROL_VALUE = struct.Struct(">hi")


class BatchHeader:
    """The decoded 61-byte header of one stored or produced batch."""

    __slots__ = (
        "base_offset", "length", "leader_epoch", "magic", "crc", "attributes", "last_offset_delta",
        "base_timestamp", "max_timestamp", "producer_id", "producer_epoch", "base_sequence",
        "records_count",
    )

    def __init__(self, buf, offset: int = 0):
        (self.base_offset, self.length, self.leader_epoch, self.magic, self.crc, self.attributes,
         self.last_offset_delta, self.base_timestamp, self.max_timestamp, self.producer_id,
         self.producer_epoch, self.base_sequence, self.records_count) = HEADER.unpack_from(buf, offset)

    @property
    def size(self) -> int:
        return self.length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def last_sequence(self) -> int:
        """Kafka's DefaultRecordBatch.lastSequence: sequences wrap at Int32.MAX."""
        if self.base_sequence == NO_SEQUENCE:
            return NO_SEQUENCE
        return (self.base_sequence + self.last_offset_delta) & 0x7FFFFFFF

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_BIT)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_BIT)


def compute_crc(batch) -> int:
    """CRC-32C over attributes..end, as stored in the crc field."""
    return crc32c.crc32c(memoryview(batch)[ATTRIBUTES_OFFSET:])


def read_varint(buf, pos: int) -> tuple[int, int]:
    """Zig-zag varint at pos -> (value, next position)."""
    shift = 0
    raw = 0
    while True:
        byte = buf[pos]
        pos += 1
        raw |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (raw >> 1) ^ -(raw & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def write_varint(value: int) -> bytes:
    raw = (value << 1) ^ (value >> 63)
    out = bytearray()
    while raw >= 0x80:
        out.append((raw & 0x7F) | 0x80)
        raw >>= 7
    out.append(raw)
    return bytes(out)


def parse_control_record(batch) -> tuple[int, int]:
    """The (type, coordinator_epoch) of an uncompressed control batch's one record.

    The coordinator epoch is -1 when the value is not a commit/abort marker value.
    """
    pos = HEADER_SIZE
    _length, pos = read_varint(batch, pos)
    pos += 1  # record attributes
    _ts_delta, pos = read_varint(batch, pos)
    _offset_delta, pos = read_varint(batch, pos)
    key_len, pos = read_varint(batch, pos)
    if key_len < _CONTROL_KEY.size:
        raise ValueError("control record key too short")
    _version, control_type = _CONTROL_KEY.unpack_from(batch, pos)
    pos += key_len
    value_len, pos = read_varint(batch, pos)
    coordinator_epoch = -1
    if value_len >= _CONTROL_VALUE.size:
        coordinator_epoch = _CONTROL_VALUE.unpack_from(batch, pos)[1]
    return control_type, coordinator_epoch


def build_control_batch(base_offset: int, producer_id: int, producer_epoch: int, control_type: int,
                        coordinator_epoch: int, timestamp: int, leader_epoch: int) -> bytes:
    """An end-transaction marker batch: one control record, key (0, type), value (0, epoch)."""
    key = _CONTROL_KEY.pack(0, control_type)
    value = _CONTROL_VALUE.pack(0, coordinator_epoch)
    body = (b"\x00" + write_varint(0) + write_varint(0) + write_varint(len(key)) + key
            + write_varint(len(value)) + value + write_varint(0))
    record = write_varint(len(body)) + body
    attributes = TRANSACTIONAL_BIT | CONTROL_BIT
    tail = struct.pack(">hiqqqhii", attributes, 0, timestamp, timestamp, producer_id, producer_epoch,
                       NO_SEQUENCE, 1) + record
    crc = crc32c.crc32c(tail)
    length = len(tail) + 9  # leader epoch (4) + magic (1) + crc (4)
    return struct.pack(">qiibI", base_offset, length, leader_epoch, 2, crc) + tail


