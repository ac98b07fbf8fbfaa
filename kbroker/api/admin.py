"""Topic and cluster administration, answered as a one-broker KRaft Apache Kafka answers it.

Rules (Kafka's ControllerApis / ReplicationControlManager, ReplicaManager, KafkaApis):
- CreateTopics: a name given twice in one request -> INVALID_REQUEST for it; then per topic, in
  this order: illegal name (INVALID_TOPIC_EXCEPTION), existing topic (TOPIC_ALREADY_EXISTS),
  null config values and invalid configs (INVALID_CONFIG), then manual assignments (need
  partitions and replication factor -1; replica lists checked by the cluster model, rule P4 of
  kbroker/cluster.py: INVALID_REPLICA_ASSIGNMENT), or replication factor 0 or < -1 / above the
  live brokers (INVALID_REPLICATION_FACTOR) and partitions 0 or < -1 (INVALID_PARTITIONS); -1
  takes the broker default. validate_only answers the same without creating anything.
- DeleteTopics: by name (v0-5 names, v6 name or id); unknown -> UNKNOWN_TOPIC_OR_PARTITION /
  UNKNOWN_TOPIC_ID; delete.topic.enable=false -> INVALID_REQUEST for v0-2, else
  TOPIC_DELETION_DISABLED. Files go after file.delete.delay.ms.
- CreatePartitions: the count must grow (INVALID_PARTITIONS), assignments must match the count
  and the topic's replication factor (P4).
- All three charge the client's controller_mutation_rate (KIP-599) with the partitions each
  topic creates or deletes, once the topic passed every other check; a strict quota refuses a
  topic with THROTTLING_QUOTA_EXCEEDED (kbroker/throttling.py, rules M1-M4).
- DeleteRecords: -1 means the high watermark; beyond it or negative -> OFFSET_OUT_OF_RANGE; a
  topic without the delete policy -> POLICY_VIOLATION; internal topics -> INVALID_TOPIC_EXCEPTION.
Leadership, reassignments and log dirs are in kbroker/api/replicas.py.
"""

from __future__ import annotations

import uuid
from typing import Hashable, Iterable, TypeVar

from kbroker.api.authorization import allowed_topic, authorized_operations, may_create_topic
from kbroker.api.common import CLUSTER_OPERATIONS, OPERATIONS_NOT_REQUESTED, TOPIC_OPERATIONS
from kbroker.api.configs import check_topic_configs, topic_config_entries
from kbroker.api.context import RequestContext
from kbroker.api.quotas import mutation_quota, mutation_throttle_ms
from kbroker.api.metadata import partition_fields
from kbroker.api.registry import serves
from kbroker.api.routing import controller_id, leader_error, live_brokers
from kbroker.broker import INTERNAL_TOPICS
from kbroker.log import validate_topic_name
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.messages import (
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteRecordsRequest, DeleteRecordsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeClusterRequest, DescribeClusterResponse, DescribeTopicPartitionsRequest,
    DescribeTopicPartitionsResponse,
)
from kbroker.security.authorizer import CLUSTER_NAME, Operation, ResourceType

ZERO_UUID = uuid.UUID(int=0)
T = TypeVar("T", bound=Hashable)
HIGH_WATERMARK = -1  # DeleteRecords: "up to the high watermark"
BROKER_ENDPOINT = 1  # DescribeCluster endpoint types: 1 brokers, 2 controllers
MAX_DESCRIBE_PARTITIONS = 2000  # Kafka's max.request.partition.size.limit default
UNKNOWN_TOPIC_MESSAGE = "This server does not host this topic-partition."


