"""Share group administration: ShareGroupDescribe and the share group offsets APIs
(DescribeShareGroupOffsets, AlterShareGroupOffsets, DeleteShareGroupOffsets).

Rules (Kafka's GroupCoordinatorService and GroupMetadataManager):
- A group id that is not a share group is GROUP_ID_NOT_FOUND: "Group X not found." when no group
  has it, "Group X is not a share group." when another type does.
- A share group's offset of a partition is its share-partition start offset; a partition the
  group holds no state for has -1, and so has its lag (v1). The lag is the records from the
  start offset to the high watermark that are not yet acknowledged or archived.
- Altering or deleting offsets needs an empty group (NON_EMPTY_GROUP otherwise); altering may
  create the group's state; an unknown topic is UNKNOWN_TOPIC_OR_PARTITION for that topic.
- Authorization (Kafka's KafkaApis): ShareGroupDescribe needs GROUP DESCRIBE, and a group whose
  members are assigned a topic the caller may not DESCRIBE is answered TOPIC_AUTHORIZATION_FAILED
  without members; DescribeShareGroupOffsets needs GROUP DESCRIBE and TOPIC DESCRIBE (a named
  topic: TOPIC_AUTHORIZATION_FAILED per partition, listed after the others; all topics: the
  undescribable ones left out); AlterShareGroupOffsets GROUP READ and TOPIC READ,
  DeleteShareGroupOffsets GROUP DELETE and TOPIC READ (TOPIC_AUTHORIZATION_FAILED per topic).
"""

from __future__ import annotations

from typing import TypeVar

from kbroker.api.admin import DEFAULT_MESSAGES, UNKNOWN_TOPIC_MESSAGE, ZERO_UUID
from kbroker.api.authorization import allowed_group, allowed_topic
from kbroker.api.common import GROUP_OPERATIONS, OPERATIONS_NOT_REQUESTED
from kbroker.api.context import RequestContext
from kbroker.api.registry import serves
from kbroker.log import LEADER_EPOCH
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.messages import (
    AlterShareGroupOffsetsRequest, AlterShareGroupOffsetsResponse, DeleteShareGroupOffsetsRequest,
    DeleteShareGroupOffsetsResponse, DescribeShareGroupOffsetsRequest,
    DescribeShareGroupOffsetsResponse, ShareGroupDescribeRequest, ShareGroupDescribeResponse,
)
from kbroker.security.authorizer import Operation
from kbroker.share.coordinator import PartitionKey
from kbroker.share.group import ASSIGNOR_NAME
from kbroker.share.partition import ACKNOWLEDGED, ARCHIVED

NO_OFFSET = -1
TOPIC_DENIED_MESSAGE = DEFAULT_MESSAGES[ErrorCode.TOPIC_AUTHORIZATION_FAILED]
_OffsetsResponse = TypeVar("_OffsetsResponse", AlterShareGroupOffsetsResponse,
                           DeleteShareGroupOffsetsResponse)
UNDESCRIBABLE_GROUP_MESSAGE = ("The group has described topic(s) that the client is not authorized "
                               "to describe.")


def _share_group(broker, group_id: str):
    """The share group, or KafkaError(GROUP_ID_NOT_FOUND) as Kafka words it."""
    group = broker.share.groups.get(group_id)
    if group is not None:
        return group
    if broker.share.groups.other_group_type(group_id):
        raise KafkaError(ErrorCode.GROUP_ID_NOT_FOUND, f"Group {group_id} is not a share group.")
    raise KafkaError(ErrorCode.GROUP_ID_NOT_FOUND, f"Group {group_id} not found.")


@serves("ShareGroupDescribe", 1, 1)
async def handle_share_group_describe(
        ctx: RequestContext, request: ShareGroupDescribeRequest) -> ShareGroupDescribeResponse:
    R = ShareGroupDescribeResponse
    broker = ctx.broker
    operations = GROUP_OPERATIONS if request.include_authorized_operations else OPERATIONS_NOT_REQUESTED
    described = []
    for group_id in request.group_ids:
        try:
            if not allowed_group(ctx, Operation.DESCRIBE, group_id):
                raise KafkaError(ErrorCode.GROUP_AUTHORIZATION_FAILED, None)
            group = _share_group(broker, group_id)
            if broker.acls is not None and not all(
                    allowed_topic(ctx, Operation.DESCRIBE, _topic_name(broker, topic_id))
                    for member in group.members.values() for topic_id in member.assignment):
                raise KafkaError(ErrorCode.TOPIC_AUTHORIZATION_FAILED, UNDESCRIBABLE_GROUP_MESSAGE)
        except KafkaError as exc:
            described.append(R.DescribedGroup(error_code=exc.code, error_message=exc.message,
                                              group_id=group_id, authorized_operations=operations))
            continue
        described.append(R.DescribedGroup(
            error_code=ErrorCode.NONE, error_message=None, group_id=group_id, group_state=group.state,
            group_epoch=group.epoch, assignment_epoch=group.assignment_epoch, assignor_name=ASSIGNOR_NAME,
            members=[R.Member(
                member_id=member.member_id, rack_id=member.rack_id, member_epoch=member.epoch,
                client_id=member.client_id, client_host=member.client_host,
                subscribed_topic_names=sorted(member.subscribed),
                assignment=R.Assignment(topic_partitions=[
                    R.TopicPartitions(topic_id=topic_id, topic_name=_topic_name(broker, topic_id),
                                      partitions=sorted(partitions))
                    for topic_id, partitions in sorted(member.assignment.items())]))
                for member in group.members.values()],
            authorized_operations=operations))
    return R(throttle_time_ms=0, groups=described)


