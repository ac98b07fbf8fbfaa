"""Log compaction: Kafka's LogCleaner and LogCleanerManager for one broker.

Rules (core/src/main/scala/kafka/log/LogCleaner{,Manager}.scala, MemoryRecords.filterTo):
- Which log: a compacted log whose dirty share of bytes exceeds min.cleanable.dirty.ratio, or
  whose oldest dirty segment is older than max.compaction.lag.ms. (kbroker also cleans a log
  once a tombstone or marker it kept reaches its delete horizon, so that they really go after
  delete.retention.ms; Kafka waits for new dirty data.)
- What: every segment from the log start up to the first uncleanable offset, which is the base
  of the segment holding min(last stable offset, active segment base, first dirty segment
  younger than min.compaction.lag.ms). The active segment is never touched.
- Key map (Kafka's SkimpyOffsetMap): keys are mapped by a 16-byte digest, at most
  log.cleaner.dedupe.buffer.size x log.cleaner.io.buffer.load.factor bytes of them. When the
  map fills, mapping stops at that record: only the segments up to it are rewritten and the
  next pass starts there, so a log with many distinct keys takes several passes, never more
  memory.
- Per key, the record with the highest offset in the dirty range wins; keyless records go. A
  tombstone that wins is kept, and its batch stamped with a delete horizon of now +
  delete.retention.ms (KIP-534); a later clean after that horizon drops it.
- Batches: copied byte for byte when nothing in them changes, else rebuilt with the same base
  and last offset, codec, producer id, epoch, base sequence, transactional and control flags.
  Aborted transactional data goes; a COMMIT/ABORT marker stays while data of its transaction
  is left, then until its own delete horizon. The last batch of each active producer and the
  last batch of the cleaned range stay (emptied if nothing in them is kept) so that sequence
  numbers and the offset range survive. Offsets never change; gaps are normal.
- Crash safety (Kafka's .cleaned/.swap scheme): cleaned segments are written to a staging
  directory, then moved next to the log as `<base>.<suffix>.swap`, `.log.swap` last. The swap
  renames the replaced segments to `.deleted`, then the `.swap` files to their names. On open,
  staged files are removed, orphan index `.swap` files too, and each `.log.swap` replaces the
  segments whose base offsets lie in its offset range: a kill -9 at any point loses nothing.
- Concurrency: choosing a log and swapping run on the event loop; reading and writing runs in a
  worker thread, on duplicated file descriptors of sealed segments only. The swap is abandoned
  when retention, DeleteRecords or a topic deletion changed those segments meanwhile.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import weakref
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from kbroker.log.files import read_if_exists, unlink_quietly, write_file
from kbroker.log.handles import OpenFiles
from kbroker.log.index import OFFSET_ENTRY, TIME_ENTRY, AbortedTxn
from kbroker.log.markers import CONTROL_ABORT, CONTROL_COMMIT, parse_marker
from kbroker.log.segment import (
    INDEX_SUFFIX, LOG_SUFFIX, SEGMENT_SUFFIXES, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX, LogSegment,
    file_prefix, read_batches,
)
from kbroker.protocol.primitives import INT32_MAX
from kbroker.protocol.records import (
    CONTROL_BIT, CRC_OFFSET, HEADER, HEADER_SIZE, LOG_OVERHEAD, MAGIC, TIMESTAMP_TYPE_BIT,
    TRANSACTIONAL_BIT, BatchHeader, build_batch, compute_crc, iter_records,
)

if TYPE_CHECKING:  # the partition's loader uses this module
    from kbroker.log.partition import PartitionLog

log = logging.getLogger("kbroker.cleaner")

STAGING_DIR = "cleaner-staging"
SWAP_SUFFIX = ".swap"
CHECKPOINT_FILE = "cleaner-offset-checkpoint"  # the first dirty offset of the partition
YIELD_S = 0.001  # how long the cleaner thread works before letting the event loop run
# Index files first, the log last: a `.log.swap` means the whole cleaned segment is there.
SWAP_ORDER = (INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX, LOG_SUFFIX)
# What one key-map entry costs in CPython, measured with tracemalloc (133 bytes at 200k keys):
# the digest as a bytes object (49), the offset as an int (32), and its dict slot with the
# table's spare room. Kafka's map needs 24.
KEY_MAP_ENTRY_BYTES = 136


def key_map_capacity(buffer_bytes: int, load_factor: float) -> int:
    """How many keys one cleaning pass may map within log.cleaner.dedupe.buffer.size."""
    return max(int(buffer_bytes * load_factor) // KEY_MAP_ENTRY_BYTES, 1)


def key_digest(key) -> bytes:
    """Keys are mapped by digest so that long keys cost no more than short ones."""
    return hashlib.blake2b(key, digest_size=16).digest()


class _Stopped(Exception):
    """The broker is shutting down: the job stops where it is (recovery copes with the rest)."""


# -- recovery ---------------------------------------------------------------------------------

def complete_interrupted_cleaning(directory: str) -> None:
    """Finish or forget a cleaning a crash interrupted; called before a partition is opened."""
    shutil.rmtree(os.path.join(directory, STAGING_DIR), ignore_errors=True)
    names = os.listdir(directory)
    log_swap = LOG_SUFFIX + SWAP_SUFFIX
    swaps = sorted(int(name[:-len(log_swap)]) for name in names
                   if name.endswith(log_swap) and name[:-len(log_swap)].isdigit())
    for name in names:
        stem = name.partition(".")[0]
        if name.endswith(SWAP_SUFFIX) and not (stem.isdigit() and int(stem) in swaps):
            os.unlink(os.path.join(directory, name))  # staged index without its log: unusable
    for base in swaps:
        prefix = file_prefix(directory, base)
        fd = os.open(prefix + log_swap, os.O_RDONLY)
        try:
            last = base - 1
            for _, header, _ in read_batches(fd, 0, os.fstat(fd).st_size):
                last = header.last_offset
        finally:
            os.close(fd)
        for name in os.listdir(directory):
            stem, _, suffix = name.partition(".")
            if stem.isdigit() and "." + suffix in SEGMENT_SUFFIXES and base <= int(stem) <= last:
                os.unlink(os.path.join(directory, name))
        for suffix in SWAP_ORDER:
            if os.path.exists(prefix + suffix + SWAP_SUFFIX):
                os.replace(prefix + suffix + SWAP_SUFFIX, prefix + suffix)
        log.info("completed an interrupted cleaning of %s at offset %d", directory, base)


# -- one cleaning -----------------------------------------------------------------------------

@dataclass(slots=True)
class _Source:
    """A sealed segment being cleaned, read through a descriptor the job owns."""

    segment: LogSegment
    fd: int
    size: int
    next_base: int
    index_bytes: int
    time_index_bytes: int


class _Transactions:
    """Kafka's CleanedTransactionMetadata: which batches belong to aborted transactions and
    which markers may go, walking the log in offset order."""

    def __init__(self, aborted: list[AbortedTxn]):
        self._pending = deque(sorted(aborted, key=lambda txn: txn.first_offset))
        self._aborted: dict[int, list] = {}  # producer id -> [AbortedTxn, last batch offset seen]
        self._committed: set[int] = set()
        self.index: list[AbortedTxn] = []  # entries for the cleaned segment's txn index

    def _reach(self, offset: int) -> None:
        while self._pending and self._pending[0].first_offset <= offset:
            txn = self._pending.popleft()
            self._aborted.setdefault(txn.producer_id, [txn, None])

    def on_data(self, header: BatchHeader) -> bool:
        """True when the batch belongs to an aborted transaction."""
        self._reach(header.last_offset)
        if not header.is_transactional:
            return False
        state = self._aborted.get(header.producer_id)
        if state is None:
            self._committed.add(header.producer_id)
            return False
        state[1] = header.last_offset
        return True

    def on_marker(self, header: BatchHeader, batch) -> bool:
        """True when no data of the marker's transaction is left, so the marker may go."""
        self._reach(header.last_offset)
        if header.records_count == 0:
            return True
        control_type, _ = parse_marker(batch)
        if control_type == CONTROL_ABORT:
            state = self._aborted.pop(header.producer_id, None)
            if state is not None and state[1] is not None:
                self.index.append(state[0])
                return False
            return True
        if control_type == CONTROL_COMMIT:
            if header.producer_id in self._committed:
                self._committed.discard(header.producer_id)
                return False
            return True
        return False


