"""KIP-848 APIs over the wire with exact requests: versions, errors and the other group APIs'
view of consumer groups."""

from __future__ import annotations

import pytest

from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.messages import JoinGroupRequest, MetadataRequest, OffsetFetchRequest
from kbroker.testing import running_broker
from tests.wire import WireClient


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with running_broker("--num-partitions", "2", data_dir=tmp_path_factory.mktemp("kip848-wire")) as started:
        yield started


@pytest.fixture
def wire(broker):
    with WireClient(broker.bootstrap) as client:
        yield client


def heartbeat(wire, version: int, group: str, member_id: str, epoch: int, **fields):
    return wire.request("ConsumerGroupHeartbeat", version, group_id=group, member_id=member_id,
                        member_epoch=epoch, **fields)


def test_join_describe_commit_fetch_leave(wire, topic_name):
    wire.request("Metadata", 12, topics=[MetadataRequest.MetadataRequestTopic(name=topic_name)],
                 allow_auto_topic_creation=True)
    group = f"{topic_name}-g"
    joined = heartbeat(wire, 0, group, "", 0, rebalance_timeout_ms=30000,
                       subscribed_topic_names=[topic_name], topic_partitions=[])
    member = joined.member_id
    assert (joined.error_code, joined.member_epoch, joined.heartbeat_interval_ms) == (ErrorCode.NONE, 1, 5000)
    assert len(member) == 36  # v0: the coordinator names the member
    [owned] = joined.assignment.topic_partitions
    assert sorted(owned.partitions) == [0, 1]
    described = wire.request("ConsumerGroupDescribe", 1, group_ids=[group, "nope"]).groups
    assert (described[0].group_state, described[0].group_epoch, described[0].assignor_name) == (
        "Stable", 1, "uniform")
    assert described[0].members[0].assignment.topic_partitions[0].topic_name == topic_name
    assert described[0].members[0].member_type == 1
    assert (described[1].error_code, described[1].error_message) == (
        ErrorCode.GROUP_ID_NOT_FOUND, "Group nope not found.")
    listed = wire.request("ListGroups", 5, types_filter=["consumer"]).groups
    assert [(g.group_id, g.group_state, g.group_type, g.protocol_type) for g in listed
            if g.group_id == group] == [(group, "Stable", "consumer", "consumer")]
    classic_view = wire.request("DescribeGroups", 5, groups=[group]).groups[0]
    assert (classic_view.error_code, classic_view.group_state) == (ErrorCode.NONE, "Dead")
    fetched = wire.request("OffsetFetch", 9, groups=[OffsetFetchRequest.OffsetFetchRequestGroup(
        group_id=group, member_id=member, member_epoch=0, topics=None)]).groups[0]
    assert fetched.error_code == ErrorCode.STALE_MEMBER_EPOCH
    left = heartbeat(wire, 0, group, member, -1)
    assert (left.error_code, left.member_id, left.member_epoch) == (ErrorCode.NONE, member, -1)
    assert wire.request("DeleteGroups", 2, groups_names=[group]).results[0].error_code == ErrorCode.NONE


@pytest.mark.parametrize("version, fields, error, message", [
    (1, {"member_id": "", "member_epoch": 0}, ErrorCode.INVALID_REQUEST, "MemberId can't be empty."),
    (1, {"member_epoch": 0, "rebalance_timeout_ms": 1000, "topic_partitions": []},
     ErrorCode.INVALID_REQUEST,
     "Either SubscribedTopicNames or SubscribedTopicRegex must be non-null when (re-)joining."),
    (1, {"member_epoch": 0, "rebalance_timeout_ms": 1000, "topic_partitions": [],
         "subscribed_topic_regex": "(("}, ErrorCode.INVALID_REGULAR_EXPRESSION, None),
    (1, {"member_epoch": 3}, ErrorCode.GROUP_ID_NOT_FOUND, "Consumer group wire-g not found."),
    (0, {"member_epoch": 0, "rebalance_timeout_ms": 1000, "topic_partitions": [],
         "subscribed_topic_names": ["t"], "server_assignor": "sticky"}, ErrorCode.UNSUPPORTED_ASSIGNOR,
     "ServerAssignor sticky is not supported. Supported assignors: uniform, range."),
])
def test_invalid_heartbeats(wire, version, fields, error, message):
    request = {"group_id": "wire-g", "member_id": "m-1", **fields}
    answer = wire.request("ConsumerGroupHeartbeat", version, **request)
    assert answer.error_code == error
    if message is not None:
        assert answer.error_message == message
    assert answer.assignment is None


def test_classic_join_into_a_consumer_group_is_answered(wire, topic_name):
    """A classic member with a protocol the group cannot use is refused, never left waiting."""
    group = f"{topic_name}-mixed"
    heartbeat(wire, 1, group, "m-1", 0, rebalance_timeout_ms=30000, subscribed_topic_names=[topic_name],
              topic_partitions=[])
    joined = wire.request("JoinGroup", 9, group_id=group, session_timeout_ms=10000,
                          rebalance_timeout_ms=10000, member_id="", protocol_type="connect",
                          protocols=[JoinGroupRequest.JoinGroupRequestProtocol(name="x", metadata=b"")])
    assert joined.error_code == ErrorCode.INCONSISTENT_GROUP_PROTOCOL


def test_a_share_group_id_is_not_a_consumer_group(wire, topic_name):
    group = f"{topic_name}-share"
    joined = wire.request("ShareGroupHeartbeat", 1, group_id=group, member_id="s-1", member_epoch=0,
                          subscribed_topic_names=[topic_name])
    assert joined.error_code == ErrorCode.NONE
    refused = heartbeat(wire, 1, group, "m-1", 0, rebalance_timeout_ms=30000,
                        subscribed_topic_names=[topic_name], topic_partitions=[])
    assert (refused.error_code, refused.error_message) == (
        ErrorCode.GROUP_ID_NOT_FOUND, f"Group {group} is not a consumer group.")


def test_a_groups_own_session_and_heartbeat_settings(wire, topic_name):
    from kbroker.protocol.messages import IncrementalAlterConfigsRequest as Alter

    group = f"{topic_name}-configured"
    altered = wire.request("IncrementalAlterConfigs", 1, resources=[Alter.AlterConfigsResource(
        resource_type=32, resource_name=group, configs=[
            Alter.AlterableConfig(name="consumer.heartbeat.interval.ms", config_operation=0, value="6000")])])
    assert altered.responses[0].error_code == ErrorCode.NONE
    joined = heartbeat(wire, 1, group, "m-1", 0, rebalance_timeout_ms=30000,
                       subscribed_topic_names=[topic_name], topic_partitions=[])
    assert (joined.error_code, joined.heartbeat_interval_ms) == (ErrorCode.NONE, 6000)
