"""Idempotent/transactional producer state of one partition (Kafka's ProducerStateManager).

Rules, as Kafka's ProducerAppendInfo/ProducerStateEntry apply them to client appends:
- per producer id: epoch, coordinator epoch, the last 5 batches (sequence range, offsets, time)
  and the first offset of its ongoing transaction;
- a batch with the same epoch and exact sequence range as a retained one is a duplicate: not
  appended, answered with the original offsets;
- an epoch below the known one -> INVALID_PRODUCER_EPOCH; a new epoch must start at sequence 0
  unless the producer had no epoch; within an epoch the first sequence must follow the last one
  (Int32.MAX wraps to 0), except that a producer with no known epoch may start anywhere;
- a non-transactional batch during an ongoing transaction -> INVALID_TXN_STATE; the first
  transactional batch opens a transaction at its base offset; a marker closes it.
State is rebuilt from batch headers on open, starting from a snapshot when one is available.
"""

from __future__ import annotations

import os
import struct
from collections import deque
from typing import NamedTuple

from kbroker.log.files import read_if_exists, write_replacing
from kbroker.log.markers import CONTROL_ABORT
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.primitives import INT32_MAX
from kbroker.protocol.records import NO_SEQUENCE, BatchHeader, crc32c

NO_PRODUCER_EPOCH = -1
NUM_BATCHES_TO_RETAIN = 5
SNAPSHOT_SUFFIX = ".snapshot"


class BatchMetadata(NamedTuple):
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int
    timestamp: int


class ProducerStateEntry:
    __slots__ = ("producer_id", "epoch", "coordinator_epoch", "last_timestamp", "txn_first_offset",
                 "batches")

    def __init__(self, producer_id: int, epoch: int = NO_PRODUCER_EPOCH, coordinator_epoch: int = -1,
                 last_timestamp: int = -1, txn_first_offset: int = -1):
        self.producer_id = producer_id
        self.epoch = epoch
        self.coordinator_epoch = coordinator_epoch
        self.last_timestamp = last_timestamp
        self.txn_first_offset = txn_first_offset  # -1: no ongoing transaction
        self.batches: deque[BatchMetadata] = deque(maxlen=NUM_BATCHES_TO_RETAIN)

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else NO_SEQUENCE

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.batches.clear()
            self.epoch = epoch


class CompletedTxn(NamedTuple):
    producer_id: int
    first_offset: int
    last_offset: int  # the marker's offset
    aborted: bool


def _in_sequence(last_seq: int, next_seq: int) -> bool:
    return next_seq == last_seq + 1 or (next_seq == 0 and last_seq == INT32_MAX)


