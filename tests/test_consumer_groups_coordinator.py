"""KIP-848 consumer groups inside the group coordinator: an in-memory __consumer_offsets, trio's
MockClock. What is written comes back when a new coordinator replays the topic."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
import trio

from kbroker.clock import Clock
from kbroker.config import Config
from kbroker.groups.classic_model import GroupState as ClassicState
from kbroker.groups.classic_model import JoinRequest
from kbroker.groups.consumer_model import GroupState, Heartbeat
from kbroker.groups.coordinator import GroupCoordinator, OffsetToCommit
from kbroker.groups.offsets_topic import OFFSETS_TOPIC
from kbroker.protocol import codec, messages
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
        config = Config({"offsets.retention.minutes": "1", "group.consumer.session.timeout.ms": str(SESSION_MS),
                         "group.consumer.min.session.timeout.ms": "1000",
                         "group.consumer.heartbeat.interval.ms": "500",
                         "group.consumer.min.heartbeat.interval.ms": "100",
                         "group.initial.rebalance.delay.ms": "0", "group.min.session.timeout.ms": "1000"})
        return GroupCoordinator(config, topic, clock.now_ms)

    return open_


def join(member_id: str, group: str = "g", **fields) -> Heartbeat:
    return Heartbeat(group_id=group, member_id=member_id, member_epoch=0, rebalance_timeout_ms=5000,
                     topic_names=["t"], owned={}, **fields)


def subscription(*owned: int) -> bytes:
    S = messages.ConsumerProtocolSubscription
    return codec.encode_data(S(topics=["t"], owned_partitions=[
        S.TopicPartition(topic="t", partitions=list(owned))] if owned else []), 1)


def classic_join(member_id: str = "", group: str = "g", owned: tuple = ()) -> JoinRequest:
    return JoinRequest(group_id=group, member_id=member_id, protocol_type="consumer",
                       protocols=[("range", subscription(*owned))], session_timeout_ms=6000,
                       rebalance_timeout_ms=6000, group_instance_id=None, client_id="c",
                       client_host="/h", require_known_member_id=True, supports_skip_assignment=True)


def assigned(sync_result) -> set[int]:
    _, assignment = codec.decode_data(messages.ConsumerProtocolAssignment, sync_result.assignment)
    return {p for tp in assignment.assigned_partitions for p in tp.partitions}


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


async def test_empty_groups_change_protocol(open_coordinator):
    coordinator = open_coordinator()
    # A simple (classic) group made by an offset commit gives way to a consumer group.
    await coordinator.commit_offsets("g", "", None, -1, -1, [OffsetToCommit("t", 0, 1, -1, None)], 9)
    assert coordinator.group("g") is not None
    assert (await coordinator.consumer.heartbeat(join("m1"), TOPICS)).error == ErrorCode.NONE
    assert coordinator.group("g") is None
    # An empty consumer group gives way to a classic member.
    await coordinator.consumer.heartbeat(Heartbeat("g", "m1", -1), TOPICS)
    first = await coordinator.join(classic_join(), TOPICS)
    assert first.error == ErrorCode.MEMBER_ID_REQUIRED and coordinator.consumer.group("g") is None
    reopened = open_coordinator()
    assert reopened.consumer.group("g") is None and reopened.group("g") is not None
    assert reopened.fetch_offsets("g", None, False)[0][1][0][1].offset == 1


async def test_classic_member_in_a_consumer_group_then_downgrade(open_coordinator):
    coordinator = open_coordinator()
    await coordinator.consumer.heartbeat(join("m1"), TOPICS)
    required = await coordinator.join(classic_join(), TOPICS)
    assert required.error == ErrorCode.MEMBER_ID_REQUIRED
    joined = await coordinator.join(classic_join(required.member_id), TOPICS)
    classic_id = joined.member_id
    assert (joined.error, joined.generation_id, joined.protocol_name, joined.leader) == (
        ErrorCode.NONE, 2, "range", "")
    synced = await coordinator.sync("g", classic_id, None, 2, "consumer", "range", {})
    assert synced.error == ErrorCode.NONE and assigned(synced) == set()  # m1 still owns them
    # m1 revokes one partition, then the classic member gets it on its next join.
    t = uuid.UUID(int=7)
    revoking = await coordinator.consumer.heartbeat(
        Heartbeat("g", "m1", 1, owned={t: frozenset({0, 1})}), TOPICS)
    kept = revoking.assignment[t]
    await coordinator.consumer.heartbeat(Heartbeat("g", "m1", 1, owned={t: kept}), TOPICS)
    assert await coordinator.heartbeat("g", classic_id, None, 2) == ErrorCode.NONE
    rejoined = await coordinator.join(classic_join(classic_id), TOPICS)
    synced = await coordinator.sync("g", classic_id, None, rejoined.generation_id, "consumer", "range", {})
    assert assigned(synced) == {0, 1} - kept
    assert await coordinator.heartbeat("g", classic_id, None, 99) == ErrorCode.ILLEGAL_GENERATION
    assert await coordinator.heartbeat("g", "nobody", None, 2) == ErrorCode.UNKNOWN_MEMBER_ID
    # The last consumer-protocol member leaves: the group turns classic and rebalances.
    await coordinator.consumer.heartbeat(Heartbeat("g", "m1", -1), TOPICS)
    assert coordinator.consumer.group("g") is None
    group = coordinator.group("g")
    assert set(group.members) == {classic_id} and group.state == ClassicState.PREPARING_REBALANCE
    assert await coordinator.heartbeat("g", classic_id, None, 2) == ErrorCode.REBALANCE_IN_PROGRESS
    reopened = open_coordinator()
    assert reopened.consumer.group("g") is None and set(reopened.group("g").members) == {classic_id}


async def test_classic_group_upgrades_when_a_consumer_member_joins(open_coordinator):
    coordinator = open_coordinator()
    first = await coordinator.join(classic_join(), TOPICS)
    joined = await coordinator.join(classic_join(first.member_id), TOPICS)
    A = messages.ConsumerProtocolAssignment
    everything = codec.encode_data(A(assigned_partitions=[A.TopicPartition(topic="t", partitions=[0, 1])]), 0)
    await coordinator.sync("g", joined.member_id, None, joined.generation_id, "consumer", "range",
                           {joined.member_id: everything})
    result = await coordinator.consumer.heartbeat(join("m2"), TOPICS)
    assert result.error == ErrorCode.NONE and coordinator.group("g") is None
    group = coordinator.consumer.group("g")
    assert set(group.members) == {joined.member_id, "m2"}
    assert group.members[joined.member_id].assigned == {uuid.UUID(int=7): frozenset({0, 1})}
    # The classic member is asked to rejoin, and after it gave up a partition m2 gets it.
    assert await coordinator.heartbeat("g", joined.member_id, None, joined.generation_id) == \
        ErrorCode.REBALANCE_IN_PROGRESS
    rejoined = await coordinator.join(classic_join(joined.member_id), TOPICS)  # eager: owns nothing
    synced = await coordinator.sync("g", joined.member_id, None, rejoined.generation_id, None, None, {})
    again = await coordinator.consumer.heartbeat(Heartbeat("g", "m2", result.member_epoch, owned={}), TOPICS)
    assert len(assigned(synced)) == 1 and len(again.assignment[uuid.UUID(int=7)]) == 1
    # A consumer member cannot join a classic group that does not use the consumer protocol.
    other = JoinRequest(group_id="o", member_id="", protocol_type="connect", protocols=[("x", b"")],
                        session_timeout_ms=6000, rebalance_timeout_ms=6000, group_instance_id=None,
                        client_id="c", client_host="/h", require_known_member_id=False,
                        supports_skip_assignment=True)
    await coordinator.join(other, TOPICS)
    refused = await coordinator.consumer.heartbeat(join("m9", group="o"), TOPICS)
    assert (refused.error, refused.message) == (ErrorCode.GROUP_ID_NOT_FOUND, "Group o is not a consumer group.")


async def test_delete_groups(open_coordinator):
    coordinator = open_coordinator()
    await coordinator.consumer.heartbeat(join("m1"), TOPICS)
    assert await coordinator.delete_groups(["g"]) == {"g": ErrorCode.NON_EMPTY_GROUP}
    await coordinator.consumer.heartbeat(Heartbeat("g", "m1", -1), TOPICS)
    assert await coordinator.delete_groups(["g"]) == {"g": ErrorCode.NONE}
    assert coordinator.consumer.group("g") is None
    assert open_coordinator().consumer.group("g") is None


async def test_offsets_of_unsubscribed_topics_expire_then_the_empty_group_goes(open_coordinator, autojump_clock):
    coordinator = open_coordinator()
    await coordinator.consumer.heartbeat(join("m1"), TOPICS)
    commits = [OffsetToCommit("t", 0, 5, -1, None), OffsetToCommit("gone", 0, 3, -1, None)]
    assert await coordinator.commit_offsets("g", "m1", None, 1, -1, commits, 9) == [ErrorCode.NONE] * 2
    await trio.sleep(61)
    coordinator.expire_offsets(coordinator.clock())
    assert {t for t, _ in coordinator.fetch_offsets("g", None, False)} == {"t"}  # subscribed: kept
    await coordinator.consumer.heartbeat(Heartbeat("g", "m1", -1), TOPICS)
    coordinator.expire_offsets(coordinator.clock())
    assert coordinator.consumer.group("g") is None and coordinator.fetch_offsets("g", None, False) == []
    assert open_coordinator().consumer.group("g") is None


async def test_a_classic_member_that_never_rejoins_is_removed(open_coordinator, autojump_clock):
    coordinator = open_coordinator()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(coordinator.run)
        first = await coordinator.join(classic_join(), TOPICS)
        joined = await coordinator.join(classic_join(first.member_id), TOPICS)
        await coordinator.sync("g", joined.member_id, None, joined.generation_id, "consumer", "range",
                               {joined.member_id: b""})
        m2 = await coordinator.consumer.heartbeat(join("m2"), TOPICS)  # converts the group
        for _ in range(8):  # it keeps heartbeating but never rejoins (rebalance timeout 6 s)
            error = await coordinator.heartbeat("g", joined.member_id, None, joined.generation_id)
            m2 = await coordinator.consumer.heartbeat(Heartbeat("g", "m2", m2.member_epoch), TOPICS)
            await trio.sleep(1)
        assert error == ErrorCode.UNKNOWN_MEMBER_ID
        assert set(coordinator.consumer.group("g").members) == {"m2"}
        nursery.cancel_scope.cancel()
