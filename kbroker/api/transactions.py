"""InitProducerId and the transactional APIs, answered by the transaction coordinator.

Requests are checked here as Kafka's KafkaApis checks them (unknown topics, internal topics);
the coordinator (kbroker/txn/) decides the rest. Old request versions get
INVALID_PRODUCER_EPOCH where Kafka's PRODUCER_FENCED did not exist yet for them.
"""

from __future__ import annotations

import enum
import re

from kbroker.api.admin import UNKNOWN_TOPIC_MESSAGE
from kbroker.api.authorization import (
    allowed_cluster, allowed_group, allowed_on_some, allowed_topic, allowed_transactional_id,
)
from kbroker.api.common import topic_names
from kbroker.api.context import RequestContext
from kbroker.api.registry import serves
from kbroker.api.routing import leader_error, transaction_coordinator
from kbroker.broker import INTERNAL_TOPICS
from kbroker.groups.coordinator import OffsetToCommit
from kbroker.groups.offsets_topic import OFFSETS_TOPIC
from kbroker.log import validate_topic_name
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.messages import (
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeProducersRequest, DescribeProducersResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse,
    InitProducerIdRequest, InitProducerIdResponse, ListTransactionsRequest,
    ListTransactionsResponse, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
)
from kbroker.protocol.records import ATTRIBUTES_OFFSET, HEADER_SIZE, MAGIC, MAGIC_OFFSET, TRANSACTIONAL_BIT, BatchHeader
from kbroker.security.authorizer import Operation, ResourceType
from kbroker.txn.state import NO_PRODUCER_EPOCH, NO_PRODUCER_ID

PartitionResult = AddPartitionsToTxnResponse.AddPartitionsToTxnPartitionResult
TopicResult = AddPartitionsToTxnResponse.AddPartitionsToTxnTopicResult
TransactionResult = AddPartitionsToTxnResponse.AddPartitionsToTxnResult


def fenced_for_version(error: ErrorCode, version: int, first_version_with_fenced: int) -> ErrorCode:
    """PRODUCER_FENCED as clients of this request version understand it."""
    if error == ErrorCode.PRODUCER_FENCED and version < first_version_with_fenced:
        return ErrorCode.INVALID_PRODUCER_EPOCH
    return error


class TxnWrite(enum.Enum):
    """How a transactional write is checked against its transaction, by request version
    (Kafka's TransactionSupportedOperation): verified with old errors, verified with
    TRANSACTION_ABORTABLE, or added to the transaction (transactions v2, KIP-890 part 2)."""

    VERIFY = enum.auto()
    VERIFY_ABORTABLE = enum.auto()
    ADD_PARTITION = enum.auto()

    @classmethod
    def of(cls, version: int, first_abortable: int) -> TxnWrite:
        """Produce: abortable from v11, adding from v12; TxnOffsetCommit: from v4 and v5."""
        if version > first_abortable:
            return cls.ADD_PARTITION
        return cls.VERIFY_ABORTABLE if version == first_abortable else cls.VERIFY


async def check_transactional_write(broker, transactional_id: str | None, producer_id: int,
                                    producer_epoch: int, partition: tuple[str, int],
                                    how: TxnWrite) -> ErrorCode:
    """Whether a transactional batch or offset may be written to `partition` now, with the
    errors Kafka's AddPartitionsToTxnManager answers; v2 writes join the transaction here."""
    coordinator = broker.transactions
    if how is TxnWrite.ADD_PARTITION:
        error = await coordinator.add_partitions(transactional_id, producer_id, producer_epoch,
                                                 [partition], transaction_version=2)
    else:
        error = coordinator.verify(transactional_id, producer_id, producer_epoch, [partition])[partition]
    if error == ErrorCode.PRODUCER_FENCED:
        return ErrorCode.INVALID_PRODUCER_EPOCH
    if error == ErrorCode.TRANSACTION_ABORTABLE and how is TxnWrite.VERIFY:
        return ErrorCode.INVALID_TXN_STATE
    return error


