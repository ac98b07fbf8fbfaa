"""Share group APIs with exact requests: membership, sessions, offsets admin, group configs."""

from __future__ import annotations

import uuid

import pytest

from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.messages import (
    AlterShareGroupOffsetsRequest, DeleteShareGroupOffsetsRequest, DeleteTopicsRequest,
    DescribeConfigsRequest, DescribeShareGroupOffsetsRequest, IncrementalAlterConfigsRequest,
    JoinGroupRequest, MetadataRequest, ShareAcknowledgeRequest, ShareFetchRequest,
)
from kbroker.testing import running_broker
from tests.wire import WireClient

GROUP_RESOURCE = 32


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with running_broker(data_dir=tmp_path_factory.mktemp("share-wire")) as started:
        yield started


@pytest.fixture
def wire(broker):
    with WireClient(broker.bootstrap) as client:
        yield client


def make_topic(wire, name: str, partitions: int = 1, records: int = 0) -> uuid.UUID:
    from kbroker.protocol.messages import CreateTopicsRequest
    wire.request("CreateTopics", 5, timeout_ms=5000, topics=[CreateTopicsRequest.CreatableTopic(
        name=name, num_partitions=partitions, replication_factor=1)])
    metadata = wire.request("Metadata", 12, topics=[MetadataRequest.MetadataRequestTopic(name=name)])
    return metadata.topics[0].topic_id


def heartbeat(wire, group, member, epoch, topics=None):
    return wire.request("ShareGroupHeartbeat", 1, group_id=group, member_id=member, member_epoch=epoch,
                        rack_id=None, subscribed_topic_names=topics)


def assigned(response) -> dict:
    return {tp.topic_id: sorted(tp.partitions) for tp in response.assignment.topic_partitions}


def test_members_join_share_partitions_and_leave(wire, topic_name):
    one = make_topic(wire, topic_name + "-1")
    three = make_topic(wire, topic_name + "-3", partitions=3)
    group = "hb-" + topic_name
    a = heartbeat(wire, group, "member-a", 0, [topic_name + "-1", topic_name + "-3"])
    assert (a.error_code, a.member_id, a.member_epoch) == (ErrorCode.NONE, "member-a", 1)
    assert assigned(a) == {one: [0], three: [0, 1, 2]}
    b = heartbeat(wire, group, "member-b", 0, [topic_name + "-1", topic_name + "-3"])
    assert b.member_epoch == 2
    # 2 members, 4 partitions: each gets 2, the one-partition topic goes to one of them.
    a = heartbeat(wire, group, "member-a", 1)
    union = sorted((t, p) for r in (a, b) for t, ps in assigned(r).items() for p in ps)
    assert len(assigned(a).get(one, [])) + len(assigned(b).get(one, [])) == 1
    assert union == sorted([(one, 0), (three, 0), (three, 1), (three, 2)])
    assert heartbeat(wire, group, "member-a", 2).assignment is None  # unchanged: not sent again
    # More members than partitions: a one-partition topic is shared by every member.
    solo = "solo-" + topic_name
    for member in ("x", "y", "z"):
        heartbeat(wire, solo, member, 0, [topic_name + "-1"])
    for member, epoch in (("x", 1), ("y", 2), ("z", 3)):  # each with the epoch it last got
        answer = heartbeat(wire, solo, member, epoch)
        assert (answer.member_epoch, answer.assignment) == (3, None)  # had {one: [0]} since joining
    assert heartbeat(wire, solo, "x", 1).error_code == ErrorCode.FENCED_MEMBER_EPOCH
    assert heartbeat(wire, solo, "nobody", 1).error_code == ErrorCode.UNKNOWN_MEMBER_ID
    left = heartbeat(wire, solo, "x", -1)
    assert (left.error_code, left.member_epoch) == (ErrorCode.NONE, -1)
    for bad in (("", "m", 0, ["t"]), (solo, "", 0, ["t"]), (solo, "new", 0, None), (solo, "y", -2, None)):
        assert heartbeat(wire, *bad).error_code == ErrorCode.INVALID_REQUEST
    described = wire.request("ShareGroupDescribe", 1, group_ids=[solo, "missing-" + topic_name],
                             include_authorized_operations=False)
    found, missing = described.groups
    assert (found.group_state, found.assignor_name, sorted(m.member_id for m in found.members)) == \
        ("Stable", "simple", ["y", "z"])
    assert [(tp.topic_name, tp.partitions) for m in found.members for tp in m.assignment.topic_partitions] == \
        [(topic_name + "-1", [0])] * 2
    assert (missing.error_code, missing.error_message) == (ErrorCode.GROUP_ID_NOT_FOUND,
                                                           f"Group missing-{topic_name} not found.")


