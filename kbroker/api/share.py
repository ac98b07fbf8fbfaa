"""Share group APIs (KIP-932): ShareGroupHeartbeat, ShareFetch and ShareAcknowledge.

The decisions are the share coordinator's (kbroker/share); this module maps requests onto it.
ShareFetch first applies the acknowledgements it carries (rule 5 of kbroker/share/partition.py,
written to __share_group_state before the answer), then acquires records of the session's
partitions: each partition's log is read from its next fetch offset and the share partition
acquires what that read returned, in the same step, so no other fetch sees the records in
between. Without records the request waits, as Fetch does, for data or released records on its
partitions (the coordinator wakes the same waiters), up to MaxWaitMs.

Authorization (Kafka's KafkaApis): GROUP READ for all three; ShareGroupHeartbeat also needs TOPIC
DESCRIBE on every subscribed topic (else TOPIC_AUTHORIZATION_FAILED for the request), ShareFetch
and ShareAcknowledge TOPIC READ on each partition's topic (else TOPIC_AUTHORIZATION_FAILED for
that partition's fetch or acknowledgement; nothing is acquired or acknowledged there).
"""

from __future__ import annotations

import time
import uuid

from kbroker.api.authorization import allowed_group, allowed_topic
from kbroker.api.context import RequestContext
from kbroker.api.groups import _client_host as client_host
from kbroker.api.registry import serves
from kbroker.api.routing import current_leader
from kbroker.log import LEADER_EPOCH
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.messages import (
    ShareAcknowledgeRequest, ShareAcknowledgeResponse, ShareFetchRequest, ShareFetchResponse,
    ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse,
)
from kbroker.security.authorizer import Operation
from kbroker.share.coordinator import PartitionKey
from kbroker.share.partition import AckBatch
from kbroker.share.reader import read_batches
from kbroker.share.sessions import FINAL_EPOCH, INITIAL_EPOCH

RECORD_LIMIT = 1  # ShareAcquireMode: 0 batch_optimized, 1 record_limit
NO_RECORDS = b""

TopicIdPartition = tuple[uuid.UUID, int]


@serves("ShareGroupHeartbeat", 1, 1)
async def handle_share_group_heartbeat(
        ctx: RequestContext, request: ShareGroupHeartbeatRequest) -> ShareGroupHeartbeatResponse:
    R = ShareGroupHeartbeatResponse
    if not allowed_group(ctx, Operation.READ, request.group_id):
        return R(throttle_time_ms=0, error_code=ErrorCode.GROUP_AUTHORIZATION_FAILED,
                 error_message=None, member_id=None, member_epoch=0, heartbeat_interval_ms=0,
                 assignment=None)
    if request.subscribed_topic_names and not all(
            allowed_topic(ctx, Operation.DESCRIBE, name) for name in set(request.subscribed_topic_names)):
        return R(throttle_time_ms=0, error_code=ErrorCode.TOPIC_AUTHORIZATION_FAILED,
                 error_message=None, member_id=None, member_epoch=0, heartbeat_interval_ms=0,
                 assignment=None)
    try:
        result = await ctx.broker.share.heartbeat(
            request.group_id, request.member_id, request.member_epoch, request.rack_id,
            request.subscribed_topic_names, ctx.client_id, client_host(ctx))
    except KafkaError as exc:
        return R(throttle_time_ms=0, error_code=exc.code, error_message=exc.message, member_id=None,
                 member_epoch=0, heartbeat_interval_ms=0, assignment=None)
    assignment = None
    if result.assignment is not None:
        assignment = R.Assignment(topic_partitions=[
            R.TopicPartitions(topic_id=topic_id, partitions=sorted(partitions))
            for topic_id, partitions in sorted(result.assignment.items())])
    return R(throttle_time_ms=0, error_code=ErrorCode.NONE, error_message=None, member_id=result.member_id,
             member_epoch=result.member_epoch, heartbeat_interval_ms=result.heartbeat_interval_ms,
             assignment=assignment)


def _acknowledgements(topics) -> dict[TopicIdPartition, list[AckBatch]]:
    return {
        (topic.topic_id, p.partition_index): [
            AckBatch(b.first_offset, b.last_offset, list(b.acknowledge_types)) for b in p.acknowledgement_batches]
        for topic in topics for p in topic.partitions if p.acknowledgement_batches
    }


def _unreadable(ctx: RequestContext, topic_ids) -> set[uuid.UUID]:
    """The existing topics among `topic_ids` the caller may not READ."""
    if ctx.broker.acls is None:
        return set()
    denied = set()
    for topic_id in set(topic_ids):
        info = ctx.broker.logs.topic_by_id(topic_id)
        if info is not None and not allowed_topic(ctx, Operation.READ, info.name):
            denied.add(topic_id)
    return denied


