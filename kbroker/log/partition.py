"""PartitionLog: one partition as the broker uses it (Kafka's UnifiedLog).

It composes the pieces: the loader opens and recovers the directory, the validator checks
what producers send, the LocalLog stores and reads segments, and the producer state decides
duplicates and transactions. Single broker, single replica: the high watermark is the log end
offset and every batch is stamped with leader epoch 0.
"""

from __future__ import annotations

import logging
import os
from typing import NamedTuple

from kbroker.log import loader, retention
from kbroker.log.config import LogConfig
from kbroker.log.files import unlink_quietly
from kbroker.log.handles import FileHandle, LogDir
from kbroker.log.local import LocalLog
from kbroker.log.markers import CONTROL_ABORT, CONTROL_COMMIT, build_marker_batch
from kbroker.log.producer_state import list_snapshots
from kbroker.log.segment import LogSegment
from kbroker.log.validator import NO_TIMESTAMP, stored_header, validate_produce_batch
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.primitives import INT32_MAX
from kbroker.protocol.records import HEADER_SIZE, BatchHeader

log = logging.getLogger("kbroker.log")

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


class FlushJob:
    """What one flush makes durable, gathered on the event loop: `run`, all a worker thread
    does, fsyncs handles that stay open until the job is dropped, whatever the loop does
    meanwhile (appends, rolls, deletions, the open-file set letting files go)."""

    __slots__ = ("handles", "sealed", "end_offset", "error")

    def __init__(self, handles: list[FileHandle], sealed: list[LogSegment], end_offset: int):
        self.handles = handles
        self.sealed = sealed
        self.end_offset = end_offset
        self.error: OSError | None = None

    def run(self) -> None:
        try:
            for handle in self.handles:
                os.fsync(handle.fd)
        except OSError as exc:
            self.error = exc


def run_flush_jobs(jobs: list[FlushJob]) -> None:
    for job in jobs:
        job.run()


class PartitionLog(LocalLog):
    """A LocalLog with producer validation, idempotent/transactional state and flush policy."""

    def __init__(self, directory: str, topic: str, partition: int, config: LogConfig,
                 loaded: loader.LoadedLog, log_dir: LogDir, recovery_point: int, now_ms: int):
        super().__init__(directory, topic, partition, config, loaded, log_dir, now_ms)
        self.producer_state = loaded.producer_state
        self.unflushed_messages = 0
        self.last_flush_ms = now_ms
        self.recovery_point = recovery_point  # data below it is known to be fsynced
        self._snapshot_offset = loaded.snapshot_offset
        self._unflushed_segments: list[LogSegment] = []

    @classmethod
    def open(cls, directory: str | os.PathLike, topic: str, partition: int, config: LogConfig,
             now_ms: int, recovery_point: int | None = 0, log_dir: LogDir | None = None) -> PartitionLog:
        """Open (creating if needed) and recover a partition directory (see kbroker.log.loader).

        recovery_point: the offset up to which the data was fsynced, or None after a clean
        shutdown (nothing is scanned). log_dir: what the partitions of the data dir share.
        """
        directory = os.fspath(directory)
        log_dir = LogDir() if log_dir is None else log_dir
        loaded = loader.load(directory, f"{topic}-{partition}", config.index_interval_bytes,
                             recovery_point, log_dir.files)
        end = loaded.log_end_offset
        return cls(directory, topic, partition, config, loaded, log_dir,
                   end if recovery_point is None else min(recovery_point, end), now_ms)

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
        """Validate one producer batch and append it, or raise KafkaError with nothing written
        (KAFKA_STORAGE_ERROR when the disk fails it)."""
        config = self.config
        log_dir = self.log_dir
        if log_dir.offline:
            self.check_online()
        batch = validate_produce_batch(records, config, now_ms, self.name)
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
        head = stored_header(batch, base_offset, LEADER_EPOCH, append_time)
        try:
            segment = self._maybe_roll(size, header.max_timestamp, last_offset, now_ms)
            segment.append([head, batch.view[HEADER_SIZE:]], size, last_offset, header.max_timestamp)
        except OSError as exc:
            raise self._storage_error(exc) from exc
        if log_dir.failures:
            log_dir.failures = 0
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
        self.check_online()
        try:
            segment = self._maybe_roll(len(batch), now_ms, offset, now_ms)
            segment.append([batch], len(batch), offset, now_ms)
        except OSError as exc:
            raise self._storage_error(exc) from exc
        self.log_end_offset = offset + 1
        self.unflushed_messages += 1
        loader.apply_marker(self.producer_state, segment, BatchHeader.parse(batch), batch)
        return offset

    def _storage_error(self, exc: OSError) -> KafkaError:
        self.log_dir.write_failed(self.name, exc)
        return KafkaError(ErrorCode.KAFKA_STORAGE_ERROR, f"Writing to {self.name} failed: {exc}")

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
        """Snapshot producer state at the log end offset (fsynced by the next flush job)."""
        offset = self.log_end_offset
        self.pending_syncs.update(self.producer_state.write_snapshot(self.directory, offset))
        self._snapshot_offset = offset
        for old, path in list_snapshots(self.directory):
            if old != offset:
                unlink_quietly(path)

    # -- flushing ----------------------------------------------------------------------------

    def needs_flush(self, now_ms: int) -> bool:
        """True when flush.messages or flush.ms says it is time to fsync."""
        if not self.unflushed_messages:
            return False
        return (self.unflushed_messages >= self.config.flush_interval_messages
                or now_ms - self.last_flush_ms >= self.config.flush_interval_ms)

    def has_unsynced_files(self) -> bool:
        """Sealed segments or written metadata files wait for an fsync (Kafka flushes a rolled
        segment at once, in the background)."""
        return bool(self._unflushed_segments or self.pending_syncs)

    def begin_flush(self, now_ms: int) -> FlushJob:
        """On the event loop: what a flush now is to fsync (see FlushJob)."""
        self.unflushed_messages = 0
        self.last_flush_ms = now_ms
        sealed = list(self._unflushed_segments)
        handles = []
        for segment in sealed + [self.segments[-1]]:
            handles += segment.sync_handles()
        for path in self.pending_syncs:
            try:
                handles.append(FileHandle.open(path, os.O_RDONLY))
            except FileNotFoundError:
                pass  # replaced or deleted since: nothing left to make durable
        self.pending_syncs.clear()
        return FlushJob(handles, sealed, self.log_end_offset)

    def finish_flush(self, job: FlushJob) -> None:
        """On the event loop, after `job.run()`: what it synced counts as durable."""
        if job.error is not None:
            log.error("%s: fsync failed: %s", self.name, job.error)
            self.log_dir.write_failed(self.name, job.error)
            return
        self._unflushed_segments = [s for s in self._unflushed_segments if s not in job.sealed]
        self.recovery_point = max(self.recovery_point, min(job.end_offset, self.log_end_offset))

    def flush(self, now_ms: int | None = None) -> None:
        """fsync everything written so far, here and now (shutdown, tests)."""
        job = self.begin_flush(self.last_flush_ms if now_ms is None else now_ms)
        job.run()
        self.finish_flush(job)

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

    def close(self, flush: bool = True) -> None:
        """Seal indexes, snapshot producer state, fsync, close files (the log can be reopened
        without a scan). flush=False: the caller syncs the whole file system afterwards."""
        if not self.deleted:
            self.segments[-1].seal()
            if self._snapshot_offset != self.log_end_offset:
                self._write_snapshot()
            if flush and (self.recovery_point < self.log_end_offset or self.has_unsynced_files()):
                self.flush()
        self.close_segments()
