"""PartitionLog: one partition's directory of segments, as Kafka's UnifiedLog/LocalLog keep it.

Single broker, single replica: the high watermark is the log end offset and every batch is
stamped with leader epoch 0.
"""

from __future__ import annotations

import os
import shutil
import struct
import uuid
from bisect import bisect_right
from typing import Callable, Iterator, NamedTuple

from kbroker.log import retention
from kbroker.log.cleaner import complete_interrupted_cleaning
from kbroker.log.markers import (
    CONTROL_ABORT, CONTROL_COMMIT, MIN_LENGTH_FIELD, build_marker_batch, parse_marker,
)
from kbroker.log.config import LogConfig
from kbroker.log.files import read_if_exists, split_due, unlink_quietly, write_atomically
from kbroker.log.index import AbortedTxn
from kbroker.log.producer_state import ProducerStateManager, list_snapshots
from kbroker.log.segment import DELETED_SUFFIX, LOG_SUFFIX, SEGMENT_SUFFIXES, LogSegment
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.exceptions import CorruptFrame
from kbroker.protocol.primitives import read_varint
from kbroker.protocol.records import (
    ATTRIBUTES_OFFSET, CRC_OFFSET, HEADER_SIZE, LOG_OVERHEAD, MAGIC_OFFSET, MAX_TIMESTAMP_OFFSET,
    GZIP, LZ4, NO_COMPRESSION, SNAPPY, TIMESTAMP_TYPE_BIT, ZSTD, BatchHeader, build_batch, compute_crc,
    crc32c, decompress, iter_records,
)
from kbroker.protocol.region import FileRegion

NO_TIMESTAMP = -1
# compression.type -> the codec stored batches must have ("producer": whatever they have).
_TOPIC_CODECS = {"uncompressed": NO_COMPRESSION, "gzip": GZIP, "snappy": SNAPPY, "lz4": LZ4, "zstd": ZSTD}

LEADER_EPOCH = 0
UNDEFINED_EPOCH = -1
UNDEFINED_EPOCH_OFFSET = -1
HEADER_UP_TO_MAGIC = 17  # Kafka needs this many bytes to see a batch at all
INT32_MAX = (1 << 31) - 1
LOG_START_FILE = "log-start-offset"

_PREFIX = struct.Struct(">qii")  # baseOffset, batchLength, partitionLeaderEpoch
_ATTRIBUTES = struct.Struct(">h")
_TIMESTAMP = struct.Struct(">q")
_LENGTH = struct.Struct(">i")


class AppendResult(NamedTuple):
    base_offset: int
    last_offset: int
    log_append_time_ms: int  # -1 for CreateTime topics
    log_start_offset: int
    duplicate: bool


class ReadResult(NamedTuple):
    records: FileRegion | bytes  # b"" when nothing is readable below the upper offset
    high_watermark: int
    last_stable_offset: int
    log_start_offset: int


def partition_dir_name(topic: str, partition: int) -> str:
    return f"{topic}-{partition}"


