"""The KIP-848 consumer group state machine (kbroker/groups/consumer.py), without a socket."""

import itertools
import uuid
from types import SimpleNamespace

import pytest

from kbroker.groups import consumer_records
from kbroker.groups.assignors import range_assignor, uniform
from kbroker.groups.consumer import ConsumerGroups
from kbroker.groups.consumer_model import ConsumerSettings, GroupState, Heartbeat
from kbroker.groups.consumer_member import MemberState, offset_commit_error, offset_fetch_error
from kbroker.protocol.errors import ErrorCode

T1, T2 = uuid.UUID(int=1), uuid.UUID(int=2)


def topics(**sizes):
    return {name: SimpleNamespace(topic_id=uuid.UUID(int=index + 1), partitions=count)
            for index, (name, count) in enumerate(sizes.items())}


class Cluster:
    """A machine plus the topics it sees; every answer's records are replayed, as the
    coordinator does after writing them."""

    def __init__(self, settings: ConsumerSettings | None = None, **sizes):
        counter = itertools.count(1)
        self.machine = ConsumerGroups(settings or ConsumerSettings(), new_member_id=lambda: f"gen-{next(counter)}")
        self.topics = topics(**sizes)
        self.now = 0
        self.written = []

    def send(self, member_id, epoch, names=("t",), owned=None, **fields):
        hb = Heartbeat(group_id="g", member_id=member_id, member_epoch=epoch,
                       rebalance_timeout_ms=fields.pop("rebalance_timeout_ms", 30000),
                       topic_names=None if names is None else list(names),
                       owned={} if epoch == 0 and owned is None else owned, **fields)
        result = self.machine.heartbeat(hb, self.topics, self.now)
        for record in result.records:
            self.machine.replay(record)
        self.written.extend(result.records)
        return result

    def expire(self, ms):
        self.now += ms
        self.written.extend(self.machine.expire(self.now))

    @property
    def group(self):
        return self.machine.groups["g"]


def owned(result):
    return result.assignment


def test_one_member_gets_every_partition():
    c = Cluster(t=3)
    r = c.send("m1", 0)
    assert (r.error, r.member_id, r.member_epoch, r.heartbeat_interval_ms) == (ErrorCode.NONE, "m1", 1, 5000)
    assert r.assignment == {T1: frozenset({0, 1, 2})}
    assert c.group.state == GroupState.STABLE
    # A plain heartbeat changes nothing and carries no assignment.
    r = c.send("m1", 1, names=None, rebalance_timeout_ms=-1)
    assert (r.member_epoch, r.assignment, r.records) == (1, None, [])


def test_a_partition_moves_only_after_its_owner_revoked_it():
    c = Cluster(t=2)
    c.send("m1", 0)
    r2 = c.send("m2", 0)
    assert c.group.group_epoch == 2 and r2.member_epoch == 2
    assert r2.assignment == {}  # its partition is still m1's
    assert c.group.members["m2"].state == MemberState.UNRELEASED_PARTITIONS
    r1 = c.send("m1", 1, names=None, owned={T1: frozenset({0, 1})})
    assert r1.member_epoch == 1 and c.group.members["m1"].state == MemberState.UNREVOKED_PARTITIONS
    kept = r1.assignment[T1]
    assert len(kept) == 1
    assert c.group.state == GroupState.RECONCILING
    r1 = c.send("m1", 1, names=None, owned={T1: kept})  # revoked
    assert r1.member_epoch == 2 and c.group.members["m1"].state == MemberState.STABLE
    r2 = c.send("m2", 2, names=None, owned={})
    assert r2.assignment == {T1: frozenset({0, 1}) - kept}
    assert c.group.state == GroupState.STABLE


def test_leave_and_session_expiry_hand_partitions_back():
    c = Cluster(t=2)
    c.send("m1", 0)
    c.send("m2", 0)
    c.send("m1", 1, names=None, owned={T1: frozenset({0, 1})})
    c.send("m1", 1, names=None, owned={T1: c.group.members["m1"].assigned[T1]})
    c.send("m2", 2, names=None, owned={})
    r = c.send("m2", -1, names=None)
    assert (r.member_id, r.member_epoch) == ("m2", -1)
    assert "m2" not in c.group.members and c.group.group_epoch == 3
    r = c.send("m1", 2, names=None, owned=c.group.members["m1"].assigned)
    assert r.assignment == {T1: frozenset({0, 1})} and r.member_epoch == 3
    c.send("m3", 0)
    c.expire(45000)  # neither heartbeats again
    assert c.group.members == {} and c.group.state == GroupState.EMPTY


