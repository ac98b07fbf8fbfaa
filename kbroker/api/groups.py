"""Consumer group APIs: coordinator lookup, membership, committed offsets, group administration.

The decisions are the group coordinator's (kbroker/groups); this module maps request and
response versions onto it, and checks topics the way Kafka's request layer (KafkaApis) does
before the coordinator is asked.
"""

from __future__ import annotations

from kbroker.api.authorization import (
    allowed_cluster, allowed_group, allowed_topic, allowed_transactional_id, authorized_operations,
)
from kbroker.api.common import (
    GROUP_OPERATIONS, GROUP_OPERATIONS_BEFORE_4_0, OPERATIONS_NOT_REQUESTED, topic_names,
)
from kbroker.api.context import RequestContext
from kbroker.api.registry import serves
from kbroker.api.routing import group_coordinator, node_address, transaction_coordinator
from kbroker.groups.classic_model import STABLE, JoinRequest
from kbroker.groups.coordinator import OffsetToCommit
from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.messages import (
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest,
    OffsetDeleteResponse, OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest,
    SyncGroupResponse,
)
from kbroker.security.authorizer import Operation, ResourceType

GROUP_KEY, TRANSACTION_KEY = 0, 1
GROUP_TYPE = "classic"
SHARE_TYPE = "share"  # a share group's type and protocol type (kbroker/share)
CONSUMER_GROUP_TYPE = CONSUMER_PROTOCOL_TYPE = "consumer"
NO_NODE = (-1, "", -1)
# Kafka's message for INVALID_REQUEST (Errors.java), sent with FindCoordinator errors.
_INVALID_REQUEST_MESSAGE = (
    "This most likely occurs because of a request being malformed by the client library or the "
    "message was sent to an incompatible broker. See the broker logs for more details."
)


def _client_host(ctx) -> str:
    """The client address as Kafka shows it (InetAddress.toString): "/127.0.0.1"."""
    return "/" + ctx.session.peer_host


def _partition_exists(broker, topic: str, partition: int) -> bool:
    info = broker.logs.topics.get(topic)
    return info is not None and 0 <= partition < info.partitions


@serves("FindCoordinator", 0, 6)
async def handle_find_coordinator(ctx: RequestContext,
                                  request: FindCoordinatorRequest) -> FindCoordinatorResponse:
    """Groups and transactional ids (key types 0 and 1): the leader of the key's partition of
    __consumer_offsets / __transaction_state (this broker, unless --brokers N)."""
    version = ctx.api_version
    key_type = request.key_type if version >= 1 else GROUP_KEY
    host, port = ctx.session.advertised

    def answer(key: str) -> tuple[ErrorCode, str, tuple[int, str, int]]:
        if key_type not in (GROUP_KEY, TRANSACTION_KEY):
            return ErrorCode.INVALID_REQUEST, _INVALID_REQUEST_MESSAGE, NO_NODE
        if key_type == GROUP_KEY and not allowed_group(ctx, Operation.DESCRIBE, key):
            return ErrorCode.GROUP_AUTHORIZATION_FAILED, "", NO_NODE
        if key_type == TRANSACTION_KEY and not allowed_transactional_id(ctx, Operation.DESCRIBE, key):
            return ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "", NO_NODE
        if not ctx.broker.several_brokers:
            return ErrorCode.NONE, "NONE", (ctx.broker.node_id, host, port)
        node = (group_coordinator if key_type == GROUP_KEY else transaction_coordinator)(ctx.broker, key)
        address = node_address(ctx, node)
        if address is None:  # its partition has no leader (routing.py R5)
            return ErrorCode.COORDINATOR_NOT_AVAILABLE, "", NO_NODE
        return ErrorCode.NONE, "NONE", (node, *address)

    if version < 4:
        error, message, (node_id, host, port) = answer(request.key)
        return FindCoordinatorResponse(throttle_time_ms=0, error_code=error, error_message=message,
                                       node_id=node_id, host=host, port=port)
    coordinators = []
    for key in request.coordinator_keys:
        error, message, node = answer(key)
        # Kafka leaves the per-key message unset on success and explains errors.
        coordinators.append(FindCoordinatorResponse.Coordinator(
            key=key, node_id=node[0], host=node[1], port=node[2], error_code=error,
            error_message=None if error == ErrorCode.NONE else message or None))
    return FindCoordinatorResponse(throttle_time_ms=0, coordinators=coordinators)


