"""__consumer_offsets as the group coordinator keeps it: placement, writes and replay.

Every decision of the classic and consumer group machines and the offset store is written here
before anybody is answered, and replayed from here when the broker starts, which is how Kafka
keeps groups and committed offsets across restarts (a write reaches the page cache before the
answer, so a kill -9 loses nothing; fsync follows the topic's flush settings). The topic is
created on the first write.

This is the half of GroupCoordinator (coordinator.py) that knows the log: which partition holds a
group (Kafka's hash), the record formats (records.py, consumer_records.py), how a write is
batched and how its failure is reported, and how a record changes the in-memory state, the same
way whether it was just written or is replayed. The request handling in coordinator.py only
decides which entries to store.
"""

from __future__ import annotations

import dataclasses
import logging
import struct
from typing import Callable, Iterable, Iterator

from kbroker.groups import records
from kbroker.groups.classic import ClassicGroups
from kbroker.groups.consumer_coordinator import ConsumerGroupCoordinator
from kbroker.groups.consumer_records import CONSUMER_RECORD_TYPES
from kbroker.groups.consumer_records import decode as decode_consumer_record
from kbroker.groups.consumer_records import encode as encode_consumer_record
from kbroker.groups.offsets import OffsetStore
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.records import Record, iter_records
from kbroker.storage import InternalTopic

log = logging.getLogger("kbroker.groups")

OFFSETS_TOPIC = "__consumer_offsets"
# Kafka's offsets.topic.segment.bytes default.
OFFSETS_TOPIC_CONFIGS = {"cleanup.policy": "compact", "segment.bytes": "104857600"}
WRITE_BATCH_BYTES = 256 * 1024  # well below the topic's max.message.bytes

# How Kafka's coordinator reports a failed write of its log (CoordinatorOperationExceptionHelper).
_WRITE_ERRORS = {
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION: ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.NOT_ENOUGH_REPLICAS: ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.REQUEST_TIMED_OUT: ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.NOT_LEADER_OR_FOLLOWER: ErrorCode.NOT_COORDINATOR,
    ErrorCode.KAFKA_STORAGE_ERROR: ErrorCode.NOT_COORDINATOR,
    ErrorCode.MESSAGE_TOO_LARGE: ErrorCode.UNKNOWN_SERVER_ERROR,
    ErrorCode.RECORD_LIST_TOO_LARGE: ErrorCode.UNKNOWN_SERVER_ERROR,
}