# Kafka's default messages (Errors.java) for the errors answered without their own text.
DEFAULT_MESSAGES = {
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION: UNKNOWN_TOPIC_MESSAGE,
    ErrorCode.UNKNOWN_TOPIC_ID: "This server does not host this topic ID.",
    ErrorCode.ELECTION_NOT_NEEDED: "Leader election not needed for topic partition.",
    ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE: "The preferred leader was not available.",
    ErrorCode.ELIGIBLE_LEADERS_NOT_AVAILABLE: "Eligible topic partition leaders are not available.",
    ErrorCode.NO_REASSIGNMENT_IN_PROGRESS: "No partition reassignment is in progress.",
    ErrorCode.TOPIC_AUTHORIZATION_FAILED: "Topic authorization failed.",
}


def _duplicates(names: Iterable[T]) -> set[T]:
    seen: set[T] = set()
    twice: set[T] = set()
    for name in names:
        (twice if name in seen else seen).add(name)
    return twice


# -- CreateTopics ----------------------------------------------------------------------------

def _replica_lists(broker, topic) -> list[list[int]]:
    """Each new partition's replicas for one CreatableTopic: its manual assignments checked
    against the cluster (kbroker/cluster.py P4), or counts and a replication factor placed."""
    cluster = broker.cluster
    if topic.assignments:
        if topic.replication_factor != -1:
            raise KafkaError(ErrorCode.INVALID_REQUEST, "A manual partition assignment was specified, "
                             "but replication factor was not set to -1.")
        if topic.num_partitions != -1:
            raise KafkaError(ErrorCode.INVALID_REQUEST, "A manual partition assignment was specified, "
                             "but numPartitions was not set to -1.")
        lists: dict[int, list[int]] = {}
        for assignment in topic.assignments:
            if assignment.partition_index in lists:
                raise KafkaError(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                                 "Found multiple manual partition assignments for partition "
                                 f"{assignment.partition_index}")
            first = next(iter(lists.values()), None)
            cluster.check_assignment(assignment.broker_ids, first and len(first),
                                     assignment.partition_index)
            lists[assignment.partition_index] = list(assignment.broker_ids)
        if set(lists) != set(range(len(lists))):
            raise KafkaError(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                             "partitions should be a consecutive 0-based integer sequence")
        return [lists[index] for index in range(len(lists))]
    if topic.replication_factor < -1 or topic.replication_factor == 0:
        raise KafkaError(ErrorCode.INVALID_REPLICATION_FACTOR,
                         "Replication factor must be larger than 0, or -1 to use the default value.")
    if topic.num_partitions < -1 or topic.num_partitions == 0:
        raise KafkaError(ErrorCode.INVALID_PARTITIONS,
                         "Number of partitions was set to an invalid non-positive value.")
    replicas = topic.replication_factor
    if replicas == -1:
        replicas = broker.config["default.replication.factor"]
    count = broker.config["num.partitions"] if topic.num_partitions == -1 else topic.num_partitions
    return cluster.plan(count, replicas)


def _create_topic(broker, topic, validate_only: bool, version: int, quota):
    """Create (or only validate, charged all the same, as Kafka's controller does) one topic;
    returns its result entry."""
    Result = CreateTopicsResponse.CreatableTopicResult
    name = topic.name
    try:
        validate_topic_name(name)
        if name in broker.logs.topics:
            raise KafkaError(ErrorCode.TOPIC_ALREADY_EXISTS, f"Topic '{name}' already exists.")
        nulls = [config.name for config in topic.configs if config.value is None]
        if nulls:
            raise KafkaError(ErrorCode.INVALID_CONFIG,
                             "Null value not supported for topic configs: " + ",".join(nulls))
        overrides = {config.name: config.value for config in topic.configs}
        check_topic_configs(broker, overrides)
        replica_lists = _replica_lists(broker, topic)
        count = len(replica_lists)
        quota.charge(count, broker.clock.now_ms())
        if validate_only:
            info = broker.logs.create_topic(name, count, overrides, validate_only=True)
        else:
            broker.cluster.add_topic(name, replica_lists)  # placed before the logs tell the model
            try:
                info = broker.storage.create_topic(name, count, overrides)
            except BaseException:
                broker.cluster.remove_topics([name])
                raise
    except KafkaError as exc:
        return Result(name=name, error_code=exc.code, error_message=exc.message)
    result = Result(name=name, topic_id=info.topic_id, error_code=ErrorCode.NONE,
                    error_message=None, num_partitions=count, replication_factor=len(replica_lists[0]))
    if version >= 5:
        Config = CreateTopicsResponse.CreatableTopicConfigs
        result.configs = [
            Config(name=entry.name, value=entry.value, read_only=False,
                   config_source=entry.source, is_sensitive=False)
            for entry in topic_config_entries(broker, info.configs)
        ]
    return result