@serves("JoinGroup", 0, 9)
async def handle_join_group(ctx: RequestContext, request: JoinGroupRequest) -> JoinGroupResponse:
    """Answered when the join phase completes (the request waits for the rebalance)."""
    version = ctx.api_version
    if not allowed_group(ctx, Operation.READ, request.group_id):
        return JoinGroupResponse(throttle_time_ms=0, error_code=ErrorCode.GROUP_AUTHORIZATION_FAILED,
                                 generation_id=-1, member_id=request.member_id, members=[])
    if ctx.broker.share.is_share_group(request.group_id):
        return JoinGroupResponse(throttle_time_ms=0, error_code=ErrorCode.INCONSISTENT_GROUP_PROTOCOL,
                                 generation_id=-1, member_id="", members=[])
    result = await ctx.broker.groups.join(JoinRequest(
        group_id=request.group_id,
        member_id=request.member_id,
        protocol_type=request.protocol_type,
        protocols=[(p.name, bytes(p.metadata)) for p in request.protocols],
        session_timeout_ms=request.session_timeout_ms,
        rebalance_timeout_ms=request.rebalance_timeout_ms if version >= 1 else request.session_timeout_ms,
        group_instance_id=request.group_instance_id if version >= 5 else None,
        client_id=ctx.client_id,
        client_host=_client_host(ctx),
        require_known_member_id=version >= 4,
        supports_skip_assignment=version >= 9,
    ), ctx.broker.logs.topics)
    protocol_name = result.protocol_name
    # Before v7 the name is a non-null string; from v7 Kafka sends null rather than "".
    protocol_name = (protocol_name or "") if version < 7 else (protocol_name or None)
    return JoinGroupResponse(
        throttle_time_ms=0, error_code=result.error, generation_id=result.generation_id,
        protocol_type=result.protocol_type, protocol_name=protocol_name, leader=result.leader,
        skip_assignment=result.skip_assignment, member_id=result.member_id,
        members=[
            JoinGroupResponse.JoinGroupResponseMember(
                member_id=member_id, group_instance_id=instance_id, metadata=metadata)
            for member_id, instance_id, metadata in result.members
        ],
    )


@serves("SyncGroup", 0, 5)
async def handle_sync_group(ctx: RequestContext, request: SyncGroupRequest) -> SyncGroupResponse:
    """Followers wait here until the leader's assignment is stored."""
    version = ctx.api_version
    if version >= 5 and (request.protocol_type is None or request.protocol_name is None):
        # Mandatory from v5 (KafkaApis checks this before the coordinator).
        return SyncGroupResponse(throttle_time_ms=0, error_code=ErrorCode.INCONSISTENT_GROUP_PROTOCOL,
                                 assignment=b"")
    if not allowed_group(ctx, Operation.READ, request.group_id):
        return SyncGroupResponse(throttle_time_ms=0, error_code=ErrorCode.GROUP_AUTHORIZATION_FAILED,
                                 assignment=b"")
    result = await ctx.broker.groups.sync(
        request.group_id, request.member_id,
        request.group_instance_id if version >= 3 else None,
        request.generation_id,
        request.protocol_type if version >= 5 else None,
        request.protocol_name if version >= 5 else None,
        {a.member_id: bytes(a.assignment) for a in request.assignments},
    )
    return SyncGroupResponse(throttle_time_ms=0, error_code=result.error,
                             protocol_type=result.protocol_type, protocol_name=result.protocol_name,
                             assignment=result.assignment)


@serves("Heartbeat", 0, 4)
async def handle_heartbeat(ctx: RequestContext, request: HeartbeatRequest) -> HeartbeatResponse:
    if not allowed_group(ctx, Operation.READ, request.group_id):
        return HeartbeatResponse(throttle_time_ms=0, error_code=ErrorCode.GROUP_AUTHORIZATION_FAILED)
    error = await ctx.broker.groups.heartbeat(
        request.group_id, request.member_id,
        request.group_instance_id if ctx.api_version >= 3 else None, request.generation_id,
    )
    return HeartbeatResponse(throttle_time_ms=0, error_code=error)


@serves("LeaveGroup", 0, 5)
async def handle_leave_group(ctx: RequestContext, request: LeaveGroupRequest) -> LeaveGroupResponse:
    """v0-2 name one member; v3+ a batch, each with its own error."""
    version = ctx.api_version
    if not allowed_group(ctx, Operation.READ, request.group_id):
        return LeaveGroupResponse(throttle_time_ms=0, error_code=ErrorCode.GROUP_AUTHORIZATION_FAILED,
                                  members=[])
    if version >= 3:
        leaving = [(m.member_id, m.group_instance_id) for m in request.members]
    else:
        leaving = [(request.member_id, None)]
    error, errors = await ctx.broker.groups.leave(request.group_id, leaving)
    if version < 3:
        return LeaveGroupResponse(throttle_time_ms=0, error_code=error or errors[0])
    return LeaveGroupResponse(throttle_time_ms=0, error_code=error, members=[
        LeaveGroupResponse.MemberResponse(member_id=member_id, group_instance_id=instance_id,
                                          error_code=member_error)
        for (member_id, instance_id), member_error in zip(leaving, errors)
    ])


