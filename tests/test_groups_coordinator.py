"""The group coordinator on its own: an in-memory __consumer_offsets and trio's MockClock.

What it writes comes back when a new coordinator replays the same topic; its timers (sessions,
the initial rebalance delay, offset retention) run in virtual time, so nothing here sleeps.
"""

from __future__ import annotations

import struct

import pytest
import trio

from kbroker.clock import Clock
from kbroker.config import Config
from kbroker.groups.classic_model import GroupState, JoinRequest
from kbroker.groups.coordinator import GroupCoordinator, OffsetToCommit
from kbroker.groups.offsets_topic import OFFSETS_TOPIC, java_string_hash
from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.records import Record
from tests.memory_topic import MemoryTopic

RETENTION_MS = 60_000


@pytest.fixture
def clock() -> Clock:
    """The broker's clock. Tests also ask for pytest-trio's `autojump_clock` (a MockClock that
    trio runs them on), so that a sleep jumps virtual time forward at once."""
    return Clock()


@pytest.fixture
def open_coordinator(clock):
    """Open (or reopen) a coordinator on one in-memory __consumer_offsets."""
    topic = MemoryTopic(OFFSETS_TOPIC, 1)

    def open_(**overrides) -> GroupCoordinator:
        # Unless a test starts run(), no timer task runs: a delay of 0 lets a join complete
        # within the call.
        config = Config({"offsets.retention.minutes": "1", "group.min.session.timeout.ms": "1000",
                         "group.initial.rebalance.delay.ms": "0", **overrides})
        topic.partitions = config["offsets.topic.num.partitions"]
        return GroupCoordinator(config, topic, clock.now_ms)

    open_.topic = topic
    return open_


def offsets(topic: str, *pairs) -> list[OffsetToCommit]:
    return [OffsetToCommit(topic, p, o, 3, f"m{o}") for p, o in pairs]


def fetched(coordinator: GroupCoordinator, group: str, stable: bool = False) -> dict:
    return {(topic, partition): (None if value is None else value.offset, error)
            for topic, entries in coordinator.fetch_offsets(group, None, stable)
            for partition, value, error in entries}


async def simple_commit(coordinator: GroupCoordinator, group: str, items,
                        version: int = 8) -> list[ErrorCode]:
    return await coordinator.commit_offsets(group, "", None, -1, -1, items, version)


def join_request(group: str, topics=("t",), session_timeout_ms: int = 10_000) -> JoinRequest:
    metadata = struct.pack(">hi", 0, len(topics)) + b"".join(
        struct.pack(">h", len(t)) + t.encode() for t in topics) + struct.pack(">i", -1)
    return JoinRequest(group_id=group, member_id="", protocol_type="consumer",
                       protocols=[("range", metadata)], session_timeout_ms=session_timeout_ms,
                       rebalance_timeout_ms=10_000, client_id="app")


async def stable_member(coordinator: GroupCoordinator, group: str, topics=("t",)) -> str:
    request = join_request(group, topics)
    first = await coordinator.join(request)
    request.member_id = first.member_id
    joined = await coordinator.join(request)
    assert joined.error == ErrorCode.NONE
    member = joined.member_id
    synced = await coordinator.sync(group, member, None, joined.generation_id, "consumer", "range",
                                    {member: b"assignment"})
    assert synced.error == ErrorCode.NONE
    return member


def test_java_string_hash_matches_java():
    assert java_string_hash("") == 0
    assert java_string_hash("hello") == 99_162_322  # "hello".hashCode() in Java
    assert java_string_hash("Aa") == java_string_hash("BB") == 2112
    assert java_string_hash("polygenelubricants") == -2**31  # the famous Integer.MIN_VALUE
    assert java_string_hash("\U0001F600") == 1_772_899  # a surrogate pair counts as two chars


