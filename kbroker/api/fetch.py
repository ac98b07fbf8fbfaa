"""Fetch: stored batches sent as file regions, long polling, fetch sessions, isolation levels.

The response is ready when the partitions hold at least min_bytes for the consumer, when any
partition has an error, or when max_wait_ms has passed; until then the request sleeps on the
wake-ups of the partitions it reads (no polling loop).
"""

from __future__ import annotations

import os

import trio

from kbroker.api.authorization import allowed_topic
from kbroker.api.context import RequestContext
from kbroker.api.registry import serves
from kbroker.api.routing import current_leader, leader_error, moved_leaders, node_endpoints
from kbroker.fetch_sessions import FetchPosition, position_key
from kbroker.log import LEADER_EPOCH
from kbroker.protocol import FileRegion
from kbroker.log.message_formats import down_convert
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.messages import FetchRequest, FetchResponse
from kbroker.protocol.primitives import INT32_MAX
from kbroker.security.authorizer import Operation
from kbroker.throttling import quota_user

READ_COMMITTED = 1
_NONE: frozenset[str] = frozenset()
# Kafka answers a partition without data with empty records, never null: librdkafka rejects null.
NO_RECORDS = b""

TopicResponse = FetchResponse.FetchableTopicResponse
PartitionData = FetchResponse.PartitionData
AbortedTransaction = FetchResponse.AbortedTransaction


def _requested_positions(broker, request, version: int) -> list[FetchPosition]:
    positions = []
    for topic in request.topics:
        if version >= 13:
            info = broker.logs.topic_by_id(topic.topic_id)
            name, topic_id = (info.name if info else None), topic.topic_id
        else:
            name, topic_id = topic.topic, None
        for partition in topic.partitions:
            positions.append(FetchPosition(
                name, topic_id, partition.partition, partition.fetch_offset,
                partition.partition_max_bytes, partition.current_leader_epoch,
            ))
    return positions


def _forgotten_keys(request, version: int) -> list:
    if version < 7:
        return []
    return [
        (topic.topic_id if version >= 13 else topic.topic, partition)
        for topic in request.forgotten_topics_data
        for partition in topic.partitions
    ]


def _error_data(position: FetchPosition, error: ErrorCode) -> PartitionData:
    return PartitionData(partition_index=position.partition, error_code=error, high_watermark=-1,
                         records=NO_RECORDS)


def _read_partition(ctx: RequestContext, position: FetchPosition, committed: bool, budget: int,
                    min_one_batch: bool, unreadable: frozenset[str]) -> tuple[PartitionData, int]:
    """One partition's answer and the bytes of records it carries."""
    broker = ctx.broker
    if position.topic is None:
        return _error_data(position, ErrorCode.UNKNOWN_TOPIC_ID), 0
    if unreadable and position.topic in unreadable:
        return _error_data(position, ErrorCode.TOPIC_AUTHORIZATION_FAILED), 0
    try:
        partition_log = broker.logs.partition(position.topic, position.partition)
    except KafkaError as exc:  # it could not be opened (KAFKA_STORAGE_ERROR)
        return _error_data(position, exc.code), 0
    if partition_log is None:
        return _error_data(position, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION), 0
    if broker.several_brokers:  # routing.py R1-R3
        error = leader_error(ctx, position.topic, position.partition, position.current_leader_epoch)
        if error:
            refused = _error_data(position, error)
            refused.current_leader = current_leader(broker, position.topic, position.partition,
                                                    FetchResponse.LeaderIdAndEpoch)
            return refused, 0
    elif position.current_leader_epoch > LEADER_EPOCH:
        return _error_data(position, ErrorCode.UNKNOWN_LEADER_EPOCH), 0
    high_watermark = partition_log.high_watermark
    last_stable_offset = partition_log.last_stable_offset
    log_start_offset = partition_log.log_start_offset
    data = PartitionData(
        partition_index=position.partition, error_code=ErrorCode.NONE,
        high_watermark=high_watermark, last_stable_offset=last_stable_offset,
        log_start_offset=log_start_offset, records=NO_RECORDS,
        aborted_transactions=None,  # Kafka sends null unless reading committed
    )
    upper = last_stable_offset if committed else high_watermark
    max_bytes = min(position.max_bytes, budget)
    try:
        result = partition_log.read(position.fetch_offset, max_bytes, upper, min_one_batch)
    except KafkaError as exc:
        data.error_code = exc.code
        return data, 0
    size = 0
    if isinstance(result.records, FileRegion):  # else b"": nothing is readable
        data.records = result.records
        size = result.records.size
        broker.metrics.fetched(position.topic, size)
    if committed:
        data.aborted_transactions = [
            AbortedTransaction(producer_id=producer_id, first_offset=first_offset)
            for producer_id, first_offset in partition_log.aborted_transactions(
                position.fetch_offset, upper)
        ]
    return data, size


