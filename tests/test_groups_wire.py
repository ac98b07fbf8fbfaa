"""Group APIs over the wire with exact requests: the error codes Kafka answers, version by version."""

from __future__ import annotations

import struct
import threading

import pytest

from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.messages import (
    JoinGroupRequest, LeaveGroupRequest, MetadataRequest, OffsetCommitRequest, OffsetDeleteRequest,
    OffsetFetchRequest, SyncGroupRequest,
)
from kbroker.testing import running_broker
from tests.wire import WireClient

SESSION_MS = 6000


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with running_broker("--num-partitions", "4", "--override", "group.min.session.timeout.ms=1000",
                        data_dir=tmp_path_factory.mktemp("groups-wire")) as started:
        yield started


@pytest.fixture
def wire(broker):
    with WireClient(broker.bootstrap) as client:
        yield client


@pytest.fixture
def topic(broker, wire, topic_name):
    """A 4-partition topic (auto-created through Metadata)."""
    wire.request("Metadata", 4, topics=[MetadataRequest.MetadataRequestTopic(name=topic_name)],
                 allow_auto_topic_creation=True)
    return topic_name


def subscription(*topics: str) -> bytes:
    """A ConsumerProtocolSubscription v0 (what the 'consumer' protocol type carries)."""
    body = struct.pack(">hi", 0, len(topics))
    for topic in topics:
        body += struct.pack(">h", len(topic)) + topic.encode()
    return body + struct.pack(">i", -1)


def join(client, group, member_id="", version=5, session=SESSION_MS, instance=None,
         protocols=(("range", b"meta"),), protocol_type="consumer"):
    return client.request(
        "JoinGroup", version, group_id=group, session_timeout_ms=session, rebalance_timeout_ms=10000,
        member_id=member_id, group_instance_id=instance, protocol_type=protocol_type,
        protocols=[JoinGroupRequest.JoinGroupRequestProtocol(name=n, metadata=m) for n, m in protocols],
    )


def join_as_new_member(client, group, **kwargs):
    first = join(client, group, **kwargs)
    assert first.error_code == ErrorCode.MEMBER_ID_REQUIRED
    return join(client, group, member_id=first.member_id, **kwargs)


def sync(client, group, member_id, generation, assignments=None, version=3):
    return client.request(
        "SyncGroup", version, group_id=group, generation_id=generation, member_id=member_id,
        protocol_type="consumer", protocol_name="range",
        assignments=[SyncGroupRequest.SyncGroupRequestAssignment(member_id=m, assignment=a)
                     for m, a in (assignments or {}).items()],
    )


def commit(client, group, topic, offsets, generation=-1, member_id="", version=8, metadata=None):
    request_topic = OffsetCommitRequest.OffsetCommitRequestTopic(name=topic, partitions=[
        OffsetCommitRequest.OffsetCommitRequestPartition(
            partition_index=p, committed_offset=o, committed_leader_epoch=0,
            committed_metadata=metadata)
        for p, o in offsets.items()
    ])
    response = client.request("OffsetCommit", version, group_id=group,
                              generation_id_or_member_epoch=generation, member_id=member_id,
                              topics=[request_topic])
    return {(t.name, p.partition_index): p.error_code for t in response.topics for p in t.partitions}


def test_find_coordinator_every_version(broker, wire):
    for version in range(4):
        response = wire.request("FindCoordinator", version, key="g", key_type=0)
        assert response.error_code == ErrorCode.NONE
        assert (response.node_id, response.port) == (1, broker.port)
        if version >= 1:
            assert response.error_message == "NONE"
    response = wire.request("FindCoordinator", 4, key_type=0, coordinator_keys=["a", "b"])
    assert [(c.key, c.error_code, c.port) for c in response.coordinators] == \
        [("a", 0, broker.port), ("b", 0, broker.port)]
    transactional = wire.request("FindCoordinator", 6, key_type=1, coordinator_keys=["txn"])
    assert transactional.coordinators[0].node_id == 1


def test_find_coordinator_rejects_unknown_key_types(wire):
    old = wire.request("FindCoordinator", 3, key="s", key_type=2)
    assert (old.error_code, old.node_id, old.host, old.port) == (ErrorCode.INVALID_REQUEST, -1, "", -1)
    new = wire.request("FindCoordinator", 6, key_type=5, coordinator_keys=["x"])
    assert new.coordinators[0].error_code == ErrorCode.INVALID_REQUEST
    assert new.coordinators[0].node_id == -1