def _empty_batch(header: BatchHeader) -> bytes:
    """Kafka's DefaultRecordBatch.writeEmptyHeader: the batch's offsets and producer state only."""
    attributes = header.attributes & (TIMESTAMP_TYPE_BIT | TRANSACTIONAL_BIT | CONTROL_BIT)
    batch = bytearray(HEADER.pack(
        header.base_offset, HEADER_SIZE - LOG_OVERHEAD, header.partition_leader_epoch, MAGIC, 0,
        attributes, header.last_offset_delta, -1, header.max_timestamp, header.producer_id,
        header.producer_epoch, header.base_sequence, 0))
    batch[CRC_OFFSET:CRC_OFFSET + 4] = compute_crc(batch).to_bytes(4, "big")
    return bytes(batch)


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class CleaningJob:
    """Compaction of one log's range [log start, end): built on the event loop, `clean` runs in
    a worker thread, the LogCleaner swaps the result in on the event loop."""

    log: PartitionLog
    first_dirty: int
    end: int
    now_ms: int
    sources: list[_Source]
    aborted: list[AbortedTxn]
    active_producers: dict[int, tuple[int | None, int]]  # id -> (last data offset, epoch)
    groups: list[list[_Source]] = field(default_factory=list)
    next_horizon: int | None = None  # earliest delete horizon of a kept tombstone or marker
    next_dirty: int | None = None  # where the next pass starts: end, or where the key map filled
    stop: bool = False
    _yielded: float = 0.0

    @classmethod
    def plan(cls, partition_log: PartitionLog, first_dirty: int, end: int, now_ms: int) -> CleaningJob:
        segments = partition_log.segments
        bases = partition_log.base_offsets
        sources = []
        for i, segment in enumerate(segments):
            if segment.base_offset >= end:
                break
            sources.append(_Source(segment, os.dup(segment.fd), segment.size, bases[i + 1],
                                   len(segment.index) * OFFSET_ENTRY.size,
                                   len(segment.time_index) * TIME_ENTRY.size))
        producers = {
            pid: (entry.batches[-1].last_offset if entry.batches else None, entry.epoch)
            for pid, entry in partition_log.producer_state.producers.items()
        }
        aborted = [txn for segment in segments for txn in segment.txn_index.entries]
        staging = os.path.join(partition_log.directory, STAGING_DIR)
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        return cls(partition_log, first_dirty, end, now_ms, sources, aborted, producers)

    @property
    def directory(self) -> str:
        return self.log.directory

    def clean(self, key_capacity: int) -> None:
        """The heavy part: runs in a worker thread, touching only this job's files."""
        config = self.log.config
        latest, full_at = self._offset_map(key_capacity)
        self.next_dirty = self.end
        if full_at is not None:
            self._stop_before(full_at)
        transactions = _Transactions(self.aborted)
        for group in self._group(config):
            self._check_stop()
            self._clean_group(group, latest, transactions, config.delete_retention_ms)
            self.groups.append(group)

    def _check_stop(self) -> None:
        """Called between batches: stop if asked; every YIELD_S hand the GIL to the event loop
        rather than make it wait a whole switch interval (5 ms) for its next request."""
        if self.stop:
            raise _Stopped
        now = time.monotonic()
        if now - self._yielded >= YIELD_S:
            time.sleep(0)
            self._yielded = now

    def _offset_map(self, capacity: int) -> tuple[dict[bytes, int], int | None]:
        """Latest offset of every key digest in the dirty range [first_dirty, end), and the
        offset of the first record left out if the map filled up before the end."""
        latest: dict[bytes, int] = {}
        transactions = _Transactions(self.aborted)
        for source in self.sources:
            if source.next_base <= self.first_dirty:
                continue
            for _, header, batch in read_batches(source.fd, 0, source.size):
                self._check_stop()
                if header.is_control:
                    transactions.on_marker(header, batch)
                elif not transactions.on_data(header) and header.last_offset >= self.first_dirty:
                    for record in iter_records(batch):
                        offset = header.base_offset + record.offset_delta
                        if record.key is None or offset < self.first_dirty:
                            continue
                        digest = key_digest(record.key)
                        if len(latest) >= capacity and digest not in latest:
                            return latest, offset
                        latest[digest] = offset
        return latest, None

    def _stop_before(self, offset: int) -> None:
        """Rewrite only the segments that start before `offset`; the next pass starts there.
        Records from `offset` on are kept as they are, as no mapped key is newer than them."""
        kept = [source for source in self.sources if source.segment.base_offset < offset]
        for source in self.sources[len(kept):]:
            os.close(source.fd)
        self.sources = kept
        self.end = kept[-1].next_base
        self.next_dirty = offset

    def _group(self, config) -> list[list[_Source]]:
        """Kafka's groupSegmentsBySize: runs of segments that fit in one segment together."""
        groups: list[list[_Source]] = []
        for source in self.sources:
            group = groups[-1] if groups else None
            if group is not None and (
                    sum(s.size for s in group) + source.size <= config.segment_bytes
                    and sum(s.index_bytes for s in group) + source.index_bytes <= config.segment_index_bytes
                    and sum(s.time_index_bytes for s in group) + source.time_index_bytes
                    <= config.segment_index_bytes
                    and (source.size == 0 or source.next_base - 1 - group[0].segment.base_offset <= INT32_MAX)):
                group.append(source)
            else:
                groups.append([source])
        return groups

    def _clean_group(self, group: list[_Source], latest: dict[bytes, int],
                     transactions: _Transactions, delete_retention_ms: int) -> None:
        """Write the kept batches of a group as one segment and stage it as `.swap` files."""
        base = group[0].segment.base_offset
        staging = os.path.join(self.directory, STAGING_DIR)
        # its own open-file set: the log dir's belongs to the event loop, this is a worker thread
        out = LogSegment.create(staging, base, self.log.config.index_interval_bytes, OpenFiles(4))
        transactions.index = []
        try:
            for source in group:
                for _, header, batch in read_batches(source.fd, 0, source.size):
                    self._check_stop()
                    kept = self._filter(header, batch, latest, transactions, delete_retention_ms)
                    if kept is not None:
                        written = BatchHeader.parse(kept)
                        out.append([kept], len(kept), written.last_offset, written.max_timestamp)
            out.seal()
            out.txn_index.rewrite(transactions.index)
        finally:
            out.close()
        staged, final = file_prefix(staging, base), file_prefix(self.directory, base)
        for suffix in SWAP_ORDER:
            _fsync_path(staged + suffix)
        for suffix in SWAP_ORDER:
            os.rename(staged + suffix, final + suffix + SWAP_SUFFIX)
        _fsync_path(self.directory)

    def _last_of_producer(self, header: BatchHeader) -> bool:
        """Kafka keeps the batch holding an active producer's last sequence (or last epoch)."""
        last = self.active_producers.get(header.producer_id)
        if last is None:
            return False
        last_data_offset, epoch = last
        if last_data_offset is not None:
            return header.last_offset == last_data_offset
        return header.is_control and header.producer_epoch == epoch

    def _filter(self, header: BatchHeader, batch, latest: dict[bytes, int],
                transactions: _Transactions, delete_retention_ms: int):
        """The batch as it stays in the log (maybe rebuilt or emptied), or None if it goes."""
        now = self.now_ms
        horizon = header.base_timestamp if header.has_delete_horizon else None
        if header.is_control:
            discardable = transactions.on_marker(header, batch)
            drop_records = discardable and horizon is not None and horizon <= now
        else:
            discardable = drop_records = transactions.on_data(header)
        keep_empty = (header.producer_id >= 0 and self._last_of_producer(header)) \
            or header.last_offset + 1 == self.end
        if drop_records and not keep_empty:
            return None
        kept, dropped, tombstones = [], False, False
        if drop_records:
            dropped = header.records_count > 0
        elif header.is_control:
            kept = list(iter_records(batch))
        else:
            for record in iter_records(batch):
                offset = header.base_offset + record.offset_delta
                alive = record.value is not None or horizon is None or now < horizon
                if record.key is not None and alive \
                        and offset >= latest.get(key_digest(record.key), -1):
                    kept.append(record)
                    tombstones = tombstones or record.value is None
                else:
                    dropped = True
        if not kept:
            return _empty_batch(header) if keep_empty else None
        marker_for_empty_txn = discardable and header.is_control
        if (tombstones or marker_for_empty_txn) and horizon is None:
            horizon = now + delete_retention_ms
        elif not dropped:
            self._note_horizon(horizon, tombstones or header.is_control)
            return batch
        self._note_horizon(horizon, tombstones or header.is_control)
        return build_batch(
            kept, base_offset=header.base_offset, producer_id=header.producer_id,
            producer_epoch=header.producer_epoch, base_sequence=header.base_sequence,
            transactional=header.is_transactional, control=header.is_control,
            timestamp_type=header.timestamp_type, compression=header.compression,
            partition_leader_epoch=header.partition_leader_epoch, delete_horizon_ms=horizon,
            last_offset_delta=header.last_offset_delta)

    def _note_horizon(self, horizon: int | None, removable: bool) -> None:
        if horizon is not None and removable:
            self.next_horizon = horizon if self.next_horizon is None else min(self.next_horizon, horizon)

    def discard(self) -> None:
        """Forget this job's output (the log changed under it, or it failed)."""
        for group in self.groups:
            prefix = file_prefix(self.directory, group[0].segment.base_offset)
            for suffix in reversed(SWAP_ORDER):  # the log first: what is left is an orphan
                unlink_quietly(prefix + suffix + SWAP_SUFFIX)
        self.groups = []

    def close(self) -> None:
        for source in self.sources:
            os.close(source.fd)
        self.sources = []
        shutil.rmtree(os.path.join(self.directory, STAGING_DIR), ignore_errors=True)