def test_group_types_do_not_mix(wire, topic_name):
    make_topic(wire, topic_name)
    share = "share-" + topic_name
    heartbeat(wire, share, "m", 0, [topic_name])
    joined = wire.request("JoinGroup", 5, group_id=share, session_timeout_ms=10000, rebalance_timeout_ms=10000,
                          member_id="", group_instance_id=None, protocol_type="consumer",
                          protocols=[JoinGroupRequest.JoinGroupRequestProtocol(name="range", metadata=b"")])
    assert joined.error_code == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    described = wire.request("DescribeGroups", 6, groups=[share], include_authorized_operations=False).groups[0]
    assert (described.error_code, described.error_message, described.group_state) == \
        (ErrorCode.GROUP_ID_NOT_FOUND, f"Group {share} is not a classic group.", "Dead")
    listed = wire.request("ListGroups", 5, states_filter=[], types_filter=["share"])
    assert [(g.group_id, g.group_type, g.group_state) for g in listed.groups if g.group_id == share] == \
        [(share, "share", "Stable")]
    classic = "classic-" + topic_name
    wire.request("JoinGroup", 5, group_id=classic, session_timeout_ms=10000, rebalance_timeout_ms=10000,
                 member_id="", group_instance_id=None, protocol_type="consumer",
                 protocols=[JoinGroupRequest.JoinGroupRequestProtocol(name="range", metadata=b"")])
    refused = heartbeat(wire, classic, "m", 0, [topic_name])
    assert (refused.error_code, refused.error_message) == (ErrorCode.GROUP_ID_NOT_FOUND,
                                                           f"Group {classic} is not a share group.")
    consumer_heartbeat = dict(member_epoch=0, instance_id=None, rack_id=None, rebalance_timeout_ms=10000,
                              subscribed_topic_names=[topic_name], server_assignor=None, topic_partitions=[])
    refused = wire.request("ConsumerGroupHeartbeat", 0, group_id=share, member_id="c", **consumer_heartbeat)
    assert (refused.error_code, refused.error_message) == (ErrorCode.GROUP_ID_NOT_FOUND,
                                                           f"Group {share} is not a consumer group.")
    consumer = "consumer-" + topic_name
    wire.request("ConsumerGroupHeartbeat", 0, group_id=consumer, member_id="c", **consumer_heartbeat)
    assert heartbeat(wire, consumer, "m", 0, [topic_name]).error_code == ErrorCode.GROUP_ID_NOT_FOUND
    assert wire.request("DeleteGroups", 2, groups_names=[share]).results[0].error_code == ErrorCode.NON_EMPTY_GROUP
    heartbeat(wire, share, "m", -1)
    assert wire.request("DeleteGroups", 2, groups_names=[share]).results[0].error_code == ErrorCode.NONE
    assert wire.request("ShareGroupDescribe", 1, group_ids=[share]).groups[0].error_code == \
        ErrorCode.GROUP_ID_NOT_FOUND


def share_fetch(wire, group, member, epoch, topic_id=None, acks=None, max_wait_ms=0):
    partitions = []
    if topic_id is not None:
        partitions = [ShareFetchRequest.FetchTopic(topic_id=topic_id, partitions=[
            ShareFetchRequest.FetchPartition(partition_index=0, acknowledgement_batches=acks or [])])]
    return wire.request("ShareFetch", 1, group_id=group, member_id=member, share_session_epoch=epoch,
                        max_wait_ms=max_wait_ms, min_bytes=1, max_bytes=1 << 20, max_records=100,
                        batch_size=100, topics=partitions, forgotten_topics_data=[])