@serves("OffsetCommit", 2, 10, oldest=0)
async def handle_offset_commit(ctx: RequestContext,
                               request: OffsetCommitRequest) -> OffsetCommitResponse:
    version = ctx.api_version
    broker = ctx.broker
    names = topic_names(broker, request.topics, version >= 10)
    errors: dict[tuple[str | None, int], ErrorCode] = {}
    valid = []
    group_allowed = allowed_group(ctx, Operation.READ, request.group_id)
    for topic, name in zip(request.topics, names):
        for p in topic.partitions:
            if not group_allowed:
                errors[(name, p.partition_index)] = ErrorCode.GROUP_AUTHORIZATION_FAILED
            elif name is None:
                errors[(name, p.partition_index)] = ErrorCode.UNKNOWN_TOPIC_ID
            elif not allowed_topic(ctx, Operation.READ, name):
                errors[(name, p.partition_index)] = ErrorCode.TOPIC_AUTHORIZATION_FAILED
            elif _partition_exists(broker, name, p.partition_index):
                valid.append(OffsetToCommit(
                    name, p.partition_index, p.committed_offset,
                    p.committed_leader_epoch if version >= 6 else -1, p.committed_metadata,
                    p.commit_timestamp if version == 1 else -1))
            else:
                errors[(name, p.partition_index)] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    if valid:
        results = await broker.groups.commit_offsets(
            request.group_id, request.member_id,
            request.group_instance_id if version >= 7 else None,
            request.generation_id_or_member_epoch,
            request.retention_time_ms if version <= 4 else -1,
            valid, version,
        )
        errors.update(((item.topic, item.partition), error) for item, error in zip(valid, results))
    Topic, Partition = OffsetCommitResponse.OffsetCommitResponseTopic, \
        OffsetCommitResponse.OffsetCommitResponsePartition
    return OffsetCommitResponse(throttle_time_ms=0, topics=[
        Topic(name=name or "", topic_id=topic.topic_id, partitions=[
            Partition(partition_index=p.partition_index, error_code=errors[(name, p.partition_index)])
            for p in topic.partitions
        ])
        for topic, name in zip(request.topics, names)
    ])


def _fetch_group(ctx: RequestContext, group_id: str, topics, require_stable: bool, use_ids: bool,
                 partition_cls, topic_cls):
    """One group's committed offsets; from OffsetFetch v10 topics are named by id: an id not
    known is answered with UNKNOWN_TOPIC_ID, and a committed topic with no id (deleted) is left out.
    Topics the caller may not describe get TOPIC_AUTHORIZATION_FAILED when named, and are left
    out of "every committed topic"."""
    broker = ctx.broker
    unknown_ids = []
    hidden = []
    wanted = None
    if topics is not None:
        names = topic_names(broker, topics, use_ids)
        unknown_ids = [topic for topic, name in zip(topics, names) if name is None]
        hidden = [topic for topic, name in zip(topics, names)
                  if name is not None and not allowed_topic(ctx, Operation.DESCRIBE, name)]
        wanted = [(name, list(topic.partition_indexes)) for topic, name in zip(topics, names)
                  if name is not None and allowed_topic(ctx, Operation.DESCRIBE, name)]
    answered = []
    for topic, entries in broker.groups.fetch_offsets(group_id, wanted, require_stable):
        if wanted is None and not allowed_topic(ctx, Operation.DESCRIBE, topic):
            continue
        ids = {}
        if use_ids:
            info = broker.logs.topics.get(topic)
            if info is None:
                continue
            ids["topic_id"] = info.topic_id
        answered.append(topic_cls(name=topic, **ids, partitions=[
            partition_cls(
                partition_index=partition,
                committed_offset=-1 if value is None else value.offset,
                committed_leader_epoch=-1 if value is None else value.leader_epoch,
                metadata="" if value is None else value.metadata,
                error_code=error,
            )
            for partition, value, error in entries
        ]))
    return answered + [
        topic_cls(name="", topic_id=topic.topic_id, partitions=[
            partition_cls(partition_index=partition, committed_offset=-1,
                          error_code=ErrorCode.UNKNOWN_TOPIC_ID)
            for partition in topic.partition_indexes
        ])
        for topic in unknown_ids
    ] + [
        topic_cls(name=topic.name, topic_id=getattr(topic, "topic_id", None), partitions=[
            partition_cls(partition_index=partition, committed_offset=-1,
                          error_code=ErrorCode.TOPIC_AUTHORIZATION_FAILED)
            for partition in topic.partition_indexes
        ])
        for topic in hidden
    ]