def test_fencing_errors():
    c = Cluster(t=1)
    c.send("m1", 0)
    assert c.send("m1", 5, names=None).error == ErrorCode.FENCED_MEMBER_EPOCH
    assert c.send("nobody", 1, names=None).error == ErrorCode.UNKNOWN_MEMBER_ID
    r = Cluster(t=1).machine.heartbeat(Heartbeat("g", "m", 3), {}, 0)
    assert r.error == ErrorCode.GROUP_ID_NOT_FOUND and r.message == "Consumer group g not found."


@pytest.mark.parametrize("fields, message", [
    (dict(member_id=""), "MemberId can't be empty."),
    (dict(group_id=" "), "GroupId can't be empty."),
    (dict(rebalance_timeout_ms=-1), "RebalanceTimeoutMs must be provided in first request."),
    (dict(owned=None), "TopicPartitions must be empty when (re-)joining."),
    (dict(topic_names=None), "Either SubscribedTopicNames or SubscribedTopicRegex must be non-null "
                             "when (re-)joining."),
    (dict(member_epoch=-3), "MemberEpoch is invalid."),
    (dict(member_epoch=-2), "InstanceId can't be null."),
])
def test_invalid_requests(fields, message):
    hb = dict(group_id="g", member_id="m", member_epoch=0, rebalance_timeout_ms=1000,
              topic_names=["t"], owned={})
    hb.update(fields)
    r = ConsumerGroups(ConsumerSettings()).heartbeat(Heartbeat(**hb), {}, 0)
    assert (r.error, r.message) == (ErrorCode.INVALID_REQUEST, message)


def test_unknown_assignor_and_bad_regex():
    c = Cluster(t=1)
    r = c.send("m1", 0, server_assignor="sticky")
    assert r.error == ErrorCode.UNSUPPORTED_ASSIGNOR
    assert r.message == "ServerAssignor sticky is not supported. Supported assignors: uniform, range."
    assert c.send("m1", 0, names=None, topic_regex="(").error == ErrorCode.INVALID_REGULAR_EXPRESSION


def test_v0_member_id_is_generated():
    c = Cluster(t=1)
    r = c.send("", 0, version=0)
    assert r.member_id == "gen-1" and r.member_epoch == 1


def test_group_max_size():
    c = Cluster(ConsumerSettings(max_size=1), t=1)
    c.send("m1", 0)
    r = c.send("m2", 0)
    assert r.error == ErrorCode.GROUP_MAX_SIZE_REACHED
    assert c.send("m1", 1, names=None).error == ErrorCode.NONE


def test_static_member_leaves_temporarily_and_is_replaced():
    c = Cluster(t=2)
    c.send("a1", 0, instance_id="i")
    assert c.send("b1", 0, instance_id="i").error == ErrorCode.UNRELEASED_INSTANCE_ID
    r = c.send("a1", -2, names=None, instance_id="i")
    assert r.member_epoch == -2 and c.group.members["a1"].assigned == {T1: frozenset({0, 1})}
    assert c.group.group_epoch == 1  # no rebalance
    r = c.send("b1", 0, instance_id="i")
    assert r.error == ErrorCode.NONE and r.assignment == {T1: frozenset({0, 1})}
    assert set(c.group.members) == {"b1"} and c.group.static_members == {"i": "b1"}
    assert c.send("a1", 1, names=None, instance_id="i").error == ErrorCode.FENCED_INSTANCE_ID
    assert c.send("b1", 1, names=None, instance_id="x").error == ErrorCode.UNKNOWN_MEMBER_ID


def test_static_member_gone_for_a_session_is_removed():
    c = Cluster(t=1)
    c.send("a1", 0, instance_id="i")
    c.send("a1", -2, names=None, instance_id="i")
    c.expire(45000)
    assert c.group.members == {}


def test_partition_growth_and_new_topics_rebalance():
    c = Cluster(t=1)
    c.send("m1", 0, names=None, topic_regex="^t.*")
    c.topics["t"].partitions = 2
    r = c.send("m1", 1, names=None)
    assert r.assignment == {T1: frozenset({0, 1})} and r.member_epoch == 2
    c.topics.update(topics(t=2, tb=1, other=1))
    r = c.send("m1", 2, names=None)
    assert r.assignment == {T1: frozenset({0, 1}), T2: frozenset({0})}
    assert c.group.regexes == {"^t.*": frozenset({"t", "tb"})}