def test_share_sessions_follow_their_epochs(broker, wire, topic_name):
    topic_id = make_topic(wire, topic_name)
    group = "sessions-" + topic_name
    assert share_fetch(wire, group, "m", 1, topic_id).error_code == ErrorCode.SHARE_SESSION_NOT_FOUND
    ack = [ShareFetchRequest.AcknowledgementBatch(first_offset=0, last_offset=0, acknowledge_types=[1])]
    assert share_fetch(wire, group, "m", 0, topic_id, acks=ack).error_code == ErrorCode.INVALID_REQUEST
    assert share_fetch(wire, group, "m", 0, topic_id).error_code == ErrorCode.NONE
    assert share_fetch(wire, group, "m", 5).error_code == ErrorCode.INVALID_SHARE_SESSION_EPOCH
    assert share_fetch(wire, group, "m", 1).error_code == ErrorCode.NONE
    acknowledged = wire.request("ShareAcknowledge", 1, group_id=group, member_id="m", share_session_epoch=0,
                                topics=[])
    assert acknowledged.error_code == ErrorCode.INVALID_SHARE_SESSION_EPOCH
    assert share_fetch(wire, group, "m", -1, topic_id).error_code == ErrorCode.INVALID_REQUEST
    assert share_fetch(wire, group, "m", -1).error_code == ErrorCode.NONE
    assert share_fetch(wire, group, "m", 2).error_code == ErrorCode.SHARE_SESSION_NOT_FOUND