def _topic_name(broker, topic_id) -> str:
    info = broker.logs.topic_by_id(topic_id)
    return info.name if info is not None else ""


def _lag(broker, sp, topic: str, partition: int) -> int:
    partition_log = broker.logs.partition(topic, partition)
    if partition_log is None:
        return NO_OFFSET
    done = sum(run.last - run.first + 1 for run in sp.runs if run.state in (ACKNOWLEDGED, ARCHIVED))
    return max(partition_log.high_watermark - sp.start_offset - done, 0)


def _describe_offsets(ctx: RequestContext, group_id: str, topics):
    R = DescribeShareGroupOffsetsResponse
    broker = ctx.broker
    state = broker.share.group_partitions(group_id)
    denied: dict[str, list[int]] = {}
    if topics is None:  # every partition the group holds state for (that the caller may describe)
        wanted: dict[str, list[int]] = {}
        for key in sorted(state, key=lambda k: k.partition):
            name = _topic_name(broker, key.topic_id)
            if name and allowed_topic(ctx, Operation.DESCRIBE, name):
                wanted.setdefault(name, []).append(key.partition)
    else:
        wanted = {}
        for topic in topics:
            allowed = allowed_topic(ctx, Operation.DESCRIBE, topic.topic_name)
            (wanted if allowed else denied)[topic.topic_name] = list(topic.partitions)
    answered = []
    for name, partitions in wanted.items():
        info = broker.logs.topics.get(name)
        answer = R.DescribeShareGroupOffsetsResponseTopic(
            topic_name=name, topic_id=info.topic_id if info else ZERO_UUID, partitions=[])
        for partition in partitions:
            entry = R.DescribeShareGroupOffsetsResponsePartition(
                partition_index=partition, start_offset=NO_OFFSET, leader_epoch=LEADER_EPOCH, lag=NO_OFFSET,
                error_code=ErrorCode.NONE, error_message=None)
            if info is None or not 0 <= partition < info.partitions:
                entry.error_code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                entry.error_message = UNKNOWN_TOPIC_MESSAGE
            else:
                sp = state.get(PartitionKey(group_id, info.topic_id, partition))
                if sp is not None:
                    entry.start_offset = sp.start_offset
                    entry.lag = _lag(broker, sp, name, partition)
            answer.partitions.append(entry)
        answered.append(answer)
    answered.extend(R.DescribeShareGroupOffsetsResponseTopic(
        topic_name=name, topic_id=ZERO_UUID, partitions=[R.DescribeShareGroupOffsetsResponsePartition(
            partition_index=partition, start_offset=NO_OFFSET, leader_epoch=LEADER_EPOCH, lag=NO_OFFSET,
            error_code=ErrorCode.TOPIC_AUTHORIZATION_FAILED, error_message=TOPIC_DENIED_MESSAGE)
            for partition in partitions])
        for name, partitions in denied.items())
    return answered


@serves("DescribeShareGroupOffsets", 0, 1)
async def handle_describe_share_group_offsets(
        ctx: RequestContext,
        request: DescribeShareGroupOffsetsRequest) -> DescribeShareGroupOffsetsResponse:
    R = DescribeShareGroupOffsetsResponse
    groups = []
    for group in request.groups:
        try:
            if not allowed_group(ctx, Operation.DESCRIBE, group.group_id):
                raise KafkaError(ErrorCode.GROUP_AUTHORIZATION_FAILED, None)
            _share_group(ctx.broker, group.group_id)
        except KafkaError as exc:
            groups.append(R.DescribeShareGroupOffsetsResponseGroup(
                group_id=group.group_id, topics=[], error_code=exc.code, error_message=exc.message))
            continue
        groups.append(R.DescribeShareGroupOffsetsResponseGroup(
            group_id=group.group_id, topics=_describe_offsets(ctx, group.group_id, group.topics),
            error_code=ErrorCode.NONE, error_message=None))
    return R(throttle_time_ms=0, groups=groups)