def test_revocation_timeout_removes_the_member():
    c = Cluster(t=2)
    c.send("m1", 0, rebalance_timeout_ms=1000)
    c.send("m2", 0)
    c.send("m1", 1, names=None, owned={T1: frozenset({0, 1})}, rebalance_timeout_ms=-1)
    assert c.group.members["m1"].state == MemberState.UNREVOKED_PARTITIONS
    c.expire(1000)
    assert "m1" not in c.group.members


def test_range_assignor_by_server_assignor():
    c = Cluster(t=3)
    c.send("m1", 0, server_assignor="range")
    r = c.send("m2", 0, server_assignor="range")
    assert c.group.target == {"m1": {T1: frozenset({0, 1})}, "m2": {T1: frozenset({2})}}
    assert r.error == ErrorCode.NONE


def test_assignors_balance_and_stick():
    sizes = {"a": (T1, 5), "b": (T2, 4)}
    members = {m: frozenset({"a", "b"}) for m in ("m1", "m2", "m3")}
    first = uniform(members, sizes, {})
    counts = sorted(sum(len(p) for p in a.values()) for a in first.values())
    assert counts == [3, 3, 3]
    members["m4"] = frozenset({"a", "b"})
    second = uniform(members, sizes, first)
    moved = sum(len(first[m].get(t, frozenset()) - second[m].get(t, frozenset()))
                for m in first for t in (T1, T2))
    assert sorted(sum(len(p) for p in a.values()) for a in second.values()) == [2, 2, 2, 3]
    assert moved == 2
    assert range_assignor({"x": frozenset({"a"}), "y": frozenset({"a"})}, sizes, {}) == {
        "x": {T1: frozenset({0, 1, 2})}, "y": {T1: frozenset({3, 4})}}


def test_records_encode_decode_and_replay_rebuild_the_groups():
    c = Cluster(t=2, u=1)
    c.send("m1", 0, names=("t",), instance_id="i", rack_id="r", server_assignor="uniform")
    c.send("m2", 0, names=None, topic_regex="u|t")
    c.send("m1", 1, names=None, instance_id="i", owned={T1: frozenset({0, 1})})
    restored = ConsumerGroups(ConsumerSettings())
    for record in c.written:
        stored = consumer_records.encode(record)
        decoded = consumer_records.decode(stored.key, stored.value)
        restored.replay(decoded)
    before, after = c.group, restored.groups["g"]
    for attribute in ("group_epoch", "assignment_epoch", "members", "static_members", "target",
                      "owners", "subscription_metadata", "regexes"):
        assert getattr(after, attribute) == getattr(before, attribute), attribute


def test_offset_commit_and_fetch_checks():
    c = Cluster(t=1)
    c.send("m1", 0)
    assert offset_commit_error(c.group.members, "m1", 1, 9) == ErrorCode.NONE
    assert offset_commit_error(c.group.members, "m1", 0, 9) == ErrorCode.STALE_MEMBER_EPOCH
    assert offset_commit_error(c.group.members, "m1", 1, 8) == ErrorCode.UNSUPPORTED_VERSION
    assert offset_commit_error(c.group.members, "zz", 1, 9) == ErrorCode.UNKNOWN_MEMBER_ID
    assert offset_commit_error(c.group.members, "", -1, 9) == ErrorCode.UNKNOWN_MEMBER_ID
    assert offset_fetch_error(c.group.members, None, -1) == ErrorCode.NONE
    assert offset_fetch_error(c.group.members, "m1", 0) == ErrorCode.STALE_MEMBER_EPOCH


def test_classic_members_commit_with_their_generation():
    from kbroker.groups.consumer_member import ClassicMeta

    c = Cluster(t=1)
    c.send("m1", 0)
    member = c.group.members["m1"]
    c.group.members["m1"] = type(member)(**{**{f: getattr(member, f) for f in member.__slots__},
                                            "classic": ClassicMeta(6000, (("range", b""),))})
    assert offset_commit_error(c.group.members, "m1", 1, 2) == ErrorCode.NONE
    assert offset_commit_error(c.group.members, "m1", 0, 8) == ErrorCode.ILLEGAL_GENERATION
