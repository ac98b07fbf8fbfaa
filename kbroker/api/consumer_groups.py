"""KIP-848 consumer group APIs: ConsumerGroupHeartbeat and ConsumerGroupDescribe.

The decisions are the consumer group state machine's (kbroker/groups/consumer.py); this module
maps the request and response versions onto it. Assignments travel by topic id; the topics the
machine sees are the broker's own (`broker.logs.topics`).
"""

from __future__ import annotations

from kbroker.api.authorization import allowed_group
from kbroker.api.common import GROUP_OPERATIONS, OPERATIONS_NOT_REQUESTED
from kbroker.api.context import RequestContext
from kbroker.api.registry import serves
from kbroker.groups.consumer_model import Heartbeat
from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.messages import (
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse,
)
from kbroker.security.authorizer import Operation

MEMBER_TYPE_CLASSIC, MEMBER_TYPE_CONSUMER = 0, 1  # ConsumerGroupDescribe v1 MemberType


@serves("ConsumerGroupHeartbeat", 0, 1)
async def handle_consumer_group_heartbeat(
        ctx: RequestContext,
        request: ConsumerGroupHeartbeatRequest) -> ConsumerGroupHeartbeatResponse:
    if not allowed_group(ctx, Operation.READ, request.group_id):
        return ConsumerGroupHeartbeatResponse(
            throttle_time_ms=0, error_code=ErrorCode.GROUP_AUTHORIZATION_FAILED, member_epoch=0,
            error_message=None)
    if ctx.broker.share.is_share_group(request.group_id):  # Kafka's group types never mix
        return ConsumerGroupHeartbeatResponse(
            throttle_time_ms=0, error_code=ErrorCode.GROUP_ID_NOT_FOUND, member_epoch=0,
            error_message=f"Group {request.group_id} is not a consumer group.")
    owned = None if request.topic_partitions is None else {
        tp.topic_id: frozenset(tp.partitions) for tp in request.topic_partitions}
    result = await ctx.broker.groups.consumer.heartbeat(Heartbeat(
        group_id=request.group_id, member_id=request.member_id, member_epoch=request.member_epoch,
        instance_id=request.instance_id, rack_id=request.rack_id,
        rebalance_timeout_ms=request.rebalance_timeout_ms,
        topic_names=None if request.subscribed_topic_names is None
        else list(request.subscribed_topic_names),
        topic_regex=request.subscribed_topic_regex if ctx.api_version >= 1 else None,
        server_assignor=request.server_assignor, owned=owned, client_id=ctx.client_id,
        client_host="/" + ctx.session.peer_host, version=ctx.api_version,
    ), ctx.broker.logs.topics)
    R = ConsumerGroupHeartbeatResponse
    assignment = None if result.assignment is None else R.Assignment(topic_partitions=[
        R.TopicPartitions(topic_id=topic_id, partitions=sorted(parts))
        for topic_id, parts in sorted(result.assignment.items())])
    return R(throttle_time_ms=0, error_code=result.error, error_message=result.message,
             member_id=result.member_id, member_epoch=result.member_epoch,
             heartbeat_interval_ms=result.heartbeat_interval_ms, assignment=assignment)


def _described_assignment(assignment, names_by_id):
    D = ConsumerGroupDescribeResponse
    return D.Assignment(topic_partitions=[
        D.TopicPartitions(topic_id=topic_id, topic_name=names_by_id.get(topic_id, ""),
                          partitions=sorted(parts))
        for topic_id, parts in sorted(assignment.items())])


@serves("ConsumerGroupDescribe", 0, 1)
async def handle_consumer_group_describe(
        ctx: RequestContext,
        request: ConsumerGroupDescribeRequest) -> ConsumerGroupDescribeResponse:
    """Groups that are not consumer groups (or unknown) get GROUP_ID_NOT_FOUND, as in Kafka."""
    D = ConsumerGroupDescribeResponse
    coordinator = ctx.broker.groups.consumer
    operations = GROUP_OPERATIONS if request.include_authorized_operations \
        else OPERATIONS_NOT_REQUESTED
    names_by_id = {info.topic_id: name for name, info in ctx.broker.logs.topics.items()}
    default_assignor = coordinator.machine.settings.assignors[0]
    described = []
    for group_id in request.group_ids:
        if not allowed_group(ctx, Operation.DESCRIBE, group_id):
            described.append(D.DescribedGroup(
                group_id=group_id, error_code=ErrorCode.GROUP_AUTHORIZATION_FAILED,
                error_message=None, authorized_operations=OPERATIONS_NOT_REQUESTED))
            continue
        group = coordinator.group(group_id)
        if group is None:
            other = ctx.broker.groups.group(group_id) is not None or ctx.broker.share.is_share_group(group_id)
            message = f"Group {group_id} is not a consumer group." if other \
                else f"Group {group_id} not found."
            described.append(D.DescribedGroup(group_id=group_id, error_code=ErrorCode.GROUP_ID_NOT_FOUND,
                                              error_message=message, authorized_operations=operations))
            continue
        described.append(D.DescribedGroup(
            error_code=ErrorCode.NONE, group_id=group_id, group_state=group.state.value,
            group_epoch=group.group_epoch, assignment_epoch=group.assignment_epoch,
            assignor_name=group.preferred_assignor() or default_assignor,
            authorized_operations=operations,
            members=[D.Member(
                member_id=m.member_id, instance_id=m.instance_id, rack_id=m.rack_id,
                member_epoch=m.member_epoch, client_id=m.client_id, client_host=m.client_host,
                subscribed_topic_names=list(m.topic_names), subscribed_topic_regex=m.topic_regex,
                assignment=_described_assignment(m.assigned, names_by_id),
                target_assignment=_described_assignment(group.target.get(m.member_id, {}),
                                                        names_by_id),
                member_type=MEMBER_TYPE_CONSUMER if m.classic is None else MEMBER_TYPE_CLASSIC,
            ) for m in group.members.values()],
        ))
    return D(throttle_time_ms=0, groups=described)
