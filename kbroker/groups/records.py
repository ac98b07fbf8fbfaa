"""The records of __consumer_offsets, keyed and encoded as Apache Kafka writes them.

Key version 0/1: offset commit (group, topic, partition) -> OffsetCommitValue v1 (with an
expire timestamp, OffsetCommit v2-4 retention) or v3 (with the leader epoch).
Key version 2: group metadata (group) -> GroupMetadataValue v3.
A null value is a tombstone. Everything is big-endian, strings int16-length-prefixed, bytes
int32-length-prefixed (Kafka's non-flexible encoding), so Kafka's own tools can read the log.

Transactional offsets are kbroker's own addition, under key versions Kafka does not use:
Kafka marks them through the batch's producer id and transaction markers, kbroker writes
them as plain records so that the coordinator needs no producer state:
Key version 1000: staged transactional offset (group, topic, partition, producer id) ->
OffsetCommitValue v3. Key version 1001: end of a transaction (producer id) -> int8 1 commit /
0 abort.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kbroker.groups.classic import GroupSnapshot, StoredMember
from kbroker.groups.offsets import CommittedOffset, TopicPartition
from kbroker.protocol.records import Record

OFFSET_COMMIT_KEY_VERSIONS = (0, 1)
GROUP_METADATA_KEY_VERSION = 2
PENDING_OFFSET_KEY_VERSION = 1000
TRANSACTION_END_KEY_VERSION = 1001

_INT8 = struct.Struct(">b")
_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_INT64 = struct.Struct(">q")


class _Writer:
    def __init__(self):
        self.parts: list[bytes] = []

    def int16(self, value: int) -> _Writer:
        self.parts.append(_INT16.pack(value))
        return self

    def int32(self, value: int) -> _Writer:
        self.parts.append(_INT32.pack(value))
        return self

    def int64(self, value: int) -> _Writer:
        self.parts.append(_INT64.pack(value))
        return self

    def string(self, value: str | None) -> _Writer:
        if value is None:
            return self.int16(-1)
        data = value.encode()
        self.parts.append(_INT16.pack(len(data)) + data)
        return self

    def bytes(self, value: bytes) -> _Writer:
        self.parts.append(_INT32.pack(len(value)) + bytes(value))
        return self

    def done(self) -> bytes:
        return b"".join(self.parts)


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.position = 0

    def _unpack(self, fmt: struct.Struct) -> int:
        (value,) = fmt.unpack_from(self.data, self.position)
        self.position += fmt.size
        return value

    def int8(self) -> int:
        return self._unpack(_INT8)

    def int16(self) -> int:
        return self._unpack(_INT16)

    def int32(self) -> int:
        return self._unpack(_INT32)

    def int64(self) -> int:
        return self._unpack(_INT64)

    def _chunk(self, length: int) -> bytes:
        end = self.position + length
        if length < 0 or end > len(self.data):
            raise ValueError("field runs past the end of the record")
        chunk = self.data[self.position:end]
        self.position = end
        return chunk

    def string(self) -> str | None:
        length = self.int16()
        return None if length < 0 else self._chunk(length).decode()

    def bytes(self) -> bytes:
        return self._chunk(self.int32())


@dataclass(frozen=True, slots=True)
class OffsetCommitEntry:
    group_id: str
    partition: TopicPartition
    value: CommittedOffset | None  # None: tombstone


@dataclass(frozen=True, slots=True)
class GroupEntry:
    group_id: str
    snapshot: GroupSnapshot | None  # None: tombstone


@dataclass(frozen=True, slots=True)
class PendingOffsetEntry:
    producer_id: int
    group_id: str
    partition: TopicPartition
    value: CommittedOffset


@dataclass(frozen=True, slots=True)
class TransactionEndEntry:
    producer_id: int
    commit: bool


Entry = OffsetCommitEntry | GroupEntry | PendingOffsetEntry | TransactionEndEntry


def _offset_value(value: CommittedOffset) -> bytes:
    if value.expire_timestamp_ms is not None:
        return (_Writer().int16(1).int64(value.offset).string(value.metadata)
                .int64(value.commit_timestamp_ms).int64(value.expire_timestamp_ms).done())
    return (_Writer().int16(3).int64(value.offset).int32(value.leader_epoch).string(value.metadata)
            .int64(value.commit_timestamp_ms).done())


def _read_offset_value(reader: _Reader, record_offset: int) -> CommittedOffset:
    version = reader.int16()
    offset = reader.int64()
    if version == 1:
        metadata = reader.string() or ""
        committed = reader.int64()
        return CommittedOffset(offset, -1, metadata, committed, reader.int64(), record_offset)
    if version == 3:
        epoch = reader.int32()
        metadata = reader.string() or ""
        return CommittedOffset(offset, epoch, metadata, reader.int64(), None, record_offset)
    raise ValueError(f"offset commit value version {version} is not written by kbroker")


def offset_commit(group_id: str, partition: TopicPartition, value: CommittedOffset | None) -> Record:
    key = _Writer().int16(1).string(group_id).string(partition[0]).int32(partition[1]).done()
    return Record(key=key, value=None if value is None else _offset_value(value))


def pending_offset(producer_id: int, group_id: str, partition: TopicPartition,
                   value: CommittedOffset) -> Record:
    key = (_Writer().int16(PENDING_OFFSET_KEY_VERSION).string(group_id).string(partition[0])
           .int32(partition[1]).int64(producer_id).done())
    return Record(key=key, value=_offset_value(value))


def transaction_end(producer_id: int, commit: bool) -> Record:
    key = _Writer().int16(TRANSACTION_END_KEY_VERSION).int64(producer_id).done()
    return Record(key=key, value=_INT8.pack(1 if commit else 0))


def group_metadata(group_id: str, snapshot: GroupSnapshot | None) -> Record:
    key = _Writer().int16(GROUP_METADATA_KEY_VERSION).string(group_id).done()
    if snapshot is None:
        return Record(key=key, value=None)
    writer = (_Writer().int16(3).string(snapshot.protocol_type).int32(snapshot.generation_id)
              .string(snapshot.protocol_name).string(snapshot.leader_id)
              .int64(snapshot.state_timestamp_ms).int32(len(snapshot.members)))
    for m in snapshot.members:
        (writer.string(m.member_id).string(m.instance_id).string(m.client_id).string(m.client_host)
         .int32(m.rebalance_timeout_ms).int32(m.session_timeout_ms).bytes(m.subscription)
         .bytes(m.assignment))
    return Record(key=key, value=writer.done())


def _read_group(group_id: str, reader: _Reader) -> GroupSnapshot:
    version = reader.int16()
    if version != 3:
        raise ValueError(f"group metadata value version {version} is not written by kbroker")
    protocol_type = reader.string() or ""
    generation = reader.int32()
    protocol_name = reader.string()
    leader = reader.string()
    timestamp = reader.int64()
    members = tuple(
        StoredMember(reader.string() or "", reader.string(), reader.string() or "",
                     reader.string() or "", reader.int32(), reader.int32(), reader.bytes(),
                     reader.bytes())
        for _ in range(reader.int32())
    )
    return GroupSnapshot(group_id, protocol_type, generation, protocol_name, leader, timestamp, members)


def decode(key: bytes | None, value: bytes | None, record_offset: int) -> Entry | None:
    """The entry a stored record describes (None: a record kind kbroker does not keep).

    Raises ValueError or struct.error for a record it cannot read.
    """
    if key is None:
        return None
    reader = _Reader(key)
    version = reader.int16()
    values = None if value is None else _Reader(value)
    if version in OFFSET_COMMIT_KEY_VERSIONS:
        group_id, topic, partition = reader.string(), reader.string(), reader.int32()
        committed = None if values is None else _read_offset_value(values, record_offset)
        return OffsetCommitEntry(group_id, (topic, partition), committed)
    if version == GROUP_METADATA_KEY_VERSION:
        group_id = reader.string()
        return GroupEntry(group_id, None if values is None else _read_group(group_id, values))
    if version == PENDING_OFFSET_KEY_VERSION and values is not None:
        group_id, topic, partition = reader.string(), reader.string(), reader.int32()
        producer_id = reader.int64()
        return PendingOffsetEntry(producer_id, group_id, (topic, partition),
                                  _read_offset_value(values, record_offset))
    if version == TRANSACTION_END_KEY_VERSION and values is not None:
        return TransactionEndEntry(reader.int64(), values.int8() == 1)
    return None