@serves("CreateTopics", 2, 7, oldest=0)
async def handle_create_topics(ctx: RequestContext,
                               request: CreateTopicsRequest) -> CreateTopicsResponse:
    twice = _duplicates(topic.name for topic in request.topics)
    quota = mutation_quota(ctx, strict_since=6)
    results = [
        _create_topic(ctx.broker, topic, request.validate_only, ctx.api_version, quota)
        if may_create_topic(ctx, topic.name) else CreateTopicsResponse.CreatableTopicResult(
            name=topic.name, error_code=ErrorCode.TOPIC_AUTHORIZATION_FAILED,
            error_message="Authorization failed.")
        for topic in request.topics if topic.name not in twice
    ]
    results.extend(
        CreateTopicsResponse.CreatableTopicResult(
            name=name, error_code=ErrorCode.INVALID_REQUEST, error_message="Duplicate topic name.")
        for name in sorted(twice)
    )
    return CreateTopicsResponse(throttle_time_ms=mutation_throttle_ms(ctx, quota), topics=results)


# -- DeleteTopics ----------------------------------------------------------------------------

@serves("DeleteTopics", 1, 6, oldest=0)
async def handle_delete_topics(ctx: RequestContext,
                               request: DeleteTopicsRequest) -> DeleteTopicsResponse:
    broker = ctx.broker
    Result = DeleteTopicsResponse.DeletableTopicResult
    version = ctx.api_version
    if version >= 6:
        asked = [(state.name, state.topic_id) for state in request.topics]
    else:
        asked = [(name, ZERO_UUID) for name in request.topic_names]
    if not broker.config["delete.topic.enable"]:
        code = ErrorCode.INVALID_REQUEST if version < 3 else ErrorCode.TOPIC_DELETION_DISABLED
        return DeleteTopicsResponse(responses=[
            Result(name=name, topic_id=topic_id, error_code=code,
                   error_message="Topic deletion is disabled.")
            for name, topic_id in asked
        ])
    results: list = []

    def fail(name, topic_id, code: ErrorCode, message: str | None = None) -> None:
        results.append(Result(name=name, topic_id=topic_id, error_code=code,
                              error_message=message or DEFAULT_MESSAGES.get(code)))

    names = [name for name, topic_id in asked if name is not None and topic_id == ZERO_UUID]
    ids = [topic_id for name, topic_id in asked if name is None and topic_id != ZERO_UUID]
    twice_names, twice_ids = _duplicates(names), _duplicates(ids)
    for name, topic_id in asked:
        if name is None and topic_id == ZERO_UUID:
            fail(None, ZERO_UUID, ErrorCode.INVALID_REQUEST, "Neither topic name nor id were specified.")
        elif name is not None and topic_id != ZERO_UUID:
            fail(name, topic_id, ErrorCode.INVALID_REQUEST,
                 "You may not specify both topic name and topic id.")
    for name in sorted(twice_names):
        fail(name, ZERO_UUID, ErrorCode.INVALID_REQUEST, "Duplicate topic name.")
    for topic_id in twice_ids:
        fail(None, topic_id, ErrorCode.INVALID_REQUEST, "Duplicate topic id.")
    doomed: dict[str, uuid.UUID] = {}
    for topic_id in dict.fromkeys(ids):
        if topic_id in twice_ids:
            continue
        info = broker.logs.topic_by_id(topic_id)
        if info is None or not allowed_topic(ctx, Operation.DESCRIBE, info.name):
            fail(None, topic_id, ErrorCode.UNKNOWN_TOPIC_ID)
        elif not allowed_topic(ctx, Operation.DELETE, info.name):
            fail(info.name, topic_id, ErrorCode.TOPIC_AUTHORIZATION_FAILED)
        else:
            doomed[info.name] = topic_id
    for name in dict.fromkeys(names):
        if name in twice_names:
            continue
        info = broker.logs.topics.get(name)
        if not allowed_topic(ctx, Operation.DELETE, name):
            fail(name, ZERO_UUID, ErrorCode.TOPIC_AUTHORIZATION_FAILED)
        elif info is None:
            fail(name, ZERO_UUID, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
        elif name in doomed:
            del doomed[name]
            fail(name, info.topic_id, ErrorCode.INVALID_REQUEST,
                 "The provided topic name maps to an ID that was already supplied.")
        else:
            doomed[name] = info.topic_id
    quota = mutation_quota(ctx, strict_since=5)
    for name, topic_id in list(doomed.items()):
        try:
            quota.charge(broker.logs.topics[name].partitions, broker.clock.now_ms())
        except KafkaError as exc:
            del doomed[name]
            fail(name, topic_id, exc.code, exc.message)
    broker.storage.delete_topics(list(doomed))
    results.extend(Result(name=name, topic_id=topic_id, error_code=ErrorCode.NONE)
                   for name, topic_id in doomed.items())
    return DeleteTopicsResponse(throttle_time_ms=mutation_throttle_ms(ctx, quota), responses=results)


# -- CreatePartitions ------------------------------------------------------------------------

def _grow_topic(broker, topic, validate_only: bool, quota) -> None:
    info = broker.logs.topics.get(topic.name)
    if info is None:
        raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, UNKNOWN_TOPIC_MESSAGE)
    if topic.count == info.partitions:
        raise KafkaError(ErrorCode.INVALID_PARTITIONS,
                         f"Topic already has {info.partitions} partition(s).")
    if topic.count < info.partitions:
        raise KafkaError(ErrorCode.INVALID_PARTITIONS,
                         f"The topic {topic.name} currently has {info.partitions} partition(s); "
                         f"{topic.count} would not be an increase.")
    additional = topic.count - info.partitions
    if topic.assignments is not None:
        if len(topic.assignments) != additional:
            raise KafkaError(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                             f"Attempted to add {additional} additional partition(s), but only "
                             f"{len(topic.assignments)} assignment(s) were specified.")
    quota.charge(additional, broker.clock.now_ms())
    existing = broker.cluster.partition(topic.name, 0)
    factor = len(existing.replicas) if existing is not None else 1
    if topic.assignments is not None:
        for index, assignment in enumerate(topic.assignments, info.partitions):
            broker.cluster.check_assignment(assignment.broker_ids, factor, index)
        lists = [list(assignment.broker_ids) for assignment in topic.assignments]
    else:
        lists = broker.cluster.plan(additional, factor, info.partitions)
    if not validate_only:
        broker.cluster.add_partitions(topic.name, lists)
        broker.logs.add_partitions(topic.name, topic.count)


