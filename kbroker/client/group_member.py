"""A member of a classic consumer group (JoinGroup, SyncGroup, Heartbeat, LeaveGroup), as
Kafka's consumers are: it subscribes to one topic, and when it is elected leader it assigns the
partitions of every member's topics with the range assignor.

The caller drives it between fetches: `join()` returns this member's partitions,
`heartbeat_if_due()` says False when the group rebalances (then commit and `join()` again),
`commit()` commits within the current generation, `leave()` leaves at the end.
"""

from __future__ import annotations

import time

import trio

from kbroker.client import admin
from kbroker.client.cluster import Cluster, check
from kbroker.protocol import codec, messages
from kbroker.protocol.errors import ErrorCode, KafkaError

PROTOCOL_TYPE, ASSIGNOR = "consumer", "range"
SESSION_TIMEOUT_MS = 10_000
REBALANCE_TIMEOUT_MS = 30_000
HEARTBEAT_INTERVAL_S = 3.0
_REJOIN = frozenset({ErrorCode.REBALANCE_IN_PROGRESS, ErrorCode.ILLEGAL_GENERATION,
                     ErrorCode.UNKNOWN_MEMBER_ID})


def range_assignment(subscriptions: dict[str, list[str]], partitions: dict[str, int]
                     ) -> dict[str, dict[str, list[int]]]:
    """Kafka's RangeAssignor: per topic, its partitions in order, split into contiguous ranges
    over the members subscribed to it (sorted by member id), the first ones one longer."""
    assignment: dict[str, dict[str, list[int]]] = {member: {} for member in subscriptions}
    for topic, count in partitions.items():
        members = sorted(m for m, topics in subscriptions.items() if topic in topics)
        if not members:
            continue
        share, extra = divmod(count, len(members))
        start = 0
        for index, member in enumerate(members):
            length = share + (1 if index < extra else 0)
            if length:
                assignment[member][topic] = list(range(start, start + length))
            start += length
    return assignment


class GroupMember:
    def __init__(self, cluster: Cluster, group: str, topic: str):
        self.cluster = cluster
        self.group = group
        self.topic = topic
        self.member_id = ""
        self.generation = -1
        self._last_heartbeat = 0.0

    async def join(self) -> list[int]:
        """Join (or rejoin) the group; this member's partitions of the topic."""
        while True:
            coordinator = await self.cluster.coordinator(self.group)
            subscription = codec.encode_data(messages.ConsumerProtocolSubscription(
                topics=[self.topic], user_data=None, owned_partitions=[]), 0)
            joined = await coordinator.request("JoinGroup", messages.JoinGroupRequest(
                group_id=self.group, session_timeout_ms=SESSION_TIMEOUT_MS,
                rebalance_timeout_ms=REBALANCE_TIMEOUT_MS, member_id=self.member_id,
                group_instance_id=None, protocol_type=PROTOCOL_TYPE,
                protocols=[messages.JoinGroupRequest.JoinGroupRequestProtocol(
                    name=ASSIGNOR, metadata=subscription)]))
            if joined.error_code == ErrorCode.MEMBER_ID_REQUIRED:  # KIP-394: join again with it
                self.member_id = joined.member_id
                continue
            if joined.error_code in _REJOIN:
                self.member_id = "" if joined.error_code == ErrorCode.UNKNOWN_MEMBER_ID else \
                    self.member_id
                await trio.sleep(0.1)
                continue
            check(joined.error_code, None, f"joining group {self.group}")
            self.member_id, self.generation = joined.member_id, joined.generation_id
            assignments = []
            if joined.leader == self.member_id:
                assignments = await self._assign(joined.members)
            synced = await coordinator.request("SyncGroup", messages.SyncGroupRequest(
                group_id=self.group, generation_id=self.generation, member_id=self.member_id,
                group_instance_id=None, protocol_type=PROTOCOL_TYPE, protocol_name=ASSIGNOR,
                assignments=assignments))
            if synced.error_code in _REJOIN:
                continue
            check(synced.error_code, None, f"joining group {self.group}")
            self._last_heartbeat = time.monotonic()
            if not synced.assignment:
                return []
            _, assignment = codec.decode_data(messages.ConsumerProtocolAssignment, synced.assignment)
            return sorted(p for tp in assignment.assigned_partitions if tp.topic == self.topic
                          for p in tp.partitions)

    async def _assign(self, members) -> list:
        subscriptions = {}
        for member in members:
            _, subscription = codec.decode_data(messages.ConsumerProtocolSubscription, member.metadata)
            subscriptions[member.member_id] = list(subscription.topics)
        topics = sorted({t for topics in subscriptions.values() for t in topics})
        metadata = await self.cluster.metadata(topics)
        counts = {t.name: len(t.partitions) for t in metadata.topics if not t.error_code}
        Assignment = messages.ConsumerProtocolAssignment
        return [messages.SyncGroupRequest.SyncGroupRequestAssignment(
            member_id=member, assignment=codec.encode_data(Assignment(
                assigned_partitions=[Assignment.TopicPartition(topic=t, partitions=ps)
                                     for t, ps in sorted(owned.items())], user_data=None), 0))
            for member, owned in range_assignment(subscriptions, counts).items()]

    async def heartbeat_if_due(self) -> bool:
        """Heartbeat when the interval has passed; False when the group wants this member to rejoin."""
        if time.monotonic() - self._last_heartbeat < HEARTBEAT_INTERVAL_S:
            return True
        coordinator = await self.cluster.coordinator(self.group)
        response = await coordinator.request("Heartbeat", messages.HeartbeatRequest(
            group_id=self.group, generation_id=self.generation, member_id=self.member_id))
        self._last_heartbeat = time.monotonic()
        if response.error_code in _REJOIN:
            return False
        check(response.error_code, None, f"heartbeat to group {self.group}")
        return True

    async def commit(self, offsets: dict[int, int]) -> bool:
        """Commit within the current generation; False when the group rebalanced meanwhile."""
        try:
            await admin.commit_offsets(self.cluster, self.group, self.topic, offsets,
                                       self.generation, self.member_id)
        except KafkaError as exc:
            if exc.code in _REJOIN:
                return False
            raise
        return True

    async def leave(self) -> None:
        coordinator = await self.cluster.coordinator(self.group)
        response = await coordinator.request("LeaveGroup", messages.LeaveGroupRequest(
            group_id=self.group, member_id=self.member_id,
            members=[messages.LeaveGroupRequest.MemberIdentity(member_id=self.member_id)]))
        if response.error_code not in _REJOIN:
            check(response.error_code, None, f"leaving group {self.group}")