def java_string_hash(text: str) -> int:
    """Java's String.hashCode (over UTF-16 code units), as Kafka uses to place groups."""
    value = 0
    data = text.encode("utf-16-be")
    for i in range(0, len(data), 2):
        value = (31 * value + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def key_partition(key: str, partitions: int) -> int:
    """The internal-topic partition of a group id or transactional id, as Kafka places them:
    Utils.abs(key.hashCode()) % partitions (Utils.abs takes Integer.MIN_VALUE to 0)."""
    code = java_string_hash(key)
    return (0 if code == -(1 << 31) else abs(code)) % partitions

class GroupLog:
    """The state kept in __consumer_offsets and the writing and replaying of its records."""

    groups: ClassicGroups
    offsets: OffsetStore
    consumer: ConsumerGroupCoordinator

    def __init__(self, topic: InternalTopic, clock: Callable[[], int]):
        self.topic = topic
        self.clock = clock
        self.num_partitions = topic.partitions

    def partition_for(self, group_id: str) -> int:
        return key_partition(group_id, self.num_partitions)

    def _write(self, routed: list[tuple[int, Record]], now_ms: int) -> dict[int, int]:
        """Append (partition, record) pairs; returns each partition's first record offset.

        A partition's records go in one batch, so one request's writes land all or nothing,
        unless they exceed WRITE_BATCH_BYTES (expiring or deleting thousands of offsets); the
        batches of a partition are then consecutive. Raises KafkaError (or OSError) with
        nothing of the failing batch written.
        """
        by_partition: dict[int, list[Record]] = {}
        for index, record in routed:
            by_partition.setdefault(index, []).append(record._replace(timestamp=now_ms))
        bases: dict[int, int] = {}
        for index, partition_records in by_partition.items():
            for chunk in _chunks(partition_records):
                bases.setdefault(index, self.topic.append(index, chunk, now_ms))
        return bases

    def _replay(self) -> None:
        """Rebuild groups and offsets from __consumer_offsets, then start loaded sessions."""
        now = self.clock()
        for index, base_offset, batch in self.topic.replay():
            self._replay_batch(base_offset, batch, index, now)
        self.groups.start_sessions(now)
        self.consumer.machine.start_sessions(now)

    def _replay_batch(self, base_offset: int, batch: bytes, index: int, now_ms: int) -> None:
        """Apply one stored batch; what cannot be read is skipped, so the broker still starts."""
        try:
            entries = [records.decode(record.key, record.value, base_offset + record.offset_delta)
                       or decode_consumer_record(record.key, record.value)
                       for record in iter_records(batch)]
        except (KafkaError, ValueError, struct.error, UnicodeDecodeError) as exc:
            log.warning("skipping unreadable batch at %s-%d offset %d: %s",
                        OFFSETS_TOPIC, index, base_offset, exc)
            return
        for entry in entries:
            if entry is not None:
                self._apply(entry, index, now_ms)

    def _apply(self, entry: records.Entry, index: int, now_ms: int) -> None:
        """Make the in-memory state what a record written to (or replayed from) partition
        `index` says."""
        match entry:
            case records.OffsetCommitEntry(group_id, partition, None):
                self.offsets.remove(group_id, partition)
            case records.OffsetCommitEntry(group_id, partition, value) if value is not None:
                self._ensure_group(group_id, now_ms)
                self.offsets.put(group_id, partition, value)
            case records.GroupEntry(group_id, None):
                self.groups.drop(group_id)
            case records.GroupEntry(_, snapshot) if snapshot is not None:
                self.groups.load(snapshot)
            case records.PendingOffsetEntry(producer_id, group_id, partition, value):
                self._ensure_group(group_id, now_ms)
                self.offsets.stage(producer_id, group_id, partition, value)
            case records.TransactionEndEntry(producer_id, commit):
                self.offsets.end_transaction(producer_id, commit,
                                             lambda group_id: self.partition_for(group_id) == index)
            case _ if isinstance(entry, CONSUMER_RECORD_TYPES):
                self.consumer.machine.replay(entry)

    def _ensure_group(self, group_id: str, now_ms: int) -> None:
        """Offsets of a group nobody joined make it a (classic) simple group, as in Kafka."""
        if self.consumer.group(group_id) is None:
            self.groups.ensure(group_id, now_ms)

    async def store(self, entries: Iterable[records.Entry], now_ms: int) -> ErrorCode:
        """Write entries (each to its group's partition), apply them, flush; NONE or the error
        Kafka reports for a failed write, with nothing applied."""
        try:
            self._write_entries(self._route(entries), now_ms)
        except (KafkaError, OSError) as exc:
            return write_error(exc)
        await self.topic.flush()
        return ErrorCode.NONE

    def _route(self, entries: Iterable[records.Entry]) -> list[tuple[int, records.Entry]]:
        # (the ignore: transaction ends are routed by their producer's groups, never through here)
        return [(self.partition_for(entry.group_id), entry) for entry in entries]  # type: ignore[union-attr]

    def _write_entries(self, routed: list[tuple[int, records.Entry]], now_ms: int) -> None:
        """Write (partition, entry) pairs, then apply them with their record offsets.

        Raises like _write, with nothing applied.
        """
        bases = self._write([(index, _encode(entry)) for index, entry in routed], now_ms)
        positions = dict.fromkeys(bases, 0)
        for index, entry in routed:
            record_offset = bases[index] + positions[index]
            positions[index] += 1
            self._apply(_with_record_offset(entry, record_offset), index, now_ms)

    def _write_applied(self, entries: Iterable[records.Entry], now_ms: int) -> None:
        """Write entries whose effect is already in memory (the machines decided them), without
        applying them again. Raises like _write."""
        self._write([(index, _encode(entry)) for index, entry in self._route(entries)], now_ms)


def _encode(entry: records.Entry) -> Record:
    match entry:
        case records.OffsetCommitEntry(group_id, partition, value):
            return records.offset_commit(group_id, partition, value)
        case records.GroupEntry(group_id, snapshot):
            return records.group_metadata(group_id, snapshot)
        case records.PendingOffsetEntry(producer_id, group_id, partition, value):
            return records.pending_offset(producer_id, group_id, partition, value)
        case records.TransactionEndEntry(producer_id, commit):
            return records.transaction_end(producer_id, commit)
    return encode_consumer_record(entry)


def _with_record_offset(entry: records.Entry, record_offset: int) -> records.Entry:
    if isinstance(entry, (records.OffsetCommitEntry, records.PendingOffsetEntry)) and entry.value is not None:
        return dataclasses.replace(entry, value=dataclasses.replace(entry.value, record_offset=record_offset))
    return entry


def _chunks(batch_records: list[Record]) -> Iterator[list[Record]]:
    chunk: list[Record] = []
    size = 0
    for record in batch_records:
        record_size = len(record.key or b"") + len(record.value or b"") + 32
        if chunk and size + record_size > WRITE_BATCH_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(record)
        size += record_size
    yield chunk


def write_error(exc: Exception) -> ErrorCode:
    if isinstance(exc, KafkaError):
        return _WRITE_ERRORS.get(exc.code, exc.code)
    return ErrorCode.NOT_COORDINATOR  # a storage error
