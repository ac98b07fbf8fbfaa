"""The group coordinator in-process: what it writes to __consumer_offsets comes back after a reopen."""

from __future__ import annotations

import pytest

from kbroker.broker import Broker
from kbroker.config import Config
from kbroker.groups.classic import GroupState, JoinRequest
from kbroker.groups.coordinator import OFFSETS_TOPIC, OffsetToCommit, java_string_hash
from kbroker.protocol.errors import ErrorCode

RETENTION_MS = 60_000


class Clock:
    def __init__(self, now: int = 1_700_000_000_000):
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def open_broker(tmp_path):
    """Open (or reopen) a broker on one data dir; the coordinator's clock is returned with it."""
    opened = []

    def open_(clock: Clock | None = None, **overrides) -> Broker:
        # No timer tasks run here: a delay of 0 lets a join complete within the call.
        settings = {"log.dirs": str(tmp_path), "offsets.retention.minutes": "1",
                    "group.min.session.timeout.ms": "1000",
                    "group.initial.rebalance.delay.ms": "0", **overrides}
        broker = Broker(Config(settings))
        if clock is not None:
            broker.groups.clock = clock
        if "t" not in broker.logs.topics:
            broker.storage.create_topic("t", 4)
            broker.storage.create_topic("u", 1)
        opened.append(broker)
        return broker

    yield open_
    for broker in opened:
        broker.logs.close()


def reopen(broker: Broker, open_broker, clock=None) -> Broker:
    broker.logs.close()
    return open_broker(clock)


def offsets(topic: str, *pairs) -> list[OffsetToCommit]:
    return [OffsetToCommit(topic, p, o, 3, f"m{o}") for p, o in pairs]


def fetched(broker: Broker, group: str, stable: bool = False) -> dict:
    return {(topic, partition): (None if value is None else value.offset, error)
            for topic, entries in broker.groups.fetch_offsets(group, None, stable)
            for partition, value, error in entries}


async def simple_commit(broker: Broker, group: str, items, version: int = 8) -> list[ErrorCode]:
    return await broker.groups.commit_offsets(group, "", None, -1, -1, items, version)


async def stable_member(broker: Broker, group: str, topics=("t",)) -> str:
    import struct

    metadata = struct.pack(">hi", 0, len(topics)) + b"".join(
        struct.pack(">h", len(t)) + t.encode() for t in topics) + struct.pack(">i", -1)
    request = JoinRequest(group_id=group, member_id="", protocol_type="consumer",
                          protocols=[("range", metadata)], session_timeout_ms=10_000,
                          rebalance_timeout_ms=10_000, client_id="app")
    first = await broker.groups.join(request)
    request.member_id = first.member_id
    joined = await broker.groups.join(request)
    assert joined.error == ErrorCode.NONE
    member = joined.member_id
    synced = await broker.groups.sync(group, member, None, joined.generation_id, "consumer", "range",
                                      {member: b"assignment"})
    assert synced.error == ErrorCode.NONE
    return member


def test_java_string_hash_matches_java():
    assert java_string_hash("") == 0
    assert java_string_hash("hello") == 99_162_322  # "hello".hashCode() in Java
    assert java_string_hash("Aa") == java_string_hash("BB") == 2112
    assert java_string_hash("polygenelubricants") == -2**31  # the famous Integer.MIN_VALUE
    assert java_string_hash("\U0001F600") == 1_772_899  # a surrogate pair counts as two chars


async def test_commits_come_back_after_a_reopen(open_broker):
    broker = open_broker()
    assert OFFSETS_TOPIC not in broker.logs.topics  # created on the first write only
    assert await simple_commit(broker, "g", offsets("t", (0, 10), (3, 30))) == [ErrorCode.NONE] * 2
    assert await simple_commit(broker, "g", offsets("t", (0, 11))) == [ErrorCode.NONE]
    broker = reopen(broker, open_broker)
    value = broker.groups.offsets.get("g", ("t", 0))
    assert (value.offset, value.leader_epoch, value.metadata) == (11, 3, "m11")
    assert fetched(broker, "g") == {("t", 0): (11, 0), ("t", 3): (30, 0)}
    assert broker.groups.group("g").state == GroupState.EMPTY


