"""The records of consumer groups (KIP-848) in __consumer_offsets, in Kafka's ConsumerGroup* formats.

One class per record type (a value of None is the record's tombstone); `encode` and `decode` map
them to Kafka's keys and values through the generated record classes
(protocol_specs/records/group/), so a group written by kbroker reads as Kafka writes it.
The member metadata and current assignment records each carry a `Member`, of which they store
the subscription fields and the epochs with the partitions respectively.
The partition metadata record is written with its topics (Kafka 3.7-4.0's form); the group
record's MetadataHash, which later Kafka versions use instead, is written as 0.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Mapping

from kbroker.groups.assignors import Assignment
from kbroker.groups.consumer_member import ClassicMeta, Member, MemberState, TopicMeta
from kbroker.protocol.coordinator_records import (
    decode_key, decode_value, encode_key, encode_value, record_class,
)
from kbroker.protocol.records import Record


@dataclass(frozen=True, slots=True)
class GroupEpochRecord:  # ConsumerGroupMetadata
    group_id: str
    epoch: int | None


@dataclass(frozen=True, slots=True)
class MemberRecord:  # ConsumerGroupMemberMetadata (the subscription fields of `member`)
    group_id: str
    member_id: str
    member: Member | None


@dataclass(frozen=True, slots=True)
class SubscriptionMetadataRecord:  # ConsumerGroupPartitionMetadata
    group_id: str
    topics: Mapping[str, TopicMeta] | None


@dataclass(frozen=True, slots=True)
class TargetMemberRecord:  # ConsumerGroupTargetAssignmentMember
    group_id: str
    member_id: str
    assignment: Assignment | None


@dataclass(frozen=True, slots=True)
class TargetEpochRecord:  # ConsumerGroupTargetAssignmentMetadata
    group_id: str
    epoch: int | None
    timestamp_ms: int = 0


@dataclass(frozen=True, slots=True)
class CurrentAssignmentRecord:  # ConsumerGroupCurrentMemberAssignment (the epochs and partitions)
    group_id: str
    member_id: str
    member: Member | None


@dataclass(frozen=True, slots=True)
class RegexRecord:  # ConsumerGroupRegularExpression
    group_id: str
    regex: str
    topics: frozenset[str] | None
    timestamp_ms: int = 0


ConsumerRecord = (GroupEpochRecord | MemberRecord | SubscriptionMetadataRecord | TargetMemberRecord
                  | TargetEpochRecord | CurrentAssignmentRecord | RegexRecord)
CONSUMER_RECORD_TYPES = (GroupEpochRecord, MemberRecord, SubscriptionMetadataRecord,
                         TargetMemberRecord, TargetEpochRecord, CurrentAssignmentRecord, RegexRecord)


def _cls(name: str) -> Any:  # record classes are built at run time (see coordinator_records)
    return record_class("group", name)


def _topic_partitions(cls, assignment: Assignment) -> list:
    return [cls(topic_id=topic_id, partitions=sorted(assignment[topic_id]))
            for topic_id in sorted(assignment)]


def _assignment(items) -> Assignment:
    return {item.topic_id: frozenset(item.partitions) for item in items if item.partitions}


def encode(record) -> Record:
    """The stored key and value of a consumer group record."""
    gid = record.group_id
    match record:
        case GroupEpochRecord(_, epoch):
            key = _cls("ConsumerGroupMetadataKey")(group_id=gid)
            value = None if epoch is None else _cls("ConsumerGroupMetadataValue")(epoch=epoch)
        case MemberRecord(_, member_id, member):
            cls = _cls("ConsumerGroupMemberMetadataValue")
            key = _cls("ConsumerGroupMemberMetadataKey")(group_id=gid, member_id=member_id)
            value = None if member is None else cls(
                instance_id=member.instance_id, rack_id=member.rack_id, client_id=member.client_id,
                client_host=member.client_host, subscribed_topic_names=list(member.topic_names),
                subscribed_topic_regex=member.topic_regex,
                rebalance_timeout_ms=member.rebalance_timeout_ms,
                server_assignor=member.server_assignor,
                classic_member_metadata=None if member.classic is None else cls.ClassicMemberMetadata(
                    session_timeout_ms=member.classic.session_timeout_ms,
                    supported_protocols=[cls.ClassicProtocol(name=name, metadata=metadata)
                                         for name, metadata in member.classic.protocols]))
        case SubscriptionMetadataRecord(_, topics):
            cls = _cls("ConsumerGroupPartitionMetadataValue")
            key = _cls("ConsumerGroupPartitionMetadataKey")(group_id=gid)
            value = None if topics is None else cls(topics=[
                cls.TopicMetadata(topic_id=meta.topic_id, topic_name=name,
                                  num_partitions=meta.partitions)
                for name, meta in sorted(topics.items())])
        case TargetMemberRecord(_, member_id, assignment):
            cls = _cls("ConsumerGroupTargetAssignmentMemberValue")
            key = _cls("ConsumerGroupTargetAssignmentMemberKey")(group_id=gid, member_id=member_id)
            value = None if assignment is None else cls(
                topic_partitions=_topic_partitions(cls.TopicPartition, assignment))
        case TargetEpochRecord(_, epoch, timestamp_ms):
            key = _cls("ConsumerGroupTargetAssignmentMetadataKey")(group_id=gid)
            value = None if epoch is None else _cls("ConsumerGroupTargetAssignmentMetadataValue")(
                assignment_epoch=epoch, assignment_timestamp=timestamp_ms)
        case CurrentAssignmentRecord(_, member_id, member):
            cls = _cls("ConsumerGroupCurrentMemberAssignmentValue")
            key = _cls("ConsumerGroupCurrentMemberAssignmentKey")(group_id=gid, member_id=member_id)
            value = None if member is None else cls(
                member_epoch=member.member_epoch, previous_member_epoch=member.previous_member_epoch,
                state=int(member.state),
                assigned_partitions=_topic_partitions(cls.TopicPartitions, member.assigned),
                partitions_pending_revocation=_topic_partitions(cls.TopicPartitions,
                                                                member.pending_revocation))
        case RegexRecord(_, regex, topics, timestamp_ms):
            key = _cls("ConsumerGroupRegularExpressionKey")(group_id=gid, regular_expression=regex)
            value = None if topics is None else _cls("ConsumerGroupRegularExpressionValue")(
                topics=sorted(topics), version=0, timestamp=timestamp_ms)
        case _:
            raise TypeError(record)
    return Record(key=encode_key(key), value=None if value is None else encode_value(value, 0))


_DECODERS: dict[str, Callable[[Any, Any], Any]] = {}
_RECORD_TYPE = struct.Struct(">h")
# ConsumerGroupMetadata 3, PartitionMetadata 4, MemberMetadata 5, TargetAssignmentMetadata 6,
# TargetAssignmentMember 7, CurrentMemberAssignment 8, RegularExpression 16.
_TYPES = frozenset({3, 4, 5, 6, 7, 8, 16})


def _decoder(name: str):
    def register(function):
        _DECODERS[name] = function
        return function
    return register


@_decoder("ConsumerGroupMetadataKey")
def _group_epoch(key, value):
    return GroupEpochRecord(key.group_id, None if value is None else value.epoch)


@_decoder("ConsumerGroupMemberMetadataKey")
def _member(key, value):
    if value is None:
        return MemberRecord(key.group_id, key.member_id, None)
    return MemberRecord(key.group_id, key.member_id, Member(
        key.member_id, instance_id=value.instance_id, rack_id=value.rack_id,
        client_id=value.client_id, client_host=value.client_host,
        topic_names=tuple(value.subscribed_topic_names), topic_regex=value.subscribed_topic_regex,
        rebalance_timeout_ms=value.rebalance_timeout_ms, server_assignor=value.server_assignor,
        classic=None if (classic := value.classic_member_metadata) is None else ClassicMeta(
            classic.session_timeout_ms,
            tuple((p.name, bytes(p.metadata)) for p in classic.supported_protocols))))


@_decoder("ConsumerGroupPartitionMetadataKey")
def _subscription_metadata(key, value):
    topics = None if value is None else {
        t.topic_name: TopicMeta(t.topic_id, t.num_partitions) for t in value.topics}
    return SubscriptionMetadataRecord(key.group_id, topics)


@_decoder("ConsumerGroupTargetAssignmentMemberKey")
def _target_member(key, value):
    return TargetMemberRecord(key.group_id, key.member_id,
                              None if value is None else _assignment(value.topic_partitions))


@_decoder("ConsumerGroupTargetAssignmentMetadataKey")
def _target_epoch(key, value):
    if value is None:
        return TargetEpochRecord(key.group_id, None)
    return TargetEpochRecord(key.group_id, value.assignment_epoch, value.assignment_timestamp)


@_decoder("ConsumerGroupCurrentMemberAssignmentKey")
def _current_assignment(key, value):
    if value is None:
        return CurrentAssignmentRecord(key.group_id, key.member_id, None)
    return CurrentAssignmentRecord(key.group_id, key.member_id, Member(
        key.member_id, member_epoch=value.member_epoch,
        previous_member_epoch=value.previous_member_epoch, state=MemberState(value.state),
        assigned=_assignment(value.assigned_partitions),
        pending_revocation=_assignment(value.partitions_pending_revocation)))


@_decoder("ConsumerGroupRegularExpressionKey")
def _regex(key, value):
    return RegexRecord(key.group_id, key.regular_expression,
                       None if value is None else frozenset(value.topics),
                       0 if value is None else value.timestamp)


def decode(key_bytes: bytes | None, value_bytes: bytes | None):
    """The consumer group record stored under this key, or None for other record types.

    Raises CorruptFrame (or ValueError) for bytes it cannot read."""
    if key_bytes is None or len(key_bytes) < 2 or _RECORD_TYPE.unpack_from(key_bytes)[0] not in _TYPES:
        return None
    key = decode_key("group", key_bytes)
    decoder = _DECODERS[type(key).__name__]
    value = None if value_bytes is None else decode_value(key, value_bytes)[1]
    return decoder(key, value)
