"""Share group membership in __consumer_offsets, in Kafka's ShareGroup* record formats.

A group is written as Kafka's group coordinator writes it: ShareGroupMetadata (group epoch and
the hash of the subscribed topics' metadata), ShareGroupTargetAssignmentMetadata (assignment
epoch), and per member ShareGroupMemberMetadata (subscription and client), ShareGroupTarget-
AssignmentMember and ShareGroupCurrentMemberAssignment (epoch and partitions). Only what changed
since the last write is written; a member that leaves, and a deleted group, leave tombstones.
`GroupImage` is what was last written of a group, so the next write is the difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kbroker.protocol.coordinator_records import decode_key, decode_value, encode_key, encode_value, record_class
from kbroker.protocol.records import Record
from kbroker.share.group import Assignment, ShareGroup, ShareMember

_TYPES = frozenset({10, 11, 12, 13, 14})
STABLE_MEMBER_STATE = 0


def _cls(name: str) -> Any:  # record classes are built at run time (see coordinator_records)
    return record_class("group", name)


@dataclass(frozen=True, slots=True)
class MemberImage:
    metadata: tuple  # (rack id, client id, client host, subscribed topics)
    epoch: int
    assignment: tuple  # ((topic id, (partitions...)), ...)


@dataclass(slots=True)
class GroupImage:
    epoch: int = 0
    assignment_epoch: int = 0
    metadata_hash: int = 0
    members: dict[str, MemberImage] = field(default_factory=dict)


def _frozen(assignment: Assignment) -> tuple:
    return tuple(sorted((topic_id, tuple(sorted(parts))) for topic_id, parts in assignment.items()))


def image_of(group: ShareGroup) -> GroupImage:
    return GroupImage(group.epoch, group.assignment_epoch, group.metadata_hash, {
        member_id: MemberImage((m.rack_id, m.client_id, m.client_host, tuple(m.subscribed)), m.epoch,
                               _frozen(m.assignment))
        for member_id, m in group.members.items()})


def _record(key_name: str, value, **key_fields) -> Record:
    key = encode_key(_cls(key_name)(**key_fields))
    return Record(key=key, value=None if value is None else encode_value(value, 0))


def _partitions(struct_cls, assignment: tuple) -> list:
    return [struct_cls(topic_id=topic_id, partitions=list(parts)) for topic_id, parts in assignment]


def changes(group_id: str, old: GroupImage | None, new: GroupImage | None) -> list[Record]:
    """The records that turn the stored `old` image of a group into `new` (None: deleted)."""
    old = old or GroupImage()
    records = []
    new_members = new.members if new is not None else {}
    for member_id in old.members.keys() - new_members.keys():
        ids = dict(group_id=group_id, member_id=member_id)
        records += [_record("ShareGroupCurrentMemberAssignmentKey", None, **ids),
                    _record("ShareGroupTargetAssignmentMemberKey", None, **ids),
                    _record("ShareGroupMemberMetadataKey", None, **ids)]
    if new is None:
        return records + [_record("ShareGroupTargetAssignmentMetadataKey", None, group_id=group_id),
                          _record("ShareGroupMetadataKey", None, group_id=group_id)]
    for member_id, member in new_members.items():
        before = old.members.get(member_id)
        ids = dict(group_id=group_id, member_id=member_id)
        if before is None or before.metadata != member.metadata:
            rack, client_id, client_host, subscribed = member.metadata
            records.append(_record("ShareGroupMemberMetadataKey", _cls("ShareGroupMemberMetadataValue")(
                rack_id=rack, client_id=client_id, client_host=client_host,
                subscribed_topic_names=list(subscribed)), **ids))
        if before is None or before.assignment != member.assignment:
            value_cls = _cls("ShareGroupTargetAssignmentMemberValue")
            records.append(_record("ShareGroupTargetAssignmentMemberKey", value_cls(
                topic_partitions=_partitions(value_cls.TopicPartition, member.assignment)), **ids))
        if before is None or (before.epoch, before.assignment) != (member.epoch, member.assignment):
            value_cls = _cls("ShareGroupCurrentMemberAssignmentValue")
            records.append(_record("ShareGroupCurrentMemberAssignmentKey", value_cls(
                member_epoch=member.epoch, previous_member_epoch=before.epoch if before else 0,
                state=STABLE_MEMBER_STATE,
                assigned_partitions=_partitions(value_cls.TopicPartitions, member.assignment)), **ids))
    if new.assignment_epoch != old.assignment_epoch:
        records.append(_record("ShareGroupTargetAssignmentMetadataKey", _cls(
            "ShareGroupTargetAssignmentMetadataValue")(assignment_epoch=new.assignment_epoch), group_id=group_id))
    if (new.epoch, new.metadata_hash) != (old.epoch, old.metadata_hash):
        records.append(_record("ShareGroupMetadataKey", _cls("ShareGroupMetadataValue")(
            epoch=new.epoch, metadata_hash=new.metadata_hash), group_id=group_id))
    return records


def replay(stored) -> dict[str, ShareGroup]:
    """Share groups from the (key, value) records of __consumer_offsets, in order; other record
    types are left alone."""
    groups: dict[str, ShareGroup] = {}
    for key_bytes, value_bytes in stored:
        if key_bytes is None or len(key_bytes) < 2 or int.from_bytes(key_bytes[:2], "big") not in _TYPES:
            continue
        key = decode_key("group", key_bytes)
        value = None if value_bytes is None else decode_value(key, value_bytes)[1]
        name = type(key).__name__
        if name == "ShareGroupMetadataKey":
            if value is None:
                groups.pop(key.group_id, None)
            else:
                group = groups.setdefault(key.group_id, ShareGroup(key.group_id))
                group.epoch, group.metadata_hash = value.epoch, value.metadata_hash
            continue
        group = groups.setdefault(key.group_id, ShareGroup(key.group_id))
        if name == "ShareGroupTargetAssignmentMetadataKey":
            group.assignment_epoch = value.assignment_epoch if value is not None else 0
            continue
        if value is None:
            group.members.pop(key.member_id, None)
            group.target.pop(key.member_id, None)
            continue
        member = group.members.setdefault(key.member_id, ShareMember(key.member_id, "", "", None, []))
        if name == "ShareGroupMemberMetadataKey":
            member.rack_id, member.client_id, member.client_host = value.rack_id, value.client_id, value.client_host
            member.subscribed = list(value.subscribed_topic_names)
        elif name == "ShareGroupTargetAssignmentMemberKey":
            group.target[key.member_id] = {tp.topic_id: list(tp.partitions) for tp in value.topic_partitions}
        else:  # ShareGroupCurrentMemberAssignmentKey
            member.epoch = value.member_epoch
            member.assignment = {tp.topic_id: list(tp.partitions) for tp in value.assigned_partitions}
            member.sent = member.assignment
    return groups