@serves("CreatePartitions", 0, 3)
async def handle_create_partitions(ctx: RequestContext,
                                   request: CreatePartitionsRequest) -> CreatePartitionsResponse:
    Result = CreatePartitionsResponse.CreatePartitionsTopicResult
    twice = _duplicates(topic.name for topic in request.topics)
    quota = mutation_quota(ctx, strict_since=3)
    results = [Result(name=name, error_code=ErrorCode.INVALID_REQUEST,
                      error_message="Duplicate topic name.") for name in sorted(twice)]
    for topic in request.topics:
        if topic.name in twice:
            continue
        if not allowed_topic(ctx, Operation.ALTER, topic.name):
            results.append(Result(name=topic.name, error_code=ErrorCode.TOPIC_AUTHORIZATION_FAILED,
                                  error_message=DEFAULT_MESSAGES.get(ErrorCode.TOPIC_AUTHORIZATION_FAILED)))
            continue
        try:
            _grow_topic(ctx.broker, topic, request.validate_only, quota)
        except KafkaError as exc:
            results.append(Result(name=topic.name, error_code=exc.code, error_message=exc.message))
        else:
            results.append(Result(name=topic.name, error_code=ErrorCode.NONE))
    return CreatePartitionsResponse(throttle_time_ms=mutation_throttle_ms(ctx, quota), results=results)