async def _apply_acknowledgements(ctx: RequestContext, group_id: str, member_id: str,
                                  acks: dict[TopicIdPartition, list[AckBatch]]) -> dict[TopicIdPartition, ErrorCode]:
    """Each partition's acknowledgement applied, then written before anybody is answered."""
    broker = ctx.broker
    share = broker.share
    errors = {}
    acknowledged = []
    denied = _unreadable(ctx, (topic_id for topic_id, _ in acks))
    for (topic_id, partition), batches in acks.items():
        if broker.logs.topic_by_id(topic_id) is None:
            errors[(topic_id, partition)] = ErrorCode.UNKNOWN_TOPIC_ID
            continue
        if topic_id in denied:
            errors[(topic_id, partition)] = ErrorCode.TOPIC_AUTHORIZATION_FAILED
            continue
        key = PartitionKey(group_id, topic_id, partition)
        errors[(topic_id, partition)] = share.acknowledge(key, member_id, batches)
        if errors[(topic_id, partition)] == ErrorCode.NONE:
            acknowledged.append(key)
    try:
        await share.persist(acknowledged)
    except KafkaError as exc:
        errors.update({(key.topic_id, key.partition): exc.code for key in acknowledged})
    return errors


def _acquire(broker, group_id: str, member_id: str, position: TopicIdPartition, max_records: int,
             max_bytes: int, strict: bool) -> tuple[ErrorCode, bytes, list]:
    """(error, record bytes, acquired ranges) of one partition."""
    topic_id, partition = position
    info = broker.logs.topic_by_id(topic_id)
    if info is None:
        return ErrorCode.UNKNOWN_TOPIC_ID, NO_RECORDS, []
    partition_log = broker.logs.partition(info.name, partition)
    if partition_log is None:
        return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, NO_RECORDS, []
    share = broker.share
    key = PartitionKey(group_id, topic_id, partition)
    try:
        sp = share.share_partition(key, partition_log)
        offset = sp.next_fetch_offset()
        if offset is None or max_records <= 0:
            return ErrorCode.NONE, NO_RECORDS, []
        read = read_batches(partition_log, offset, max_bytes, share.read_committed(group_id))
    except KafkaError as exc:
        return exc.code, NO_RECORDS, []
    acquired = sp.acquire(member_id, read.batches, max_records, share.clock(),
                          share.lock_duration_ms(group_id), strict, read.skipped)
    if not acquired:
        return ErrorCode.NONE, NO_RECORDS, []
    share.acquired(key, sp)
    broker.metrics.fetched(info.name, len(read.data))
    return ErrorCode.NONE, read.data, acquired


def _acquire_all(broker, request, group_id: str, member_id: str, positions: list[TopicIdPartition],
                 strict: bool) -> dict[TopicIdPartition, tuple[ErrorCode, bytes, list]]:
    results = {}
    records_left = request.max_records if request.max_records > 0 else 500
    bytes_left = request.max_bytes
    for position in positions:
        if records_left <= 0 or bytes_left <= 0:
            break
        error, data, acquired = _acquire(broker, group_id, member_id, position, records_left,
                                         bytes_left, strict)
        results[position] = (error, data, acquired)
        records_left -= sum(a.last - a.first + 1 for a in acquired)
        bytes_left -= len(data)
    return results


def _current_leader(broker, position: TopicIdPartition, leader_type):
    """The partition's leader and epoch (this broker, epoch 0, unless --brokers N)."""
    info = broker.logs.topic_by_id(position[0])
    if not broker.several_brokers or info is None:
        return leader_type(leader_id=broker.node_id, leader_epoch=LEADER_EPOCH)
    return current_leader(broker, info.name, position[1], leader_type)


def _fetch_response(broker, version: int, group_id: str, positions, fetched, ack_errors, full: bool):
    R = ShareFetchResponse
    by_topic: dict[uuid.UUID, list] = {}
    for position in dict.fromkeys(list(positions) + list(ack_errors)):
        error, data, acquired = fetched.get(position, (ErrorCode.NONE, NO_RECORDS, []))
        ack_error = ack_errors.get(position)
        if not (full or acquired or error != ErrorCode.NONE or ack_error is not None):
            continue
        by_topic.setdefault(position[0], []).append(R.PartitionData(
            partition_index=position[1], error_code=error, error_message=None,
            acknowledge_error_code=ack_error or ErrorCode.NONE, acknowledge_error_message=None,
            current_leader=_current_leader(broker, position, R.LeaderIdAndEpoch),
            records=data,
            acquired_records=[R.AcquiredRecords(first_offset=a.first, last_offset=a.last,
                                                delivery_count=a.delivery_count) for a in acquired]))
    return R(throttle_time_ms=0, error_code=ErrorCode.NONE, error_message=None,
             acquisition_lock_timeout_ms=broker.share.lock_duration_ms(group_id),
             responses=[R.ShareFetchableTopicResponse(topic_id=topic_id, partitions=partitions)
                        for topic_id, partitions in by_topic.items()],
             node_endpoints=[])


