"""Classic members in consumer groups, and the online conversion between classic and consumer
groups (Kafka 4's group.consumer.migration.policy, default bidirectional).

These are methods of the consumer group state machine (kbroker/groups/consumer.py), kept apart
for size; like the rest of it they decide in records and change nothing until those are
replayed. The rules are Kafka's GroupMetadataManager's:

M1  Upgrade: a ConsumerGroupHeartbeat joining (epoch 0) a classic group with members converts it
    when the policy allows upgrades, the group uses the consumer embedded protocol and it has at
    most group.consumer.max.size members. Every classic member becomes a member of the consumer
    group keeping its subscription, its last assignment and the generation as member epoch; the
    group and assignment epochs are the generation. Requests parked in the classic group are
    answered REBALANCE_IN_PROGRESS. Otherwise: GROUP_ID_NOT_FOUND.
M2  JoinGroup into a consumer group with members: protocol type "consumer" and a protocol every
    classic member supports, else INCONSISTENT_GROUP_PROTOCOL; an unknown dynamic member on v4+
    gets MEMBER_ID_REQUIRED with a new id. The member is updated from its subscription (topics,
    owned partitions) as a heartbeat updates a member, and answered at once: the member epoch as
    generation, the first of its protocols, no leader duty.
M3  SyncGroup and Heartbeat of a classic member: unknown member (or one not using the classic
    protocol) UNKNOWN_MEMBER_ID, another member holding its instance id FENCED_INSTANCE_ID, a
    generation other than its epoch ILLEGAL_GENERATION, a protocol other than its own
    INCONSISTENT_GROUP_PROTOCOL (SyncGroup); a group epoch above its epoch (unless it is revoking)
    REBALANCE_IN_PROGRESS, so that it rejoins. SyncGroup answers its assigned partitions as a
    ConsumerProtocolAssignment; both renew its session (the JoinGroup's session timeout). One
    asked to rejoin that has not rejoined within its rebalance timeout is removed.
M4  LeaveGroup removes the members named (by member id, or by instance id for static members).
M5  Downgrade: when a member leaves or is removed and only classic members remain (at least one,
    at most group.max.size) and the policy allows downgrades, the group becomes a classic group of
    those members, generation = group epoch, which rebalances at once.
"""

from __future__ import annotations

import dataclasses
import struct
import uuid
from typing import TYPE_CHECKING

from kbroker.groups.classic_model import (
    CONSUMER_PROTOCOL_TYPE, ClassicGroup, GroupSnapshot, JoinRequest, JoinResult, StoredMember,
    SyncResult,
)
from kbroker.groups.consumer_member import ClassicMeta, Member, MemberState, TopicMeta
from kbroker.groups.consumer_records import (
    CurrentAssignmentRecord, GroupEpochRecord, MemberRecord, TargetEpochRecord, TargetMemberRecord,
)
from kbroker.groups.records import GroupEntry
from kbroker.protocol import codec, messages
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.exceptions import CorruptFrame, UnsupportedVersion

if TYPE_CHECKING:
    from kbroker.groups.consumer_model import ConsumerGroup, ConsumerSettings
    from kbroker.groups.timers import Timers

UPGRADE_POLICIES = ("upgrade", "bidirectional")
DOWNGRADE_POLICIES = ("downgrade", "bidirectional")


def parse_subscription(metadata: bytes, topics) -> tuple[tuple[str, ...], dict, str | None]:
    """(topics, owned partitions by topic id, rack id) of a ConsumerProtocolSubscription."""
    try:
        _, subscription = codec.decode_data(messages.ConsumerProtocolSubscription, metadata)
    except (CorruptFrame, UnsupportedVersion, struct.error, UnicodeDecodeError) as exc:
        raise KafkaError(ErrorCode.INCONSISTENT_GROUP_PROTOCOL,
                         f"Malformed embedded consumer protocol in the subscription: {exc}") from None
    owned = {}
    for tp in subscription.owned_partitions or ():
        if tp.topic in topics and tp.partitions:
            owned[topics[tp.topic].topic_id] = frozenset(tp.partitions)
    return tuple(subscription.topics), owned, subscription.rack_id


