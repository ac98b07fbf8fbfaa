"""What each API authorizes, as Kafka's KafkaApis does, in one place; handlers ask these helpers.

Without an authorizer (`authorizer.class.name` empty, `broker.acls` None) every helper allows
everything and costs one attribute test. The checks, per API (resource, operation -> error):

  Metadata                 TOPIC DESCRIBE (listing all: hidden; named: TOPIC_AUTHORIZATION_FAILED);
                           auto-creation: CLUSTER or TOPIC CREATE
  Produce                  TOPIC WRITE (per partition); transactional: TRANSACTIONAL_ID WRITE
  Fetch                    TOPIC READ (per partition)
  ListOffsets, OffsetForLeaderEpoch, DescribeProducers   TOPIC DESCRIBE (per partition)
  OffsetCommit, TxnOffsetCommit   GROUP READ, then TOPIC READ (per partition)
  OffsetFetch              GROUP DESCRIBE, then TOPIC DESCRIBE (unauthorized topics: per partition
                           when named, hidden when all are asked for)
  OffsetDelete             GROUP DELETE, then TOPIC READ
  JoinGroup, SyncGroup, Heartbeat, LeaveGroup, ConsumerGroupHeartbeat
                           GROUP READ -> GROUP_AUTHORIZATION_FAILED
  ShareGroupHeartbeat      GROUP READ, then TOPIC DESCRIBE on every subscribed topic (else
                           TOPIC_AUTHORIZATION_FAILED for the request)
  ShareFetch, ShareAcknowledge   GROUP READ, then TOPIC READ (per partition, fetch and
                           acknowledgement alike)
  ShareGroupDescribe       GROUP DESCRIBE, then TOPIC DESCRIBE on every assigned topic (else
                           TOPIC_AUTHORIZATION_FAILED for the group, without members)
  DescribeShareGroupOffsets   GROUP DESCRIBE, then TOPIC DESCRIBE (named: per partition; all: hidden)
  AlterShareGroupOffsets   GROUP READ, then TOPIC READ (per topic)
  DeleteShareGroupOffsets  GROUP DELETE, then TOPIC READ (per topic)
  FindCoordinator          GROUP DESCRIBE / TRANSACTIONAL_ID DESCRIBE
  ListGroups               GROUP DESCRIBE (filtered), or CLUSTER DESCRIBE for all
  DescribeGroups, ConsumerGroupDescribe   GROUP DESCRIBE
  DeleteGroups             GROUP DELETE
  InitProducerId           transactional: TRANSACTIONAL_ID WRITE; idempotent: CLUSTER
                           IDEMPOTENT_WRITE or WRITE on some topic
  AddPartitionsToTxn       TRANSACTIONAL_ID WRITE, then TOPIC WRITE (per partition)
  AddOffsetsToTxn          TRANSACTIONAL_ID WRITE, then GROUP READ
  EndTxn                   TRANSACTIONAL_ID WRITE
  DescribeTransactions     TRANSACTIONAL_ID DESCRIBE;  ListTransactions: filtered by it
  CreateTopics             CLUSTER or TOPIC CREATE (TOPIC_AUTHORIZATION_FAILED)
  DeleteTopics, DeleteRecords   TOPIC DELETE
  CreatePartitions         TOPIC ALTER
  DescribeConfigs          CLUSTER / TOPIC / GROUP DESCRIBE_CONFIGS
  AlterConfigs, IncrementalAlterConfigs   CLUSTER / TOPIC / GROUP ALTER_CONFIGS
  DescribeTopicPartitions  TOPIC DESCRIBE (all: hidden; named: TOPIC_AUTHORIZATION_FAILED)
  DescribeAcls, DescribeLogDirs, DescribeUserScramCredentials, ListPartitionReassignments
                           CLUSTER DESCRIBE
  CreateAcls, DeleteAcls, AlterUserScramCredentials, UpdateFeatures, ElectLeaders,
  AlterPartitionReassignments, AlterReplicaLogDirs   CLUSTER ALTER
  DescribeClientQuotas / AlterClientQuotas   CLUSTER DESCRIBE_CONFIGS / ALTER_CONFIGS
  (cluster checks fail with CLUSTER_AUTHORIZATION_FAILED)
  Metadata, DescribeCluster, DescribeGroups, ... with authorized operations asked for: the bit
  set of what the caller may do (DescribeCluster itself needs nothing, as in Kafka)
"""

from __future__ import annotations

from collections.abc import Iterable

from kbroker.api.context import RequestContext
from kbroker.security.authorizer import CLUSTER_NAME, Operation, ResourceType


def allowed(ctx: RequestContext, operation: Operation, resource_type: ResourceType, name: str) -> bool:
    acls = ctx.broker.acls
    if acls is None:
        return True
    session = ctx.session
    return acls.authorizer.authorize(session.principal, session.peer_host, operation, resource_type, name)


def allowed_cluster(ctx: RequestContext, operation: Operation) -> bool:
    return allowed(ctx, operation, ResourceType.CLUSTER, CLUSTER_NAME)


def allowed_topic(ctx: RequestContext, operation: Operation, name: str) -> bool:
    return allowed(ctx, operation, ResourceType.TOPIC, name)


def allowed_group(ctx: RequestContext, operation: Operation, group_id: str) -> bool:
    return allowed(ctx, operation, ResourceType.GROUP, group_id)


def allowed_transactional_id(ctx: RequestContext, operation: Operation, transactional_id: str) -> bool:
    return allowed(ctx, operation, ResourceType.TRANSACTIONAL_ID, transactional_id)


def allowed_on_some(ctx: RequestContext, operation: Operation, resource_type: ResourceType) -> bool:
    """Kafka's authorizeByResourceType: the operation on at least one resource of the type."""
    acls = ctx.broker.acls
    if acls is None:
        return True
    session = ctx.session
    return acls.authorizer.authorize_any(session.principal, session.peer_host, operation, resource_type)


def may_create_topic(ctx: RequestContext, name: str) -> bool:
    return allowed_cluster(ctx, Operation.CREATE) or allowed_topic(ctx, Operation.CREATE, name)


def authorized_operations(ctx: RequestContext, resource_type: ResourceType, name: str,
                          every_operation: int) -> int:
    """The bit set of operations (of `every_operation`'s bits) the caller may do on the resource,
    as Metadata, DescribeCluster and DescribeGroups answer when asked."""
    if ctx.broker.acls is None:
        return every_operation
    return sum(1 << operation for operation in Operation
               if every_operation >> operation & 1 and allowed(ctx, operation, resource_type, name))


def topics_allowed(ctx: RequestContext, operation: Operation, names: Iterable[str]) -> set[str]:
    """The names among `names` the caller may do the operation on."""
    return {name for name in names if allowed_topic(ctx, operation, name)}
