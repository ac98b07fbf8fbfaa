"""The classic group's data: its states, members, requests and results, and what is stored of it.

The rules that move a group between these states are in kbroker/groups/classic.py and
classic_join.py.
"""

from __future__ import annotations

import enum
import logging
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.primitives import INT32_MAX

log = logging.getLogger("kbroker.groups")


NEW_MEMBER_JOIN_TIMEOUT_MS = 5 * 60 * 1000  # Kafka's classicGroupNewMemberJoinTimeoutMs
CONSUMER_PROTOCOL_TYPE = "consumer"


class GroupState(enum.Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


EMPTY, PREPARING, COMPLETING, STABLE, DEAD = GroupState

VALID_PREVIOUS = {
    EMPTY: {PREPARING},
    PREPARING: {STABLE, COMPLETING, EMPTY},
    COMPLETING: {PREPARING},
    STABLE: {COMPLETING},
    DEAD: set(GroupState),
}


@dataclass(frozen=True, slots=True)
class GroupSettings:
    """The broker settings the state machine obeys (group.* in kbroker.config)."""

    min_session_timeout_ms: int = 6000
    max_session_timeout_ms: int = 1800000
    max_size: int = INT32_MAX
    initial_rebalance_delay_ms: int = 0
    new_member_join_timeout_ms: int = NEW_MEMBER_JOIN_TIMEOUT_MS


@dataclass(slots=True)
class JoinRequest:
    group_id: str
    member_id: str
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    session_timeout_ms: int
    rebalance_timeout_ms: int
    group_instance_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    require_known_member_id: bool = True  # JoinGroup v4+
    supports_skip_assignment: bool = True  # JoinGroup v9+


@dataclass(slots=True)
class JoinResult:
    error: ErrorCode
    member_id: str
    generation_id: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    skip_assignment: bool = False
    members: list[tuple[str, str | None, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class SyncResult:
    error: ErrorCode
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


@dataclass(frozen=True, slots=True)
class StoredMember:
    member_id: str
    instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    subscription: bytes  # the metadata of the group's protocol
    assignment: bytes


@dataclass(frozen=True, slots=True)
class GroupSnapshot:
    """A group's metadata as written to __consumer_offsets (Kafka's GroupMetadataValue)."""

    group_id: str
    protocol_type: str
    generation_id: int
    protocol_name: str | None
    leader_id: str | None
    state_timestamp_ms: int
    members: tuple[StoredMember, ...]


@dataclass(slots=True)
class Outcome:
    """What an operation produced besides its immediate answer."""

    replies: list[tuple[Any, JoinResult | SyncResult]] = field(default_factory=list)
    stored: list[GroupSnapshot] = field(default_factory=list)  # to write before the replies go out


class Member:
    """One member of a classic group."""

    __slots__ = ("member_id", "instance_id", "client_id", "client_host", "rebalance_timeout_ms",
                 "session_timeout_ms", "protocol_type", "protocols", "assignment", "awaiting_join",
                 "awaiting_sync", "is_new")

    def __init__(self, member_id: str, instance_id: str | None, client_id: str, client_host: str,
                 rebalance_timeout_ms: int, session_timeout_ms: int, protocol_type: str,
                 protocols: list[tuple[str, bytes]], assignment: bytes = b""):
        self.member_id = member_id
        self.instance_id = instance_id
        self.client_id = client_id
        self.client_host = client_host
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.session_timeout_ms = session_timeout_ms
        self.protocol_type = protocol_type
        self.protocols = protocols
        self.assignment = assignment
        self.awaiting_join: Any = None
        self.awaiting_sync: Any = None
        self.is_new = False

    def protocol_names(self) -> set[str]:
        return {name for name, _ in self.protocols}

    def metadata(self, protocol_name: str | None) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol_name:
                return metadata
        return b""

    def vote(self, candidates: set[str]) -> str:
        return next(name for name, _ in self.protocols if name in candidates)

    def heartbeat_satisfied(self) -> bool:
        """Members waiting in a rebalance are excused from heartbeats; new members never are."""
        return not self.is_new and (self.awaiting_join is not None or self.awaiting_sync is not None)


class ClassicGroup:
    """One group's membership, generation and state."""

    def __init__(self, group_id: str, now_ms: int):
        self.group_id = group_id
        self.state = EMPTY
        self.previous_state = EMPTY
        self.state_timestamp_ms = now_ms
        self.generation_id = 0
        self.protocol_type: str | None = None
        self.protocol_name: str | None = None
        self.leader_id: str | None = None
        self.members: dict[str, Member] = {}
        self.static_members: dict[str, str] = {}  # group.instance.id -> member id
        self.pending_members: set[str] = set()  # ids handed out with MEMBER_ID_REQUIRED
        self.pending_sync: set[str] = set()
        self.new_member_added = False

    def transition(self, state: GroupState, now_ms: int) -> None:
        assert self.state in VALID_PREVIOUS[state], f"{self.state} -> {state}"
        log.debug("group %s: %s -> %s, generation %d, members %s", self.group_id, self.state.value,
                  state.value, self.generation_id, sorted(self.members))
        self.previous_state = self.state
        self.state = state
        self.state_timestamp_ms = now_ms

    def is_leader(self, member_id: str) -> bool:
        return self.leader_id == member_id

    def add(self, member: Member, waiter: Any) -> None:
        if member.instance_id is not None:
            self.static_members[member.instance_id] = member.member_id
        if not self.members:
            self.protocol_type = member.protocol_type
        if self.leader_id is None:
            self.leader_id = member.member_id
        self.members[member.member_id] = member
        member.awaiting_join = waiter
        self.pending_members.discard(member.member_id)

    def remove(self, member_id: str) -> None:
        member = self.members.pop(member_id, None)
        if member is not None and member.instance_id is not None:
            self.static_members.pop(member.instance_id, None)
        if self.leader_id == member_id:
            self.leader_id = next(iter(self.members), None)
        self.pending_members.discard(member_id)
        self.pending_sync.discard(member_id)

    def awaiting_join_count(self) -> int:
        return sum(1 for member in self.members.values() if member.awaiting_join is not None)

    def all_members_joined(self) -> bool:
        return self.awaiting_join_count() == len(self.members) and not self.pending_members

    def rebalance_timeout_ms(self) -> int:
        return max((member.rebalance_timeout_ms for member in self.members.values()), default=0)

    def candidate_protocols(self) -> set[str] | None:
        """Protocol names every member supports (None: no members, so no constraint)."""
        names = None
        for member in self.members.values():
            names = member.protocol_names() if names is None else names & member.protocol_names()
        return names

    def supports_protocols(self, protocol_type: str, names: set[str]) -> bool:
        if self.state == EMPTY:
            return bool(protocol_type) and bool(names)
        candidates = self.candidate_protocols()
        return protocol_type == self.protocol_type and (candidates is None or bool(names & candidates))

    def select_protocol(self) -> str:
        candidates = self.candidate_protocols() or set()
        votes = Counter(member.vote(candidates) for member in self.members.values())
        return votes.most_common(1)[0][0]

    def member_list(self) -> list[tuple[str, str | None, bytes]]:
        """(member id, instance id, metadata of the group's protocol): the leader's JoinGroup list."""
        return [(m.member_id, m.instance_id, m.metadata(self.protocol_name)) for m in self.members.values()]

    def validate_member(self, member_id: str, instance_id: str | None) -> ErrorCode:
        """Rule V."""
        if instance_id is not None:
            existing = self.static_members.get(instance_id)
            if existing is None:
                return ErrorCode.UNKNOWN_MEMBER_ID
            if existing != member_id:
                return ErrorCode.FENCED_INSTANCE_ID
        return ErrorCode.NONE if member_id in self.members else ErrorCode.UNKNOWN_MEMBER_ID

    def validate_generation(self, member_id: str, instance_id: str | None, generation_id: int
                            ) -> ErrorCode:
        """Rule V, then ILLEGAL_GENERATION for a generation other than the group's (S1, H1, C3)."""
        error = self.validate_member(member_id, instance_id)
        if error == ErrorCode.NONE and generation_id != self.generation_id:
            return ErrorCode.ILLEGAL_GENERATION
        return error

    def uses_consumer_protocol(self) -> bool:
        return self.protocol_type == CONSUMER_PROTOCOL_TYPE

    def subscribed_topics(self) -> set[str] | None:
        """Topics the members subscribe to, from the consumer protocol's metadata (None: unknown)."""
        if not self.uses_consumer_protocol():
            return None
        if not self.members:
            return set()
        if self.protocol_name is None:
            return None
        topics: set[str] = set()
        try:
            for member in self.members.values():
                topics.update(_subscription_topics(member.metadata(self.protocol_name)))
        except (struct.error, UnicodeDecodeError):
            return None
        return topics

    def snapshot(self, with_members: bool = True) -> GroupSnapshot:
        members = tuple(
            StoredMember(m.member_id, m.instance_id, m.client_id, m.client_host,
                         m.rebalance_timeout_ms, m.session_timeout_ms,
                         m.metadata(self.protocol_name), m.assignment)
            for m in self.members.values()
        ) if with_members else ()
        return GroupSnapshot(self.group_id, self.protocol_type or "", self.generation_id,
                             self.protocol_name, self.leader_id if members else None,
                             self.state_timestamp_ms, members)

    def is_subscribed_to(self, topic: str) -> bool:
        topics = self.subscribed_topics()
        return self.uses_consumer_protocol() if topics is None else topic in topics


def _subscription_topics(metadata: bytes) -> list[str]:
    """The topic list of a ConsumerProtocolSubscription (its v0 prefix is common to all versions)."""
    _version, count = struct.unpack_from(">hi", metadata, 0)
    position = 6
    topics = []
    for _ in range(count):
        (length,) = struct.unpack_from(">h", metadata, position)
        position += 2
        if length < 0 or position + length > len(metadata):
            raise struct.error("bad topic name length")
        topics.append(bytes(metadata[position:position + length]).decode())
        position += length
    return topics
