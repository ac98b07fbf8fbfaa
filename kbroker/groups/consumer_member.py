"""A consumer group member (KIP-848) and its reconciliation, as Kafka's ConsumerGroupMember and
CurrentAssignmentBuilder define them (rules H4 and H7 of kbroker/groups/consumer.py), and the
member epoch checks of OffsetCommit / OffsetFetch to consumer groups (Kafka's ConsumerGroup)."""

from __future__ import annotations

import dataclasses
import enum
import uuid
from dataclasses import dataclass, field
from typing import Callable, Mapping

from kbroker.groups.assignors import Assignment
from kbroker.protocol.errors import ErrorCode, KafkaError

LEAVE_EPOCH, LEAVE_STATIC_EPOCH = -1, -2


class MemberState(enum.IntEnum):
    STABLE = 0
    UNREVOKED_PARTITIONS = 1
    UNRELEASED_PARTITIONS = 2


@dataclass(frozen=True, slots=True)
class TopicMeta:
    topic_id: uuid.UUID
    partitions: int


@dataclass(frozen=True, slots=True)
class ClassicMeta:
    """What a member joining with the classic protocol (JoinGroup) brought along."""

    session_timeout_ms: int
    protocols: tuple[tuple[str, bytes], ...]  # (name, ConsumerProtocolSubscription) in its order


@dataclass(frozen=True, slots=True)
class Member:
    member_id: str
    instance_id: str | None = None
    rack_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    topic_names: tuple[str, ...] = ()
    topic_regex: str | None = None
    rebalance_timeout_ms: int = -1
    server_assignor: str | None = None
    member_epoch: int = 0
    previous_member_epoch: int = 0
    state: MemberState = MemberState.STABLE
    assigned: Assignment = field(default_factory=dict)
    pending_revocation: Assignment = field(default_factory=dict)
    classic: ClassicMeta | None = None  # a member using the classic protocol

    def subscription_fields(self) -> tuple:
        return (self.instance_id, self.rack_id, self.client_id, self.client_host,
                self.topic_names, self.topic_regex, self.rebalance_timeout_ms, self.server_assignor,
                self.classic)


def is_subset(owned: Assignment | None, assigned: Assignment) -> bool:
    if owned is None:
        return False
    return all(topic_id in assigned and parts <= assigned[topic_id] for topic_id, parts in owned.items())


def check_epoch(member: Member, received: int, owned: Assignment | None) -> None:
    """H4."""
    if received > member.member_epoch:
        raise KafkaError(ErrorCode.FENCED_MEMBER_EPOCH,
                         f"The consumer group member has a greater member epoch ({received}) than "
                         f"the one known by the group coordinator ({member.member_epoch}). The "
                         "member must abandon all its partitions and rejoin.")
    if received < member.member_epoch and (received != member.previous_member_epoch
                                           or not is_subset(owned, member.assigned)):
        raise KafkaError(ErrorCode.FENCED_MEMBER_EPOCH,
                         f"The consumer group member has a smaller member epoch ({received}) than "
                         f"the one known by the group coordinator ({member.member_epoch}). The "
                         "member must abandon all its partitions and rejoin.")


def reconcile(member: Member, target_epoch: int, target: Assignment,
              partition_epoch: Callable[[uuid.UUID, int], int], owned: Assignment | None) -> Member:
    """H7: the member's next step towards its target assignment."""
    if member.state == MemberState.STABLE and member.member_epoch == target_epoch:
        return member
    if member.state == MemberState.UNREVOKED_PARTITIONS:
        if _owns_any(owned, member.pending_revocation):
            return member
        return _next_assignment(member, member.member_epoch + 1, target_epoch, target,
                                partition_epoch, owned)
    return _next_assignment(member, member.member_epoch, target_epoch, target, partition_epoch, owned)


def _owns_any(owned: Assignment | None, partitions: Assignment) -> bool:
    if owned is None:
        return True  # not reported: assume still owned
    return any(parts & partitions.get(topic_id, frozenset()) for topic_id, parts in owned.items())


def _next_assignment(member: Member, epoch: int, target_epoch: int, target: Assignment,
                     partition_epoch, owned: Assignment | None) -> Member:
    assigned: dict[uuid.UUID, frozenset[int]] = {}
    revoking: dict[uuid.UUID, frozenset[int]] = {}
    pending: dict[uuid.UUID, frozenset[int]] = {}
    unreleased = False
    for topic_id in target.keys() | member.assigned.keys():
        wanted = target.get(topic_id, frozenset())
        current = member.assigned.get(topic_id, frozenset())
        keep = current & wanted
        new = {p for p in wanted - keep if partition_epoch(topic_id, p) == -1}
        unreleased |= len(new) < len(wanted - keep)
        if keep:
            assigned[topic_id] = keep
        if current - keep:
            revoking[topic_id] = current - keep
        if new:
            pending[topic_id] = frozenset(new)
    if revoking and _owns_any(owned, revoking):
        return _moved(member, epoch, MemberState.UNREVOKED_PARTITIONS, assigned, revoking)
    for topic_id, parts in pending.items():
        assigned[topic_id] = assigned.get(topic_id, frozenset()) | parts
    state = MemberState.UNRELEASED_PARTITIONS if unreleased else MemberState.STABLE
    return _moved(member, target_epoch, state, assigned, {})


def _moved(member: Member, epoch: int, state: MemberState, assigned: Assignment,
           revoking: Assignment) -> Member:
    return dataclasses.replace(member, member_epoch=epoch, previous_member_epoch=member.member_epoch,
                               state=state, assigned=assigned, pending_revocation=revoking)


def offset_commit_error(members: Mapping[str, Member], member_id: str, member_epoch: int,
                        api_version: int | None) -> ErrorCode:
    """OffsetCommit (api_version None: TxnOffsetCommit) to a consumer group with these members: an epoch
    below 0 only while the group is empty; else the member must exist (UNKNOWN_MEMBER_ID),
    commit with v9+ unless it uses the classic protocol (UNSUPPORTED_VERSION) and with its
    current epoch (STALE_MEMBER_EPOCH; ILLEGAL_GENERATION for classic members)."""
    if member_epoch < 0 and not members:
        return ErrorCode.NONE
    if api_version is None and member_epoch == -1 and not member_id:
        return ErrorCode.NONE  # TxnOffsetCommit without group fields
    member = members.get(member_id)
    if member is None:
        return ErrorCode.UNKNOWN_MEMBER_ID
    if api_version is not None and api_version < 9 and member.classic is None:
        return ErrorCode.UNSUPPORTED_VERSION
    return _epoch_error(member, member_epoch)

def offset_fetch_error(members: Mapping[str, Member], member_id: str | None,
                       member_epoch: int) -> ErrorCode:
    """OffsetFetch v9+: without member id and epoch anyone may fetch; else as for commits."""
    if member_id is None and member_epoch < 0:
        return ErrorCode.NONE
    member = None if member_id is None else members.get(member_id)
    if member is None:
        return ErrorCode.UNKNOWN_MEMBER_ID
    return _epoch_error(member, member_epoch)


def _epoch_error(member: Member, epoch: int) -> ErrorCode:
    if epoch == member.member_epoch:
        return ErrorCode.NONE
    return ErrorCode.STALE_MEMBER_EPOCH if member.classic is None else ErrorCode.ILLEGAL_GENERATION