def test_join_sync_heartbeat_leave(wire, topic):
    group = f"{topic}-g"
    joined = join_as_new_member(wire, group)
    assert joined.error_code == ErrorCode.NONE
    member = joined.member_id
    assert member.startswith("wire-test-")
    assert (joined.generation_id, joined.leader, joined.protocol_name) == (1, member, "range")
    assert [m.member_id for m in joined.members] == [member]
    synced = sync(wire, group, member, 1, {member: b"assigned"})
    assert (synced.error_code, synced.assignment) == (ErrorCode.NONE, b"assigned")
    assert wire.request("Heartbeat", 4, group_id=group, generation_id=1,
                        member_id=member).error_code == ErrorCode.NONE
    assert wire.request("Heartbeat", 4, group_id=group, generation_id=0,
                        member_id=member).error_code == ErrorCode.ILLEGAL_GENERATION
    assert wire.request("Heartbeat", 0, group_id=group, generation_id=1,
                        member_id="nobody").error_code == ErrorCode.UNKNOWN_MEMBER_ID
    left = wire.request("LeaveGroup", 3, group_id=group, members=[
        LeaveGroupRequest.MemberIdentity(member_id=member),
        LeaveGroupRequest.MemberIdentity(member_id="ghost"),
    ])
    assert left.error_code == ErrorCode.NONE
    assert [m.error_code for m in left.members] == [ErrorCode.NONE, ErrorCode.UNKNOWN_MEMBER_ID]
    old_leave = wire.request("LeaveGroup", 0, group_id=group, member_id="ghost")
    assert old_leave.error_code == ErrorCode.UNKNOWN_MEMBER_ID
    described = wire.request("DescribeGroups", 5, groups=[group]).groups[0]
    assert (described.group_state, described.members) == ("Empty", [])


def test_join_errors(wire):
    assert join(wire, "", version=5).error_code == ErrorCode.INVALID_GROUP_ID
    assert join(wire, "g-timeouts", session=500).error_code == ErrorCode.INVALID_SESSION_TIMEOUT
    assert join(wire, "g-unknown", member_id="someone").error_code == ErrorCode.UNKNOWN_MEMBER_ID
    assert join(wire, "g-type", protocol_type="").error_code == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    old = join(wire, "g-old-version", version=3)  # before v4 no MEMBER_ID_REQUIRED round
    assert old.error_code == ErrorCode.NONE and old.generation_id == 1
    assert old.protocol_name == "range"
    mismatch = join(wire, "g-old-version", version=3, protocols=(("roundrobin", b""),))
    assert mismatch.error_code == ErrorCode.INCONSISTENT_GROUP_PROTOCOL


def test_rebalance_completes_when_every_member_rejoined(broker, wire, topic):
    group = f"{topic}-g"
    first = join_as_new_member(wire, group)
    sync(wire, group, first.member_id, 1, {first.member_id: b"all"})
    answers = {}

    def second_member():
        with WireClient(broker.bootstrap, client_id="second") as other:
            answers["second"] = join_as_new_member(other, group)

    thread = threading.Thread(target=second_member)
    thread.start()
    heartbeat = ErrorCode.NONE
    while heartbeat == ErrorCode.NONE:  # the first member learns of the rebalance from heartbeats
        heartbeat = wire.request("Heartbeat", 4, group_id=group, generation_id=1,
                                 member_id=first.member_id).error_code
    assert heartbeat == ErrorCode.REBALANCE_IN_PROGRESS
    rejoined = join(wire, group, member_id=first.member_id)
    thread.join(5)
    second = answers["second"]
    assert rejoined.generation_id == second.generation_id == 2
    assert rejoined.leader == first.member_id and len(rejoined.members) == 2
    assert second.members == []


def test_offset_commit_rules(wire, topic):
    group = f"{topic}-simple"
    assert commit(wire, group, topic, {0: 5, 1: 7}) == {(topic, 0): 0, (topic, 1): 0}
    unknown = commit(wire, group, "no-such-topic", {0: 1})
    assert unknown == {("no-such-topic", 0): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}
    assert commit(wire, group, topic, {9: 1}) == {(topic, 9): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}
    too_big = commit(wire, group, topic, {0: 1}, metadata="x" * 5000)
    assert too_big == {(topic, 0): ErrorCode.OFFSET_METADATA_TOO_LARGE}
    missing = f"{topic}-never-joined"
    assert commit(wire, missing, topic, {0: 1}, generation=3, member_id="m", version=8) == \
        {(topic, 0): ErrorCode.ILLEGAL_GENERATION}
    assert commit(wire, missing, topic, {0: 1}, generation=3, member_id="m", version=9) == \
        {(topic, 0): ErrorCode.GROUP_ID_NOT_FOUND}

    managed = f"{topic}-managed"
    member = join_as_new_member(wire, managed).member_id
    assert commit(wire, managed, topic, {0: 1}, 1, member) == {(topic, 0): ErrorCode.REBALANCE_IN_PROGRESS}
    sync(wire, managed, member, 1, {member: b""})
    assert commit(wire, managed, topic, {0: 11}, 1, member) == {(topic, 0): ErrorCode.NONE}
    assert commit(wire, managed, topic, {0: 12}, 0, member) == {(topic, 0): ErrorCode.ILLEGAL_GENERATION}
    assert commit(wire, managed, topic, {0: 12}, 1, "other") == {(topic, 0): ErrorCode.UNKNOWN_MEMBER_ID}
    assert commit(wire, managed, topic, {0: 12}) == {(topic, 0): ErrorCode.UNKNOWN_MEMBER_ID}


