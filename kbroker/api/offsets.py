"""ListOffsets and OffsetForLeaderEpoch: where a consumer may start and validate its position."""

from __future__ import annotations

from kbroker.api.authorization import allowed_topic
from kbroker.api.context import RequestContext
from kbroker.api.registry import serves
from kbroker.api.routing import leader_error
from kbroker.log import LEADER_EPOCH
from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.messages import (
    ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
)
from kbroker.security.authorizer import Operation

LATEST, EARLIEST, MAX_TIMESTAMP, EARLIEST_LOCAL, LATEST_TIERED = -1, -2, -3, -4, -5
EARLIEST_PENDING_UPLOAD = -6
# The first request version that may ask for each special timestamp (Kafka's ReplicaManager).
_FIRST_VERSION_OF = {LATEST: 0, EARLIEST: 0, MAX_TIMESTAMP: 7, EARLIEST_LOCAL: 8, LATEST_TIERED: 9,
                     EARLIEST_PENDING_UPLOAD: 11}
READ_COMMITTED = 1
NO_TIMESTAMP = -1

ListTopic = ListOffsetsResponse.ListOffsetsTopicResponse
ListPartition = ListOffsetsResponse.ListOffsetsPartitionResponse


def _leader_epoch_error(current_leader_epoch: int) -> ErrorCode:
    """Kafka's check of the epoch a client believes the leader has (-1: no check)."""
    return ErrorCode.UNKNOWN_LEADER_EPOCH if current_leader_epoch > LEADER_EPOCH else ErrorCode.NONE


def _lookup(partition_log, timestamp: int, committed: bool) -> tuple[int, int]:
    """(offset, timestamp) for one ListOffsets query, as Kafka answers it."""
    last_fetchable = partition_log.last_stable_offset if committed else partition_log.high_watermark
    if timestamp == LATEST:
        return last_fetchable, NO_TIMESTAMP
    if timestamp in (EARLIEST, EARLIEST_LOCAL):
        return partition_log.log_start_offset, NO_TIMESTAMP
    if timestamp in (LATEST_TIERED, EARLIEST_PENDING_UPLOAD):  # no tiered storage here
        return -1, NO_TIMESTAMP
    if timestamp == MAX_TIMESTAMP:
        found = partition_log.max_timestamp()
        found = None if found is None else (found[1], found[0])
    else:
        found = partition_log.offset_for_timestamp(timestamp)
    if found is None or found[0] >= last_fetchable:
        return -1, NO_TIMESTAMP
    return found


def _unsupported_timestamp(timestamp: int, version: int) -> bool:
    """A negative timestamp this request version does not know (Kafka answers UNSUPPORTED_VERSION)."""
    return timestamp < 0 and version < _FIRST_VERSION_OF.get(timestamp, version + 1)


def _partition_log_or_error(ctx: RequestContext, topic: str, partition: int, current_leader_epoch: int):
    """(log, NONE) for a partition a client may query, else (None, Kafka's error): with several
    brokers only its leader answers (kbroker/api/routing.py R1, R2)."""
    partition_log = ctx.broker.logs.partition(topic, partition)
    if partition_log is None:
        return None, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    if ctx.broker.several_brokers:
        error = leader_error(ctx, topic, partition, current_leader_epoch)
    else:
        error = _leader_epoch_error(current_leader_epoch)
    return (partition_log if error == ErrorCode.NONE else None), error


@serves("ListOffsets", 1, 11, oldest=0)
async def handle_list_offsets(ctx: RequestContext,
                              request: ListOffsetsRequest) -> ListOffsetsResponse:
    """v0 (--as-version before 4.0) answers a list of up to MaxNumOffsets offsets: the one
    found, as later versions find it (Kafka listed segment base offsets after it too)."""
    committed = ctx.api_version >= 2 and request.isolation_level == READ_COMMITTED
    topics = []
    for topic in request.topics:
        answers = []
        describable = allowed_topic(ctx, Operation.DESCRIBE, topic.name)
        for asked in topic.partitions:
            if not describable:
                partition_log, error = None, ErrorCode.TOPIC_AUTHORIZATION_FAILED
            elif _unsupported_timestamp(asked.timestamp, ctx.api_version):
                partition_log, error = None, ErrorCode.UNSUPPORTED_VERSION
            else:
                partition_log, error = _partition_log_or_error(
                    ctx, topic.name, asked.partition_index, asked.current_leader_epoch)
            answer = ListPartition(partition_index=asked.partition_index, error_code=error)
            if partition_log is not None:
                answer.offset, answer.timestamp = _lookup(partition_log, asked.timestamp, committed)
                answer.leader_epoch = LEADER_EPOCH if answer.offset >= 0 else -1
                if ctx.api_version == 0:
                    answer.old_style_offsets = [answer.offset][:max(asked.max_num_offsets, 0)] \
                        if answer.offset >= 0 else []
            answers.append(answer)
        topics.append(ListTopic(name=topic.name, partitions=answers))
    return ListOffsetsResponse(throttle_time_ms=0, topics=topics)


@serves("OffsetForLeaderEpoch", 2, 4, oldest=0)
async def handle_offset_for_leader_epoch(
        ctx: RequestContext, request: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse:
    EpochEndOffset = OffsetForLeaderEpochResponse.EpochEndOffset
    topics = []
    for topic in request.topics:
        answers = []
        describable = allowed_topic(ctx, Operation.DESCRIBE, topic.topic)
        for asked in topic.partitions:
            partition_log, error = _partition_log_or_error(
                ctx, topic.topic, asked.partition, asked.current_leader_epoch
            ) if describable else (None, ErrorCode.TOPIC_AUTHORIZATION_FAILED)
            answer = EpochEndOffset(error_code=error, partition=asked.partition)
            if partition_log is not None:
                answer.leader_epoch, answer.end_offset = \
                    partition_log.end_offset_for_epoch(asked.leader_epoch)
            answers.append(answer)
        topics.append(OffsetForLeaderEpochResponse.OffsetForLeaderTopicResult(
            topic=topic.topic, partitions=answers))
    return OffsetForLeaderEpochResponse(throttle_time_ms=0, topics=topics)
