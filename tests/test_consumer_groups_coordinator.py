"""KIP-848 consumer groups inside the group coordinator: an in-memory __consumer_offsets, trio's
MockClock. What is written comes back when a new coordinator replays the topic."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
import trio

from kbroker.clock import Clock
from kbroker.config import Config
from kbroker.groups.classic import JoinRequest
from kbroker.groups.consumer import GroupState, Heartbeat
from kbroker.groups.coordinator import OFFSETS_TOPIC, GroupCoordinator, OffsetToCommit
from kbroker.protocol.errors import ErrorCode
from tests.memory_topic import MemoryTopic

TOPICS = {"t": SimpleNamespace(topic_id=uuid.UUID(int=7), partitions=2)}
SESSION_MS = 2000


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def open_coordinator(clock):
    topic = MemoryTopic(OFFSETS_TOPIC, 1)

    def open_() -> GroupCoordinator:
        config = Config({"group.consumer.session.timeout.ms": str(SESSION_MS),
                         "group.consumer.min.session.timeout.ms": "1000",
                         "group.consumer.heartbeat.interval.ms": "500",
                         "group.consumer.min.heartbeat.interval.ms": "100",
                         "group.initial.rebalance.delay.ms": "0", "group.min.session.timeout.ms": "1000"})
        return GroupCoordinator(config, topic, clock.now_ms)

    return open_


def join(member_id: str, group: str = "g", **fields) -> Heartbeat:
    return Heartbeat(group_id=group, member_id=member_id, member_epoch=0, rebalance_timeout_ms=5000,
                     topic_names=["t"], owned={}, **fields)


def classic_join(group: str = "g") -> JoinRequest:
    return JoinRequest(group_id=group, member_id="", protocol_type="consumer",
                       protocols=[("range", b"")], session_timeout_ms=6000, rebalance_timeout_ms=6000,
                       group_instance_id=None, client_id="c", client_host="/h",
                       require_known_member_id=False, supports_skip_assignment=True)


async def test_groups_offsets_and_epochs_survive_a_reopen(open_coordinator):
    coordinator = open_coordinator()
    result = await coordinator.consumer.heartbeat(join("m1", instance_id="i"), TOPICS)
    assert (result.error, result.member_epoch) == (ErrorCode.NONE, 1)
    commit = [OffsetToCommit("t", 0, 5, -1, None)]
    assert await coordinator.commit_offsets("g", "m1", None, 0, -1, commit, 9) == [
        ErrorCode.STALE_MEMBER_EPOCH]
    assert await coordinator.commit_offsets("g", "m1", None, 1, -1, commit, 9) == [ErrorCode.NONE]
    assert await coordinator.commit_offsets("g", "m1", None, 1, -1, commit, 8) == [
        ErrorCode.UNSUPPORTED_VERSION]
    reopened = open_coordinator()
    group = reopened.consumer.group("g")
    assert group.state == GroupState.STABLE and group.static_members == {"i": "m1"}
    assert group.members["m1"].assigned == {uuid.UUID(int=7): frozenset({0, 1})}
    assert reopened.group("g") is None  # no classic twin made by the offsets
    assert reopened.fetch_offsets("g", None, False)[0][1][0][1].offset == 5
    again = await reopened.consumer.heartbeat(
        Heartbeat("g", "m1", 1, instance_id="i", owned={uuid.UUID(int=7): frozenset({0, 1})}), TOPICS)
    assert (again.error, again.member_epoch) == (ErrorCode.NONE, 1)


async def test_expired_sessions_are_removed_and_stored(open_coordinator, autojump_clock):
    coordinator = open_coordinator()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(coordinator.run)
        await coordinator.consumer.heartbeat(join("m1"), TOPICS)
        await trio.sleep(SESSION_MS / 1000 + 1)
        assert coordinator.consumer.group("g").state == GroupState.EMPTY
        nursery.cancel_scope.cancel()
    assert open_coordinator().consumer.group("g").members == {}


async def test_empty_groups_change_protocol_and_busy_ones_refuse(open_coordinator):
    coordinator = open_coordinator()
    # A simple (classic) group made by an offset commit gives way to a consumer group.
    await coordinator.commit_offsets("g", "", None, -1, -1, [OffsetToCommit("t", 0, 1, -1, None)], 9)
    assert coordinator.group("g") is not None
    assert (await coordinator.consumer.heartbeat(join("m1"), TOPICS)).error == ErrorCode.NONE
    assert coordinator.group("g") is None
    # A classic member cannot join while the consumer group has members...
    refused = await coordinator.join(classic_join())
    assert refused.error == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    # ...and takes the group over once it is empty.
    await coordinator.consumer.heartbeat(Heartbeat("g", "m1", -1), TOPICS)
    joined = await coordinator.join(classic_join())
    assert joined.error == ErrorCode.NONE and coordinator.consumer.group("g") is None
    busy = await coordinator.consumer.heartbeat(join("m2"), TOPICS)
    assert (busy.error, busy.message) == (ErrorCode.GROUP_ID_NOT_FOUND, "Group g is not a consumer group.")
    reopened = open_coordinator()
    assert reopened.consumer.group("g") is None and reopened.group("g") is not None
    assert reopened.fetch_offsets("g", None, False)[0][1][0][1].offset == 1


async def test_delete_groups(open_coordinator):
    coordinator = open_coordinator()
    await coordinator.consumer.heartbeat(join("m1"), TOPICS)
    assert await coordinator.delete_groups(["g"]) == {"g": ErrorCode.NON_EMPTY_GROUP}
    await coordinator.consumer.heartbeat(Heartbeat("g", "m1", -1), TOPICS)
    assert await coordinator.delete_groups(["g"]) == {"g": ErrorCode.NONE}
    assert coordinator.consumer.group("g") is None
    assert open_coordinator().consumer.group("g") is None