def test_offsets_of_a_share_group_are_described_altered_and_deleted(broker, wire, topic_name):
    from confluent_kafka import Producer
    topic_id = make_topic(wire, topic_name)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for index in range(10):
        producer.produce(topic_name, value=b"%d" % index)
    producer.flush()
    group = "offsets-" + topic_name
    wire.request("IncrementalAlterConfigs", 1, validate_only=False, resources=[
        IncrementalAlterConfigsRequest.AlterConfigsResource(resource_type=GROUP_RESOURCE, resource_name=group, configs=[
            IncrementalAlterConfigsRequest.AlterableConfig(name="share.auto.offset.reset", config_operation=0,
                                                           value="earliest")])])
    heartbeat(wire, group, "m", 0, [topic_name])
    fetched = share_fetch(wire, group, "m", 0, topic_id)
    acquired = fetched.responses[0].partitions[0].acquired_records
    assert [(a.first_offset, a.last_offset, a.delivery_count) for a in acquired] == [(0, 9, 1)]
    ack = wire.request("ShareAcknowledge", 1, group_id=group, member_id="m", share_session_epoch=1, topics=[
        ShareAcknowledgeRequest.AcknowledgeTopic(topic_id=topic_id, partitions=[
            ShareAcknowledgeRequest.AcknowledgePartition(partition_index=0, acknowledgement_batches=[
                ShareAcknowledgeRequest.AcknowledgementBatch(first_offset=0, last_offset=3, acknowledge_types=[1]),
                ShareAcknowledgeRequest.AcknowledgementBatch(first_offset=20, last_offset=20, acknowledge_types=[1]),
            ])])])
    assert ack.responses[0].partitions[0].error_code == ErrorCode.INVALID_REQUEST  # 20 was never acquired
    ack = wire.request("ShareAcknowledge", 1, group_id=group, member_id="m", share_session_epoch=2, topics=[
        ShareAcknowledgeRequest.AcknowledgeTopic(topic_id=topic_id, partitions=[
            ShareAcknowledgeRequest.AcknowledgePartition(partition_index=0, acknowledgement_batches=[
                ShareAcknowledgeRequest.AcknowledgementBatch(first_offset=0, last_offset=3, acknowledge_types=[1])])])])
    assert ack.responses[0].partitions[0].error_code == ErrorCode.NONE

    def describe():
        response = wire.request("DescribeShareGroupOffsets", 1, groups=[
            DescribeShareGroupOffsetsRequest.DescribeShareGroupOffsetsRequestGroup(group_id=group, topics=None)])
        return [(t.topic_name, p.partition_index, p.start_offset, p.lag)
                for t in response.groups[0].topics for p in t.partitions]

    assert describe() == [(topic_name, 0, 4, 6)]
    renewed = wire.request("ShareAcknowledge", 2, group_id=group, member_id="m", share_session_epoch=3,
                           is_renew_ack=True, topics=[ShareAcknowledgeRequest.AcknowledgeTopic(
                               topic_id=topic_id, partitions=[ShareAcknowledgeRequest.AcknowledgePartition(
                                   partition_index=0, acknowledgement_batches=[
                                       ShareAcknowledgeRequest.AcknowledgementBatch(
                                           first_offset=4, last_offset=9, acknowledge_types=[4])])])])
    assert (renewed.responses[0].partitions[0].error_code, renewed.acquisition_lock_timeout_ms) == \
        (ErrorCode.NONE, 30000)
    assert describe() == [(topic_name, 0, 4, 6)]  # renewed records stay acquired
    alter = wire.request("AlterShareGroupOffsets", 0, group_id=group, topics=[
        AlterShareGroupOffsetsRequest.AlterShareGroupOffsetsRequestTopic(topic_name=topic_name, partitions=[
            AlterShareGroupOffsetsRequest.AlterShareGroupOffsetsRequestPartition(partition_index=0, start_offset=8)])])
    assert alter.error_code == ErrorCode.NON_EMPTY_GROUP
    heartbeat(wire, group, "m", -1)
    alter = wire.request("AlterShareGroupOffsets", 0, group_id=group, topics=[
        AlterShareGroupOffsetsRequest.AlterShareGroupOffsetsRequestTopic(topic_name=topic_name, partitions=[
            AlterShareGroupOffsetsRequest.AlterShareGroupOffsetsRequestPartition(partition_index=0, start_offset=8)])])
    assert alter.responses[0].partitions[0].error_code == ErrorCode.NONE
    assert describe() == [(topic_name, 0, 8, 2)]
    other = make_topic(wire, topic_name + "-gone")
    heartbeat(wire, group, "n", 0, [topic_name + "-gone"])
    share_fetch(wire, group, "n", 0, other)
    heartbeat(wire, group, "n", -1)
    assert sorted(entry[0] for entry in describe()) == [topic_name, topic_name + "-gone"]
    wire.request("DeleteTopics", 6, topics=[DeleteTopicsRequest.DeleteTopicState(name=topic_name + "-gone")],
                 timeout_ms=5000)
    assert describe() == [(topic_name, 0, 8, 2)]  # a deleted topic's share state goes with it
    deleted = wire.request("DeleteShareGroupOffsets", 0, group_id=group, topics=[
        DeleteShareGroupOffsetsRequest.DeleteShareGroupOffsetsRequestTopic(topic_name=topic_name),
        DeleteShareGroupOffsetsRequest.DeleteShareGroupOffsetsRequestTopic(topic_name="no-such-" + topic_name)])
    assert [t.error_code for t in deleted.responses] == [ErrorCode.NONE, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION]
    assert describe() == []


def test_group_configs_are_checked_against_the_broker_bounds(wire):
    def alter(name, value):
        response = wire.request("IncrementalAlterConfigs", 1, validate_only=False, resources=[
            IncrementalAlterConfigsRequest.AlterConfigsResource(
                resource_type=GROUP_RESOURCE, resource_name="configured", configs=[
                    IncrementalAlterConfigsRequest.AlterableConfig(name=name, config_operation=0, value=value)])])
        return response.responses[0].error_code, response.responses[0].error_message

    assert alter("share.record.lock.duration.ms", "5000")[0] == ErrorCode.INVALID_CONFIG  # min 15000
    assert alter("share.auto.offset.reset", "sometimes")[0] == ErrorCode.INVALID_CONFIG
    assert alter("no.such.config", "1") == (ErrorCode.INVALID_CONFIG, "Unknown group config name: no.such.config")
    assert alter("share.auto.offset.reset", "by_duration:PT1H")[0] == ErrorCode.NONE
    assert alter("share.record.lock.duration.ms", "20000")[0] == ErrorCode.NONE
    described = wire.request("DescribeConfigs", 4, include_synonyms=True, include_documentation=False, resources=[
        DescribeConfigsRequest.DescribeConfigsResource(resource_type=GROUP_RESOURCE, resource_name="configured",
                                                       configuration_keys=None)])
    values = {c.name: (c.value, c.config_source) for c in described.results[0].configs}
    assert values["share.record.lock.duration.ms"] == ("20000", 8)  # GROUP_CONFIG
    assert values["share.isolation.level"] == ("read_uncommitted", 5)  # DEFAULT_CONFIG
    listed = wire.request("ListConfigResources", 1, resource_types=[GROUP_RESOURCE])
    assert ("configured", GROUP_RESOURCE) in [(r.resource_name, r.resource_type) for r in listed.config_resources]