def parse_assignment(data: bytes, topics) -> dict:
    if not data:
        return {}
    _, assignment = codec.decode_data(messages.ConsumerProtocolAssignment, data)
    return {topics[tp.topic].topic_id: frozenset(tp.partitions)
            for tp in assignment.assigned_partitions if tp.topic in topics and tp.partitions}


def encode_assignment(assigned: dict, metadata: dict[str, TopicMeta]) -> bytes:
    names = {meta.topic_id: name for name, meta in metadata.items()}
    A = messages.ConsumerProtocolAssignment
    return codec.encode_data(A(assigned_partitions=[
        A.TopicPartition(topic=names[topic_id], partitions=sorted(parts))
        for topic_id, parts in sorted(assigned.items(), key=lambda item: names.get(item[0], ""))
        if topic_id in names]), 0)


class ClassicMembers:
    """The classic-protocol side of ConsumerGroups (mixed in)."""

    if TYPE_CHECKING:  # what ConsumerGroups, which this class is mixed into, provides
        settings: ConsumerSettings
        groups: dict[str, ConsumerGroup]
        timers: Timers

        def _advance(self, group: ConsumerGroup, member: Member, updated: Member, members: dict,
                     targets: dict, topics, now_ms: int, owned, records: list) -> Member: ...
        def fence(self, group: ConsumerGroup, member_id: str, now_ms: int) -> list: ...
        def schedule_session(self, group_id: str, member: Member, now_ms: int) -> None: ...
        def _cancel_timers(self, group_id: str, member_id: str) -> None: ...
        def _fence_due(self, group_id: str, member_id: str, now_ms: int) -> None: ...
        def _replayed(self, records: list) -> list: ...
        def deletion_records(self, group: ConsumerGroup, with_members: bool = False) -> list: ...

    # -- M1 ----------------------------------------------------------------------------------------

    def upgrade(self, classic: ClassicGroup, topics, now_ms: int) -> list:
        """The records turning a classic group into a consumer group, or KafkaError."""
        if (self.settings.migration_policy not in UPGRADE_POLICIES or not classic.uses_consumer_protocol()
                or len(classic.members) > self.settings.max_size):
            raise KafkaError(ErrorCode.GROUP_ID_NOT_FOUND, f"Group {classic.group_id} is not a consumer group.")
        gid, epoch = classic.group_id, classic.generation_id
        members = []
        for m in classic.members.values():
            try:
                names, _, rack = parse_subscription(m.metadata(classic.protocol_name), topics)
            except KafkaError:
                raise KafkaError(ErrorCode.GROUP_ID_NOT_FOUND, f"Cannot upgrade the classic group {gid} "
                                 "to consumer group because the embedded consumer protocol is "
                                 "malformed.") from None
            try:
                assigned = parse_assignment(m.assignment, topics)
            except (CorruptFrame, UnsupportedVersion, struct.error, UnicodeDecodeError):
                assigned = {}
            members.append(Member(
                m.member_id, instance_id=m.instance_id, rack_id=rack, client_id=m.client_id,
                client_host=m.client_host, topic_names=names, rebalance_timeout_ms=m.rebalance_timeout_ms,
                member_epoch=epoch, previous_member_epoch=epoch, state=MemberState.STABLE,
                assigned=assigned, classic=ClassicMeta(m.session_timeout_ms, tuple(m.protocols))))
        return [*(MemberRecord(gid, m.member_id, m) for m in members), GroupEpochRecord(gid, epoch),
                *(TargetMemberRecord(gid, m.member_id, m.assigned) for m in members),
                TargetEpochRecord(gid, epoch, now_ms),
                *(CurrentAssignmentRecord(gid, m.member_id, m) for m in members)]

    # -- M2 ----------------------------------------------------------------------------------------

    def classic_join(self, request: JoinRequest, topics, now_ms: int) -> tuple[JoinResult, list]:
        try:
            return self._classic_join(request, topics, now_ms)
        except KafkaError as exc:
            return JoinResult(error=exc.code, member_id=request.member_id), []

    def _classic_join(self, request: JoinRequest, topics, now_ms: int) -> tuple[JoinResult, list]:
        group = self.groups[request.group_id]
        member_id = request.member_id or str(uuid.uuid4())
        if len(group.members) >= self.settings.max_size and member_id not in group.members:
            raise KafkaError(ErrorCode.GROUP_MAX_SIZE_REACHED)
        names = [name for name, _ in request.protocols]
        classics = [m.classic for m in group.members.values() if m.classic is not None]
        if request.protocol_type != CONSUMER_PROTOCOL_TYPE or not names or not any(
                all(name in {n for n, _ in c.protocols} for c in classics) for name in names):
            raise KafkaError(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
        if not request.member_id and request.group_instance_id is None and request.require_known_member_id:
            return JoinResult(error=ErrorCode.MEMBER_ID_REQUIRED, member_id=member_id), []
        records: list = []
        members, targets = dict(group.members), dict(group.target)
        existing_id = group.static_members.get(request.group_instance_id) \
            if request.group_instance_id is not None else None
        if existing_id is not None and existing_id != member_id:
            if request.member_id:
                raise KafkaError(ErrorCode.FENCED_INSTANCE_ID)
            old = group.members[existing_id]  # a static member rejoining: replace the old id
            member = dataclasses.replace(old, member_id=member_id, member_epoch=0, previous_member_epoch=0)
            records += self._replacement_records(group, old, member, members, targets)
        else:
            member = group.members.get(member_id) or Member(member_id)
        topic_names, owned, rack = parse_subscription(request.protocols[0][1], topics)
        updated = dataclasses.replace(
            member, instance_id=request.group_instance_id or member.instance_id,
            rack_id=rack or member.rack_id, rebalance_timeout_ms=request.rebalance_timeout_ms,
            topic_names=topic_names, topic_regex=None, client_id=request.client_id,
            client_host=request.client_host,
            classic=ClassicMeta(request.session_timeout_ms, tuple(request.protocols)))
        reconciled = self._advance(group, member, updated, members, targets, topics, now_ms, owned, records)
        self.timers.cancel(("join", group.group_id, member_id))
        return JoinResult(error=ErrorCode.NONE, member_id=member_id,
                          generation_id=reconciled.member_epoch, protocol_type=CONSUMER_PROTOCOL_TYPE,
                          protocol_name=names[0]), records

    # -- M3, M4 ------------------------------------------------------------------------------------

    def _classic_member(self, group_id: str, member_id: str, instance_id: str | None,
                        generation_id: int) -> tuple[ConsumerGroup, Member]:
        group = self.groups[group_id]
        member = group.members.get(member_id)
        if member is None or member.classic is None:
            raise KafkaError(ErrorCode.UNKNOWN_MEMBER_ID)
        if instance_id is not None and group.static_members.get(instance_id) != member_id:
            raise KafkaError(ErrorCode.FENCED_INSTANCE_ID)
        if generation_id != member.member_epoch:
            raise KafkaError(ErrorCode.ILLEGAL_GENERATION)
        return group, member

    def _rejoin_needed(self, group, member: Member, now_ms: int) -> bool:
        """A classic member must rejoin to catch up; it is removed if it has not rejoined within
        its rebalance timeout (Kafka's join timeout)."""
        needed = group.group_epoch > member.member_epoch and \
            member.state != MemberState.UNREVOKED_PARTITIONS
        key = ("join", group.group_id, member.member_id)
        if needed and not self.timers.scheduled(key):
            self.timers.schedule(key, now_ms + member.rebalance_timeout_ms,
                                 lambda now: self._join_overdue(group.group_id, member.member_id,
                                                                member.member_epoch, now))
        return needed

    def _join_overdue(self, group_id: str, member_id: str, epoch: int, now_ms: int) -> None:
        group = self.groups.get(group_id)
        member = None if group is None else group.members.get(member_id)
        if member is not None and member.member_epoch == epoch:
            self._fence_due(group_id, member_id, now_ms)

    def classic_sync(self, group_id: str, member_id: str, instance_id: str | None, generation_id: int,
                     protocol_type: str | None, protocol_name: str | None, now_ms: int) -> SyncResult:
        try:
            group, member = self._classic_member(group_id, member_id, instance_id, generation_id)
            assert member.classic is not None  # _classic_member checked it
            own = member.classic.protocols[0][0]
            if (protocol_type is not None and protocol_type != CONSUMER_PROTOCOL_TYPE) or \
                    (protocol_name is not None and protocol_name != own):
                raise KafkaError(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
            if self._rejoin_needed(group, member, now_ms):
                raise KafkaError(ErrorCode.REBALANCE_IN_PROGRESS)
        except KafkaError as exc:
            return SyncResult(exc.code)
        self.schedule_session(group_id, member, now_ms)
        return SyncResult(ErrorCode.NONE, CONSUMER_PROTOCOL_TYPE, own,
                          encode_assignment(member.assigned, group.subscription_metadata))

    def classic_heartbeat(self, group_id: str, member_id: str, instance_id: str | None,
                          generation_id: int, now_ms: int) -> ErrorCode:
        try:
            group, member = self._classic_member(group_id, member_id, instance_id, generation_id)
        except KafkaError as exc:
            return exc.code
        self.schedule_session(group_id, member, now_ms)
        return ErrorCode.REBALANCE_IN_PROGRESS if self._rejoin_needed(group, member, now_ms) \
            else ErrorCode.NONE

    def classic_leave(self, group_id: str, leaving: list[tuple[str, str | None]],
                      now_ms: int) -> tuple[list[ErrorCode], list]:
        """Per leaving (member id, instance id): its error; and the records of those who left.
        Each departure is replayed at once, so the next one sees the group without it."""
        errors, records = [], []
        for member_id, instance_id in leaving:
            group = self.groups.get(group_id)
            found = None if group is None else (
                group.members.get(member_id) if instance_id is None
                else group.members.get(group.static_members.get(instance_id, "")))
            if found is None or group is None:
                errors.append(ErrorCode.UNKNOWN_MEMBER_ID)
            elif member_id and found.member_id != member_id:
                errors.append(ErrorCode.FENCED_INSTANCE_ID)
            else:
                errors.append(ErrorCode.NONE)
                records += self._replayed(self.fence(group, found.member_id, now_ms))
        return errors, records

    # -- M5 ----------------------------------------------------------------------------------------

    def downgrade(self, group, leaving_id: str, now_ms: int) -> list | None:
        """The records turning the group classic once `leaving_id` is gone, if M5 allows."""
        remaining = [m for m in group.members.values() if m.member_id != leaving_id]
        if (not remaining or any(m.classic is None for m in remaining)
                or self.settings.migration_policy not in DOWNGRADE_POLICIES
                or len(remaining) > self.settings.classic_max_size):
            return None
        common = [name for name, _ in remaining[0].classic.protocols
                  if all(name in {n for n, _ in m.classic.protocols} for m in remaining)]
        if not common:
            return None
        gid = group.group_id
        stored = tuple(StoredMember(
            m.member_id, m.instance_id, m.client_id, m.client_host, m.rebalance_timeout_ms,
            m.classic.session_timeout_ms, dict(m.classic.protocols)[common[0]],
            encode_assignment(m.assigned, group.subscription_metadata)) for m in remaining)
        snapshot = GroupSnapshot(gid, CONSUMER_PROTOCOL_TYPE, group.group_epoch, common[0],
                                 remaining[0].member_id, now_ms, stored)
        return [*self.deletion_records(group, with_members=True), GroupEntry(gid, snapshot)]

    def _replacement_records(self, group, old: Member, new: Member, members: dict, targets: dict) -> list:
        gid = group.group_id
        members.pop(old.member_id, None)
        targets[new.member_id] = targets.pop(old.member_id, {})
        self._cancel_timers(gid, old.member_id)
        return [CurrentAssignmentRecord(gid, old.member_id, None), TargetMemberRecord(gid, old.member_id, None),
                MemberRecord(gid, old.member_id, None), MemberRecord(gid, new.member_id, new),
                TargetMemberRecord(gid, new.member_id, group.target.get(old.member_id, {})),
                CurrentAssignmentRecord(gid, new.member_id, new)]