class PartitionLog:
    """Segments [log_start_offset, log_end_offset) of one topic partition."""

    def __init__(self, directory: str, topic: str, partition: int, config: LogConfig, now_ms: int):
        self.directory = directory
        self.topic = topic
        self.partition = partition
        self.config = config
        self.segments: list[LogSegment] = []
        self.base_offsets: list[int] = []
        self.log_start_offset = 0
        self.log_end_offset = 0
        self.producer_state = ProducerStateManager()
        self.unflushed_messages = 0
        self.last_flush_ms = now_ms
        self.active_created_ms = now_ms
        self.pending_deletes: list[tuple[int, LogSegment]] = []
        self.deleted = False
        self._unflushed_segments: list[LogSegment] = []

    # -- opening and recovery ----------------------------------------------------------------

    @classmethod
    def open(cls, directory: str | os.PathLike, topic: str, partition: int, config: LogConfig,
             now_ms: int) -> PartitionLog:
        """Open (creating if needed) and recover a partition directory.

        Sealed segments keep their index files unless these are missing or inconsistent, then
        they are rebuilt from a CRC-checked scan. The last segment is always scanned with CRC
        checks: a torn or corrupt tail is cut off at the last valid batch. A corrupt sealed
        segment is cut the same way and every later segment dropped (Kafka's recovery).
        Producer state comes from the newest usable snapshot plus a header scan of the rest.
        """
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        complete_interrupted_cleaning(directory)
        log = cls(directory, topic, partition, config, now_ms)
        bases = []
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            if name.endswith(DELETED_SUFFIX) or name.endswith(".tmp"):
                os.unlink(path)
            elif name.endswith(LOG_SUFFIX) and name[:-len(LOG_SUFFIX)].isdigit():
                bases.append(int(name[:-len(LOG_SUFFIX)]))
        bases.sort()
        if not bases:
            bases.append(_read_log_start(directory) or 0)
            log.segments.append(LogSegment.create(directory, bases[0], config.index_interval_bytes))
        else:
            log.segments = [LogSegment(directory, b, config.index_interval_bytes) for b in bases]
        log.base_offsets = bases
        _remove_orphan_indexes(directory, set(bases))
        replay_from = log._recover_segments()
        log.log_start_offset = min(max(bases[0], _read_log_start(directory) or 0), log.log_end_offset)
        log._load_producer_state(replay_from)
        log._write_log_start()
        return log

    def _recover_segments(self) -> int:
        """Load or rebuild every segment; returns the lowest offset whose txn index was lost."""
        lost_txn_from = None
        i = 0
        while i < len(self.segments):
            segment = self.segments[i]
            is_last = i == len(self.segments) - 1
            next_base = self.base_offsets[i + 1] if not is_last else None
            txn_ok = segment.txn_index.load()
            if not txn_ok and lost_txn_from is None:
                lost_txn_from = segment.base_offset
            if is_last or not segment.load_indexes(next_base):
                size = segment.size
                self.log_end_offset = segment.rebuild_indexes(verify_crc=True)
                if segment.size != size and not is_last:
                    for later in self.segments[i + 1:]:
                        later.close()
                        for suffix in SEGMENT_SUFFIXES:
                            unlink_quietly(later.prefix + suffix)
                    del self.segments[i + 1:], self.base_offsets[i + 1:]
                    continue  # now the last segment: rebuilt again below as such
            i += 1
        for segment in self.segments:
            kept = [t for t in segment.txn_index.entries if t.last_offset < self.log_end_offset]
            if len(kept) != len(segment.txn_index.entries) or not os.path.exists(segment.txn_index.path):
                segment.txn_index.rewrite(kept)
        return self.log_end_offset if lost_txn_from is None else lost_txn_from

    def _load_producer_state(self, replay_limit: int) -> None:
        """Newest snapshot at or below both the LEO and replay_limit, then replay the rest."""
        start = self.log_start_offset
        for offset, path in reversed(list_snapshots(self.directory)):
            if offset <= min(self.log_end_offset, replay_limit):
                state = ProducerStateManager.read_snapshot(path)
                if state is not None:
                    self.producer_state, start = state, offset
                    break
        for offset, path in list_snapshots(self.directory):
            if offset != start or offset > self.log_end_offset:
                unlink_quietly(path)
        self._replay(max(start, self.base_offsets[0]))

    def _replay(self, from_offset: int) -> None:
        """Re-apply batches >= from_offset to producer state; regenerate their txn index entries."""
        if from_offset >= self.log_end_offset:
            return
        first = self._segment_index(from_offset)
        for segment in self.segments[first:]:
            segment.txn_index.rewrite([t for t in segment.txn_index.entries if t.last_offset < from_offset])
        for segment in self.segments[first:]:
            for position, header in segment.headers():
                if header.last_offset < from_offset:
                    continue
                if header.is_control:
                    self._apply_marker(segment, header, segment.read_batch(position, header))
                elif header.producer_id >= 0:
                    self.producer_state.record_data_batch(header, header.base_offset)

    def _apply_marker(self, segment: LogSegment, header: BatchHeader, batch) -> None:
        if header.records_count < 1 or header.compression != NO_COMPRESSION:
            return
        control_type, coordinator_epoch = parse_marker(batch)
        if control_type not in (CONTROL_ABORT, CONTROL_COMMIT):
            return
        state = self.producer_state
        completed = state.record_marker(header.producer_id, header.producer_epoch, coordinator_epoch,
                                        control_type, header.base_offset, header.max_timestamp)
        if completed is not None and completed.aborted:
            others = state.first_unstable_offset()
            lso = completed.last_offset + 1 if others is None else others
            segment.txn_index.append(AbortedTxn(completed.producer_id, completed.first_offset,
                                                completed.last_offset, lso))

    # -- offsets -----------------------------------------------------------------------------

    @property
    def high_watermark(self) -> int:
        return self.log_end_offset

    @property
    def last_stable_offset(self) -> int:
        first = self.producer_state.first_unstable_offset()
        return self.high_watermark if first is None else min(first, self.high_watermark)

    @property
    def size_bytes(self) -> int:
        return sum(segment.size for segment in self.segments)

    def _segment_index(self, offset: int) -> int:
        return max(bisect_right(self.base_offsets, offset) - 1, 0)

    # -- appending ---------------------------------------------------------------------------

    def append_produce(self, records, now_ms: int) -> AppendResult:
        """Validate one producer batch and append it, or raise KafkaError with nothing written."""
        view = _single_batch(memoryview(records).cast("B"))
        header = BatchHeader.parse(view)
        config = self.config
        size = len(view)
        if size > config.max_message_bytes:
            raise KafkaError(ErrorCode.MESSAGE_TOO_LARGE,
                             f"The record batch size {size} exceeds max.message.bytes "
                             f"{config.max_message_bytes}")
        if compute_crc(view) != header.crc:
            raise KafkaError(ErrorCode.CORRUPT_MESSAGE, "Record batch CRC does not match its contents")
        _validate_batch(header)
        sent_max_timestamp = header.max_timestamp
        if header.max_timestamp < header.base_timestamp:
            header = _with_record_max_timestamp(view, header)
        self._validate_records(view, header, now_ms)
        codec = _TOPIC_CODECS.get(config.compression_type)
        if codec is not None and codec != header.compression:
            view = memoryview(_recompress(view, codec, config))
            header = BatchHeader.parse(view)
            size = len(view)
            if size > config.max_message_bytes:
                raise KafkaError(ErrorCode.MESSAGE_TOO_LARGE,
                                 f"The record batch size {size} after recompression exceeds "
                                 f"max.message.bytes {config.max_message_bytes}")
        if size > config.segment_bytes:
            raise KafkaError(ErrorCode.RECORD_LIST_TOO_LARGE,
                             f"The record batch size {size} exceeds segment.bytes {config.segment_bytes}")
        state = self.producer_state
        if header.producer_id >= 0:
            duplicate = state.find_duplicate(header)
            if duplicate is not None:
                append_time = duplicate.timestamp if config.log_append_time else NO_TIMESTAMP
                return AppendResult(duplicate.first_offset, duplicate.last_offset, append_time,
                                    self.log_start_offset, True)
            state.check_data_batch(header)

        base_offset = self.log_end_offset
        last_offset = base_offset + header.last_offset_delta
        append_time = NO_TIMESTAMP
        if config.log_append_time:
            append_time = now_ms
            header = header._replace(max_timestamp=now_ms)
        segment = self._maybe_roll(size, header.max_timestamp, last_offset, now_ms)
        head = bytearray(view[:HEADER_SIZE])
        _PREFIX.pack_into(head, 0, base_offset, header.batch_length, LEADER_EPOCH)
        if append_time != NO_TIMESTAMP or header.max_timestamp != sent_max_timestamp:
            if append_time != NO_TIMESTAMP:
                _ATTRIBUTES.pack_into(head, ATTRIBUTES_OFFSET, header.attributes | TIMESTAMP_TYPE_BIT)
            _TIMESTAMP.pack_into(head, MAX_TIMESTAMP_OFFSET, header.max_timestamp)
            crc = crc32c(view[HEADER_SIZE:], crc32c(head[ATTRIBUTES_OFFSET:]))
            struct.pack_into(">I", head, CRC_OFFSET, crc)
        segment.append([head, view[HEADER_SIZE:]], size, last_offset, header.max_timestamp)
        self.log_end_offset = last_offset + 1
        self.unflushed_messages += header.records_count
        if header.producer_id >= 0:
            state.record_data_batch(header, base_offset)
        return AppendResult(base_offset, last_offset, append_time, self.log_start_offset, False)

    def _validate_records(self, view: memoryview, header: BatchHeader, now_ms: int) -> None:
        """Record-level checks without walking records, except keys on compacted topics.

        Timestamps: Kafka checks every record; the batch's base and max timestamps bound them
        (the producer computes maxTimestamp), so checking those two is the hot-path stand-in.
        """
        config = self.config
        if header.attributes & TIMESTAMP_TYPE_BIT:
            raise KafkaError(ErrorCode.INVALID_TIMESTAMP,
                             "Producer should not set timestamp type to LogAppendTime")
        if not config.log_append_time:
            low = now_ms - config.message_timestamp_before_max_ms
            high = now_ms + config.message_timestamp_after_max_ms
            for ts in (header.base_timestamp, header.max_timestamp):
                if ts != NO_TIMESTAMP and not low <= ts <= high:
                    raise KafkaError(ErrorCode.INVALID_TIMESTAMP,
                                     f"Timestamp {ts} of a record is out of range. The timestamp "
                                     f"should be within [{low}, {high}]")
        if config.compact:
            if _has_null_key(_records_payload(view, header), header.records_count):
                raise KafkaError(ErrorCode.INVALID_RECORD,
                                 "Compacted topic cannot accept message without key")

    def _maybe_roll(self, size: int, batch_timestamp: int, last_offset: int, now_ms: int) -> LogSegment:
        """Kafka's shouldRoll: size, age (by record time when known), index capacity, offsets."""
        segment = self.segments[-1]
        config = self.config
        if segment.size == 0:
            return segment
        first_ts = segment.first_batch_timestamp
        waited = batch_timestamp - first_ts if first_ts is not None and first_ts >= 0 and \
            batch_timestamp >= 0 else now_ms - self.active_created_ms
        if (segment.size + size > config.segment_bytes
                or waited > config.segment_ms - config.segment_jitter_ms
                or len(segment.index) >= config.segment_index_bytes // 8
                or len(segment.time_index) >= config.segment_index_bytes // 12
                or last_offset - segment.base_offset > INT32_MAX):
            return self.roll(now_ms)
        return segment

    def roll(self, now_ms: int) -> LogSegment:
        """Seal the active segment and start a new one at the log end offset."""
        active = self.segments[-1]
        if active.size == 0:
            return active
        active.seal()
        self._unflushed_segments.append(active)
        segment = LogSegment.create(self.directory, self.log_end_offset, self.config.index_interval_bytes)
        self.segments.append(segment)
        self.base_offsets.append(segment.base_offset)
        self.active_created_ms = now_ms
        self._write_snapshot()
        return segment

    def _write_snapshot(self) -> None:
        self.producer_state.write_snapshot(self.directory, self.log_end_offset)
        for offset, path in list_snapshots(self.directory):
            if offset != self.log_end_offset:
                unlink_quietly(path)

    # -- transactions ------------------------------------------------------------------------

    def append_control(self, producer_id: int, producer_epoch: int, commit: bool,
                       coordinator_epoch: int, now_ms: int) -> int:
        """Write a COMMIT/ABORT marker for a producer (WriteTxnMarkers); returns its offset."""
        self.producer_state.check_marker(producer_id, producer_epoch, coordinator_epoch)
        offset = self.log_end_offset
        control_type = CONTROL_COMMIT if commit else CONTROL_ABORT
        batch = build_marker_batch(offset, producer_id, producer_epoch, control_type,
                                    coordinator_epoch, now_ms, LEADER_EPOCH)
        segment = self._maybe_roll(len(batch), now_ms, offset, now_ms)
        segment.append([batch], len(batch), offset, now_ms)
        self.log_end_offset = offset + 1
        self.unflushed_messages += 1
        self._apply_marker(segment, BatchHeader.parse(batch), batch)
        return offset

    def aborted_transactions(self, start_offset: int, upper_offset: int) -> list[tuple[int, int]]:
        """(producer id, first offset) of aborted transactions overlapping [start, upper)."""
        found: list[AbortedTxn] = []
        for segment in self.segments[self._segment_index(start_offset):]:
            if segment.txn_index.collect(start_offset, upper_offset, found):
                break
        return [(txn.producer_id, txn.first_offset) for txn in found]

    # -- reading -----------------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int, upper_offset: int | None = None,
             min_one_batch: bool = True) -> ReadResult:
        """Whole batches of one segment from the batch holding `offset`, below upper_offset.

        Stops before max_bytes, except that with min_one_batch the first batch is returned even
        when larger (as Kafka does so that consumers make progress).
        """
        if offset < self.log_start_offset or offset > self.log_end_offset:
            raise KafkaError(ErrorCode.OFFSET_OUT_OF_RANGE,
                             f"Offset {offset} is out of range [{self.log_start_offset}, "
                             f"{self.log_end_offset}] for {self.topic}-{self.partition}")
        upper = self.high_watermark if upper_offset is None else upper_offset
        records: FileRegion | bytes = b""
        if offset < upper:
            for segment in self.segments[self._segment_index(offset):]:
                region = _read_segment(segment, offset, max_bytes, upper, min_one_batch)
                if region is not None:
                    records = region if region.size else b""
                    break
        return ReadResult(records, self.high_watermark, self.last_stable_offset, self.log_start_offset)

    def stored_batches(self) -> Iterator[tuple[BatchHeader, bytes]]:
        """Every batch from the log start on, oldest first: what a coordinator replays."""
        for segment in list(self.segments):
            for position, header in segment.headers():
                if header.last_offset >= self.log_start_offset:
                    yield header, segment.read_batch(position, header)

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record with timestamp >= the target, if any."""
        for segment in self.segments:
            if segment.max_timestamp < timestamp:
                continue
            slot = segment.time_index.floor(timestamp)
            offset = segment.base_offset + segment.time_index.values[slot] if slot >= 0 else \
                segment.base_offset
            found = segment.position_of(max(offset, self.log_start_offset))
            if found is None:
                continue
            for position, header in segment.headers(found[0]):
                if header.max_timestamp >= timestamp and \
                        header.last_offset >= self.log_start_offset:
                    return _first_record_at_or_after(segment, position, header, timestamp,
                                                     self.log_start_offset)
        return None

    def max_timestamp(self) -> tuple[int, int] | None:
        """(timestamp, offset) of the first record holding the log's largest timestamp."""
        largest = max(segment.max_timestamp for segment in self.segments)
        if largest < 0:
            return None
        found = self.offset_for_timestamp(largest)
        return None if found is None else (found[1], found[0])

    def end_offset_for_epoch(self, leader_epoch: int) -> tuple[int, int]:
        """(epoch, end offset) as OffsetsForLeaderEpoch answers: one epoch (0) since offset 0."""
        if leader_epoch < LEADER_EPOCH or self.log_end_offset == 0:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        return LEADER_EPOCH, self.log_end_offset

    # -- flushing ----------------------------------------------------------------------------

    def needs_flush(self, now_ms: int) -> bool:
        """True when flush.messages or flush.ms says it is time to fsync."""
        if not self.unflushed_messages and not self._unflushed_segments:
            return False
        return (self.unflushed_messages >= self.config.flush_interval_messages
                or now_ms - self.last_flush_ms >= self.config.flush_interval_ms)

    def flush(self, now_ms: int | None = None) -> None:
        """fsync written data and indexes.

        Meant for a worker thread while the event loop keeps appending: it only fsyncs fds, and
        segment fds stay open for file.delete.delay.ms after a deletion.
        """
        segments = self._unflushed_segments + [self.segments[-1]]
        self._unflushed_segments = []
        self.unflushed_messages = 0
        if now_ms is not None:
            self.last_flush_ms = now_ms
        for segment in segments:
            if segment.fd >= 0:
                segment.fsync()

    # -- deletion ----------------------------------------------------------------------------

    def delete_records_before(self, offset: int, now_ms: int) -> int:
        """DeleteRecords: move the log start offset up; returns the new low watermark."""
        if offset < 0 or offset > self.high_watermark:
            raise KafkaError(ErrorCode.OFFSET_OUT_OF_RANGE,
                             f"Cannot delete records before {offset}: the high watermark is "
                             f"{self.high_watermark}")
        if offset > self.log_start_offset:
            self.log_start_offset = offset
            self._write_log_start()
            self.delete_segments(retention.below_log_start(self), now_ms)
        return self.log_start_offset

    def apply_retention(self, now_ms: int) -> int:
        """Delete whole old segments per retention.ms/retention.bytes; returns how many."""
        count = retention.deletable_segments(self, now_ms)
        self.delete_segments(count, now_ms)
        self.purge_deleted(now_ms)
        return count

    def delete_segments(self, count: int, now_ms: int) -> None:
        """Drop the first `count` segments (rolling first if that includes the active one)."""
        if count <= 0:
            return
        if count >= len(self.segments):
            self.roll(now_ms)
            count = min(count, len(self.segments) - 1)
        for segment in self.segments[:count]:
            segment.rename_deleted()
            self.pending_deletes.append((now_ms + self.config.file_delete_delay_ms, segment))
        del self.segments[:count], self.base_offsets[:count]
        self._unflushed_segments = [s for s in self._unflushed_segments if s in self.segments]
        if self.base_offsets[0] > self.log_start_offset:
            self.log_start_offset = self.base_offsets[0]
            self._write_log_start()

    def replace_segments(self, old: list[LogSegment], now_ms: int,
                         open_new: Callable[[], LogSegment]) -> None:
        """Compaction: put one cleaned segment in place of a run of sealed ones.

        The old files are renamed away first, then `open_new` moves the cleaned files into place
        and opens them; the old ones go after file.delete.delay.ms, as after retention.
        """
        first = next(i for i, segment in enumerate(self.segments) if segment is old[0])
        for segment in old:
            segment.rename_deleted()
            self.pending_deletes.append((now_ms + self.config.file_delete_delay_ms, segment))
        new = open_new()
        self.segments[first:first + len(old)] = [new]
        self.base_offsets[first:first + len(old)] = [new.base_offset]
        self._unflushed_segments = [s for s in self._unflushed_segments if s in self.segments]

    def purge_deleted(self, now_ms: int) -> None:
        """Unlink `.deleted` files whose file.delete.delay.ms has passed, closing their fds."""
        self.pending_deletes, due = split_due(self.pending_deletes, now_ms)
        for segment in due:
            segment.unlink_deleted()

    def _write_log_start(self) -> None:
        write_atomically(os.path.join(self.directory, LOG_START_FILE), f"{self.log_start_offset}\n".encode())

    def rename_for_delete(self) -> str:
        """Topic deletion: move the directory aside (open fds keep serving); returns new path."""
        target = f"{self.directory}.{uuid.uuid4().hex}-delete"
        os.rename(self.directory, target)
        self.directory = target
        self.deleted = True
        return target

    def close(self) -> None:
        """Seal indexes, snapshot producer state, close files (the log can be reopened)."""
        if not self.deleted:
            self.segments[-1].seal()
            self._write_snapshot()
        for segment in self.segments:
            segment.close()
        for _, segment in self.pending_deletes:
            segment.unlink_deleted()
        self.pending_deletes = []

    def remove_files(self) -> None:
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)


