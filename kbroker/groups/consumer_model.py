"""A KIP-848 consumer group's data, the requests and answers of its machine, and its replay.

The machine (kbroker/groups/consumer.py) decides in records and changes nothing itself;
`apply_record` here (ConsumerGroups.replay) is the one place a record changes a group, the same
way for a record just written and for one read back from __consumer_offsets at start. It is kept
apart from the rules that decide which records to write, so that what each record type means is
read in one place.
"""

from __future__ import annotations

import dataclasses
import enum
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Mapping

from kbroker.groups.assignors import Assignment
from kbroker.groups.consumer_member import LEAVE_EPOCH, Member, MemberState, TopicMeta
from kbroker.groups.consumer_records import (
    CurrentAssignmentRecord, GroupEpochRecord, MemberRecord, RegexRecord,
    SubscriptionMetadataRecord, TargetEpochRecord, TargetMemberRecord,
)
from kbroker.protocol.errors import ErrorCode


class GroupState(enum.Enum):
    EMPTY = "Empty"
    ASSIGNING = "Assigning"
    RECONCILING = "Reconciling"
    STABLE = "Stable"


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    session_timeout_ms: int = 45000
    heartbeat_interval_ms: int = 5000
    max_size: int = 2**31 - 1
    assignors: tuple[str, ...] = ("uniform", "range")
    migration_policy: str = "bidirectional"  # group.consumer.migration.policy
    classic_max_size: int = 2**31 - 1  # group.max.size, for downgrades
    # A group's own consumer.session.timeout.ms / consumer.heartbeat.interval.ms (the GROUP config
    # resource): (group id, name) -> value in effect; None: the two settings above for every group.
    group_setting: Callable[[str, str], int] | None = None

    def session_timeout(self, group_id: str) -> int:
        if self.group_setting is None:
            return self.session_timeout_ms
        return self.group_setting(group_id, "consumer.session.timeout.ms")

    def heartbeat_interval(self, group_id: str) -> int:
        if self.group_setting is None:
            return self.heartbeat_interval_ms
        return self.group_setting(group_id, "consumer.heartbeat.interval.ms")


@dataclass(slots=True)
class Heartbeat:
    """A ConsumerGroupHeartbeat request, the fields the machine uses."""

    group_id: str
    member_id: str
    member_epoch: int
    instance_id: str | None = None
    rack_id: str | None = None
    rebalance_timeout_ms: int = -1
    topic_names: list[str] | None = None
    topic_regex: str | None = None
    server_assignor: str | None = None
    owned: Assignment | None = None  # TopicPartitions; None: not sent
    client_id: str = ""
    client_host: str = ""
    version: int = 1


@dataclass(slots=True)
class HeartbeatResult:
    error: ErrorCode = ErrorCode.NONE
    message: str | None = None
    member_id: str | None = None
    member_epoch: int = 0
    heartbeat_interval_ms: int = 0
    assignment: Assignment | None = None
    records: list = field(default_factory=list)
    replaces_classic_group: bool = False


class ConsumerGroup:
    def __init__(self, group_id: str):
        self.group_id = group_id
        self.group_epoch = 0
        self.assignment_epoch = 0
        self.members: dict[str, Member] = {}
        self.static_members: dict[str, str] = {}  # instance id -> member id
        self.target: dict[str, Assignment] = {}
        self.owners: dict[tuple[uuid.UUID, int], str] = {}  # partition -> member owning/revoking it
        self.subscription_metadata: dict[str, TopicMeta] = {}
        self.regexes: dict[str, frozenset[str]] = {}

    @property
    def state(self) -> GroupState:
        if not self.members:
            return GroupState.EMPTY
        if self.group_epoch > self.assignment_epoch:
            return GroupState.ASSIGNING
        if any(m.member_epoch != self.assignment_epoch or m.state != MemberState.STABLE
               for m in self.members.values()):
            return GroupState.RECONCILING
        return GroupState.STABLE

    def partition_epoch(self, topic_id: uuid.UUID, partition: int) -> int:
        """The epoch of the member owning (or revoking) the partition, -1 when it is free."""
        owner = self.owners.get((topic_id, partition))
        return -1 if owner is None else self.members[owner].member_epoch

    def preferred_assignor(self) -> str | None:
        return preferred_assignor(self.members)


