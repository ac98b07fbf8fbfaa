"""What a producer's batch must satisfy before it is stored (Kafka's LogValidator).

Pure functions over a memoryview of the batch: no files, no log state. The hot path looks at
the 61-byte header only; records are walked on cold paths (compacted topics' keys, a missing
maxTimestamp, recompression, timestamp lookups).
"""

from __future__ import annotations

import struct
from typing import Iterator, NamedTuple

from kbroker.log.config import LONG_MAX, LogConfig
from kbroker.log.markers import MIN_LENGTH_FIELD
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.exceptions import CorruptFrame
from kbroker.protocol.primitives import read_varint
from kbroker.protocol.records import (
    GZIP, HEADER_SIZE, LOG_OVERHEAD, LZ4, MAGIC_OFFSET, NO_COMPRESSION, SNAPPY, TIMESTAMP_TYPE_BIT,
    ZSTD, BatchHeader, build_batch, compute_crc, decompress, iter_records, set_base_offset,
    set_max_timestamp, set_partition_leader_epoch,
)

NO_TIMESTAMP = -1
HEADER_UP_TO_MAGIC = 17  # Kafka needs this many bytes to see a batch at all
# compression.type -> the codec stored batches must have ("producer": whatever they have).
TOPIC_CODECS = {"uncompressed": NO_COMPRESSION, "gzip": GZIP, "snappy": SNAPPY, "lz4": LZ4, "zstd": ZSTD}

_LENGTH = struct.Struct(">i")


class RecordErrors(KafkaError):
    """Records of a batch refused one by one (KIP-467): [(index in the batch, why)], which
    Produce v8+ answers as RecordErrors so that a producer fails only those records."""

    def __init__(self, code: ErrorCode, message: str, records: list[tuple[int, str]]):
        super().__init__(code, message)
        self.records = records


class ValidBatch(NamedTuple):
    """A producer batch that passed validation, as it is to be stored (before offsets)."""

    view: memoryview
    header: BatchHeader  # with maxTimestamp taken from the records when the producer left it unset
    header_changed: bool  # maxTimestamp differs from the bytes: the stored header needs a new CRC


def validate_produce_batch(records, config: LogConfig, now_ms: int, topic_partition: str) -> ValidBatch:
    """Check one Produce partition payload against the topic's config; raise KafkaError.
    `topic_partition` ("orders-0") names the partition in messages, as Kafka's do."""
    view = single_batch(memoryview(records).cast("B"))
    header = BatchHeader.parse(view)
    size = len(view)
    if size > config.max_message_bytes:
        raise KafkaError(ErrorCode.MESSAGE_TOO_LARGE,
                         f"The record batch size {size} exceeds max.message.bytes "
                         f"{config.max_message_bytes}")
    if compute_crc(view) != header.crc:
        raise KafkaError(ErrorCode.CORRUPT_MESSAGE, "Record batch CRC does not match its contents")
    validate_batch(header)
    header_changed = False
    if header.max_timestamp < header.base_timestamp:
        header = with_record_max_timestamp(view, header)
        header_changed = True
    validate_records(view, header, config, now_ms, topic_partition)
    codec = TOPIC_CODECS.get(config.compression_type)
    if codec is not None and codec != header.compression:
        view = memoryview(recompress(view, codec, compression_level(config, codec)))
        header = BatchHeader.parse(view)
        header_changed = False
        size = len(view)
        if size > config.max_message_bytes:
            raise KafkaError(ErrorCode.MESSAGE_TOO_LARGE,
                             f"The record batch size {size} after recompression exceeds "
                             f"max.message.bytes {config.max_message_bytes}")
    if size > config.segment_bytes:
        raise KafkaError(ErrorCode.RECORD_LIST_TOO_LARGE,
                         f"The record batch size {size} exceeds segment.bytes {config.segment_bytes}")
    return ValidBatch(view, header, header_changed)