def _install(directory: str, base: int, next_base: int, index_interval: int,
             files: OpenFiles) -> LogSegment:
    """Rename a staged segment's `.swap` files into place and open it."""
    prefix = file_prefix(directory, base)
    for suffix in SWAP_ORDER:
        os.replace(prefix + suffix + SWAP_SUFFIX, prefix + suffix)
    segment = LogSegment(directory, base, index_interval, files)
    segment.txn_index.load()
    if segment.load_indexes(next_base) is None:
        segment.rebuild_indexes(verify_crc=False)
    return segment


# -- choosing what to clean -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Span:
    first_dirty: int
    end: int
    ratio: float


class LogCleaner:
    """Picks the filthiest compacted log (Kafka's grabFilthiestCompactedLog), hands out cleaning
    jobs and swaps their results in. Everything here runs on the event loop."""

    def __init__(self, logs, key_capacity: int):
        self.logs = logs
        self.key_capacity = key_capacity  # keys one pass may map (key_map_capacity)
        self._first_dirty: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._horizons: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._uncleanable: weakref.WeakSet = weakref.WeakSet()

    def first_dirty_offset(self, partition_log) -> int:
        """Where the dirty part of a log starts: its checkpoint, reset when out of range."""
        offset = self._first_dirty.get(partition_log)
        if offset is None:
            data = read_if_exists(os.path.join(partition_log.directory, CHECKPOINT_FILE))
            offset = int(data) if data and data.strip().isdigit() else partition_log.log_start_offset
        if not partition_log.log_start_offset <= offset <= partition_log.log_end_offset:
            offset = partition_log.log_start_offset
        return offset

    def _span(self, partition_log, now_ms: int) -> _Span | None:
        """The range to clean and its dirty ratio, if the log needs cleaning now."""
        config = partition_log.config
        segments, bases = partition_log.segments, partition_log.base_offsets
        first_dirty = self.first_dirty_offset(partition_log)
        uncleanable = min(partition_log.last_stable_offset, bases[-1])
        first = max(bisect_right(bases, first_dirty) - 1, 0)
        dirty = segments[first:-1]
        if config.min_compaction_lag_ms > 0:
            for segment in dirty:
                if segment.max_timestamp > now_ms - config.min_compaction_lag_ms:
                    uncleanable = min(uncleanable, segment.base_offset)
                    break
        end = bases[max(bisect_right(bases, max(first_dirty, uncleanable)) - 1, 0)]
        if end <= bases[0]:
            return None
        clean_bytes = sum(s.size for s in segments if s.base_offset < min(first_dirty, end))
        dirty_bytes = sum(s.size for i, s in enumerate(segments)
                          if s.base_offset < end and bases[i + 1] > first_dirty)
        total = clean_bytes + dirty_bytes
        ratio = dirty_bytes / total if total else 0.0
        oldest = min((s.first_batch_timestamp for s in dirty
                      if s.first_batch_timestamp is not None and s.first_batch_timestamp > 0),
                     default=None)
        overdue = oldest is not None and oldest < now_ms - config.max_compaction_lag_ms
        horizon = self._horizons.get(partition_log)
        if (overdue and dirty_bytes > 0) or ratio > config.min_cleanable_dirty_ratio \
                or (horizon is not None and horizon <= now_ms):
            return _Span(min(first_dirty, end), end, ratio)
        return None

    def next_job(self, now_ms: int) -> CleaningJob | None:
        best: tuple[_Span, PartitionLog] | None = None
        for partition_log in self.logs.logs():
            if not partition_log.config.compact or partition_log in self._uncleanable:
                continue
            span = self._span(partition_log, now_ms)
            if span is not None and (best is None or span.ratio > best[0].ratio):
                best = span, partition_log
        if best is None:
            return None
        span, best_log = best
        return CleaningJob.plan(best_log, span.first_dirty, span.end, now_ms)

    def finish(self, job: CleaningJob, now_ms: int) -> None:
        """Swap a finished job's segments in, unless the log changed under it."""
        partition_log = job.log
        try:
            replaced = [source.segment for source in job.sources]
            in_place = len(partition_log.segments) > len(replaced) and all(
                a is b for a, b in zip(partition_log.segments, replaced))
            if partition_log.deleted or not in_place:
                job.discard()
                return
            interval = partition_log.config.index_interval_bytes
            for group in job.groups:
                base, next_base = group[0].segment.base_offset, group[-1].next_base
                partition_log.replace_segments(
                    [source.segment for source in group], now_ms,
                    partial(_install, partition_log.directory, base, next_base, interval,
                            partition_log.log_dir.files))
            self._first_dirty[partition_log] = job.next_dirty
            # Not fsynced: a lost or torn checkpoint only means cleaning from the log start again.
            write_file(os.path.join(partition_log.directory, CHECKPOINT_FILE),
                       f"{job.next_dirty}\n".encode())
            if job.next_horizon is None:
                self._horizons.pop(partition_log, None)
            else:
                self._horizons[partition_log] = job.next_horizon
        finally:
            job.close()

    def give_up(self, job: CleaningJob) -> None:
        """A job failed: forget its output and leave that log alone until the next start."""
        job.discard()
        job.close()
        self._uncleanable.add(job.log)