# -- helpers ---------------------------------------------------------------------------------

def _single_batch(view: memoryview) -> memoryview:
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


def _validate_batch(header: BatchHeader) -> None:
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


def _recompress(batch, codec: int, config: LogConfig) -> bytes:
    """The batch rebuilt with the topic's codec and level (compression.type other than the
    producer's), as Kafka's LogValidator does: same records, producer state and flags, offsets
    0..n-1."""
    header = BatchHeader.parse(batch)
    level = {GZIP: config.compression_gzip_level, LZ4: config.compression_lz4_level,
             ZSTD: config.compression_zstd_level}.get(codec)
    return build_batch(iter_records(batch), producer_id=header.producer_id,
                       producer_epoch=header.producer_epoch, base_sequence=header.base_sequence,
                       transactional=header.is_transactional, compression=codec,
                       partition_leader_epoch=header.partition_leader_epoch, compression_level=level)


def _with_record_max_timestamp(view, header: BatchHeader) -> BatchHeader:
    """The header with maxTimestamp taken from the records, for producers that leave it unset
    (sarama 1.x). Kafka always recomputes it; kbroker trusts a plausible one and walks records
    only on this cold path."""
    deltas = [delta for delta, _, _ in _records(_records_payload(view, header), header.records_count)]
    return header._replace(max_timestamp=header.base_timestamp + max(deltas, default=0))


