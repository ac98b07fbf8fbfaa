"""PartitionLog: one partition as the broker uses it (Kafka's UnifiedLog).

It composes the pieces: the loader opens and recovers the directory, the validator checks
what producers send, the LocalLog stores and reads segments, and the producer state decides
duplicates and transactions. Single broker, single replica: the high watermark is the log end
offset and every batch is stamped with leader epoch 0.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from kbroker.log import loader, retention
from kbroker.log.config import LogConfig
from kbroker.log.files import unlink_quietly
from kbroker.log.local import LocalLog
from kbroker.log.markers import CONTROL_ABORT, CONTROL_COMMIT, build_marker_batch
from kbroker.log.producer_state import list_snapshots
from kbroker.log.segment import LogSegment
from kbroker.log.validator import NO_TIMESTAMP, stored_header, validate_produce_batch
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.primitives import INT32_MAX
from kbroker.protocol.records import HEADER_SIZE, BatchHeader

LEADER_EPOCH = 0  # the epoch of every partition: a single broker is the only leader there ever was
UNDEFINED_EPOCH = -1
UNDEFINED_EPOCH_OFFSET = -1


class AppendResult(NamedTuple):
    base_offset: int
    last_offset: int
    log_append_time_ms: int  # -1 for CreateTime topics
    log_start_offset: int
    duplicate: bool


def partition_dir_name(topic: str, partition: int) -> str:
    return f"{topic}-{partition}"


class PartitionLog(LocalLog):
    """A LocalLog with producer validation, idempotent/transactional state and flush policy."""

    def __init__(self, directory: str, topic: str, partition: int, config: LogConfig,
                 loaded: loader.LoadedLog, now_ms: int):
        super().__init__(directory, topic, partition, config, loaded.segments,
                         loaded.log_start_offset, loaded.log_end_offset, now_ms)
        self.producer_state = loaded.producer_state
        self.unflushed_messages = 0
        self.last_flush_ms = now_ms
        self._unflushed_segments: list[LogSegment] = []

    @classmethod
    def open(cls, directory: str | os.PathLike, topic: str, partition: int, config: LogConfig,
             now_ms: int, recovery_point: int | None = 0) -> PartitionLog:
        """Open (creating if needed) and recover a partition directory (see kbroker.log.loader).

        recovery_point: the offset up to which the data was fsynced, or None after a clean
        shutdown (nothing is scanned).
        """
        directory = os.fspath(directory)
        loaded = loader.load(directory, f"{topic}-{partition}", config.index_interval_bytes,
                             recovery_point)
        log = cls(directory, topic, partition, config, loaded, now_ms)
        log._write_log_start()
        return log

    # -- offsets -----------------------------------------------------------------------------

    @property
    def last_stable_offset(self) -> int:
        first = self.producer_state.first_unstable_offset()
        return self.high_watermark if first is None else min(first, self.high_watermark)

    def end_offset_for_epoch(self, leader_epoch: int) -> tuple[int, int]:
        """(epoch, end offset) as OffsetsForLeaderEpoch answers: one epoch (0) since offset 0."""
        if leader_epoch < LEADER_EPOCH or self.log_end_offset == 0:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        return LEADER_EPOCH, self.log_end_offset

    # -- appending ---------------------------------------------------------------------------

    def append_produce(self, records, now_ms: int) -> AppendResult:
        """Validate one producer batch and append it, or raise KafkaError with nothing written."""
        config = self.config
        batch = validate_produce_batch(records, config, now_ms)
        header = batch.header
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
        size = len(batch.view)
        segment = self._maybe_roll(size, header.max_timestamp, last_offset, now_ms)
        head = stored_header(batch, base_offset, LEADER_EPOCH, append_time)
        segment.append([head, batch.view[HEADER_SIZE:]], size, last_offset, header.max_timestamp)
        self.log_end_offset = last_offset + 1
        self.unflushed_messages += header.records_count
        if header.producer_id >= 0:
            state.record_data_batch(header, base_offset)
        return AppendResult(base_offset, last_offset, append_time, self.log_start_offset, False)

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
        loader.apply_marker(self.producer_state, segment, BatchHeader.parse(batch), batch)
        return offset

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
        """Seal the active segment, start a new one, snapshot producer state at its base."""
        active = self.segments[-1]
        segment = super().roll(now_ms)
        if segment is not active:
            self._unflushed_segments.append(active)
            self._write_snapshot()
        return segment

    def _write_snapshot(self) -> None:
        self.producer_state.write_snapshot(self.directory, self.log_end_offset)
        for offset, path in list_snapshots(self.directory):
            if offset != self.log_end_offset:
                unlink_quietly(path)

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
        super().delete_segments(count, now_ms)
        self._unflushed_segments = [s for s in self._unflushed_segments if s in self.segments]

    def replace_segments(self, old, now_ms, open_new) -> None:
        super().replace_segments(old, now_ms, open_new)
        self._unflushed_segments = [s for s in self._unflushed_segments if s in self.segments]

    def close(self) -> None:
        """Seal indexes, snapshot producer state, close files (the log can be reopened)."""
        if not self.deleted:
            self.segments[-1].seal()
            self._write_snapshot()
        self.close_segments()