async def test_group_membership_comes_back_after_a_reopen(open_broker):
    broker = open_broker()
    member = await stable_member(broker, "members")
    broker = reopen(broker, open_broker)
    group = broker.groups.group("members")
    assert group.state == GroupState.STABLE and group.generation_id == 1
    assert list(group.members) == [member] and group.leader_id == member
    assert await broker.groups.heartbeat("members", member, None, 1) == ErrorCode.NONE
    synced = await broker.groups.sync("members", member, None, 1, "consumer", "range", {})
    assert synced.assignment == b"assignment"
    # and the member can go on committing with its generation
    assert await broker.groups.commit_offsets("members", member, None, 1, -1,
                                              offsets("t", (1, 5)), 8) == [ErrorCode.NONE]


async def test_empty_group_offsets_expire_after_retention(open_broker):
    clock = Clock()
    broker = open_broker(clock)
    member = await stable_member(broker, "c", topics=("t",))
    await broker.groups.commit_offsets("c", member, None, 1, -1, offsets("t", (0, 1)), 8)
    await simple_commit(broker, "simple", offsets("u", (0, 7)))
    clock.now += RETENTION_MS
    broker.groups.expire_offsets(clock.now)
    # a Stable group keeps offsets of topics it subscribes to; the simple group's expired
    assert fetched(broker, "c") == {("t", 0): (1, 0)}
    assert broker.groups.group("simple") is None
    await broker.groups.leave("c", [(member, None)])
    clock.now += RETENTION_MS - 1
    broker.groups.expire_offsets(clock.now)
    assert fetched(broker, "c") == {("t", 0): (1, 0)}  # retention counts from becoming Empty
    clock.now += 1
    broker.groups.expire_offsets(clock.now)
    assert broker.groups.group("c") is None
    broker = reopen(broker, open_broker, clock)
    assert broker.groups.group("c") is None and fetched(broker, "c") == {}


async def test_retention_time_of_old_commit_versions(open_broker):
    clock = Clock()
    broker = open_broker(clock)
    await broker.groups.commit_offsets("g", "", None, -1, 5_000, offsets("u", (0, 1)), 2)
    clock.now += 5_000
    broker.groups.expire_offsets(clock.now)
    assert fetched(broker, "g") == {}


async def test_offsets_of_deleted_topics_are_forgotten(open_broker):
    broker = open_broker()
    await simple_commit(broker, "g", offsets("t", (0, 1)) + offsets("u", (0, 2)))
    broker.groups.on_topics_deleted(["t"])
    assert fetched(broker, "g") == {("u", 0): (2, 0)}
    broker = reopen(broker, open_broker)
    assert fetched(broker, "g") == {("u", 0): (2, 0)}


async def test_thousands_of_offsets_in_one_commit_and_one_deletion(open_broker):
    broker = open_broker()
    many = [OffsetToCommit("t", p, p, 0, "x" * 200) for p in range(5000)]  # > max.message.bytes
    assert set(await simple_commit(broker, "big", many)) == {ErrorCode.NONE}
    broker = reopen(broker, open_broker)
    assert len(fetched(broker, "big")) == 5000
    broker.groups.on_topics_deleted(iter(["t"]))
    broker = reopen(broker, open_broker)
    assert fetched(broker, "big") == {}


async def test_unreadable_records_are_skipped_at_start(open_broker):
    from kbroker.protocol.records import Record, build_batch

    broker = open_broker()
    await simple_commit(broker, "g", offsets("t", (0, 10)))
    log = broker.logs.partition(OFFSETS_TOPIC, 0)
    for junk in ([Record(key=b"\x00\x63", value=b"")],  # a key version kbroker does not know
                 [Record(key=b"\x00\x01\x00\x01g", value=b"\x00\x03")]):  # cut short
        log.append_produce(build_batch(junk), 0)
    await simple_commit(broker, "g", offsets("t", (1, 11)))
    broker = reopen(broker, open_broker)
    assert fetched(broker, "g") == {("t", 0): (10, 0), ("t", 1): (11, 0)}