async def test_commits_come_back_after_a_reopen(autojump_clock, open_coordinator):
    coordinator = open_coordinator()
    assert not open_coordinator.topic.created  # created on the first write only
    assert await simple_commit(coordinator, "g", offsets("t", (0, 10), (3, 30))) == [ErrorCode.NONE] * 2
    assert await simple_commit(coordinator, "g", offsets("t", (0, 11))) == [ErrorCode.NONE]
    coordinator = open_coordinator()
    value = coordinator.offsets.get("g", ("t", 0))
    assert (value.offset, value.leader_epoch, value.metadata) == (11, 3, "m11")
    assert fetched(coordinator, "g") == {("t", 0): (11, 0), ("t", 3): (30, 0)}
    assert coordinator.group("g").state == GroupState.EMPTY


async def test_group_membership_comes_back_after_a_reopen(autojump_clock, open_coordinator):
    coordinator = open_coordinator()
    member = await stable_member(coordinator, "members")
    coordinator = open_coordinator()
    group = coordinator.group("members")
    assert group.state == GroupState.STABLE and group.generation_id == 1
    assert list(group.members) == [member] and group.leader_id == member
    assert await coordinator.heartbeat("members", member, None, 1) == ErrorCode.NONE
    synced = await coordinator.sync("members", member, None, 1, "consumer", "range", {})
    assert synced.assignment == b"assignment"
    # and the member can go on committing with its generation
    assert await coordinator.commit_offsets("members", member, None, 1, -1,
                                            offsets("t", (1, 5)), 8) == [ErrorCode.NONE]


async def test_empty_group_offsets_expire_after_retention(autojump_clock, open_coordinator, clock):
    coordinator = open_coordinator()
    member = await stable_member(coordinator, "c", topics=("t",))
    await coordinator.commit_offsets("c", member, None, 1, -1, offsets("t", (0, 1)), 8)
    await simple_commit(coordinator, "simple", offsets("u", (0, 7)))
    await trio.sleep(RETENTION_MS / 1000)
    coordinator.expire_offsets(clock.now_ms())
    # a Stable group keeps offsets of topics it subscribes to; the simple group's expired
    assert fetched(coordinator, "c") == {("t", 0): (1, 0)}
    assert coordinator.group("simple") is None
    await coordinator.leave("c", [(member, None)])
    await trio.sleep((RETENTION_MS - 1) / 1000)
    coordinator.expire_offsets(clock.now_ms())
    assert fetched(coordinator, "c") == {("t", 0): (1, 0)}  # retention counts from becoming Empty
    await trio.sleep(0.001)
    coordinator.expire_offsets(clock.now_ms())
    assert coordinator.group("c") is None
    coordinator = open_coordinator()
    assert coordinator.group("c") is None and fetched(coordinator, "c") == {}


async def test_retention_time_of_old_commit_versions(autojump_clock, open_coordinator, clock):
    coordinator = open_coordinator()
    await coordinator.commit_offsets("g", "", None, -1, 5_000, offsets("u", (0, 1)), 2)
    await trio.sleep(4.999)
    coordinator.expire_offsets(clock.now_ms())
    assert fetched(coordinator, "g") == {("u", 0): (1, 0)}
    await trio.sleep(0.001)
    coordinator.expire_offsets(clock.now_ms())
    assert fetched(coordinator, "g") == {}


async def test_retention_runs_every_check_interval(autojump_clock, open_coordinator):
    coordinator = open_coordinator(**{"offsets.retention.check.interval.ms": "10000"})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(coordinator.run)  # checks at 10 s, 20 s, ...
        await trio.sleep(5)
        await simple_commit(coordinator, "simple", offsets("u", (0, 7)))  # expires at 65 s
        await trio.sleep(RETENTION_MS / 1000 + 4)
        assert fetched(coordinator, "simple") == {("u", 0): (7, 0)}  # not looked at yet
        await trio.sleep(1.5)
        assert fetched(coordinator, "simple") == {}
        nursery.cancel_scope.cancel()
    assert open_coordinator().group("simple") is None  # the tombstones were written