def _records_payload(batch, header: BatchHeader):
    """The records section, decompressed."""
    return decompress(header.compression, memoryview(batch)[HEADER_SIZE:header.size])


def _records(payload, count: int):
    """Yield (timestamp delta, offset delta, key length) per record of a records section."""
    pos = 0
    try:
        for _ in range(count):
            length, pos = read_varint(payload, pos)
            end = pos + length
            ts_delta, p = read_varint(payload, pos + 1, 10)
            offset_delta, p = read_varint(payload, p)
            key_length, p = read_varint(payload, p)
            yield ts_delta, offset_delta, key_length
            pos = end
    except (IndexError, ValueError, CorruptFrame):
        raise KafkaError(ErrorCode.CORRUPT_MESSAGE, "Malformed record in batch") from None


def _has_null_key(payload, count: int) -> bool:
    return any(key_length < 0 for _, _, key_length in _records(payload, count))


def _first_record_at_or_after(segment: LogSegment, position: int, header: BatchHeader,
                              timestamp: int, log_start: int) -> tuple[int, int]:
    """(offset, timestamp) of the batch's first record with timestamp >= target.

    LogAppendTime batches stamp all records with maxTimestamp.
    """
    first_offset = max(header.base_offset, log_start)
    if header.attributes & TIMESTAMP_TYPE_BIT:
        return first_offset, header.max_timestamp
    payload = _records_payload(segment.read_batch(position, header), header)
    for ts_delta, offset_delta, _ in _records(payload, header.records_count):
        record_ts = header.base_timestamp + ts_delta
        if record_ts >= timestamp and header.base_offset + offset_delta >= log_start:
            return header.base_offset + offset_delta, record_ts
    return first_offset, header.max_timestamp