async def test_deleted_groups_stay_deleted(open_broker):
    broker = open_broker()
    await simple_commit(broker, "gone", offsets("t", (0, 1)))
    member = await stable_member(broker, "busy")
    results = await broker.groups.delete_groups(["gone", "busy", "gone", "nope"])
    assert results == {"gone": ErrorCode.NONE, "busy": ErrorCode.NON_EMPTY_GROUP,
                       "nope": ErrorCode.GROUP_ID_NOT_FOUND}
    broker = reopen(broker, open_broker)
    assert broker.groups.group("gone") is None and fetched(broker, "gone") == {}
    assert member in broker.groups.group("busy").members


async def test_transactional_offsets_count_once_committed(open_broker):
    broker = open_broker()
    coordinator = broker.groups
    await simple_commit(broker, "g", offsets("t", (0, 5)))
    assert await coordinator.stage_transactional_offsets(
        "g", 42, "", None, -1, offsets("t", (0, 9), (1, 4))) == [ErrorCode.NONE] * 2
    assert fetched(broker, "g") == {("t", 0): (5, 0)}
    assert fetched(broker, "g", stable=True) == {("t", 0): (None, ErrorCode.UNSTABLE_OFFSET_COMMIT)}
    broker = reopen(broker, open_broker)  # staged offsets survive a restart
    assert fetched(broker, "g", stable=True) == {("t", 0): (None, ErrorCode.UNSTABLE_OFFSET_COMMIT)}
    await broker.groups.end_transaction(42, commit=True)
    assert fetched(broker, "g", stable=True) == {("t", 0): (9, 0), ("t", 1): (4, 0)}
    await broker.groups.stage_transactional_offsets("g", 43, "", None, -1, offsets("t", (0, 100)))
    await broker.groups.end_transaction(43, commit=False)
    broker = reopen(broker, open_broker)
    assert fetched(broker, "g", stable=True) == {("t", 0): (9, 0), ("t", 1): (4, 0)}


async def test_regular_commit_after_staging_wins(open_broker):
    broker = open_broker()
    await broker.groups.stage_transactional_offsets("g", 7, "", None, -1, offsets("t", (0, 9)))
    await simple_commit(broker, "g", offsets("t", (0, 12)))
    await broker.groups.end_transaction(7, commit=True)
    assert fetched(broker, "g") == {("t", 0): (12, 0)}


async def test_transactional_commit_checks_the_generation(open_broker):
    broker = open_broker()
    member = await stable_member(broker, "txn-group")
    assert await broker.groups.stage_transactional_offsets(
        "txn-group", 1, member, None, 0, offsets("t", (0, 1))) == [ErrorCode.ILLEGAL_GENERATION]
    assert await broker.groups.stage_transactional_offsets(
        "txn-group", 1, member, None, 1, offsets("t", (0, 1))) == [ErrorCode.NONE]


async def test_groups_spread_over_offsets_partitions(open_broker):
    broker = open_broker(**{"offsets.topic.num.partitions": "3"})
    groups = [f"group-{i}" for i in range(12)]
    for group in groups:
        await simple_commit(broker, group, offsets("t", (0, len(group))))
    used = {broker.groups.partition_for(g) for g in groups}
    assert len(used) > 1
    await broker.groups.stage_transactional_offsets(groups[0], 5, "", None, -1, offsets("t", (1, 1)))
    await broker.groups.stage_transactional_offsets(groups[1], 5, "", None, -1, offsets("t", (1, 2)))
    await broker.groups.end_transaction(5, commit=True)
    broker.logs.close()
    broker = open_broker(**{"offsets.topic.num.partitions": "3"})
    for group in groups[2:]:
        assert fetched(broker, group) == {("t", 0): (len(group), 0)}
    assert fetched(broker, groups[1])[("t", 1)] == (2, 0)
