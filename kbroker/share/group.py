"""Share groups and their members: ShareGroupHeartbeat as Kafka's GroupMetadataManager answers it.

Rules:
1. A member names itself (a client-made id, v1+) and joins with member epoch 0 and its
   subscribed topic names; it leaves with epoch -1. Any other epoch must be the member's current
   one (else FENCED_MEMBER_EPOCH); an unknown member with an epoch other than 0 is
   UNKNOWN_MEMBER_ID. Empty group or member ids, a join without topics and epochs below -1 are
   INVALID_REQUEST. A group id in use by another group type is GROUP_ID_NOT_FOUND ("not a share
   group"); a group of group.share.max.size members refuses new ones (GROUP_MAX_SIZE_REACHED).
2. The group epoch goes up when a member joins, leaves, changes its subscription or when the
   subscribed topics' partitions change; the target assignment is then computed again and the
   assignment epoch follows. Share partitions can be shared, so there is no revocation phase:
   every member takes its target assignment and the group epoch at its next heartbeat.
3. The assignor is Kafka's simple assignor in its balance rule: with M members subscribed to P
   partitions each partition goes to ceil(M / P) members, so with more members than partitions
   every partition is shared, and each member gets a near-equal number of partitions.
4. A member that does not heartbeat within the session timeout (share.session.timeout.ms) is
   removed, as if it had left; the caller then ends its share session, releasing its records. A
   member that leaves ends its session itself (ShareAcknowledge or ShareFetch with epoch -1, which
   a client may send at the same time as its leaving heartbeat, so leaving releases nothing).
5. The response carries the assignment when it changed since the member last got it, or when the
   request was a full one (joining, or naming its topics); otherwise null.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from kbroker.protocol.errors import ErrorCode, KafkaError

EMPTY, STABLE, DEAD = "Empty", "Stable", "Dead"
ASSIGNOR_NAME = "simple"
JOIN_EPOCH, LEAVE_EPOCH = 0, -1

Assignment = dict[uuid.UUID, list[int]]
TopicMetadata = Callable[[str], "tuple[uuid.UUID, int] | None"]  # name -> (id, partitions)


@dataclass(slots=True)
class ShareMember:
    member_id: str
    client_id: str
    client_host: str
    rack_id: str | None
    subscribed: list[str]
    epoch: int = 0
    assignment: Assignment = field(default_factory=dict)
    sent: Assignment | None = None  # the assignment the member last received
    deadline_ms: int = 0


@dataclass(slots=True)
class ShareGroup:
    group_id: str
    epoch: int = 0
    assignment_epoch: int = 0
    members: dict[str, ShareMember] = field(default_factory=dict)
    target: dict[str, Assignment] = field(default_factory=dict)
    metadata_hash: int = 0  # of the subscribed topics' (name, id, partitions), as last assigned

    @property
    def state(self) -> str:
        return STABLE if self.members else EMPTY

    def subscribed_topics(self) -> list[str]:
        return sorted({topic for member in self.members.values() for topic in member.subscribed})


class HeartbeatResult(NamedTuple):
    member_id: str | None
    member_epoch: int
    heartbeat_interval_ms: int
    assignment: Assignment | None


@dataclass(frozen=True, slots=True)
class ShareGroupSettings:
    max_size: int
    session_timeout_ms: Callable[[str], int]  # by group id: the group config or the broker's
    heartbeat_interval_ms: Callable[[str], int]


class ShareGroups:
    """Every share group of the broker; all calls take now_ms and decide at once."""

    def __init__(self, settings: ShareGroupSettings, other_group_type: Callable[[str], bool]):
        self.settings = settings
        self.other_group_type = other_group_type  # whether a group id is a classic/consumer group
        self.groups: dict[str, ShareGroup] = {}

    def get(self, group_id: str) -> ShareGroup | None:
        return self.groups.get(group_id)

    def heartbeat(self, group_id: str, member_id: str, member_epoch: int, rack_id: str | None,
                  subscribed: list[str] | None, client_id: str, client_host: str, now_ms: int,
                  topics: TopicMetadata) -> HeartbeatResult:
        """The answer; raises KafkaError as rule 1 says."""
        _validate(group_id, member_id, member_epoch, subscribed)
        if self.other_group_type(group_id):
            raise KafkaError(ErrorCode.GROUP_ID_NOT_FOUND, f"Group {group_id} is not a share group.")
        group = self.groups.get(group_id)
        member = group.members.get(member_id) if group else None
        interval = self.settings.heartbeat_interval_ms(group_id)
        if member_epoch == LEAVE_EPOCH:
            if member is None or group is None:
                raise KafkaError(ErrorCode.UNKNOWN_MEMBER_ID,
                                 f"Member {member_id} is not a member of group {group_id}.")
            self._remove(group, member_id, topics)
            return HeartbeatResult(member_id, LEAVE_EPOCH, interval, None)
        if member is None or group is None:
            if member_epoch != JOIN_EPOCH:
                raise KafkaError(ErrorCode.UNKNOWN_MEMBER_ID,
                                 f"Member {member_id} is not a member of group {group_id}.")
            if group is not None and len(group.members) >= self.settings.max_size:
                raise KafkaError(ErrorCode.GROUP_MAX_SIZE_REACHED, "The share group has reached its "
                                 f"maximum capacity of {self.settings.max_size} members.")
            group = self.groups.setdefault(group_id, ShareGroup(group_id))
            member = group.members[member_id] = ShareMember(member_id, client_id, client_host, rack_id,
                                                            list(subscribed or ()))
            group.epoch += 1
        elif member_epoch not in (JOIN_EPOCH, member.epoch):
            raise KafkaError(ErrorCode.FENCED_MEMBER_EPOCH, f"The share group member has a "
                             f"{'smaller' if member_epoch < member.epoch else 'larger'} member epoch "
                             f"({member_epoch}) than the one known by the group coordinator "
                             f"({member.epoch}). The member must abandon all its partitions and rejoin.")
        if subscribed is not None and sorted(subscribed) != sorted(member.subscribed):
            member.subscribed = list(subscribed)
            group.epoch += 1
        if rack_id is not None:
            member.rack_id = rack_id
        member.deadline_ms = now_ms + self.settings.session_timeout_ms(group_id)
        self._maybe_assign(group, topics)
        member.epoch = group.epoch
        full = member_epoch == JOIN_EPOCH or subscribed is not None
        assignment = None
        if full or member.sent != member.assignment:
            assignment = member.sent = member.assignment
        return HeartbeatResult(member_id, member.epoch, interval, assignment)

    def expire(self, now_ms: int, topics: TopicMetadata) -> list[tuple[str, str]]:
        """Remove members past their session timeout (rule 4); (group, member) of each."""
        expired = [(group, member_id) for group in self.groups.values()
                   for member_id, member in group.members.items() if member.deadline_ms <= now_ms]
        for group, member_id in expired:
            self._remove(group, member_id, topics)
        return [(group.group_id, member_id) for group, member_id in expired]

    def next_deadline(self) -> int | None:
        deadlines = [m.deadline_ms for g in self.groups.values() for m in g.members.values()]
        return min(deadlines) if deadlines else None

    def load(self, group: ShareGroup, now_ms: int) -> None:
        """A group replayed at start: its members' sessions start now."""
        for member in group.members.values():
            member.deadline_ms = now_ms + self.settings.session_timeout_ms(group.group_id)
        self.groups[group.group_id] = group

    def delete(self, group_id: str) -> None:
        """DeleteGroups: the group must exist and be empty (the caller checks)."""
        self.groups.pop(group_id, None)

    def _remove(self, group: ShareGroup, member_id: str, topics: TopicMetadata) -> None:
        del group.members[member_id]
        group.target.pop(member_id, None)
        group.epoch += 1
        self._maybe_assign(group, topics)

    def _maybe_assign(self, group: ShareGroup, topics: TopicMetadata) -> None:
        topology = tuple((name, *found) for name in group.subscribed_topics()
                         if (found := topics(name)) is not None)
        if metadata_hash(topology) != group.metadata_hash:
            group.metadata_hash = metadata_hash(topology)
            group.epoch += 1 if group.assignment_epoch == group.epoch else 0
        if group.assignment_epoch == group.epoch:
            return
        group.target = assign(group.members, {name: (topic_id, count) for name, topic_id, count in topology})
        group.assignment_epoch = group.epoch
        for member_id, member in group.members.items():
            member.assignment = group.target.get(member_id, {})


