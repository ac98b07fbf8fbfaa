"""Replicas, leaders and log dirs: DescribeLogDirs, AlterReplicaLogDirs, ElectLeaders and the
reassignment APIs, answered as a KRaft Apache Kafka with one log dir per broker answers them.

Rules: elections and reassignments act on the cluster model (kbroker/cluster.py, its rules P5
and P6; one broker is a cluster of one), with the checks and messages of Kafka's controller
(ReplicationControlManager) around them; a replica is already in its broker's one log dir. Each
API needs CLUSTER DESCRIBE (DescribeLogDirs, ListPartitionReassignments) or CLUSTER ALTER.
"""

from __future__ import annotations

import os
import uuid

from kbroker.api.admin import DEFAULT_MESSAGES
from kbroker.api.authorization import allowed_cluster
from kbroker.api.context import RequestContext
from kbroker.api.registry import serves
from kbroker.api.routing import partition_state
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.messages import (
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
    AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse, DescribeLogDirsRequest,
    DescribeLogDirsResponse, ElectLeadersRequest, ElectLeadersResponse,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
)
from kbroker.security.authorizer import Operation

PREFERRED, UNCLEAN = 0, 1  # ElectLeaders election types


# -- DescribeLogDirs -------------------------------------------------------------------------

def _hosted(ctx: RequestContext, topic: str, index: int) -> bool:
    """Whether the node asked keeps a replica of the partition (with --brokers N each node
    describes and moves only its own replicas, as each Kafka broker does)."""
    if not ctx.broker.several_brokers:
        return True
    state = partition_state(ctx.broker, topic, index)
    return state is not None and ctx.node_id in state.replicas


@serves("DescribeLogDirs", 1, 5, oldest=0)
async def handle_describe_log_dirs(ctx: RequestContext,
                                   request: DescribeLogDirsRequest) -> DescribeLogDirsResponse:
    broker = ctx.broker
    if not allowed_cluster(ctx, Operation.DESCRIBE):
        return DescribeLogDirsResponse(throttle_time_ms=0, results=[],
                                       error_code=ErrorCode.CLUSTER_AUTHORIZATION_FAILED)
    Topic = DescribeLogDirsResponse.DescribeLogDirsTopic
    Partition = DescribeLogDirsResponse.DescribeLogDirsPartition
    wanted = None if request.topics is None else {
        (topic.topic, index) for topic in request.topics for index in topic.partitions
    }
    by_topic: dict[str, list] = {}
    for name, info in broker.logs.topics.items():
        for index in range(info.partitions):
            if (wanted is not None and (name, index) not in wanted) or not _hosted(ctx, name, index):
                continue
            partition_log = broker.logs.partition(name, index)
            assert partition_log is not None  # the topic has it
            by_topic.setdefault(name, []).append(Partition(
                partition_index=index, partition_size=partition_log.size_bytes, offset_lag=0,
                is_future_key=False))
    disk = os.statvfs(broker.data_dir)
    result = DescribeLogDirsResponse.DescribeLogDirsResult(
        error_code=ErrorCode.NONE, log_dir=str(broker.data_dir.resolve()),
        topics=[Topic(name=name, partitions=partitions) for name, partitions in by_topic.items()],
        total_bytes=disk.f_blocks * disk.f_frsize, usable_bytes=disk.f_bavail * disk.f_frsize,
    )
    return DescribeLogDirsResponse(throttle_time_ms=0, error_code=ErrorCode.NONE, results=[result])


def _move_replica(ctx: RequestContext, topic: str, partition: int, destination: str) -> None:
    """The checks of Kafka's ReplicaManager.alterReplicaLogDirs, in its order. There is one log
    dir, so a replica that passes them is already where it is asked to be."""
    broker = ctx.broker
    if len(f"{topic}-{partition}.{uuid.UUID(int=0).hex}-future") > 255:
        raise KafkaError(ErrorCode.INVALID_TOPIC_EXCEPTION, "The topic name is too long.")
    data_dir = broker.data_dir
    if destination not in (str(data_dir.absolute()), str(data_dir.resolve())):
        raise KafkaError(ErrorCode.LOG_DIR_NOT_FOUND, f"Log dir {destination} is not found in the config.")
    if broker.logs.log_dir.offline:
        raise KafkaError(ErrorCode.KAFKA_STORAGE_ERROR, f"Log directory {destination} is offline")
    info = broker.logs.topics.get(topic)
    if info is None or not 0 <= partition < info.partitions or not _hosted(ctx, topic, partition):
        # Kafka answers NOT_LEADER_OR_FOLLOWER as REPLICA_NOT_AVAILABLE here, for old clients.
        raise KafkaError(ErrorCode.REPLICA_NOT_AVAILABLE)