def _read_segment(segment: LogSegment, offset: int, max_bytes: int, upper: int,
                  min_one_batch: bool) -> FileRegion | None:
    """The region to send (empty: the read stops here), or None when offset is past this segment.

    The offset index bounds both header walks to about one index interval: the first batch is
    looked for from the entry below `offset`, the last from the entry below the byte limit.
    """
    slot = segment.index.floor(offset - segment.base_offset)
    for start, header in segment.headers(segment.index.values[slot] if slot >= 0 else 0):
        if header.last_offset >= offset:
            break
    else:
        return None
    size = header.size
    if header.last_offset >= upper or (size > max_bytes and not min_one_batch):
        return FileRegion(segment.fd, start, 0)
    if size >= max_bytes:
        return FileRegion(segment.fd, start, size)
    end = _skip_ahead(segment, start + size, start + max_bytes, upper)
    for position, header in segment.headers(end):
        if header.last_offset >= upper or position + header.size - start > max_bytes:
            break
        end = position + header.size
    return FileRegion(segment.fd, start, end - start)


def _skip_ahead(segment: LogSegment, end: int, limit: int, upper: int) -> int:
    """Where the walk for a read's last batch can start: the last indexed batch at or before
    byte `limit` whose offsets (and all before it) are below `upper`, if past `end`."""
    index = segment.index
    slot = min(bisect_right(index.values, limit) - 1, index.floor(upper - 1 - segment.base_offset))
    return max(end, index.values[slot]) if slot >= 0 else end


def _read_log_start(directory: str) -> int | None:
    data = read_if_exists(os.path.join(directory, LOG_START_FILE))
    return int(data) if data and data.strip().isdigit() else None


def _remove_orphan_indexes(directory: str, bases: set[int]) -> None:
    for name in os.listdir(directory):
        stem, dot, suffix = name.partition(".")
        if dot and "." + suffix in SEGMENT_SUFFIXES[1:] and stem.isdigit() and int(stem) not in bases:
            os.unlink(os.path.join(directory, name))