def _partitions(assignment: Assignment):
    return ((topic_id, p) for topic_id, parts in assignment.items() for p in parts)


_SUBSCRIPTION = ("instance_id", "rack_id", "client_id", "client_host", "topic_names", "topic_regex",
                 "rebalance_timeout_ms", "server_assignor", "classic")
_ASSIGNMENT = ("member_epoch", "previous_member_epoch", "state", "assigned", "pending_revocation")


def preferred_assignor(members: Mapping[str, Member]) -> str | None:
    """The ServerAssignor most members name (H6)."""
    named = Counter(m.server_assignor for m in members.values() if m.server_assignor is not None)
    return named.most_common(1)[0][0] if named else None


def apply_record(groups: dict[str, ConsumerGroup], record) -> None:
    """Apply one record to the groups (by id), creating the group a record names if need be."""
    def _group(group_id: str) -> ConsumerGroup:
        group = groups.get(group_id)
        if group is None:
            group = groups[group_id] = ConsumerGroup(group_id)
        return group

    match record:
        case GroupEpochRecord(group_id, None):
            groups.pop(group_id, None)
        case GroupEpochRecord(group_id, epoch) if epoch is not None:
            _group(group_id).group_epoch = epoch
        case MemberRecord(group_id, member_id, None):
            group = groups.get(group_id)
            if group is not None:
                old = group.members.pop(member_id, None)
                if old is not None and old.instance_id is not None \
                        and group.static_members.get(old.instance_id) == member_id:
                    del group.static_members[old.instance_id]
        case MemberRecord(group_id, member_id, member):
            group = _group(group_id)
            old = group.members.get(member_id) or Member(member_id)
            new = dataclasses.replace(old, **{f: getattr(member, f) for f in _SUBSCRIPTION})
            group.members[member_id] = new
            if new.instance_id is not None:
                group.static_members[new.instance_id] = member_id
        case SubscriptionMetadataRecord(group_id, topics):
            if (group := groups.get(group_id) if topics is None else _group(group_id)):
                group.subscription_metadata = dict(topics or {})
        case TargetMemberRecord(group_id, member_id, None):
            if (group := groups.get(group_id)) is not None:
                group.target.pop(member_id, None)
        case TargetMemberRecord(group_id, member_id, assignment) if assignment is not None:
            _group(group_id).target[member_id] = assignment
        case TargetEpochRecord(group_id, epoch, _):
            if (group := groups.get(group_id) if epoch is None else _group(group_id)):
                group.assignment_epoch = epoch or 0
        case CurrentAssignmentRecord(group_id, member_id, member):
            group = _group(group_id) if member is not None else groups.get(group_id)
            if group is not None:
                _replay_assignment(group, member_id, member)
        case RegexRecord(group_id, regex, None):
            if (group := groups.get(group_id)) is not None:
                group.regexes.pop(regex, None)
        case RegexRecord(group_id, regex, topics) if topics is not None:
            _group(group_id).regexes[regex] = topics


def _replay_assignment(group: ConsumerGroup, member_id: str, member: Member | None) -> None:
    old = group.members.get(member_id)
    if old is not None:
        for tp in (*_partitions(old.assigned), *_partitions(old.pending_revocation)):
            if group.owners.get(tp) == member_id:
                del group.owners[tp]
    if member is None:
        if old is not None:
            group.members[member_id] = dataclasses.replace(
                old, member_epoch=LEAVE_EPOCH, assigned={}, pending_revocation={})
        return
    new = dataclasses.replace(old or Member(member_id), **{f: getattr(member, f) for f in _ASSIGNMENT})
    group.members[member_id] = new
    for tp in (*_partitions(new.assigned), *_partitions(new.pending_revocation)):
        group.owners[tp] = member_id