@serves("AlterReplicaLogDirs", 1, 2, oldest=0)
async def handle_alter_replica_log_dirs(
        ctx: RequestContext, request: AlterReplicaLogDirsRequest) -> AlterReplicaLogDirsResponse:
    destinations: dict[tuple[str, int], str] = {}  # the last dir named for a partition wins
    for log_dir in request.dirs:
        for topic in log_dir.topics:
            for partition in topic.partitions:
                destinations[(topic.name, partition)] = log_dir.path
    Result = AlterReplicaLogDirsResponse.AlterReplicaLogDirTopicResult
    by_topic: dict[str, list] = {}
    altering_allowed = allowed_cluster(ctx, Operation.ALTER)
    for (topic_name, partition), destination in destinations.items():
        try:
            if not altering_allowed:
                raise KafkaError(ErrorCode.CLUSTER_AUTHORIZATION_FAILED)
            _move_replica(ctx, topic_name, partition, destination)
            code = ErrorCode.NONE
        except KafkaError as exc:
            code = exc.code
        by_topic.setdefault(topic_name, []).append(
            AlterReplicaLogDirsResponse.AlterReplicaLogDirPartitionResult(partition_index=partition,
                                                                          error_code=code))
    return AlterReplicaLogDirsResponse(throttle_time_ms=0, results=[
        Result(topic_name=topic, partitions=partitions) for topic, partitions in by_topic.items()])


# -- ElectLeaders and reassignments ----------------------------------------------------------

def _require_partition(cluster, topic: str, partition: int, no_topic: str, no_partition: str):
    """The partition's state in the cluster model; UNKNOWN_TOPIC_OR_PARTITION, in the caller's
    wording (Kafka's differ by API), if there is none."""
    if topic not in cluster.topics:
        raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, no_topic)
    state = cluster.partition(topic, partition)
    if state is None:
        raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, no_partition)
    return state


def _elect(cluster, topic: str, partition: int, election: int) -> KafkaError | None:
    """One partition's election (Kafka's ReplicationControlManager.electLeader): None when a new
    leader was elected, else why not, with Kafka's default message for the election errors."""
    try:
        _require_partition(cluster, topic, partition, f"No such topic as {topic}",
                           f"No such partition as {topic}-{partition}")
        if election == PREFERRED:
            cluster.elect_preferred(topic, partition)
        else:
            cluster.elect_unclean(topic, partition)
    except KafkaError as exc:
        return KafkaError(exc.code, DEFAULT_MESSAGES.get(exc.code, exc.message))
    return None


@serves("ElectLeaders", 0, 2)
async def handle_elect_leaders(ctx: RequestContext,
                               request: ElectLeadersRequest) -> ElectLeadersResponse:
    Result = ElectLeadersResponse.ReplicaElectionResult
    PartitionResult = ElectLeadersResponse.PartitionResult
    election = request.election_type if ctx.api_version >= 1 else PREFERRED
    refusal = None
    if not allowed_cluster(ctx, Operation.ALTER):
        refusal = ErrorCode.CLUSTER_AUTHORIZATION_FAILED, "Cluster authorization failed."
    elif election not in (PREFERRED, UNCLEAN):
        refusal = ErrorCode.INVALID_REQUEST, f"Unknown election type {election}"
    if refusal is not None:
        error, message = refusal
        return ElectLeadersResponse(error_code=error, replica_election_results=[
            Result(topic=topic.topic, partition_result=[
                PartitionResult(partition_id=p, error_code=error, error_message=message)
                for p in topic.partitions])
            for topic in request.topic_partitions or []])
    cluster = ctx.broker.cluster

    def answer(topic: str, partition: int) -> ElectLeadersResponse.PartitionResult:
        failure = _elect(cluster, topic, partition, election)
        return PartitionResult(partition_id=partition, error_code=failure.code if failure else ErrorCode.NONE,
                               error_message=failure.message if failure else None)

    if request.topic_partitions is None:
        # Every partition of every topic; those whose leader is already right are left out.
        results = [Result(topic=topic, partition_result=[
            result for result in (answer(topic, p) for p in range(len(partitions)))
            if result.error_code != ErrorCode.ELECTION_NOT_NEEDED])
            for topic, partitions in list(cluster.topics.items())]
    else:
        results = [Result(topic=topic.topic, partition_result=[answer(topic.topic, p) for p in topic.partitions])
                   for topic in request.topic_partitions]
    return ElectLeadersResponse(throttle_time_ms=0, error_code=ErrorCode.NONE,
                                replica_election_results=results)