async def test_a_silent_member_is_removed_when_its_session_times_out(autojump_clock, open_coordinator):
    coordinator = open_coordinator()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(coordinator.run)
        member = await stable_member(coordinator, "g")
        for _ in range(3):  # heartbeats within the session keep the member
            await trio.sleep(9.9)
            assert await coordinator.heartbeat("g", member, None, 1) == ErrorCode.NONE
        await trio.sleep(9.9)
        assert member in coordinator.group("g").members
        await trio.sleep(0.2)
        assert coordinator.group("g").state == GroupState.EMPTY and not coordinator.group("g").members
        assert await coordinator.heartbeat("g", member, None, 1) == ErrorCode.UNKNOWN_MEMBER_ID
        nursery.cancel_scope.cancel()


async def test_the_first_join_waits_for_the_initial_rebalance_delay(autojump_clock, open_coordinator, clock):
    coordinator = open_coordinator(**{"group.initial.rebalance.delay.ms": "3000"})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(coordinator.run)
        request = join_request("g")
        first = await coordinator.join(request)  # MEMBER_ID_REQUIRED comes back at once
        assert first.error == ErrorCode.MEMBER_ID_REQUIRED
        request.member_id = first.member_id
        started = clock.now_ms()
        joined = await coordinator.join(request)
        assert joined.error == ErrorCode.NONE and joined.generation_id == 1
        assert clock.now_ms() - started == 3000
        nursery.cancel_scope.cancel()


async def test_offsets_of_deleted_topics_are_forgotten(autojump_clock, open_coordinator):
    coordinator = open_coordinator()
    await simple_commit(coordinator, "g", offsets("t", (0, 1)) + offsets("u", (0, 2)))
    coordinator.on_topics_deleted(["t"])
    assert fetched(coordinator, "g") == {("u", 0): (2, 0)}
    coordinator = open_coordinator()
    assert fetched(coordinator, "g") == {("u", 0): (2, 0)}


async def test_thousands_of_offsets_in_one_commit_and_one_deletion(autojump_clock, open_coordinator):
    coordinator = open_coordinator()
    many = [OffsetToCommit("t", p, p, 0, "x" * 200) for p in range(5000)]  # > max.message.bytes
    assert set(await simple_commit(coordinator, "big", many)) == {ErrorCode.NONE}
    assert len(open_coordinator.topic.batches[0]) > 1  # written in several batches
    coordinator = open_coordinator()
    assert len(fetched(coordinator, "big")) == 5000
    coordinator.on_topics_deleted(iter(["t"]))
    coordinator = open_coordinator()
    assert fetched(coordinator, "big") == {}


async def test_unreadable_records_are_skipped_at_start(autojump_clock, open_coordinator):
    coordinator = open_coordinator()
    await simple_commit(coordinator, "g", offsets("t", (0, 10)))
    for junk in ([Record(key=b"\x00\x63", value=b"")],  # a key version kbroker does not know
                 [Record(key=b"\x00\x01\x00\x01g", value=b"\x00\x03")]):  # cut short
        open_coordinator.topic.append(0, junk, 0)
    await simple_commit(coordinator, "g", offsets("t", (1, 11)))
    coordinator = open_coordinator()
    assert fetched(coordinator, "g") == {("t", 0): (10, 0), ("t", 1): (11, 0)}


async def test_failed_writes_answer_coordinator_errors_and_change_nothing(autojump_clock, open_coordinator):
    coordinator = open_coordinator()
    await simple_commit(coordinator, "g", offsets("t", (0, 1)))
    open_coordinator.topic.fail_with = OSError("disk full")
    assert await simple_commit(coordinator, "g", offsets("t", (0, 2))) == [ErrorCode.NOT_COORDINATOR]
    assert await coordinator.delete_groups(["g"]) == {"g": ErrorCode.NOT_COORDINATOR}
    assert fetched(coordinator, "g") == {("t", 0): (1, 0)}


