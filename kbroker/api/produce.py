"""Produce: validate each partition's batch and append it, as the bytes the producer sent."""

from __future__ import annotations

import logging

from kbroker.api.authorization import allowed_topic, allowed_transactional_id
from kbroker.api.context import RequestContext
from kbroker.api.registry import CloseConnection, serves
from kbroker.api.routing import current_leader, isr_error, moved_leaders, node_endpoints
from kbroker.api.transactions import TxnWrite, check_transactional_write, transactional_batch
from kbroker.broker import INTERNAL_TOPICS
from kbroker.log.message_formats import up_convert
from kbroker.log.validator import RecordErrors
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.messages import ProduceRequest, ProduceResponse
from kbroker.security.authorizer import Operation
from kbroker.throttling import quota_user

log = logging.getLogger("kbroker.produce")

TopicResponse = ProduceResponse.TopicProduceResponse
PartitionResponse = ProduceResponse.PartitionProduceResponse
RecordError = ProduceResponse.BatchIndexAndErrorMessage


async def _append(broker, topic: str, partition: int, records, timestamp_ms: int,
                  transactional_id: str | None, version: int, acks: int,
                  appended_to: list, node: int | None) -> PartitionResponse:
    """One partition's append; `node` is the node asked, None with one broker (no routing)."""
    if topic in INTERNAL_TOPICS:
        return PartitionResponse(
            index=partition, error_code=ErrorCode.INVALID_TOPIC_EXCEPTION,
            error_message=f"Cannot append to internal topic {topic}",
        )
    try:
        partition_log = broker.logs.partition(topic, partition)
    except KafkaError as exc:  # it could not be opened (KAFKA_STORAGE_ERROR)
        return PartitionResponse(index=partition, error_code=exc.code, error_message=exc.message)
    if partition_log is None:
        return PartitionResponse(index=partition, error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
    if node is not None and broker.cluster.leader(topic, partition) != node:  # routing.py R1, R3
        return PartitionResponse(
            index=partition, error_code=ErrorCode.NOT_LEADER_OR_FOLLOWER, base_offset=-1,
            current_leader=current_leader(broker, topic, partition, ProduceResponse.LeaderIdAndEpoch))
    if records is None:
        return PartitionResponse(index=partition, error_code=ErrorCode.CORRUPT_MESSAGE,
                                 error_message="no records")
    if version < 3:  # message format v0/v1 (--as-version before 4.0): appended as one v2 batch
        try:
            records = up_convert(records)
        except KafkaError as exc:
            return PartitionResponse(index=partition, error_code=exc.code, base_offset=-1,
                                     error_message=exc.message)
    required = partition_log.config.min_insync_replicas
    if acks == -1 and required > 1:  # routing.py R4
        error, message = isr_error(broker, topic, partition, required)
        if error:
            return PartitionResponse(index=partition, error_code=error, base_offset=-1,
                                     error_message=message)
    header = transactional_batch(records)
    if header is not None:
        how = TxnWrite.of(version, first_abortable=11)
        error = await check_transactional_write(broker, transactional_id, header.producer_id,
                                                header.producer_epoch, (topic, partition), how)
        if error == ErrorCode.CONCURRENT_TRANSACTIONS and how is not TxnWrite.ADD_PARTITION:
            error = ErrorCode.NOT_ENOUGH_REPLICAS  # Kafka's ReplicaManager: old clients retry it
        if error != ErrorCode.NONE:
            return PartitionResponse(index=partition, error_code=error, base_offset=-1)
    try:
        result = broker.storage.append(partition_log, records, timestamp_ms)
    except KafkaError as exc:
        # v8+: records refused one by one are named, and the producer fails only those (KIP-467)
        refused = [RecordError(batch_index=index, batch_index_error_message=why)
                   for index, why in (exc.records if isinstance(exc, RecordErrors) else ())]
        return PartitionResponse(index=partition, error_code=exc.code, error_message=exc.message,
                                 base_offset=-1, log_start_offset=partition_log.log_start_offset,
                                 record_errors=refused)
    if not result.duplicate:
        appended_to.append(partition_log)
        broker.metrics.produced(topic, len(records), result.last_offset - result.base_offset + 1)
    return PartitionResponse(
        index=partition, error_code=ErrorCode.NONE, base_offset=result.base_offset,
        log_append_time_ms=result.log_append_time_ms, log_start_offset=result.log_start_offset,
    )


def _topic_name(broker, topic, version: int) -> str | None:
    """The topic a produce request names: by name, or from v13 by id (None when unknown)."""
    if version < 13:
        return topic.name
    info = broker.logs.topic_by_id(topic.topic_id)
    return None if info is None else info.name


def _failed_topic(topic, error: ErrorCode) -> TopicResponse:
    return TopicResponse(name=topic.name, topic_id=topic.topic_id, partition_responses=[
        PartitionResponse(index=data.index, error_code=error) for data in topic.partition_data
    ])


@serves("Produce", 3, 13, oldest=0)
async def handle_produce(ctx: RequestContext, request: ProduceRequest) -> ProduceResponse | None:
    """v12+ transactional batches join their transaction (transactions v2); v13 names topics by
    id, and an id not known gets UNKNOWN_TOPIC_ID for each of its partitions."""
    broker = ctx.broker
    version = ctx.api_version
    error = None
    appended_to: list = []
    node = ctx.node_id if broker.several_brokers else None
    checks_acls = broker.acls is not None  # no authorizer: nothing more to do per topic
    transactional_id = request.transactional_id
    if (transactional_id is None or checks_acls) and any(
            transactional_batch(data.records) for topic in request.topic_data
            for data in topic.partition_data) and (
            transactional_id is None
            or not allowed_transactional_id(ctx, Operation.WRITE, transactional_id)):
        error = ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED  # Kafka checks this first
    elif request.acks not in (0, 1, -1):
        error = ErrorCode.INVALID_REQUIRED_ACKS
    if error is not None:
        responses = [_failed_topic(topic, error) for topic in request.topic_data]
    else:
        timestamp_ms = broker.clock.now_ms()
        responses = []
        for topic in request.topic_data:
            name = _topic_name(broker, topic, version)
            if name is None:
                responses.append(_failed_topic(topic, ErrorCode.UNKNOWN_TOPIC_ID))
                continue
            if checks_acls and not allowed_topic(ctx, Operation.WRITE, name):
                responses.append(_failed_topic(topic, ErrorCode.TOPIC_AUTHORIZATION_FAILED))
                continue
            responses.append(TopicResponse(name=name, topic_id=topic.topic_id, partition_responses=[
                await _append(broker, name, data.index, data.records, timestamp_ms,
                              request.transactional_id, version, request.acks, appended_to, node)
                for data in topic.partition_data
            ]))
    await broker.storage.flush_if_due(appended_to)
    node_endpoints = _routing_answers(ctx, responses, request.acks) if node is not None else []
    if broker.throttles.active:  # producer_byte_rate counts the request's bytes, as Kafka's
        ctx.throttle_ms = broker.throttles.produce.record(
            quota_user(ctx.session.principal), ctx.client_id, ctx.request_bytes, broker.clock.now_ms())
    if request.acks == 0:
        failed = [
            (topic.name or topic.topic_id, partition.index, partition.error_code)
            for topic in responses for partition in topic.partition_responses
            if partition.error_code != ErrorCode.NONE
        ]
        if failed:
            # Kafka tells an acks=0 producer about a failure only by closing its connection.
            log.info("acks=0 produce failed %s; closing the connection", failed)
            raise CloseConnection
        return None
    return ProduceResponse(responses=responses, throttle_time_ms=ctx.throttle_ms,
                           node_endpoints=node_endpoints)


def _routing_answers(ctx: RequestContext, responses: list[TopicResponse], acks: int) -> list:
    """With several brokers, after the appends: acks=all writes whose ISR shrank meanwhile get
    NOT_ENOUGH_REPLICAS_AFTER_APPEND (routing.py R4); the endpoints of the leaders named in
    NOT_LEADER_OR_FOLLOWER answers (R3, KIP-951)."""
    if acks == -1:
        for topic in responses:
            info = ctx.broker.logs.topics.get(topic.name)
            for answer in topic.partition_responses:
                if answer.error_code == ErrorCode.NONE and info is not None and isr_error(
                        ctx.broker, topic.name, answer.index, info.config.min_insync_replicas)[0]:
                    answer.error_code = ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND
    leaders = moved_leaders(responses, "partition_responses")
    return node_endpoints(ctx, leaders, ProduceResponse.NodeEndpoint) if leaders else []
