"""The share group and share session state machines (kbroker/share/group.py, sessions.py),
without a broker."""

from __future__ import annotations

import uuid

import pytest

from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.share.group import ShareGroups, ShareGroupSettings, ShareMember, assign
from kbroker.share.sessions import ShareSessionCache

T1, T2 = uuid.UUID(int=1), uuid.UUID(int=2)
TOPICS = {"one": (T1, 1), "four": (T2, 4)}


def groups(max_size: int = 10, others=()) -> ShareGroups:
    return ShareGroups(ShareGroupSettings(max_size, lambda _: 45_000, lambda _: 5_000),
                       other_group_type=lambda group_id: group_id in others)


def beat(machine, member, epoch, topics=None, now=0, group="g"):
    return machine.heartbeat(group, member, epoch, None, topics, "client", "/127.0.0.1", now, TOPICS.get)


def members(*subscriptions) -> dict[str, ShareMember]:
    return {f"m{i}": ShareMember(f"m{i}", "c", "h", None, list(topics)) for i, topics in enumerate(subscriptions)}


@pytest.mark.parametrize("count, partitions, sharing", [(1, 4, 1), (2, 4, 1), (4, 1, 4), (3, 2, 2), (5, 4, 2)])
def test_every_partition_goes_to_ceil_members_over_partitions_members(count, partitions, sharing):
    result = assign(members(*[["t"]] * count), {"t": (T1, partitions)})
    per_partition = [sum(p in a.get(T1, []) for a in result.values()) for p in range(partitions)]
    assert per_partition == [sharing] * partitions
    sizes = sorted(len(a.get(T1, [])) for a in result.values())
    assert sizes[-1] - sizes[0] <= 1  # balanced
    assert all(len(set(a.get(T1, []))) == len(a.get(T1, [])) for a in result.values())  # no repeats


def test_members_get_only_topics_they_subscribe_to():
    result = assign(members(["one"], ["four"]), TOPICS)
    assert result == {"m0": {T1: [0]}, "m1": {T2: [0, 1, 2, 3]}}


def test_join_heartbeat_and_leave_move_the_group_epoch():
    machine = groups()
    first = beat(machine, "a", 0, ["one"])
    assert (first.member_epoch, first.assignment) == (1, {T1: [0]})
    second = beat(machine, "b", 0, ["one"])
    assert (second.member_epoch, second.assignment) == (2, {T1: [0]})  # shared: more members than partitions
    again = beat(machine, "a", 1)
    assert (again.member_epoch, again.assignment) == (2, None)  # same partitions, not sent again
    left = beat(machine, "b", -1)
    assert left.member_epoch == -1 and "b" not in machine.get("g").members
    assert machine.get("g").epoch == 3


def test_subscription_and_topic_changes_reassign():
    machine = groups()
    beat(machine, "a", 0, ["one"])
    changed = beat(machine, "a", 1, ["one", "four"])
    assert changed.assignment == {T1: [0], T2: [0, 1, 2, 3]}
    TOPICS["four"] = (T2, 5)
    try:
        grown = beat(machine, "a", changed.member_epoch)
    finally:
        TOPICS["four"] = (T2, 4)
    assert grown.assignment == {T1: [0], T2: [0, 1, 2, 3, 4]}
    assert grown.member_epoch == changed.member_epoch + 1


@pytest.mark.parametrize("group, member, epoch, topics, code", [
    ("", "m", 0, ["one"], ErrorCode.INVALID_REQUEST),
    ("g", "", 0, ["one"], ErrorCode.INVALID_REQUEST),
    ("g", "m", 0, None, ErrorCode.INVALID_REQUEST),
    ("g", "m", -2, None, ErrorCode.INVALID_REQUEST),
    ("g", "unknown", 3, None, ErrorCode.UNKNOWN_MEMBER_ID),
    ("g", "unknown", -1, None, ErrorCode.UNKNOWN_MEMBER_ID),
    ("g", "a", 7, None, ErrorCode.FENCED_MEMBER_EPOCH),
    ("classic", "m", 0, ["one"], ErrorCode.GROUP_ID_NOT_FOUND),
])
def test_heartbeat_errors(group, member, epoch, topics, code):
    machine = groups(others=("classic",))
    beat(machine, "a", 0, ["one"])
    with pytest.raises(KafkaError) as raised:
        machine.heartbeat(group, member, epoch, None, topics, "c", "h", 0, TOPICS.get)
    assert raised.value.code == code


def test_group_size_and_session_timeout():
    machine = groups(max_size=1)
    beat(machine, "a", 0, ["one"], now=0)
    with pytest.raises(KafkaError) as raised:
        beat(machine, "b", 0, ["one"])
    assert raised.value.code == ErrorCode.GROUP_MAX_SIZE_REACHED
    assert machine.next_deadline() == 45_000
    assert machine.expire(44_999, TOPICS.get) == []
    assert machine.expire(45_000, TOPICS.get) == [("g", "a")]
    assert machine.get("g").state == "Empty"


def test_share_session_epochs():
    cache = ShareSessionCache(max_sessions=1)
    with pytest.raises(KafkaError) as raised:
        cache.for_fetch("g", "m", 1, [], [], False)
    assert raised.value.code == ErrorCode.SHARE_SESSION_NOT_FOUND
    with pytest.raises(KafkaError) as raised:
        cache.for_fetch("g", "m", 0, [(T1, 0)], [], True)
    assert raised.value.code == ErrorCode.INVALID_REQUEST
    session, replaced = cache.for_fetch("g", "m", 0, [(T1, 0)], [], False)
    assert (session.epoch, replaced) == (1, False)
    session, _ = cache.for_fetch("g", "m", 1, [(T2, 0)], [(T1, 0)], True)
    assert (session.epoch, list(session.partitions)) == (2, [(T2, 0)])
    with pytest.raises(KafkaError) as raised:
        cache.for_acknowledge("g", "m", 1)
    assert raised.value.code == ErrorCode.INVALID_SHARE_SESSION_EPOCH
    assert cache.for_acknowledge("g", "m", 2).epoch == 3
    with pytest.raises(KafkaError) as raised:
        cache.for_fetch("g", "other", 0, [], [], False)
    assert raised.value.code == ErrorCode.SHARE_SESSION_LIMIT_REACHED
    assert cache.for_fetch("g", "m", 0, [], [], False)[1]  # the member's own new session replaces it
    with pytest.raises(KafkaError) as raised:
        cache.for_fetch("g", "m", -1, [(T1, 0)], [], False)
    assert raised.value.code == ErrorCode.INVALID_REQUEST
    assert cache.for_fetch("g", "m", -1, [], [], True)[0].epoch == 1
    assert cache.close("g", "m") and not cache.close("g", "m")