@serves("OffsetFetch", 1, 10, oldest=0)
async def handle_offset_fetch(ctx: RequestContext,
                              request: OffsetFetchRequest) -> OffsetFetchResponse:
    """Several groups from v8; a null topic list (v2+) means every committed partition."""
    version = ctx.api_version
    broker = ctx.broker
    require_stable = version >= 7 and request.require_stable
    R = OffsetFetchResponse
    if version >= 8:
        answers = []
        for group in request.groups:
            # v9+: a consumer group member fetches with its current epoch (STALE_MEMBER_EPOCH).
            if not allowed_group(ctx, Operation.DESCRIBE, group.group_id):
                error = ErrorCode.GROUP_AUTHORIZATION_FAILED
            else:
                error = broker.groups.consumer.validate_offset_fetch(
                    group.group_id, group.member_id, group.member_epoch) if version >= 9 else ErrorCode.NONE
            topics = [] if error != ErrorCode.NONE else _fetch_group(
                ctx, group.group_id, group.topics, require_stable, version >= 10,
                R.OffsetFetchResponsePartitions, R.OffsetFetchResponseTopics)
            answers.append(R.OffsetFetchResponseGroup(group_id=group.group_id, error_code=error,
                                                      topics=topics))
        return R(throttle_time_ms=0, groups=answers)
    if not allowed_group(ctx, Operation.DESCRIBE, request.group_id):
        return R(throttle_time_ms=0, error_code=ErrorCode.GROUP_AUTHORIZATION_FAILED, topics=[])
    return R(throttle_time_ms=0, error_code=ErrorCode.NONE, topics=_fetch_group(
        ctx, request.group_id, request.topics, require_stable, False,
        R.OffsetFetchResponsePartition, R.OffsetFetchResponseTopic))


@serves("ListGroups", 0, 5)
async def handle_list_groups(ctx: RequestContext, request: ListGroupsRequest) -> ListGroupsResponse:
    version = ctx.api_version
    states = {s.strip().lower() for s in request.states_filter} if version >= 4 else set()
    types = {t.strip().lower() for t in request.types_filter} if version >= 5 else set()
    groups = ctx.broker.groups
    every_allowed = allowed_cluster(ctx, Operation.DESCRIBE)
    every = [(g.group_id, g.protocol_type or "", g.state.value, GROUP_TYPE) for g in groups.list_groups()]
    every += [(g.group_id, CONSUMER_PROTOCOL_TYPE, g.state.value, CONSUMER_GROUP_TYPE)
              for g in groups.consumer.list_groups()]
    every += [(g.group_id, SHARE_TYPE, g.state, SHARE_TYPE) for g in ctx.broker.share.groups.groups.values()]
    if ctx.broker.several_brokers:  # each broker lists the groups it coordinates (routing.py R5)
        every = [entry for entry in every if group_coordinator(ctx.broker, entry[0]) == ctx.node_id]
    listed = [
        ListGroupsResponse.ListedGroup(group_id=group_id, protocol_type=protocol_type,
                                       group_state=state, group_type=group_type)
        for group_id, protocol_type, state, group_type in every
        if (not states or state.lower() in states) and (not types or group_type in types)
        and (every_allowed or allowed_group(ctx, Operation.DESCRIBE, group_id))
    ]
    return ListGroupsResponse(throttle_time_ms=0, error_code=ErrorCode.NONE, groups=listed)