def _read_all(ctx: RequestContext, positions, committed: bool, max_bytes: int, incremental: bool,
              unreadable: frozenset[str]):
    """Read every position within the response budget, but topics the consumer may not read;
    returns (topics, bytes, has_error)."""
    by_topic: dict[object, TopicResponse] = {}
    total = 0
    has_error = False
    for position in positions:
        data, size = _read_partition(ctx, position, committed, max(max_bytes - total, 0),
                                     min_one_batch=total == 0, unreadable=unreadable)
        total += size
        has_error = has_error or data.error_code != ErrorCode.NONE
        news = data.records is not NO_RECORDS or data.error_code != ErrorCode.NONE or position.has_news(
            data.high_watermark, data.last_stable_offset, data.log_start_offset)
        if incremental and not news:
            continue
        key = position.topic_id if position.topic_id is not None else position.topic
        topic = by_topic.get(key)
        if topic is None:
            topic = by_topic[key] = TopicResponse(
                topic=position.topic or "", topic_id=position.topic_id, partitions=[])
        topic.partitions.append(data)
    return by_topic, total, has_error


def _remember_sent(positions, topics) -> None:
    sent = {
        (key, data.partition_index): data
        for key, topic in topics.items() for data in topic.partitions
    }
    for position in positions:
        data = sent.get(position_key(position))
        if data is not None:
            position.remember_sent(data.high_watermark, data.last_stable_offset,
                                   data.log_start_offset)


def _down_convert(topics, positions, version: int) -> None:
    """Fetch v0-3 (--as-version before 4.0): the stored batches as messages of format v0
    (Fetch v0-1) or v1 (v2-3), within each partition's max bytes."""
    wanted = {(p.topic, p.partition): p for p in positions}
    for topic in topics.values():
        for data in topic.partitions:
            if data.records is NO_RECORDS:
                continue
            position = wanted[(topic.topic, data.partition_index)]
            region = data.records
            try:
                data.records = down_convert(os.pread(region.fd, region.size, region.position),
                                            0 if version < 2 else 1, position.fetch_offset,
                                            position.max_bytes)
            except KafkaError as exc:
                data.error_code, data.records = exc.code, NO_RECORDS


@serves("Fetch", 4, 18, oldest=0)
async def handle_fetch(ctx: RequestContext, request: FetchRequest) -> FetchResponse:
    broker = ctx.broker
    version = ctx.api_version
    requested = _requested_positions(broker, request, version)
    session_id = 0
    incremental = False
    positions = requested
    if version >= 7:
        try:
            session, positions, incremental = broker.fetch_sessions.resolve(
                request.session_id, request.session_epoch, requested,
                _forgotten_keys(request, version))
        except KafkaError as exc:
            return FetchResponse(error_code=exc.code, session_id=0, responses=[])
        session_id = session.session_id if session is not None else 0
    committed = request.isolation_level == READ_COMMITTED
    max_bytes = request.max_bytes if version >= 3 else INT32_MAX
    min_bytes = request.min_bytes
    user = None
    if broker.throttles.active:  # rule Q5 of kbroker/throttling.py
        user = quota_user(ctx.session.principal)
        allowed_bytes = broker.throttles.fetch.max_value_in_window(user, ctx.client_id)
        if allowed_bytes is not None:
            max_bytes = min(max_bytes, int(allowed_bytes))
            min_bytes = min(min_bytes, max_bytes)
    deadline = trio.current_time() + max(request.max_wait_ms, 0) / 1000
    watched = [(p.topic, p.partition) for p in positions if p.topic is not None]
    unreadable = _NONE if broker.acls is None else frozenset(
        topic for topic, _ in watched if not allowed_topic(ctx, Operation.READ, topic))
    while True:
        topics, total, has_error = _read_all(ctx, positions, committed, max_bytes, incremental,
                                             unreadable)
        remaining = deadline - trio.current_time()
        if total >= min_bytes or has_error or remaining <= 0 or not watched:
            break
        await broker.storage.wakeups.wait_for_data(watched, remaining)
        ctx.waited_seconds += trio.current_time() - deadline + remaining
    if user is not None:  # consumer_byte_rate counts the records sent
        now_ms = broker.clock.now_ms()
        ctx.throttle_ms = broker.throttles.fetch.record(user, ctx.client_id, total, now_ms)
        if ctx.throttle_ms:  # answered empty, as Kafka does: the records are fetched again later
            broker.throttles.fetch.unrecord(user, ctx.client_id, total, now_ms)
            return FetchResponse(throttle_time_ms=ctx.throttle_ms, error_code=ErrorCode.NONE,
                                 session_id=session_id, responses=[])
    if session_id:
        _remember_sent(positions, topics)
    leaders = moved_leaders(topics.values(), "partitions") if has_error and broker.several_brokers else ()
    if version < 4:
        _down_convert(topics, positions, version)
    return FetchResponse(
        throttle_time_ms=ctx.throttle_ms, error_code=ErrorCode.NONE, session_id=session_id,
        responses=list(topics.values()),
        node_endpoints=node_endpoints(ctx, leaders, FetchResponse.NodeEndpoint) if leaders else [],
    )