@serves("ShareFetch", 1, 2)
async def handle_share_fetch(ctx: RequestContext, request: ShareFetchRequest) -> ShareFetchResponse:
    broker = ctx.broker
    share = broker.share
    version = ctx.api_version
    group_id, member_id, epoch = request.group_id, request.member_id, request.share_session_epoch
    acks = _acknowledgements(request.topics)
    wanted = [(topic.topic_id, p.partition_index) for topic in request.topics for p in topic.partitions]
    forgotten = [(topic.topic_id, p) for topic in request.forgotten_topics_data for p in topic.partitions]
    try:
        if not group_id or not member_id:
            raise KafkaError(ErrorCode.INVALID_REQUEST, "The group id and member id must be set.")
        if not allowed_group(ctx, Operation.READ, group_id):
            raise KafkaError(ErrorCode.GROUP_AUTHORIZATION_FAILED, None)
        session, replaced = share.sessions.for_fetch(group_id, member_id, epoch, wanted, forgotten, bool(acks))
    except KafkaError as exc:
        return ShareFetchResponse(throttle_time_ms=0, error_code=exc.code, error_message=exc.message,
                                  responses=[], node_endpoints=[])
    if replaced:  # a new session: what the member held under the old one goes back
        await share.release(group_id, member_id)
    ack_errors = await _apply_acknowledgements(ctx, group_id, member_id, acks)
    if epoch == FINAL_EPOCH:
        if share.sessions.close(group_id, member_id):
            await share.release(group_id, member_id)
        return _fetch_response(broker, version, group_id, [], {}, ack_errors, False)
    positions = list(session.partitions)
    denied_topics = _unreadable(ctx, (topic_id for topic_id, _ in positions))
    denied: dict[TopicIdPartition, tuple[ErrorCode, bytes, list]] = {
        position: (ErrorCode.TOPIC_AUTHORIZATION_FAILED, NO_RECORDS, [])
        for position in positions if position[0] in denied_topics}
    readable = [position for position in positions if position not in denied]
    strict = version >= 2 and request.share_acquire_mode == RECORD_LIMIT
    renew_only = version >= 2 and request.is_renew_ack
    deadline = time.monotonic() + max(request.max_wait_ms, 0) / 1000
    watched = []
    for topic_id, partition in readable:
        info = broker.logs.topic_by_id(topic_id)
        if info is not None:
            watched.append((info.name, partition))
    while True:
        fetched = {} if renew_only else _acquire_all(broker, request, group_id, member_id, readable, strict)
        remaining = deadline - time.monotonic()
        if renew_only or remaining <= 0 or (denied and not readable) or any(
                acquired or error != ErrorCode.NONE for error, _, acquired in fetched.values()):
            break
        await broker.storage.wakeups.wait_for_data(watched, remaining)  # no partitions: max_wait_ms
    if not renew_only:
        fetched.update(denied)
    return _fetch_response(broker, version, group_id, positions, fetched, ack_errors,
                           full=epoch == INITIAL_EPOCH)


@serves("ShareAcknowledge", 1, 2)
async def handle_share_acknowledge(ctx: RequestContext,
                                   request: ShareAcknowledgeRequest) -> ShareAcknowledgeResponse:
    broker = ctx.broker
    share = broker.share
    group_id, member_id, epoch = request.group_id, request.member_id, request.share_session_epoch
    R = ShareAcknowledgeResponse
    try:
        if not group_id or not member_id:
            raise KafkaError(ErrorCode.INVALID_REQUEST, "The group id and member id must be set.")
        if not allowed_group(ctx, Operation.READ, group_id):
            raise KafkaError(ErrorCode.GROUP_AUTHORIZATION_FAILED, None)
        share.sessions.for_acknowledge(group_id, member_id, epoch)
    except KafkaError as exc:
        return R(throttle_time_ms=0, error_code=exc.code, error_message=exc.message, responses=[],
                 node_endpoints=[])
    ack_errors = await _apply_acknowledgements(ctx, group_id, member_id, _acknowledgements(request.topics))
    if epoch == FINAL_EPOCH and share.sessions.close(group_id, member_id):
        await share.release(group_id, member_id)
    by_topic: dict[uuid.UUID, list] = {}
    for (topic_id, partition), error in ack_errors.items():
        by_topic.setdefault(topic_id, []).append(R.PartitionData(
            partition_index=partition, error_code=error, error_message=None,
            current_leader=_current_leader(broker, (topic_id, partition), R.LeaderIdAndEpoch)))
    return R(throttle_time_ms=0, error_code=ErrorCode.NONE, error_message=None,
             acquisition_lock_timeout_ms=share.lock_duration_ms(group_id),
             responses=[R.ShareAcknowledgeTopicResponse(topic_id=topic_id, partitions=partitions)
                        for topic_id, partitions in by_topic.items()],
             node_endpoints=[])