class ProducerStateManager:
    __slots__ = ("producers", "ongoing")

    def __init__(self):
        self.producers: dict[int, ProducerStateEntry] = {}
        self.ongoing: dict[int, int] = {}  # producer id -> first offset of its open transaction

    # -- client appends ----------------------------------------------------------------------

    def find_duplicate(self, header: BatchHeader) -> BatchMetadata | None:
        entry = self.producers.get(header.producer_id)
        if entry is None or entry.epoch != header.producer_epoch:
            return None
        first, last = header.base_sequence, header.last_sequence
        for batch in entry.batches:
            if batch.first_seq == first and batch.last_seq == last:
                return batch
        return None

    def check_data_batch(self, header: BatchHeader) -> None:
        """Raise the KafkaError Kafka gives for a client batch that may not be appended."""
        pid, epoch, first_seq = header.producer_id, header.producer_epoch, header.base_sequence
        entry = self.producers.get(pid)
        current_epoch = entry.epoch if entry is not None else NO_PRODUCER_EPOCH
        if epoch < current_epoch:
            raise KafkaError(ErrorCode.INVALID_PRODUCER_EPOCH,
                             f"Epoch of producer {pid} is {epoch}, which is smaller than the last seen "
                             f"epoch {current_epoch}")
        if epoch != current_epoch:
            if first_seq != 0 and current_epoch != NO_PRODUCER_EPOCH:
                raise KafkaError(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
                                 f"Invalid sequence number for new epoch of producer {pid}: {epoch} "
                                 f"(request epoch), {first_seq} (seq. number), {current_epoch} "
                                 "(current producer epoch)")
        elif entry is not None and current_epoch != NO_PRODUCER_EPOCH and not _in_sequence(entry.last_seq, first_seq):
            raise KafkaError(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
                             f"Out of order sequence number for producer {pid}: {first_seq} (incoming "
                             f"seq. number), {entry.last_seq} (current end sequence number)")
        if entry is not None and entry.txn_first_offset >= 0 and not header.is_transactional:
            raise KafkaError(ErrorCode.INVALID_TXN_STATE,
                             f"Expected transactional write from producer {pid}")

    def record_data_batch(self, header: BatchHeader, base_offset: int) -> None:
        """Apply an appended data batch (also used when replaying the log: no checks)."""
        pid = header.producer_id
        entry = self.producers.get(pid)
        if entry is None:
            entry = self.producers[pid] = ProducerStateEntry(pid)
        entry.set_epoch(header.producer_epoch)
        last_offset = base_offset + header.last_offset_delta
        entry.batches.append(BatchMetadata(header.base_sequence, header.last_sequence, base_offset,
                                           last_offset, header.max_timestamp))
        entry.last_timestamp = header.max_timestamp
        if header.is_transactional and entry.txn_first_offset < 0:
            entry.txn_first_offset = base_offset
            self.ongoing[pid] = base_offset

    # -- transaction markers -----------------------------------------------------------------

    def check_marker(self, producer_id: int, producer_epoch: int, coordinator_epoch: int) -> None:
        entry = self.producers.get(producer_id)
        if entry is None:
            return
        if producer_epoch < entry.epoch:
            raise KafkaError(ErrorCode.INVALID_PRODUCER_EPOCH,
                             f"Epoch of producer {producer_id} is {producer_epoch}, which is smaller "
                             f"than the last seen epoch {entry.epoch}")
        if entry.coordinator_epoch > coordinator_epoch:
            raise KafkaError(ErrorCode.TRANSACTION_COORDINATOR_FENCED,
                             f"Invalid coordinator epoch for producerId {producer_id}: "
                             f"{coordinator_epoch} (zombie), {entry.coordinator_epoch} (current)")

    def record_marker(self, producer_id: int, producer_epoch: int, coordinator_epoch: int,
                      control_type: int, offset: int, timestamp: int) -> CompletedTxn | None:
        """Apply a written marker; the transaction it completes, if it had data here."""
        entry = self.producers.get(producer_id)
        if entry is None:
            entry = self.producers[producer_id] = ProducerStateEntry(producer_id)
        completed = None
        if entry.txn_first_offset >= 0:
            completed = CompletedTxn(producer_id, entry.txn_first_offset, offset,
                                     control_type == CONTROL_ABORT)
        entry.set_epoch(producer_epoch)
        entry.coordinator_epoch = coordinator_epoch
        entry.txn_first_offset = -1
        entry.last_timestamp = timestamp
        self.ongoing.pop(producer_id, None)
        return completed

    def remove_expired(self, now_ms: int, expiration_ms: int) -> int:
        """Forget producers idle for producer.id.expiration.ms with no open transaction."""
        expired = [pid for pid, entry in self.producers.items()
                   if entry.txn_first_offset < 0 and now_ms - entry.last_timestamp >= expiration_ms]
        for pid in expired:
            del self.producers[pid]
        return len(expired)

    def first_unstable_offset(self, excluding: int | None = None) -> int | None:
        """First offset of the oldest ongoing transaction (optionally ignoring one producer)."""
        offsets = [first for pid, first in self.ongoing.items() if pid != excluding]
        return min(offsets) if offsets else None

    # -- snapshots ---------------------------------------------------------------------------
    # File <offset>.snapshot: crc32c uint32 over the rest, version int16, count int32, then per
    # producer: id int64, epoch int16, coordinator epoch int32, last timestamp int64, txn first
    # offset int64, batch count int8, and per batch: first seq, last seq int32, first offset,
    # last offset, timestamp int64.

    _HEAD = struct.Struct(">hi")
    _ENTRY = struct.Struct(">qhiqqb")
    _BATCH = struct.Struct(">iiqqq")

    def write_snapshot(self, directory: str, offset: int) -> tuple[str, str]:
        """Write the snapshot file; returns the paths a flush job is to fsync (the file is CRC
        checked when read, so a torn one is skipped)."""
        parts = [self._HEAD.pack(1, len(self.producers))]
        for e in self.producers.values():
            parts.append(self._ENTRY.pack(e.producer_id, e.epoch, e.coordinator_epoch, e.last_timestamp,
                                          e.txn_first_offset, len(e.batches)))
            parts.extend(self._BATCH.pack(*b) for b in e.batches)
        body = b"".join(parts)
        return write_replacing(snapshot_path(directory, offset), struct.pack(">I", crc32c(body)) + body)

    @classmethod
    def read_snapshot(cls, path: str) -> ProducerStateManager | None:
        """The state stored in a snapshot file, or None when it is unreadable."""
        try:
            data = read_if_exists(path)
            if data is None or len(data) < 4 or struct.unpack_from(">I", data)[0] != crc32c(data[4:]):
                return None
            version, count = cls._HEAD.unpack_from(data, 4)
            if version != 1:
                return None
            state = cls()
            pos = 4 + cls._HEAD.size
            for _ in range(count):
                pid, epoch, coord, last_ts, txn_first, n = cls._ENTRY.unpack_from(data, pos)
                pos += cls._ENTRY.size
                entry = state.producers[pid] = ProducerStateEntry(pid, epoch, coord, last_ts, txn_first)
                for _ in range(n):
                    entry.batches.append(BatchMetadata(*cls._BATCH.unpack_from(data, pos)))
                    pos += cls._BATCH.size
                if txn_first >= 0:
                    state.ongoing[pid] = txn_first
            return state
        except (OSError, struct.error):
            return None


def snapshot_path(directory: str, offset: int) -> str:
    return os.path.join(directory, f"{offset:020d}{SNAPSHOT_SUFFIX}")


def list_snapshots(directory: str, names: list[str] | None = None) -> list[tuple[int, str]]:
    """(offset, path) of every snapshot file in a partition directory (whose file names may be
    given), oldest first."""
    found = []
    for name in os.listdir(directory) if names is None else names:
        if name.endswith(SNAPSHOT_SUFFIX) and name[:-len(SNAPSHOT_SUFFIX)].isdigit():
            found.append((int(name[:-len(SNAPSHOT_SUFFIX)]), os.path.join(directory, name)))
    return sorted(found)