def test_membership_survives_a_broker_crash(tmp_path, topic_name):
    with running_broker(data_dir=tmp_path) as broker:
        with WireClient(broker.bootstrap) as wire:
            topic_id = make_topic(wire, topic_name, partitions=2)
            group = "durable-" + topic_name
            heartbeat(wire, group, "a", 0, [topic_name])
            heartbeat(wire, group, "b", 0, [topic_name])
            heartbeat(wire, group, "c", 0, [topic_name])
            assert heartbeat(wire, group, "c", 3, None).error_code == ErrorCode.NONE
            heartbeat(wire, group, "c", -1)
        port = broker.port
        broker.kill()
        broker.start(port)
        with WireClient(broker.bootstrap) as wire:
            described = wire.request("ShareGroupDescribe", 1, group_ids=[group]).groups[0]
            assert (described.group_epoch, described.assignment_epoch) == (4, 4)
            members = {m.member_id: (m.member_epoch, m.subscribed_topic_names,
                                     [(tp.topic_id, tp.partitions) for tp in m.assignment.topic_partitions])
                       for m in described.members}
            assert members == {"a": (1, [topic_name], [(topic_id, [0])]),
                               "b": (2, [topic_name], [(topic_id, [1])])}
            answer = heartbeat(wire, group, "a", 1)  # the member goes on with the epoch it had
            assert (answer.error_code, answer.member_epoch) == (ErrorCode.NONE, 4)
            heartbeat(wire, group, "a", -1)
            heartbeat(wire, group, "b", -1)
            assert wire.request("DeleteGroups", 2, groups_names=[group]).results[0].error_code == ErrorCode.NONE
        broker.kill()
        broker.start(port)
        with WireClient(broker.bootstrap) as wire:
            assert wire.request("ShareGroupDescribe", 1, group_ids=[group]).groups[0].error_code == \
                ErrorCode.GROUP_ID_NOT_FOUND


def test_auto_offset_reset_decides_where_a_new_group_starts(broker, wire, topic_name):
    from confluent_kafka import Producer
    topic_id = make_topic(wire, topic_name)
    producer = Producer({"bootstrap.servers": broker.bootstrap})

    def produce(count: int) -> None:
        for _ in range(count):
            producer.produce(topic_name, value=b"v")
        producer.flush()

    def acquired(group: str, epoch: int) -> list:
        response = share_fetch(wire, group, "m", epoch, topic_id if epoch == 0 else None)
        return [(a.first_offset, a.last_offset) for t in response.responses for p in t.partitions
                for a in p.acquired_records]

    produce(3)
    recent = "recent-" + topic_name
    wire.request("IncrementalAlterConfigs", 1, validate_only=False, resources=[
        IncrementalAlterConfigsRequest.AlterConfigsResource(
            resource_type=GROUP_RESOURCE, resource_name=recent, configs=[
            IncrementalAlterConfigsRequest.AlterableConfig(name="share.auto.offset.reset", config_operation=0,
                                                           value="by_duration:PT1H")])])
    assert acquired(recent, 0) == [(0, 2)]  # every record is younger than an hour
    assert acquired("latest-" + topic_name, 0) == []  # the default, latest: only what comes next
    produce(1)
    assert acquired("latest-" + topic_name, 1) == [(3, 3)]