async def test_deleted_groups_stay_deleted(autojump_clock, open_coordinator):
    coordinator = open_coordinator()
    await simple_commit(coordinator, "gone", offsets("t", (0, 1)))
    member = await stable_member(coordinator, "busy")
    results = await coordinator.delete_groups(["gone", "busy", "gone", "nope"])
    assert results == {"gone": ErrorCode.NONE, "busy": ErrorCode.NON_EMPTY_GROUP,
                       "nope": ErrorCode.GROUP_ID_NOT_FOUND}
    coordinator = open_coordinator()
    assert coordinator.group("gone") is None and fetched(coordinator, "gone") == {}
    assert member in coordinator.group("busy").members


async def test_transactional_offsets_count_once_committed(autojump_clock, open_coordinator):
    coordinator = open_coordinator()
    await simple_commit(coordinator, "g", offsets("t", (0, 5)))
    assert await coordinator.stage_transactional_offsets(
        "g", 42, "", None, -1, offsets("t", (0, 9), (1, 4))) == [ErrorCode.NONE] * 2
    assert fetched(coordinator, "g") == {("t", 0): (5, 0)}
    assert fetched(coordinator, "g", stable=True) == {("t", 0): (None, ErrorCode.UNSTABLE_OFFSET_COMMIT)}
    coordinator = open_coordinator()  # staged offsets survive a restart
    assert fetched(coordinator, "g", stable=True) == {("t", 0): (None, ErrorCode.UNSTABLE_OFFSET_COMMIT)}
    await coordinator.end_transaction(42, commit=True)
    assert fetched(coordinator, "g", stable=True) == {("t", 0): (9, 0), ("t", 1): (4, 0)}
    await coordinator.stage_transactional_offsets("g", 43, "", None, -1, offsets("t", (0, 100)))
    await coordinator.end_transaction(43, commit=False)
    coordinator = open_coordinator()
    assert fetched(coordinator, "g", stable=True) == {("t", 0): (9, 0), ("t", 1): (4, 0)}


async def test_regular_commit_after_staging_wins(autojump_clock, open_coordinator):
    coordinator = open_coordinator()
    await coordinator.stage_transactional_offsets("g", 7, "", None, -1, offsets("t", (0, 9)))
    await simple_commit(coordinator, "g", offsets("t", (0, 12)))
    await coordinator.end_transaction(7, commit=True)
    assert fetched(coordinator, "g") == {("t", 0): (12, 0)}


async def test_transactional_commit_checks_the_generation(autojump_clock, open_coordinator):
    coordinator = open_coordinator()
    member = await stable_member(coordinator, "txn-group")
    assert await coordinator.stage_transactional_offsets(
        "txn-group", 1, member, None, 0, offsets("t", (0, 1))) == [ErrorCode.ILLEGAL_GENERATION]
    assert await coordinator.stage_transactional_offsets(
        "txn-group", 1, member, None, 1, offsets("t", (0, 1))) == [ErrorCode.NONE]


async def test_groups_spread_over_offsets_partitions(autojump_clock, open_coordinator):
    coordinator = open_coordinator(**{"offsets.topic.num.partitions": "3"})
    groups = [f"group-{i}" for i in range(12)]
    for group in groups:
        await simple_commit(coordinator, group, offsets("t", (0, len(group))))
    used = {coordinator.partition_for(g) for g in groups}
    assert len(used) > 1 and set(open_coordinator.topic.batches) == used
    await coordinator.stage_transactional_offsets(groups[0], 5, "", None, -1, offsets("t", (1, 1)))
    await coordinator.stage_transactional_offsets(groups[1], 5, "", None, -1, offsets("t", (1, 2)))
    await coordinator.end_transaction(5, commit=True)
    coordinator = open_coordinator(**{"offsets.topic.num.partitions": "3"})
    for group in groups[2:]:
        assert fetched(coordinator, group) == {("t", 0): (len(group), 0)}
    assert fetched(coordinator, groups[1])[("t", 1)] == (2, 0)