def stored_header(batch: ValidBatch, base_offset: int, leader_epoch: int,
                  append_time_ms: int) -> bytearray:
    """A copy of the batch's header as the log stores it: its offset and leader epoch assigned,
    maxTimestamp (and the timestamp type, for LogAppendTime) set, CRC fixed when they changed.
    The records after it are written as they came."""
    head = bytearray(batch.view[:HEADER_SIZE])
    set_base_offset(head, base_offset)
    set_partition_leader_epoch(head, leader_epoch)
    if append_time_ms != NO_TIMESTAMP:
        set_max_timestamp(head, append_time_ms, log_append_time=True, body=batch.view[HEADER_SIZE:])
    elif batch.header_changed:
        set_max_timestamp(head, batch.header.max_timestamp, body=batch.view[HEADER_SIZE:])
    return head


def single_batch(view: memoryview) -> memoryview:
    """The one batch of a Produce v3+ partition payload, as Kafka's ProduceRequest checks it."""
    total = len(view)
    if total < HEADER_UP_TO_MAGIC:
        raise KafkaError(ErrorCode.INVALID_RECORD,
                         "Produce requests with version 3 and above must have exactly one record batch")
    length = _LENGTH.unpack_from(view, 8)[0]
    if length < MIN_LENGTH_FIELD:
        raise KafkaError(ErrorCode.CORRUPT_MESSAGE, f"Record size {length} is less than the minimum")
    size = length + LOG_OVERHEAD
    if size > total:
        raise KafkaError(ErrorCode.INVALID_RECORD,
                         "Produce requests with version 3 and above must have exactly one record batch")
    if view[MAGIC_OFFSET] != 2:
        raise KafkaError(ErrorCode.INVALID_RECORD,
                         "Produce requests with version 3 and above are only allowed to contain "
                         "record batches with magic version 2")
    rest = total - size
    if rest >= HEADER_UP_TO_MAGIC:
        next_length = _LENGTH.unpack_from(view, size + 8)[0]
        if next_length < MIN_LENGTH_FIELD:
            raise KafkaError(ErrorCode.CORRUPT_MESSAGE, f"Record size {next_length} is less than the minimum")
        if next_length + LOG_OVERHEAD <= rest:
            raise KafkaError(ErrorCode.INVALID_RECORD,
                             "Produce requests with version 3 and above must have exactly one record batch")
    if size < HEADER_SIZE:
        raise KafkaError(ErrorCode.CORRUPT_MESSAGE,
                         f"Record batch size {size} is smaller than the minimum overhead {HEADER_SIZE}")
    return view[:size] if rest else view


def validate_batch(header: BatchHeader) -> None:
    """Kafka's LogValidator.validateBatch for client appends."""
    if header.last_offset_delta < 0:
        raise KafkaError(ErrorCode.INVALID_RECORD, "Batch has an invalid offset range")
    if header.records_count <= 0:
        raise KafkaError(ErrorCode.INVALID_RECORD,
                         f"Invalid reported count for record batch: {header.records_count}")
    if header.records_count != header.last_offset_delta + 1:
        raise KafkaError(ErrorCode.INVALID_RECORD,
                         f"Inconsistent batch offset range [0, {header.last_offset_delta}] and count "
                         f"of records {header.records_count}")
    if header.is_control:
        raise KafkaError(ErrorCode.INVALID_RECORD, "Clients are not allowed to write control records")
    if header.producer_id >= 0 and header.base_sequence < 0:
        raise KafkaError(ErrorCode.INVALID_RECORD,
                         f"Invalid sequence number {header.base_sequence} in record batch with "
                         f"producerId {header.producer_id}")


def validate_records(view: memoryview, header: BatchHeader, config: LogConfig, now_ms: int,
                     topic_partition: str) -> None:
    """Record-level checks without walking records, except keys on compacted topics.

    Timestamps: Kafka checks every record. The header's maxTimestamp (the producer computes it)
    bounds them from above, so the hot path reads only the header; the first record's timestamp
    (baseTimestamp) is no lower bound, so records are walked when the topic sets
    message.timestamp.before.max.ms, and to name the records out of range (KIP-467).
    """
    if header.attributes & TIMESTAMP_TYPE_BIT:
        raise KafkaError(ErrorCode.INVALID_TIMESTAMP,
                         "Producer should not set timestamp type to LogAppendTime")
    if not config.log_append_time:
        low = now_ms - config.message_timestamp_before_max_ms
        high = now_ms + config.message_timestamp_after_max_ms
        outside = None  # the first of the header's two timestamps out of range (no list: hot path)
        for ts in (header.base_timestamp, header.max_timestamp):
            if ts != NO_TIMESTAMP and not low <= ts <= high:
                outside = ts
                break
        if outside is not None or config.message_timestamp_before_max_ms < LONG_MAX:
            refused = _timestamps_out_of_range(view, header, low, high)
            if refused:
                raise RecordErrors(ErrorCode.INVALID_TIMESTAMP, "One or more records have been "
                                   "rejected due to invalid timestamp", refused)
        if outside is not None:
            raise KafkaError(ErrorCode.INVALID_TIMESTAMP, f"Timestamp {outside} of a record batch "
                             f"is out of range. The timestamp should be within [{low}, {high}]")
    if config.compact:
        keyless = [index for index, (_, _, key_length) in enumerate(record_fields(view, header))
                   if key_length < 0]
        if keyless:
            why = f"Compacted topic cannot accept message without key in topic partition {topic_partition}."
            raise _record_errors([(index, why) for index in keyless])