@serves("DescribeGroups", 0, 6)
async def handle_describe_groups(ctx: RequestContext,
                                 request: DescribeGroupsRequest) -> DescribeGroupsResponse:
    """Unknown groups, and consumer groups (KIP-848), are described as Dead: with
    GROUP_ID_NOT_FOUND from v6, before with no error, as Kafka does."""
    release = ctx.broker.release
    supported = GROUP_OPERATIONS_BEFORE_4_0 if release and release.number < (4, 0) else GROUP_OPERATIONS
    operations = supported if ctx.api_version >= 3 and request.include_authorized_operations \
        else OPERATIONS_NOT_REQUESTED
    described = []
    for group_id in request.groups:
        if not allowed_group(ctx, Operation.DESCRIBE, group_id):
            described.append(DescribeGroupsResponse.DescribedGroup(
                error_code=ErrorCode.GROUP_AUTHORIZATION_FAILED, group_id=group_id, group_state="",
                protocol_type="", protocol_data="", members=[],
                authorized_operations=OPERATIONS_NOT_REQUESTED))
            continue
        if operations != OPERATIONS_NOT_REQUESTED:
            operations = authorized_operations(ctx, ResourceType.GROUP, group_id, supported)
        group = ctx.broker.groups.group(group_id)
        if group is None and ctx.api_version >= 6:
            described.append(DescribeGroupsResponse.DescribedGroup(
                error_code=ErrorCode.GROUP_ID_NOT_FOUND, error_message=(
                    f"Group {group_id} is not a classic group."
                    if ctx.broker.groups.consumer.group(group_id) is not None
                    or ctx.broker.share.is_share_group(group_id)
                    else f"Group {group_id} not found."),
                group_id=group_id, group_state="Dead", protocol_type="", protocol_data="", members=[],
                authorized_operations=OPERATIONS_NOT_REQUESTED))
            continue
        if group is None:
            described.append(DescribeGroupsResponse.DescribedGroup(
                error_code=ErrorCode.NONE, group_id=group_id, group_state="Dead", protocol_type="",
                protocol_data="", members=[], authorized_operations=operations))
            continue
        stable = group.state == STABLE
        described.append(DescribeGroupsResponse.DescribedGroup(
            error_code=ErrorCode.NONE, group_id=group_id, group_state=group.state.value,
            protocol_type=group.protocol_type or "",
            protocol_data=(group.protocol_name or "") if stable else "",
            members=[
                DescribeGroupsResponse.DescribedGroupMember(
                    member_id=m.member_id, group_instance_id=m.instance_id, client_id=m.client_id,
                    client_host=m.client_host,
                    member_metadata=m.metadata(group.protocol_name) if stable else b"",
                    member_assignment=m.assignment)
                for m in group.members.values()
            ],
            authorized_operations=operations,
        ))
    return DescribeGroupsResponse(throttle_time_ms=0, groups=described)


@serves("DeleteGroups", 0, 3)
async def handle_delete_groups(ctx: RequestContext,
                               request: DeleteGroupsRequest) -> DeleteGroupsResponse:
    share = ctx.broker.share
    deletable = [group_id for group_id in request.groups_names
                 if allowed_group(ctx, Operation.DELETE, group_id)]
    results = await ctx.broker.groups.delete_groups(
        [group_id for group_id in deletable if not share.is_share_group(group_id)])
    results.update((group_id, ErrorCode.GROUP_AUTHORIZATION_FAILED)
                   for group_id in request.groups_names if group_id not in deletable)
    for group_id in deletable:
        if share.is_share_group(group_id):
            results[group_id] = await share.delete_group(group_id)
    return DeleteGroupsResponse(throttle_time_ms=0, results=[
        DeleteGroupsResponse.DeletableGroupResult(group_id=group_id, error_code=error)
        for group_id, error in results.items()
    ])


@serves("OffsetDelete", 0, 0)
async def handle_offset_delete(ctx: RequestContext,
                               request: OffsetDeleteRequest) -> OffsetDeleteResponse:
    broker = ctx.broker
    if not allowed_group(ctx, Operation.DELETE, request.group_id):
        return OffsetDeleteResponse(error_code=ErrorCode.GROUP_AUTHORIZATION_FAILED,
                                    throttle_time_ms=0, topics=[])
    errors: dict[tuple[str, int], ErrorCode] = {}
    valid = []
    for topic in request.topics:
        readable = allowed_topic(ctx, Operation.READ, topic.name)
        for p in topic.partitions:
            key = (topic.name, p.partition_index)
            if not readable:
                errors[key] = ErrorCode.TOPIC_AUTHORIZATION_FAILED
            elif _partition_exists(broker, *key):
                valid.append(key)
            else:
                errors[key] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    error, results = await broker.groups.delete_offsets(request.group_id, valid)
    if error != ErrorCode.NONE:
        return OffsetDeleteResponse(error_code=error, throttle_time_ms=0, topics=[])
    errors.update(results)
    R = OffsetDeleteResponse
    return R(error_code=ErrorCode.NONE, throttle_time_ms=0, topics=[
        R.OffsetDeleteResponseTopic(name=topic.name, partitions=[
            R.OffsetDeleteResponsePartition(partition_index=p.partition_index,
                                            error_code=errors[(topic.name, p.partition_index)])
            for p in topic.partitions
        ])
        for topic in request.topics
    ])
