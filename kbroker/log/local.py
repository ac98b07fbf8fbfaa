"""LocalLog: one partition's segments on disk, how they are read, rolled and deleted (Kafka's
LocalLog). Validation, producer state and flushing are the PartitionLog's, which builds on this.
"""

from __future__ import annotations

import os
import shutil
import uuid
from bisect import bisect_right
from typing import Callable, Iterator, NamedTuple

from kbroker.log.config import LogConfig
from kbroker.log.files import split_due, write_replacing
from kbroker.log.handles import LogDir
from kbroker.log.index import AbortedTxn
from kbroker.log.loader import LOG_START_FILE, LoadedLog
from kbroker.log.segment import LogSegment
from kbroker.log.validator import record_fields
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.records import TIMESTAMP_TYPE_BIT, BatchHeader
from kbroker.protocol.region import FileRegion


class ReadResult(NamedTuple):
    records: FileRegion | bytes  # b"" when nothing is readable below the upper offset
    high_watermark: int
    last_stable_offset: int
    log_start_offset: int


class LocalLog:
    """Segments [log_start_offset, log_end_offset) of one topic partition."""

    def __init__(self, directory: str, topic: str, partition: int, config: LogConfig,
                 loaded: LoadedLog, log_dir: LogDir, now_ms: int):
        self.directory = directory
        self.topic = topic
        self.partition = partition
        self.name = f"{topic}-{partition}"  # in messages
        self.config = config
        self.log_dir = log_dir
        self.segments = loaded.segments
        self.base_offsets = [segment.base_offset for segment in self.segments]
        self.log_start_offset = loaded.log_start_offset
        self.log_end_offset = loaded.log_end_offset
        self.active_created_ms = now_ms
        self.pending_deletes: list[tuple[int, LogSegment]] = []
        self.pending_syncs: set[str] = set()  # paths of written files a flush job is to fsync
        self.deleted = False

    def check_online(self) -> None:
        if self.log_dir.offline:
            raise KafkaError(ErrorCode.KAFKA_STORAGE_ERROR,
                             f"The log dir of {self.name} is offline after write errors")

    @property
    def high_watermark(self) -> int:
        return self.log_end_offset

    @property
    def last_stable_offset(self) -> int:
        return self.high_watermark

    @property
    def size_bytes(self) -> int:
        return sum(segment.size for segment in self.segments)

    def _segment_index(self, offset: int) -> int:
        return max(bisect_right(self.base_offsets, offset) - 1, 0)

    # -- reading -----------------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int, upper_offset: int | None = None,
             min_one_batch: bool = True) -> ReadResult:
        """Whole batches of one segment from the batch holding `offset`, below upper_offset.

        Stops before max_bytes, except that with min_one_batch the first batch is returned even
        when larger (as Kafka does so that consumers make progress).
        """
        self.check_online()
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

    def aborted_transactions(self, start_offset: int, upper_offset: int) -> list[tuple[int, int]]:
        """(producer id, first offset) of aborted transactions overlapping [start, upper)."""
        found: list[AbortedTxn] = []
        for segment in self.segments[self._segment_index(start_offset):]:
            if segment.txn_index.collect(start_offset, upper_offset, found):
                break
        return [(txn.producer_id, txn.first_offset) for txn in found]

    # -- segments ----------------------------------------------------------------------------

    def roll(self, now_ms: int) -> LogSegment:
        """Seal the active segment and start a new one at the log end offset."""
        active = self.segments[-1]
        if active.size == 0:
            return active
        active.seal()
        segment = LogSegment.create(self.directory, self.log_end_offset, self.config.index_interval_bytes,
                                    self.log_dir.files)
        self.segments.append(segment)
        self.base_offsets.append(segment.base_offset)
        self.active_created_ms = now_ms
        return segment

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

    def purge_deleted(self, now_ms: int) -> None:
        """Unlink `.deleted` files whose file.delete.delay.ms has passed, closing their fds."""
        self.pending_deletes, due = split_due(self.pending_deletes, now_ms)
        for segment in due:
            segment.unlink_deleted()

    def _write_log_start(self) -> None:
        """Record the log start offset; the next flush job makes it durable."""
        self.pending_syncs.update(write_replacing(os.path.join(self.directory, LOG_START_FILE),
                                                  f"{self.log_start_offset}\n".encode()))

    def rename_for_delete(self) -> str:
        """Topic deletion: move the directory aside (open fds keep serving); returns new path."""
        parent, name = os.path.split(self.directory)
        suffix = f".{uuid.uuid4().hex}-delete"  # the name cut to fit, as Kafka's logDeleteDirName
        target = os.path.join(parent, name[:255 - len(suffix)] + suffix)
        os.rename(self.directory, target)
        self.directory = target
        self.deleted = True
        return target

    def close_segments(self) -> None:
        for segment in self.segments:
            segment.close()
        for _, segment in self.pending_deletes:
            segment.unlink_deleted()
        self.pending_deletes = []
        self.pending_syncs.clear()

    def remove_files(self) -> None:
        self.close_segments()
        shutil.rmtree(self.directory, ignore_errors=True)


def _first_record_at_or_after(segment: LogSegment, position: int, header: BatchHeader,
                              timestamp: int, log_start: int) -> tuple[int, int]:
    """(offset, timestamp) of the batch's first record with timestamp >= target.

    LogAppendTime batches stamp all records with maxTimestamp.
    """
    first_offset = max(header.base_offset, log_start)
    if header.attributes & TIMESTAMP_TYPE_BIT:
        return first_offset, header.max_timestamp
    for ts_delta, offset_delta, _ in record_fields(segment.read_batch(position, header), header):
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
    for start, header in segment.headers(segment.index.values[slot] if slot >= 0 else 0):  # noqa: B007 (used below)
        if header.last_offset >= offset:
            break
    else:
        return None
    size = header.size
    if header.last_offset >= upper or (size > max_bytes and not min_one_batch):
        return FileRegion(-1, start, 0)
    handle = segment.handle()  # the region keeps it open until the server has sent it
    if size >= max_bytes:
        return FileRegion(handle.fd, start, size, handle)
    end = _skip_ahead(segment, start + size, start + max_bytes, upper)
    for position, header in segment.headers(end):
        if header.last_offset >= upper or position + header.size - start > max_bytes:
            break
        end = position + header.size
    return FileRegion(handle.fd, start, end - start, handle)


def _skip_ahead(segment: LogSegment, end: int, limit: int, upper: int) -> int:
    """Where the walk for a read's last batch can start: the last indexed batch at or before
    byte `limit` whose offsets (and all before it) are below `upper`, if past `end`."""
    index = segment.index
    slot = min(bisect_right(index.values, limit) - 1, index.floor(upper - 1 - segment.base_offset))
    return max(end, index.values[slot]) if slot >= 0 else end