def transactional_batch(records) -> BatchHeader | None:
    """The header of a produce payload's first batch if it is a transactional v2 batch."""
    if records is None or len(records) < HEADER_SIZE or records[MAGIC_OFFSET] != MAGIC \
            or not records[ATTRIBUTES_OFFSET + 1] & TRANSACTIONAL_BIT:  # the low attribute byte
        return None
    return BatchHeader.parse(records)


# -- InitProducerId ------------------------------------------------------------------------------

def _init_error(error: ErrorCode) -> InitProducerIdResponse:
    return InitProducerIdResponse(throttle_time_ms=0, error_code=error, producer_id=NO_PRODUCER_ID,
                                  producer_epoch=NO_PRODUCER_EPOCH)


@serves("InitProducerId", 0, 5)
async def handle_init_producer_id(ctx: RequestContext,
                                  request: InitProducerIdRequest) -> InitProducerIdResponse:
    broker = ctx.broker
    expected = None
    if ctx.api_version >= 3:
        given = (request.producer_id, request.producer_epoch)
        if (given[0] == NO_PRODUCER_ID) != (given[1] == NO_PRODUCER_EPOCH):
            return _init_error(ErrorCode.INVALID_REQUEST)
        if given[0] != NO_PRODUCER_ID:
            expected = given
    if request.transactional_id is not None:
        if not allowed_transactional_id(ctx, Operation.WRITE, request.transactional_id):
            return _init_error(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    elif not (allowed_cluster(ctx, Operation.IDEMPOTENT_WRITE)
              or allowed_on_some(ctx, Operation.WRITE, ResourceType.TOPIC)):
        return _init_error(ErrorCode.CLUSTER_AUTHORIZATION_FAILED)
    if request.transactional_id is None:
        # An idempotent producer always gets a fresh id with epoch 0, as Kafka does, even
        # when it names its previous id (KIP-360 epoch bumps apply to transactional ids).
        return InitProducerIdResponse(
            throttle_time_ms=0, error_code=ErrorCode.NONE,
            producer_id=broker.producer_ids.allocate(), producer_epoch=0,
        )
    error, producer_id, epoch = await broker.transactions.init_producer_id(
        request.transactional_id, request.transaction_timeout_ms, expected)
    if error != ErrorCode.NONE:
        return _init_error(fenced_for_version(error, ctx.api_version, 4))
    return InitProducerIdResponse(throttle_time_ms=0, error_code=ErrorCode.NONE,
                                  producer_id=producer_id, producer_epoch=epoch)


# -- AddPartitionsToTxn, AddOffsetsToTxn ---------------------------------------------------------

def _topic_results(errors: dict[tuple[str, int], ErrorCode]) -> list[TopicResult]:
    by_topic: dict[str, list[PartitionResult]] = {}
    for (topic, partition), error in errors.items():
        by_topic.setdefault(topic, []).append(
            PartitionResult(partition_index=partition, partition_error_code=error))
    return [TopicResult(name=topic, results_by_partition=results)
            for topic, results in by_topic.items()]


async def _add_partitions(ctx: RequestContext, transactional_id: str, producer_id: int,
                          producer_epoch: int, topics, verify_only: bool,
                          version: int) -> dict[tuple[str, int], ErrorCode]:
    """One transaction of an AddPartitionsToTxn request: an error per partition."""
    broker = ctx.broker
    partitions = list(dict.fromkeys((t.name, p) for t in topics for p in t.partitions))
    if not allowed_transactional_id(ctx, Operation.WRITE, transactional_id):
        return dict.fromkeys(partitions, ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    failed = {}
    for topic, partition in partitions:
        if not allowed_topic(ctx, Operation.WRITE, topic):
            failed[(topic, partition)] = ErrorCode.TOPIC_AUTHORIZATION_FAILED
        elif version < 4 and topic in INTERNAL_TOPICS:
            failed[(topic, partition)] = ErrorCode.TOPIC_AUTHORIZATION_FAILED  # clients may not
        elif broker.logs.partition(topic, partition) is None:
            failed[(topic, partition)] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    if failed:
        return {p: failed.get(p, ErrorCode.OPERATION_NOT_ATTEMPTED) for p in partitions}
    coordinator = broker.transactions
    if verify_only:
        return coordinator.verify(transactional_id, producer_id, producer_epoch, partitions)
    error = await coordinator.add_partitions(transactional_id, producer_id, producer_epoch,
                                             partitions, transaction_version=2 if version >= 4 else 0)
    return dict.fromkeys(partitions, fenced_for_version(error, version, 2))


@serves("AddPartitionsToTxn", 0, 5)
async def handle_add_partitions_to_txn(
        ctx: RequestContext, request: AddPartitionsToTxnRequest) -> AddPartitionsToTxnResponse:
    version = ctx.api_version
    if version < 4:
        errors = await _add_partitions(
            ctx, request.v3_and_below_transactional_id, request.v3_and_below_producer_id,
            request.v3_and_below_producer_epoch, request.v3_and_below_topics, False, version)
        response = AddPartitionsToTxnResponse(results_by_topic_v3_and_below=_topic_results(errors))
    elif not allowed_cluster(ctx, Operation.CLUSTER_ACTION):  # v4+: brokers' batched requests
        response = AddPartitionsToTxnResponse(error_code=ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
                                              results_by_transaction=[])
    else:
        response = AddPartitionsToTxnResponse(error_code=ErrorCode.NONE, results_by_transaction=[
            TransactionResult(transactional_id=txn.transactional_id, topic_results=_topic_results(
                await _add_partitions(ctx, txn.transactional_id, txn.producer_id,
                                      txn.producer_epoch, txn.topics, txn.verify_only, version)))
            for txn in request.transactions
        ])
    return response


@serves("AddOffsetsToTxn", 0, 4)
async def handle_add_offsets_to_txn(ctx: RequestContext,
                                    request: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse:
    broker = ctx.broker
    if not allowed_transactional_id(ctx, Operation.WRITE, request.transactional_id):
        return AddOffsetsToTxnResponse(error_code=ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    if not allowed_group(ctx, Operation.READ, request.group_id):
        return AddOffsetsToTxnResponse(error_code=ErrorCode.GROUP_AUTHORIZATION_FAILED)
    offsets_partition = (OFFSETS_TOPIC, broker.groups.partition_for(request.group_id))
    error = await broker.transactions.add_partitions(
        request.transactional_id, request.producer_id, request.producer_epoch, [offsets_partition])
    return AddOffsetsToTxnResponse(error_code=fenced_for_version(error, ctx.api_version, 2))


# -- EndTxn --------------------------------------------------------------------------------------

@serves("EndTxn", 0, 5)
async def handle_end_txn(ctx: RequestContext, request: EndTxnRequest) -> EndTxnResponse:
    """v5 (transactions v2) bumps the epoch of every transaction it ends and answers the producer
    id and epoch the client continues with."""
    coordinator = ctx.broker.transactions
    version = ctx.api_version
    if not allowed_transactional_id(ctx, Operation.WRITE, request.transactional_id):
        return EndTxnResponse(error_code=ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                              producer_id=NO_PRODUCER_ID, producer_epoch=NO_PRODUCER_EPOCH)
    error = await coordinator.end_transaction(
        request.transactional_id, request.producer_id, request.producer_epoch, request.committed,
        transaction_version=2 if version >= 5 else 0)
    producer_id, epoch = NO_PRODUCER_ID, NO_PRODUCER_EPOCH
    ended = coordinator.describe(request.transactional_id)
    if error == ErrorCode.NONE and version >= 5 and ended is not None:
        producer_id, epoch = ended.continued_as()
    return EndTxnResponse(error_code=fenced_for_version(error, version, 2), producer_id=producer_id,
                          producer_epoch=epoch)


# -- TxnOffsetCommit -----------------------------------------------------------------------------

@serves("TxnOffsetCommit", 0, 6)
async def handle_txn_offset_commit(ctx: RequestContext,
                                   request: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse:
    """Offsets staged in the group coordinator until the transaction ends; from v5 (transactions
    v2) the group's offsets partition joins the transaction here, from v6 topics are named by id."""
    broker = ctx.broker
    version = ctx.api_version
    names = topic_names(broker, request.topics, version >= 6)
    errors: dict[tuple[str | None, int], ErrorCode] = {}
    offsets = []
    refused = ErrorCode.NONE
    if not allowed_transactional_id(ctx, Operation.WRITE, request.transactional_id):
        refused = ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    elif not allowed_group(ctx, Operation.READ, request.group_id):
        refused = ErrorCode.GROUP_AUTHORIZATION_FAILED
    for topic, name in zip(request.topics, names):
        for partition in topic.partitions:
            key = (name, partition.partition_index)
            if refused != ErrorCode.NONE:
                errors[key] = refused
            elif name is None:
                errors[key] = ErrorCode.UNKNOWN_TOPIC_ID
            elif not allowed_topic(ctx, Operation.READ, name):
                errors[key] = ErrorCode.TOPIC_AUTHORIZATION_FAILED
            elif broker.logs.partition(name, partition.partition_index) is None:
                errors[key] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            else:
                errors[key] = ErrorCode.NONE
                offsets.append(OffsetToCommit(name, partition.partition_index,
                                              partition.committed_offset,
                                              partition.committed_leader_epoch,
                                              partition.committed_metadata))
    if offsets:
        staged = await _stage_offsets(broker, request, offsets, version)
        for item, error in zip(offsets, staged):
            errors[(item.topic, item.partition)] = error
    Response = TxnOffsetCommitResponse
    return Response(topics=[
        Response.TxnOffsetCommitResponseTopic(name=name or "", topic_id=topic.topic_id, partitions=[
            Response.TxnOffsetCommitResponsePartition(
                partition_index=partition.partition_index,
                error_code=errors[(name, partition.partition_index)])
            for partition in topic.partitions])
        for topic, name in zip(request.topics, names)
    ])


async def _stage_offsets(broker, request, offsets: list[OffsetToCommit],
                         version: int) -> list[ErrorCode]:
    """Kafka's order: the group id, then the producer's transaction, then the group member."""
    if not request.group_id:
        return [ErrorCode.INVALID_GROUP_ID] * len(offsets)
    groups = broker.groups
    offsets_partition = (OFFSETS_TOPIC, groups.partition_for(request.group_id))
    error = await check_transactional_write(
        broker, request.transactional_id, request.producer_id, request.producer_epoch,
        offsets_partition, TxnWrite.of(version, first_abortable=4))
    if error != ErrorCode.NONE:
        return [error] * len(offsets)
    return await groups.stage_transactional_offsets(
        request.group_id, request.producer_id, request.member_id, request.group_instance_id,
        request.generation_id_or_member_epoch, offsets)


# -- DescribeTransactions, ListTransactions, DescribeProducers -----------------------------------

@serves("DescribeTransactions", 0, 0)
async def handle_describe_transactions(
        ctx: RequestContext, request: DescribeTransactionsRequest) -> DescribeTransactionsResponse:
    coordinator = ctx.broker.transactions
    TransactionState = DescribeTransactionsResponse.TransactionState
    states = []
    for transactional_id in request.transactional_ids:
        if transactional_id and not allowed_transactional_id(ctx, Operation.DESCRIBE, transactional_id):
            states.append(TransactionState(error_code=ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                                           transactional_id=transactional_id))
            continue
        metadata = coordinator.describe(transactional_id) if transactional_id else None
        if metadata is None:
            error = ErrorCode.TRANSACTIONAL_ID_NOT_FOUND if transactional_id else ErrorCode.INVALID_REQUEST
            states.append(TransactionState(error_code=error, transactional_id=transactional_id))
            continue
        by_topic: dict[str, list[int]] = {}
        for topic, partition in sorted(metadata.partitions):
            by_topic.setdefault(topic, []).append(partition)
        states.append(TransactionState(
            error_code=ErrorCode.NONE, transactional_id=transactional_id,
            transaction_state=metadata.state.kafka_name,
            transaction_timeout_ms=metadata.timeout_ms,
            transaction_start_time_ms=metadata.start_ms, producer_id=metadata.producer_id,
            producer_epoch=metadata.producer_epoch,
            topics=[DescribeTransactionsResponse.TopicData(topic=topic, partitions=partitions)
                    for topic, partitions in by_topic.items()],
        ))
    return DescribeTransactionsResponse(transaction_states=states)


@serves("ListTransactions", 0, 2)
async def handle_list_transactions(ctx: RequestContext,
                                   request: ListTransactionsRequest) -> ListTransactionsResponse:
    """v1 filters by duration, v2 by a regular expression the whole transactional id matches."""
    pattern = request.transactional_id_pattern if ctx.api_version >= 2 else None
    try:
        matcher = re.compile(pattern).fullmatch if pattern else None
    except re.error:
        return ListTransactionsResponse(
            error_code=ErrorCode.INVALID_REGULAR_EXPRESSION, unknown_state_filters=[],
            transaction_states=[])
    listed, unknown = ctx.broker.transactions.list_transactions(  # v0: duration_filter is -1
        request.state_filters, request.producer_id_filters, request.duration_filter)
    return ListTransactionsResponse(
        error_code=ErrorCode.NONE, unknown_state_filters=unknown,
        transaction_states=[ListTransactionsResponse.TransactionState(
            transactional_id=item.transactional_id, producer_id=item.producer_id,
            transaction_state=item.state.kafka_name)
            for item in listed if (matcher is None or matcher(item.transactional_id))
            and allowed_transactional_id(ctx, Operation.DESCRIBE, item.transactional_id)
            and (not ctx.broker.several_brokers  # each broker lists the ids it coordinates
                 or transaction_coordinator(ctx.broker, item.transactional_id) == ctx.node_id)])


@serves("DescribeProducers", 0, 0)
async def handle_describe_producers(ctx: RequestContext,
                                    request: DescribeProducersRequest) -> DescribeProducersResponse:
    """The producer state of each partition (what kafka-transactions.sh describe-producers shows)."""
    broker = ctx.broker
    topics = []
    for topic in request.topics:
        error, message = ErrorCode.NONE, None
        try:
            if not allowed_topic(ctx, Operation.READ, topic.name):
                raise KafkaError(ErrorCode.TOPIC_AUTHORIZATION_FAILED, None)
            validate_topic_name(topic.name)
            if topic.name not in broker.logs.topics:
                error, message = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, UNKNOWN_TOPIC_MESSAGE
        except KafkaError as exc:
            error, message = exc.code, exc.message
        partitions = []
        for index in topic.partition_indexes:
            partition_log = broker.logs.partition(topic.name, index) if error == ErrorCode.NONE else None
            if partition_log is None:
                partitions.append(DescribeProducersResponse.PartitionResponse(
                    partition_index=index, error_message=message,
                    error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION if error == ErrorCode.NONE else error))
                continue
            if broker.several_brokers and (refused := leader_error(ctx, topic.name, index)):
                partitions.append(DescribeProducersResponse.PartitionResponse(
                    partition_index=index, error_code=refused))
                continue
            partitions.append(DescribeProducersResponse.PartitionResponse(
                partition_index=index, error_code=ErrorCode.NONE, active_producers=[
                    DescribeProducersResponse.ProducerState(
                        producer_id=entry.producer_id, producer_epoch=entry.epoch,
                        last_sequence=entry.last_seq, last_timestamp=entry.last_timestamp,
                        coordinator_epoch=entry.coordinator_epoch,
                        current_txn_start_offset=entry.txn_first_offset)
                    for entry in partition_log.producer_state.producers.values()
                ]))
        topics.append(DescribeProducersResponse.TopicResponse(name=topic.name, partitions=partitions))
    return DescribeProducersResponse(topics=topics)