# -- DeleteRecords ---------------------------------------------------------------------------

def _delete_records(ctx: RequestContext, topic: str, partition: int, offset: int) -> int:
    """Move one partition's log start offset; returns the new low watermark."""
    broker = ctx.broker
    if topic in INTERNAL_TOPICS:
        raise KafkaError(ErrorCode.INVALID_TOPIC_EXCEPTION, f"Cannot delete records of internal topic {topic}")
    partition_log = broker.logs.partition(topic, partition)
    if partition_log is None:
        raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, UNKNOWN_TOPIC_MESSAGE)
    if broker.several_brokers and (error := leader_error(ctx, topic, partition)):
        raise KafkaError(error, None)
    if not partition_log.config.delete:
        raise KafkaError(ErrorCode.POLICY_VIOLATION, f"Records of partition {topic}-{partition} can "
                         "not be deleted due to the configured policy")
    if offset == HIGH_WATERMARK:
        offset = partition_log.high_watermark
    if offset < 0:
        raise KafkaError(ErrorCode.OFFSET_OUT_OF_RANGE,
                         f"The offset {offset} for partition {topic}-{partition} is not valid")
    if offset > partition_log.high_watermark:
        raise KafkaError(ErrorCode.OFFSET_OUT_OF_RANGE,
                         f"Cannot increment the log start offset to {offset} of partition "
                         f"{topic}-{partition} since it is larger than the high watermark "
                         f"{partition_log.high_watermark}")
    return partition_log.delete_records_before(offset, broker.clock.now_ms())


@serves("DeleteRecords", 0, 2)
async def handle_delete_records(ctx: RequestContext,
                                request: DeleteRecordsRequest) -> DeleteRecordsResponse:
    TopicResult = DeleteRecordsResponse.DeleteRecordsTopicResult
    PartitionResult = DeleteRecordsResponse.DeleteRecordsPartitionResult
    topics = []
    for topic in request.topics:
        answers = []
        deletable = allowed_topic(ctx, Operation.DELETE, topic.name)
        for asked in topic.partitions:
            try:
                if not deletable:
                    raise KafkaError(ErrorCode.TOPIC_AUTHORIZATION_FAILED, None)
                low = _delete_records(ctx, topic.name, asked.partition_index, asked.offset)
            except KafkaError as exc:
                answers.append(PartitionResult(partition_index=asked.partition_index, low_watermark=-1,
                                               error_code=exc.code))
            else:
                answers.append(PartitionResult(partition_index=asked.partition_index, low_watermark=low,
                                               error_code=ErrorCode.NONE))
        topics.append(TopicResult(name=topic.name, partitions=answers))
    return DeleteRecordsResponse(throttle_time_ms=0, topics=topics)


# -- DescribeCluster -------------------------------------------------------------------------

