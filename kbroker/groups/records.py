"""The records of __consumer_offsets, keyed and encoded as Apache Kafka writes them, through
the record classes generated from Kafka's schemas (kbroker/protocol/coordinator_records.py).

Record type 1 (OffsetCommitKey: group, topic, partition) -> OffsetCommitValue v1 (with an
expire timestamp, OffsetCommit v2-4 retention) or v3 (with the leader epoch); type 0 (Kafka's
legacy key) is read as well. Record type 2 (GroupMetadataKey: group) -> GroupMetadataValue v3.
A null value is a tombstone. Kafka's own tools read the log.

Transactional offsets are kbroker's own addition, under record types Kafka does not use:
Kafka marks them through the batch's producer id and transaction markers, kbroker writes
them as plain records so that the coordinator needs no producer state:
type 1000: a staged transactional offset, the OffsetCommitKey fields then the int64 producer id
-> OffsetCommitValue v3; type 1001: the end of a transaction, int64 producer id -> int8 1
commit / 0 abort.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kbroker.groups.classic_model import GroupSnapshot, StoredMember
from kbroker.groups.offsets import CommittedOffset, TopicPartition
from kbroker.protocol.codec import decode_struct
from kbroker.protocol.coordinator_records import decode_key, decode_value, encode_key, encode_value, record_class
from kbroker.protocol.exceptions import ProtocolError
from kbroker.protocol.records import Record

PENDING_OFFSET_KEY_VERSION = 1000
TRANSACTION_END_KEY_VERSION = 1001
# The value versions kbroker writes (Kafka 3.x's; Kafka 4 reads them, and writes v4 itself).
OFFSET_VALUE_VERSION, EXPIRING_OFFSET_VALUE_VERSION, GROUP_VALUE_VERSION = 3, 1, 3

_RECORD_TYPE = struct.Struct(">h")
_PRODUCER_ID = struct.Struct(">q")
_COMMITTED = struct.Struct(">b")

OffsetCommitKey = record_class("group", "OffsetCommitKey")
OffsetCommitValue = record_class("group", "OffsetCommitValue")
GroupMetadataKey = record_class("group", "GroupMetadataKey")
GroupMetadataValue = record_class("group", "GroupMetadataValue")


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
    stored = OffsetCommitValue(offset=value.offset, leader_epoch=value.leader_epoch,
                               metadata=value.metadata, commit_timestamp=value.commit_timestamp_ms)
    if value.expire_timestamp_ms is not None:
        stored.expire_timestamp = value.expire_timestamp_ms
        return encode_value(stored, EXPIRING_OFFSET_VALUE_VERSION)
    return encode_value(stored, OFFSET_VALUE_VERSION)


def _committed(key, value: bytes, record_offset: int) -> CommittedOffset:
    version, stored = decode_value(key, value)
    expire = stored.expire_timestamp if version == EXPIRING_OFFSET_VALUE_VERSION else None
    return CommittedOffset(stored.offset, getattr(stored, "leader_epoch", -1),
                           stored.metadata or "", stored.commit_timestamp, expire, record_offset)


def _offset_key(group_id: str, partition: TopicPartition):
    return OffsetCommitKey(group=group_id, topic=partition[0], partition=partition[1])


def offset_commit(group_id: str, partition: TopicPartition, value: CommittedOffset | None) -> Record:
    return Record(key=encode_key(_offset_key(group_id, partition)),
                  value=None if value is None else _offset_value(value))


def pending_offset(producer_id: int, group_id: str, partition: TopicPartition,
                   value: CommittedOffset) -> Record:
    key = _RECORD_TYPE.pack(PENDING_OFFSET_KEY_VERSION) + encode_key(
        _offset_key(group_id, partition))[2:] + _PRODUCER_ID.pack(producer_id)
    return Record(key=key, value=_offset_value(value))


def transaction_end(producer_id: int, commit: bool) -> Record:
    key = _RECORD_TYPE.pack(TRANSACTION_END_KEY_VERSION) + _PRODUCER_ID.pack(producer_id)
    return Record(key=key, value=_COMMITTED.pack(1 if commit else 0))


def group_metadata(group_id: str, snapshot: GroupSnapshot | None) -> Record:
    key = encode_key(GroupMetadataKey(group=group_id))
    if snapshot is None:
        return Record(key=key, value=None)
    value = GroupMetadataValue(
        protocol_type=snapshot.protocol_type, generation=snapshot.generation_id,
        protocol=snapshot.protocol_name, leader=snapshot.leader_id,
        current_state_timestamp=snapshot.state_timestamp_ms, members=[
            GroupMetadataValue.MemberMetadata(
                member_id=m.member_id, group_instance_id=m.instance_id, client_id=m.client_id,
                client_host=m.client_host, rebalance_timeout=m.rebalance_timeout_ms,
                session_timeout=m.session_timeout_ms, subscription=m.subscription,
                assignment=m.assignment)
            for m in snapshot.members])
    return Record(key=key, value=encode_value(value, GROUP_VALUE_VERSION))


def _snapshot(group_id: str, key, value: bytes) -> GroupSnapshot:
    _, stored = decode_value(key, value)
    members = tuple(
        StoredMember(m.member_id, m.group_instance_id, m.client_id, m.client_host,
                     m.rebalance_timeout, m.session_timeout, bytes(m.subscription),
                     bytes(m.assignment))
        for m in stored.members)
    return GroupSnapshot(group_id, stored.protocol_type or "", stored.generation, stored.protocol,
                         stored.leader, stored.current_state_timestamp, members)


def decode(key: bytes | None, value: bytes | None, record_offset: int) -> Entry | None:
    """The entry a stored record describes (None: a record kind this module does not keep).

    Raises ValueError or struct.error for a record it cannot read.
    """
    if key is None:
        return None
    try:
        return _decode(key, value, record_offset)
    except ProtocolError as exc:  # the codec's CorruptFrame / UnsupportedVersion
        raise ValueError(str(exc)) from None


def _decode(key: bytes, value: bytes | None, record_offset: int) -> Entry | None:
    (record_type,) = _RECORD_TYPE.unpack_from(key, 0)
    if record_type == PENDING_OFFSET_KEY_VERSION:
        if value is None:
            return None
        stored = decode_struct(OffsetCommitKey, 0, memoryview(key)[:-_PRODUCER_ID.size], 2)
        (producer_id,) = _PRODUCER_ID.unpack_from(key, len(key) - _PRODUCER_ID.size)
        return PendingOffsetEntry(producer_id, stored.group, (stored.topic, stored.partition),
                                  _committed(stored, value, record_offset))
    if record_type == TRANSACTION_END_KEY_VERSION:
        if value is None:
            return None
        (producer_id,) = _PRODUCER_ID.unpack_from(key, 2)
        return TransactionEndEntry(producer_id, _COMMITTED.unpack_from(value, 0)[0] == 1)
    if record_type not in (0, 1, 2):
        return None  # consumer group records and others: another module's
    stored_key = decode_key("group", key)
    if record_type == 2:
        group_id = stored_key.group
        return GroupEntry(group_id, None if value is None else _snapshot(group_id, stored_key, value))
    partition = (stored_key.topic, stored_key.partition)
    committed = None if value is None else _committed(stored_key, value, record_offset)
    return OffsetCommitEntry(stored_key.group, partition, committed)