def _may_change_offsets(ctx: RequestContext, group_id: str, operation: Operation,
                        create: bool) -> None:
    """Offsets may change only with the group operation (READ to alter, DELETE to delete) and
    only in an empty share group (or a new one, when altering); raises KafkaError."""
    if not allowed_group(ctx, operation, group_id):
        raise KafkaError(ErrorCode.GROUP_AUTHORIZATION_FAILED, None)
    broker = ctx.broker
    group = broker.share.groups.get(group_id)
    if group is None:
        if create and not broker.share.groups.other_group_type(group_id):
            return
        _share_group(broker, group_id)
    elif group.members:
        raise KafkaError(ErrorCode.NON_EMPTY_GROUP, "The group is not empty.")


def _failed(response: type[_OffsetsResponse], exc: KafkaError) -> _OffsetsResponse:
    """The answer of an offsets request that failed as a whole (both APIs answer alike)."""
    return response(throttle_time_ms=0, error_code=exc.code, error_message=exc.message, responses=[])


@serves("AlterShareGroupOffsets", 0, 0)
async def handle_alter_share_group_offsets(
        ctx: RequestContext,
        request: AlterShareGroupOffsetsRequest) -> AlterShareGroupOffsetsResponse:
    R = AlterShareGroupOffsetsResponse
    broker = ctx.broker
    try:
        _may_change_offsets(ctx, request.group_id, Operation.READ, create=True)
    except KafkaError as exc:
        return _failed(R, exc)
    offsets = {}
    answers = []
    for topic in request.topics:
        info = broker.logs.topics.get(topic.topic_name)
        answer = R.AlterShareGroupOffsetsResponseTopic(topic_name=topic.topic_name, partitions=[])
        if info is not None:
            answer.topic_id = info.topic_id
        readable = allowed_topic(ctx, Operation.READ, topic.topic_name)
        for p in topic.partitions:
            error, message = ErrorCode.NONE, None
            if not readable:
                error, message = ErrorCode.TOPIC_AUTHORIZATION_FAILED, TOPIC_DENIED_MESSAGE
            elif info is None or not 0 <= p.partition_index < info.partitions:
                error, message = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, UNKNOWN_TOPIC_MESSAGE
            else:
                offsets[(info.topic_id, p.partition_index)] = p.start_offset
            answer.partitions.append(R.AlterShareGroupOffsetsResponsePartition(
                partition_index=p.partition_index, error_code=error, error_message=message))
        answers.append(answer)
    if offsets:
        try:
            broker.share.reset_partitions(request.group_id, offsets)
        except KafkaError as exc:
            return _failed(R, exc)
        await broker.share.topic.flush()
    return R(throttle_time_ms=0, error_code=ErrorCode.NONE, error_message=None, responses=answers)


@serves("DeleteShareGroupOffsets", 0, 0)
async def handle_delete_share_group_offsets(
        ctx: RequestContext,
        request: DeleteShareGroupOffsetsRequest) -> DeleteShareGroupOffsetsResponse:
    R = DeleteShareGroupOffsetsResponse
    broker = ctx.broker
    try:
        _may_change_offsets(ctx, request.group_id, Operation.DELETE, create=False)
    except KafkaError as exc:
        return _failed(R, exc)
    state = broker.share.group_partitions(request.group_id)
    answers = []
    forgotten = []
    for topic in request.topics:
        info = broker.logs.topics.get(topic.topic_name)
        answer = R.DeleteShareGroupOffsetsResponseTopic(topic_name=topic.topic_name,
                                                        error_code=ErrorCode.NONE, error_message=None)
        if not allowed_topic(ctx, Operation.READ, topic.topic_name):
            answer.error_code = ErrorCode.TOPIC_AUTHORIZATION_FAILED
            answer.error_message = TOPIC_DENIED_MESSAGE
        elif info is None:
            answer.error_code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            answer.error_message = UNKNOWN_TOPIC_MESSAGE
        else:
            answer.topic_id = info.topic_id
            forgotten += [key for key in state if key.topic_id == info.topic_id]
        answers.append(answer)
    try:
        broker.share.forget_partitions(forgotten)
    except KafkaError as exc:
        return _failed(R, exc)
    await broker.share.topic.flush()
    return R(throttle_time_ms=0, error_code=ErrorCode.NONE, error_message=None, responses=answers)