def test_offset_fetch_versions_and_groups(wire, topic):
    commit(wire, "fetch-a", topic, {0: 3, 2: 9}, metadata="meta")
    commit(wire, "fetch-b", topic, {1: 4})
    v1 = wire.request("OffsetFetch", 1, group_id="fetch-a", topics=[
        OffsetFetchRequest.OffsetFetchRequestTopic(name=topic, partition_indexes=[0, 1])])
    assert [(p.partition_index, p.committed_offset, p.metadata) for p in v1.topics[0].partitions] == \
        [(0, 3, "meta"), (1, -1, "")]
    every = wire.request("OffsetFetch", 7, group_id="fetch-a", topics=None, require_stable=True)
    assert sorted((p.partition_index, p.committed_offset, p.committed_leader_epoch)
                  for p in every.topics[0].partitions) == [(0, 3, 0), (2, 9, 0)]
    batched = wire.request("OffsetFetch", 8, groups=[
        OffsetFetchRequest.OffsetFetchRequestGroup(group_id="fetch-a", topics=None),
        OffsetFetchRequest.OffsetFetchRequestGroup(group_id="fetch-b", topics=[
            OffsetFetchRequest.OffsetFetchRequestTopics(name=topic, partition_indexes=[1, 3])]),
        OffsetFetchRequest.OffsetFetchRequestGroup(group_id="fetch-none", topics=None),
    ])
    by_group = {g.group_id: {(t.name, p.partition_index): p.committed_offset
                             for t in g.topics for p in t.partitions} for g in batched.groups}
    assert by_group == {"fetch-a": {(topic, 0): 3, (topic, 2): 9},
                        "fetch-b": {(topic, 1): 4, (topic, 3): -1}, "fetch-none": {}}


def test_list_describe_delete_groups(wire, topic):
    empty, active = f"{topic}-empty", f"{topic}-active"
    commit(wire, empty, topic, {0: 1})
    member = join_as_new_member(wire, active, protocols=(("range", subscription(topic)),)).member_id
    sync(wire, active, member, 1, {member: b"x"})
    listed = {g.group_id: (g.group_state, g.protocol_type)
              for g in wire.request("ListGroups", 4, states_filter=[]).groups}
    assert listed[empty] == ("Empty", "") and listed[active] == ("Stable", "consumer")
    stable_only = {g.group_id for g in wire.request("ListGroups", 4, states_filter=["stable"]).groups}
    assert active in stable_only and empty not in stable_only
    assert not wire.request("ListGroups", 5, types_filter=["consumer"]).groups
    described = {g.group_id: g for g in wire.request(
        "DescribeGroups", 3, groups=[active, "never-seen"], include_authorized_operations=True).groups}
    assert described[active].protocol_data == "range"
    assert described[active].members[0].member_assignment == b"x"
    assert described[active].members[0].client_host == "/127.0.0.1"
    assert described["never-seen"].group_state == "Dead"
    assert described["never-seen"].error_code == ErrorCode.NONE

    offset_delete = wire.request("OffsetDelete", 0, group_id=active, topics=[
        OffsetDeleteRequest.OffsetDeleteRequestTopic(name=topic, partitions=[
            OffsetDeleteRequest.OffsetDeleteRequestPartition(partition_index=0)])])
    assert offset_delete.topics[0].partitions[0].error_code == ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC
    offset_delete = wire.request("OffsetDelete", 0, group_id=empty, topics=[
        OffsetDeleteRequest.OffsetDeleteRequestTopic(name=topic, partitions=[
            OffsetDeleteRequest.OffsetDeleteRequestPartition(partition_index=0)])])
    assert offset_delete.error_code == ErrorCode.NONE
    assert offset_delete.topics[0].partitions[0].error_code == ErrorCode.NONE
    assert wire.request("OffsetDelete", 0, group_id="never-seen", topics=[]).error_code == \
        ErrorCode.GROUP_ID_NOT_FOUND

    deleted = wire.request("DeleteGroups", 2, groups_names=[empty, active, "never-seen"])
    assert {r.group_id: r.error_code for r in deleted.results} == {
        empty: ErrorCode.NONE, active: ErrorCode.NON_EMPTY_GROUP,
        "never-seen": ErrorCode.GROUP_ID_NOT_FOUND}
    assert empty not in {g.group_id for g in wire.request("ListGroups", 0).groups}


def test_sync_group_v5_requires_protocol_type_and_name(wire):
    response = wire.request("SyncGroup", 5, group_id="g", generation_id=1, member_id="m",
                            protocol_type=None, protocol_name=None, assignments=[])
    assert response.error_code == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