@serves("DescribeCluster", 0, 2)
async def handle_describe_cluster(ctx: RequestContext,
                                  request: DescribeClusterRequest) -> DescribeClusterResponse:
    broker = ctx.broker
    endpoint = request.endpoint_type if ctx.api_version >= 1 else BROKER_ENDPOINT
    if endpoint not in (1, 2):
        return DescribeClusterResponse(
            error_code=ErrorCode.INVALID_REQUEST if ctx.api_version == 0 else
            ErrorCode.UNSUPPORTED_ENDPOINT_TYPE,
            error_message=f"Unsupported endpoint type {endpoint}")
    if endpoint != BROKER_ENDPOINT:
        return DescribeClusterResponse(
            error_code=ErrorCode.MISMATCHED_ENDPOINT_TYPE,
            error_message="The request was sent to an endpoint of type BROKER, but we wanted an "
                          "endpoint of type CONTROLLER")
    return DescribeClusterResponse(
        throttle_time_ms=0, error_code=ErrorCode.NONE, endpoint_type=BROKER_ENDPOINT,
        cluster_id=broker.identity.cluster_id, controller_id=controller_id(broker),
        brokers=[DescribeClusterResponse.DescribeClusterBroker(
            broker_id=node, host=host, port=port, rack=None) for node, host, port in live_brokers(ctx)],
        cluster_authorized_operations=(
            authorized_operations(ctx, ResourceType.CLUSTER, CLUSTER_NAME, CLUSTER_OPERATIONS)
            if request.include_cluster_authorized_operations else OPERATIONS_NOT_REQUESTED),
    )


# -- DescribeTopicPartitions -----------------------------------------------------------------

@serves("DescribeTopicPartitions", 0, 0)
async def handle_describe_topic_partitions(
        ctx: RequestContext,
        request: DescribeTopicPartitionsRequest) -> DescribeTopicPartitionsResponse:
    """Topics in name order, partitions paged by response_partition_limit and the cursor."""
    broker = ctx.broker
    Response = DescribeTopicPartitionsResponse
    cursor = request.cursor
    after = cursor.topic_name if cursor is not None else ""
    everything = not request.topics
    names = sorted(broker.logs.topics) if everything else sorted({t.name for t in request.topics})
    names = [name for name in names if name >= after
             and (not everything or allowed_topic(ctx, Operation.DESCRIBE, name))]
    if cursor is not None and (cursor.partition_index < 0 or (not everything and after not in names)):
        # Kafka throws InvalidRequestException: every requested topic gets the error.
        return Response(topics=[Response.DescribeTopicPartitionsResponseTopic(
            error_code=ErrorCode.INVALID_REQUEST, name=topic.name) for topic in request.topics])
    remaining = max(min(MAX_DESCRIBE_PARTITIONS, request.response_partition_limit), 1)
    topics, next_cursor = [], None
    for name in names:
        if remaining == 0:
            next_cursor = Response.Cursor(topic_name=name, partition_index=0)
            break
        info = broker.logs.topics.get(name)
        if not allowed_topic(ctx, Operation.DESCRIBE, name):
            topics.append(Response.DescribeTopicPartitionsResponseTopic(
                error_code=ErrorCode.TOPIC_AUTHORIZATION_FAILED, name=name, topic_id=ZERO_UUID,
                partitions=[], topic_authorized_operations=OPERATIONS_NOT_REQUESTED))
            continue
        if info is None:
            if not everything:
                try:
                    validate_topic_name(name)
                    code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                except KafkaError:
                    code = ErrorCode.INVALID_TOPIC_EXCEPTION
                topics.append(Response.DescribeTopicPartitionsResponseTopic(
                    error_code=code, name=name, topic_id=ZERO_UUID, is_internal=name in INTERNAL_TOPICS,
                    partitions=[], topic_authorized_operations=TOPIC_OPERATIONS))
            continue
        start = cursor.partition_index if cursor is not None and name == after else 0
        end = min(info.partitions, start + remaining)
        topics.append(Response.DescribeTopicPartitionsResponseTopic(
            error_code=ErrorCode.NONE, name=name, topic_id=info.topic_id,
            is_internal=name in INTERNAL_TOPICS,
            partitions=[Response.DescribeTopicPartitionsResponsePartition(
                **partition_fields(broker, name, index), eligible_leader_replicas=[], last_known_elr=[],
            ) for index in range(start, end)],
            topic_authorized_operations=TOPIC_OPERATIONS))
        if end < info.partitions:
            next_cursor = Response.Cursor(topic_name=name, partition_index=end)
            break
        remaining -= end - start
    return Response(throttle_time_ms=0, topics=topics, next_cursor=next_cursor)