def metadata_hash(topology: tuple) -> int:
    """A stable 64-bit hash of the subscribed topics (Kafka's MetadataHash is one too)."""
    digest = hashlib.blake2b(repr(topology).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def assign(members: dict[str, ShareMember], topics: dict[str, tuple[uuid.UUID, int]]) -> dict[str, Assignment]:
    """Rule 3, for each set of members with the same subscription."""
    by_subscription: dict[tuple[str, ...], list[str]] = {}
    for member_id in sorted(members):
        key = tuple(sorted(set(members[member_id].subscribed)))
        by_subscription.setdefault(key, []).append(member_id)
    result: dict[str, Assignment] = {member_id: {} for member_id in members}
    for subscription, member_ids in by_subscription.items():
        partitions = [(topics[name][0], index) for name in subscription if name in topics
                      for index in range(topics[name][1])]
        if not partitions:
            continue
        sharing = -(-len(member_ids) // len(partitions))  # ceil(M / P)
        slots = partitions * sharing
        for position, (topic_id, index) in enumerate(slots):
            member_id = member_ids[position % len(member_ids)]
            result[member_id].setdefault(topic_id, []).append(index)
    return result


def _validate(group_id: str, member_id: str, member_epoch: int, subscribed: list[str] | None) -> None:
    if not group_id:
        raise KafkaError(ErrorCode.INVALID_REQUEST, "GroupId can't be empty.")
    if not member_id:
        raise KafkaError(ErrorCode.INVALID_REQUEST, "MemberId can't be empty.")
    if member_epoch < LEAVE_EPOCH:
        raise KafkaError(ErrorCode.INVALID_REQUEST, f"MemberEpoch is invalid: {member_epoch}.")
    if member_epoch == JOIN_EPOCH and not subscribed:
        raise KafkaError(ErrorCode.INVALID_REQUEST, "SubscribedTopicNames must be set in first request.")
