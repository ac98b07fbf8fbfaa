"""Metadata: brokers, cluster id, controller and topics; auto-creates topics when allowed.
With --brokers N the brokers and each partition's leader and replicas come from the cluster
model (kbroker/api/routing.py)."""

from __future__ import annotations

from kbroker.api.authorization import allowed_topic, authorized_operations, may_create_topic
from kbroker.api.common import CLUSTER_OPERATIONS, OPERATIONS_NOT_REQUESTED, TOPIC_OPERATIONS
from kbroker.api.context import RequestContext
from kbroker.api.registry import serves
from kbroker.api.routing import controller_id, live_brokers, partition_state
from kbroker.broker import INTERNAL_TOPICS
from kbroker.cluster import NO_LEADER
from kbroker.log import validate_topic_name
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.messages import MetadataRequest, MetadataResponse
from kbroker.security.authorizer import CLUSTER_NAME, Operation, ResourceType

Topic = MetadataResponse.MetadataResponseTopic
Partition = MetadataResponse.MetadataResponsePartition


def partition_fields(broker, topic: str, index: int) -> dict:
    """A partition's leader, epoch, replicas, ISR and offline replicas from the cluster model
    (routing.py R6); a partition without a leader has LEADER_NOT_AVAILABLE."""
    state = partition_state(broker, topic, index)
    if state is None:
        return dict(error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, partition_index=index,
                    leader_id=-1, leader_epoch=-1, replica_nodes=[], isr_nodes=[], offline_replicas=[])
    return dict(
        error_code=ErrorCode.NONE if state.leader != NO_LEADER else ErrorCode.LEADER_NOT_AVAILABLE,
        partition_index=index, leader_id=state.leader, leader_epoch=state.leader_epoch,
        replica_nodes=list(state.replicas), isr_nodes=list(state.isr),
        offline_replicas=broker.cluster.offline_replicas(state))


def _topic_entry(ctx: RequestContext, info, include_operations: bool) -> Topic:
    broker = ctx.broker
    return Topic(
        error_code=ErrorCode.NONE,
        name=info.name,
        topic_id=info.topic_id,
        is_internal=info.name in INTERNAL_TOPICS,
        partitions=[Partition(**partition_fields(broker, info.name, index))
                    for index in range(info.partitions)],
        topic_authorized_operations=(
            authorized_operations(ctx, ResourceType.TOPIC, info.name, TOPIC_OPERATIONS)
            if include_operations else OPERATIONS_NOT_REQUESTED),
    )


def _requested_topic(ctx: RequestContext, name: str, may_create: bool, include_operations: bool) -> Topic:
    broker = ctx.broker
    if not allowed_topic(ctx, Operation.DESCRIBE, name):
        return Topic(error_code=ErrorCode.TOPIC_AUTHORIZATION_FAILED, name=name)
    info = broker.logs.topics.get(name)
    if info is None:
        try:
            validate_topic_name(name)
        except KafkaError as exc:
            return Topic(error_code=exc.code, name=name)
        if not may_create:
            return Topic(error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, name=name)
        if not may_create_topic(ctx, name):
            return Topic(error_code=ErrorCode.TOPIC_AUTHORIZATION_FAILED, name=name)
        info = broker.storage.create_topic(name)
    return _topic_entry(ctx, info, include_operations)


@serves("Metadata", 0, 13)
async def handle_metadata(ctx: RequestContext, request: MetadataRequest) -> MetadataResponse:
    broker = ctx.broker
    version = ctx.api_version
    include_operations = version >= 8 and request.include_topic_authorized_operations
    may_create = broker.config["auto.create.topics.enable"] and (
        version < 4 or request.allow_auto_topic_creation
    )
    if request.topics is None or (version == 0 and not request.topics):
        topics = [_topic_entry(ctx, info, include_operations) for info in broker.logs.topics.values()
                  if allowed_topic(ctx, Operation.DESCRIBE, info.name)]
    else:
        topics = []
        for wanted in request.topics:
            name = wanted.name
            if name is None:  # v10+: asked for by topic id
                info = broker.logs.topic_by_id(wanted.topic_id)
                if info is None:
                    topics.append(Topic(error_code=ErrorCode.UNKNOWN_TOPIC_ID, name=None,
                                        topic_id=wanted.topic_id))
                    continue
                if not allowed_topic(ctx, Operation.DESCRIBE, info.name):  # its name stays hidden
                    topics.append(Topic(error_code=ErrorCode.TOPIC_AUTHORIZATION_FAILED, name=None,
                                        topic_id=wanted.topic_id))
                    continue
                name = info.name
            topics.append(_requested_topic(ctx, name, may_create, include_operations))
    include_cluster_operations = 8 <= version <= 10 and request.include_cluster_authorized_operations
    return MetadataResponse(
        brokers=[MetadataResponse.MetadataResponseBroker(node_id=node, host=host, port=port, rack=None)
                 for node, host, port in live_brokers(ctx)],
        cluster_id=broker.identity.cluster_id,
        controller_id=controller_id(broker),
        topics=topics,
        cluster_authorized_operations=(
            authorized_operations(ctx, ResourceType.CLUSTER, CLUSTER_NAME, CLUSTER_OPERATIONS)
            if include_cluster_operations else OPERATIONS_NOT_REQUESTED
        ),
    )