@serves("ListPartitionReassignments", 0, 0)
async def handle_list_partition_reassignments(
        ctx: RequestContext,
        request: ListPartitionReassignmentsRequest) -> ListPartitionReassignmentsResponse:
    Response = ListPartitionReassignmentsResponse
    if not allowed_cluster(ctx, Operation.DESCRIBE):
        return Response(throttle_time_ms=0, error_code=ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
                        error_message=None, topics=[])
    ongoing = ctx.broker.cluster.reassignments()
    if request.topics is None:
        wanted = sorted(ongoing)
    else:  # unknown topics and partitions, and those not being reassigned, are left out
        wanted = [(topic.name, p) for topic in request.topics for p in topic.partition_indexes
                  if (topic.name, p) in ongoing]
    by_topic: dict[str, list] = {}
    for topic, partition in wanted:
        state = ongoing[(topic, partition)]
        by_topic.setdefault(topic, []).append(Response.OngoingPartitionReassignment(
            partition_index=partition, replicas=list(state.replicas),
            adding_replicas=list(state.adding), removing_replicas=list(state.removing)))
    return Response(throttle_time_ms=0, error_code=ErrorCode.NONE, error_message=None, topics=[
        Response.OngoingTopicReassignment(name=name, partitions=partitions)
        for name, partitions in by_topic.items()])


def _reassign(cluster, topic: str, partition: int, replicas: list[int] | None,
              allow_replication_factor_change: bool) -> None:
    """One partition of AlterPartitionReassignments (Kafka's alterPartitionReassignment)."""
    state = _require_partition(cluster, topic, partition, f"Unable to find a topic named {topic}.",
                               f"Unable to find partition {topic}:{partition}.")
    if replicas is not None and not allow_replication_factor_change:  # KIP-860
        heading_for = [node for node in state.replicas if node not in state.removing]
        if len(replicas) != len(heading_for):
            raise KafkaError(ErrorCode.INVALID_REPLICATION_FACTOR,
                             f"The replication factor is changed from {len(heading_for)} to {len(replicas)}")
    cluster.reassign(topic, partition, replicas)


@serves("AlterPartitionReassignments", 0, 1)
async def handle_alter_partition_reassignments(
        ctx: RequestContext,
        request: AlterPartitionReassignmentsRequest) -> AlterPartitionReassignmentsResponse:
    Response = AlterPartitionReassignmentsResponse
    if not allowed_cluster(ctx, Operation.ALTER):
        return Response(throttle_time_ms=0, error_code=ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
                        error_message=None, responses=[],
                        allow_replication_factor_change=request.allow_replication_factor_change)
    # v0 has no AllowReplicationFactorChange: its default, true, applies.
    allow_change = ctx.api_version < 1 or request.allow_replication_factor_change
    topics = []
    for topic in request.topics:
        answers = []
        for partition in topic.partitions:
            code, message = ErrorCode.NONE, None
            try:
                _reassign(ctx.broker.cluster, topic.name, partition.partition_index, partition.replicas,
                          allow_change)
            except KafkaError as exc:
                code, message = exc.code, exc.message
            answers.append(Response.ReassignablePartitionResponse(
                partition_index=partition.partition_index, error_code=code, error_message=message))
        topics.append(Response.ReassignableTopicResponse(name=topic.name, partitions=answers))
    return Response(throttle_time_ms=0, error_code=ErrorCode.NONE, error_message=None, responses=topics,
                    allow_replication_factor_change=request.allow_replication_factor_change)