def _timestamps_out_of_range(view: memoryview, header: BatchHeader, low: int, high: int
                             ) -> list[tuple[int, str]]:
    """[(index, why)] of the records whose timestamps are out of [low, high], as Kafka's
    LogValidator names them."""
    if header.base_timestamp == NO_TIMESTAMP:
        return []
    refused = []
    for index, (ts_delta, offset_delta, _) in enumerate(record_fields(view, header)):
        timestamp = header.base_timestamp + ts_delta
        if not low <= timestamp <= high:
            refused.append((index, f"Timestamp {timestamp} of message with offset "
                                   f"{header.base_offset + offset_delta} is out of range. The "
                                   f"timestamp should be within [{low}, {high}]"))
    return refused


def _record_errors(records: list[tuple[int, str]]) -> RecordErrors:
    """Kafka's message for records refused one by one (LogValidator.processRecordErrors)."""
    shown = ", ".join(f"RecordError(batchIndex={index}, message='{why}')" for index, why in records[:3])
    return RecordErrors(ErrorCode.INVALID_RECORD, f"One or more records have been rejected due to "
                        f"{len(records)} record errors in total, and only showing the first three "
                        f"errors at most: [{shown}]", records)


def compression_level(config: LogConfig, codec: int) -> int | None:
    """The topic's compression.<codec>.level (snappy has none)."""
    return {GZIP: config.compression_gzip_level, LZ4: config.compression_lz4_level,
            ZSTD: config.compression_zstd_level}.get(codec)


def recompress(batch, codec: int, level: int | None = None) -> bytes:
    """The batch rebuilt with the topic's codec at `level` (compression.type other than the
    producer's), as Kafka's LogValidator does: same records, producer state and flags, offsets
    0..n-1."""
    header = BatchHeader.parse(batch)
    return build_batch(iter_records(batch), producer_id=header.producer_id,
                       producer_epoch=header.producer_epoch, base_sequence=header.base_sequence,
                       transactional=header.is_transactional, compression=codec,
                       partition_leader_epoch=header.partition_leader_epoch, compression_level=level)


def with_record_max_timestamp(view, header: BatchHeader) -> BatchHeader:
    """The header with maxTimestamp taken from the records, for producers that leave it unset
    (sarama 1.x). Kafka always recomputes it; kbroker trusts a plausible one and walks records
    only on this cold path."""
    deltas = [delta for delta, _, _ in record_fields(view, header)]
    return header._replace(max_timestamp=header.base_timestamp + max(deltas, default=0))


def record_fields(batch, header: BatchHeader) -> Iterator[tuple[int, int, int]]:
    """(timestamp delta, offset delta, key length) of each record of a batch (decompressed)."""
    payload = decompress(header.compression, memoryview(batch)[HEADER_SIZE:header.size])
    pos = 0
    try:
        for _ in range(header.records_count):
            length, pos = read_varint(payload, pos)
            end = pos + length
            ts_delta, p = read_varint(payload, pos + 1, 10)
            offset_delta, p = read_varint(payload, p)
            key_length, p = read_varint(payload, p)
            yield ts_delta, offset_delta, key_length
            pos = end
    except (IndexError, ValueError, CorruptFrame):
        raise KafkaError(ErrorCode.CORRUPT_MESSAGE, "Malformed record in batch") from None
