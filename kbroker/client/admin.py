"""Topic, config, offset and group administration, as Kafka's admin client does it."""

from __future__ import annotations

from dataclasses import dataclass, field

from kbroker.client.cluster import Cluster, check
from kbroker.protocol import codec, messages
from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.exceptions import ProtocolError

TOPIC_RESOURCE, BROKER_RESOURCE = 2, 4
SET, DELETE = 0, 1  # IncrementalAlterConfigs operations
CONFIG_SOURCES = dict(enumerate((  # DescribeConfigs' config_source, by Kafka's names
    "UNKNOWN", "DYNAMIC_TOPIC_CONFIG", "DYNAMIC_BROKER_CONFIG", "DYNAMIC_DEFAULT_BROKER_CONFIG",
    "STATIC_BROKER_CONFIG", "DEFAULT_CONFIG", "DYNAMIC_BROKER_LOGGER_CONFIG",
    "CLIENT_METRICS_CONFIG", "GROUP_CONFIG")))
EARLIEST, LATEST = -2, -1  # ListOffsets timestamps
MATCH_EXACT, MATCH_DEFAULT = 0, 1  # DescribeClientQuotas match types
TIMEOUT_MS = 30_000


@dataclass
class PartitionInfo:
    partition: int
    leader: int
    replicas: list[int]
    isr: list[int]
    earliest: int = -1
    latest: int = -1


@dataclass
class TopicInfo:
    name: str
    topic_id: str
    internal: bool
    partitions: list[PartitionInfo] = field(default_factory=list)
    configs: dict[str, str | None] = field(default_factory=dict)  # None: no value shown (unset or sensitive)


@dataclass
class ConfigEntry:
    name: str
    value: str | None
    source: str
    read_only: bool
    sensitive: bool


@dataclass
class MemberInfo:
    member_id: str
    client_id: str
    host: str
    instance_id: str | None
    assignment: dict[str, list[int]]


@dataclass
class PartitionLag:
    topic: str
    partition: int
    committed: int
    latest: int
    lag: int | None


@dataclass
class GroupInfo:
    group: str
    state: str
    protocol_type: str
    protocol: str
    members: list[MemberInfo] = field(default_factory=list)
    offsets: list[PartitionLag] = field(default_factory=list)


async def create_topic(cluster: Cluster, name: str, partitions: int, replication_factor: int = -1,
                       configs: dict[str, str] | None = None) -> None:
    Creatable = messages.CreateTopicsRequest.CreatableTopic
    topic = Creatable(name=name, num_partitions=partitions, replication_factor=replication_factor,
                      configs=[messages.CreateTopicsRequest.CreatableTopicConfig(name=k, value=v)
                               for k, v in (configs or {}).items()])
    response = await cluster.bootstrap.request("CreateTopics", messages.CreateTopicsRequest(
        topics=[topic], timeout_ms=TIMEOUT_MS))
    (result,) = response.topics
    check(result.error_code, result.error_message, f"topic {name}")


async def delete_topic(cluster: Cluster, name: str) -> None:
    response = await cluster.bootstrap.request("DeleteTopics", messages.DeleteTopicsRequest(
        topic_names=[name], timeout_ms=TIMEOUT_MS))
    (result,) = response.responses
    check(result.error_code, result.error_message, f"topic {name}")


async def add_partitions(cluster: Cluster, name: str, total: int) -> None:
    response = await cluster.bootstrap.request("CreatePartitions", messages.CreatePartitionsRequest(
        topics=[messages.CreatePartitionsRequest.CreatePartitionsTopic(name=name, count=total,
                                                                       assignments=None)],
        timeout_ms=TIMEOUT_MS))
    (result,) = response.results
    check(result.error_code, result.error_message, f"topic {name}")


async def alter_topic_configs(cluster: Cluster, name: str, set_configs: dict[str, str],
                              delete: list[str]) -> None:
    Request = messages.IncrementalAlterConfigsRequest
    changes = [Request.AlterableConfig(name=k, config_operation=SET, value=v)
               for k, v in set_configs.items()]
    changes += [Request.AlterableConfig(name=k, config_operation=DELETE, value=None) for k in delete]
    response = await cluster.bootstrap.request("IncrementalAlterConfigs", Request(resources=[
        Request.AlterConfigsResource(resource_type=TOPIC_RESOURCE, resource_name=name,
                                     configs=changes)]))
    (result,) = response.responses
    check(result.error_code, result.error_message, f"topic {name}")


async def list_topics(cluster: Cluster) -> list[TopicInfo]:
    response = await cluster.metadata(None)
    return sorted((_topic_info(t) for t in response.topics if t.error_code == ErrorCode.NONE),
                  key=lambda t: t.name)


def _topic_info(topic) -> TopicInfo:
    return TopicInfo(topic.name, str(topic.topic_id), topic.is_internal, sorted(
        (PartitionInfo(p.partition_index, p.leader_id, list(p.replica_nodes), list(p.isr_nodes))
         for p in topic.partitions), key=lambda p: p.partition))


async def describe_topic(cluster: Cluster, name: str, all_configs: bool = False) -> TopicInfo:
    """Partitions with leaders, replicas, ISR and offsets, and the configs set on the topic
    (or all its configs)."""
    info = _topic_info(await cluster.topic_metadata(name))
    partitions = [p.partition for p in info.partitions]
    earliest = await list_offsets(cluster, name, dict.fromkeys(partitions, EARLIEST))
    latest = await list_offsets(cluster, name, dict.fromkeys(partitions, LATEST))
    for partition in info.partitions:
        partition.earliest, partition.latest = earliest[partition.partition], latest[partition.partition]
    info.configs = await topic_configs(cluster, name, only_overrides=not all_configs)
    return info


async def topic_configs(cluster: Cluster, name: str, only_overrides: bool = False) -> dict[str, str | None]:
    return {c.name: c.value for c in await describe_configs(cluster, TOPIC_RESOURCE, name)
            if not only_overrides or c.source == "DYNAMIC_TOPIC_CONFIG"}


async def describe_configs(cluster: Cluster, resource_type: int, name: str) -> list[ConfigEntry]:
    """Every config of a topic (TOPIC_RESOURCE) or broker (BROKER_RESOURCE, its node id)."""
    Request = messages.DescribeConfigsRequest
    response = await cluster.bootstrap.request("DescribeConfigs", Request(resources=[
        Request.DescribeConfigsResource(resource_type=resource_type, resource_name=name,
                                        configuration_keys=None)]))
    (result,) = response.results
    check(result.error_code, result.error_message, f"configs of {name}")
    return sorted((ConfigEntry(c.name, c.value, CONFIG_SOURCES.get(c.config_source, "UNKNOWN"),
                               c.read_only, c.is_sensitive) for c in result.configs),
                  key=lambda c: c.name)


async def list_offsets(cluster: Cluster, topic: str, timestamps: dict[int, int],
                       isolation_level: int = 0) -> dict[int, int]:
    """partition -> offset for each partition's timestamp (EARLIEST, LATEST or ms); -1 where no
    record is that recent."""
    found = await list_offsets_of(cluster, {(topic, p): ts for p, ts in timestamps.items()},
                                  isolation_level)
    return {p: offset for (_, p), offset in found.items()}


async def list_offsets_of(cluster: Cluster, timestamps: dict[tuple[str, int], int],
                          isolation_level: int = 0) -> dict[tuple[str, int], int]:
    """(topic, partition) -> offset for each one's timestamp, one request per leader."""
    Request = messages.ListOffsetsRequest
    topics = sorted({topic for topic, _ in timestamps})
    leaders = {(t.name, p.partition_index): p.leader_id
               for t in (await cluster.metadata(topics)).topics for p in t.partitions}
    by_leader: dict[int, dict[str, list[int]]] = {}
    for topic, partition in timestamps:
        if (topic, partition) not in leaders:
            check(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, None, f"{topic}-{partition}")
        by_leader.setdefault(leaders[(topic, partition)], {}).setdefault(topic, []).append(partition)
    offsets = {}
    for leader, partitions_of in by_leader.items():
        connection = await cluster.node(leader)
        response = await connection.request("ListOffsets", Request(
            replica_id=-1, isolation_level=isolation_level, topics=[Request.ListOffsetsTopic(
                name=topic, partitions=[Request.ListOffsetsPartition(
                    partition_index=p, current_leader_epoch=-1, timestamp=timestamps[(topic, p)])
                    for p in partitions]) for topic, partitions in partitions_of.items()]))
        for topic_response in response.topics:
            for p in topic_response.partitions:
                check(p.error_code, None, f"{topic_response.name}-{p.partition_index}")
                offsets[(topic_response.name, p.partition_index)] = p.offset
    return offsets


async def log_sizes(cluster: Cluster) -> dict[tuple[str, int], int]:
    """(topic, partition) -> bytes on disk, from every broker's DescribeLogDirs."""
    brokers = (await cluster.metadata([])).brokers
    sizes = {}
    for broker in brokers:
        connection = await cluster.node(broker.node_id)
        response = await connection.request("DescribeLogDirs", messages.DescribeLogDirsRequest(
            topics=None))
        for log_dir in response.results:
            for topic in log_dir.topics:
                for p in topic.partitions:
                    sizes[(topic.name, p.partition_index)] = p.partition_size
    return sizes


async def list_groups(cluster: Cluster) -> list[dict]:
    response = await cluster.bootstrap.request("ListGroups", messages.ListGroupsRequest())
    check(response.error_code, None, "list groups")
    return sorted(({"group": g.group_id, "protocol_type": g.protocol_type,
                    "state": g.group_state or ""} for g in response.groups),
                  key=lambda g: g["group"])


async def committed_offsets(cluster: Cluster, group: str,
                            topic: str | None = None) -> dict[tuple[str, int], int]:
    """(topic, partition) -> committed offset of every partition the group has committed."""
    Request = messages.OffsetFetchRequest
    coordinator = await cluster.coordinator(group)
    topics = None
    if topic is not None:
        partitions = list(await cluster.leaders(topic))
        topics = [Request.OffsetFetchRequestTopic(name=topic, partition_indexes=partitions)]
    if coordinator.version("OffsetFetch") >= 8:  # one group of a batch: tansu needs this form
        response = await coordinator.request("OffsetFetch", Request(groups=[
            Request.OffsetFetchRequestGroup(group_id=group, topics=None if topics is None else [
                Request.OffsetFetchRequestTopics(name=t.name, partition_indexes=t.partition_indexes)
                for t in topics])]))
        (response,) = response.groups
    else:
        response = await coordinator.request("OffsetFetch", Request(group_id=group, topics=topics))
    check(response.error_code, None, f"group {group}")
    offsets = {}
    for t in response.topics:
        for p in t.partitions:
            check(p.error_code, None, f"group {group} {t.name}-{p.partition_index}")
            if p.committed_offset >= 0:
                offsets[(t.name, p.partition_index)] = p.committed_offset
    return offsets


async def commit_offsets(cluster: Cluster, group: str, topic: str, offsets: dict[int, int],
                         generation: int = -1, member_id: str = "") -> None:
    """Commit offsets as a member of the group's current generation, or (generation -1) as a
    consumer outside its membership."""
    Request = messages.OffsetCommitRequest
    coordinator = await cluster.coordinator(group)
    response = await coordinator.request("OffsetCommit", Request(
        group_id=group, generation_id_or_member_epoch=generation, member_id=member_id,
        retention_time_ms=-1,
        topics=[Request.OffsetCommitRequestTopic(name=topic, partitions=[
            Request.OffsetCommitRequestPartition(partition_index=p, committed_offset=o,
                                                 committed_leader_epoch=-1, committed_metadata="")
            for p, o in sorted(offsets.items())])]))
    for t in response.topics:
        for p in t.partitions:
            check(p.error_code, None, f"group {group} {t.name}-{p.partition_index}")


async def describe_group(cluster: Cluster, group: str) -> GroupInfo:
    """State, members with their assignments, committed offsets and lag per partition."""
    coordinator = await cluster.coordinator(group)
    response = await coordinator.request("DescribeGroups", messages.DescribeGroupsRequest(
        groups=[group]))
    (described,) = response.groups
    if described.group_state == "Dead" or described.error_code == ErrorCode.GROUP_ID_NOT_FOUND:
        # A KIP-848 consumer group is not a classic group: only ConsumerGroupDescribe shows it.
        info = await _describe_consumer_group(coordinator, group)
    else:
        check(described.error_code, None, f"group {group}")
        info = GroupInfo(group, described.group_state, described.protocol_type, described.protocol_data)
        for member in described.members:
            info.members.append(MemberInfo(
                member.member_id, member.client_id, member.client_host, member.group_instance_id,
                _assignment(member.member_assignment) if described.protocol_type == "consumer" else {}))
    committed = await committed_offsets(cluster, group)
    for topic in sorted({t for t, _ in committed}):
        partitions = {p: o for (t, p), o in committed.items() if t == topic}
        latest = await list_offsets(cluster, topic, dict.fromkeys(partitions, LATEST))
        info.offsets += [PartitionLag(topic, p, o, latest[p], max(latest[p] - o, 0))
                         for p, o in sorted(partitions.items())]
    return info


async def _describe_consumer_group(coordinator, group: str) -> GroupInfo:
    """A consumer-protocol group, or GROUP_ID_NOT_FOUND's error when there is none of either kind."""
    if "ConsumerGroupDescribe" not in coordinator.versions:
        return GroupInfo(group, "Dead", "", "")
    response = await coordinator.request("ConsumerGroupDescribe", messages.ConsumerGroupDescribeRequest(
        group_ids=[group]))
    (described,) = response.groups
    if described.error_code == ErrorCode.GROUP_ID_NOT_FOUND:
        return GroupInfo(group, "Dead", "", "")
    check(described.error_code, described.error_message, f"group {group}")
    info = GroupInfo(group, described.group_state, "consumer", described.assignor_name)
    for member in described.members:
        info.members.append(MemberInfo(
            member.member_id, member.client_id, member.client_host, member.instance_id,
            {t.topic_name: sorted(t.partitions) for t in member.assignment.topic_partitions}))
    return info


def _assignment(data) -> dict[str, list[int]]:
    if not data:
        return {}
    try:
        _, assignment = codec.decode_data(messages.ConsumerProtocolAssignment, data)
    except ProtocolError:  # another protocol's bytes under protocol type "consumer": shown as none
        return {}
    return {a.topic: sorted(a.partitions) for a in assignment.assigned_partitions}


async def delete_group(cluster: Cluster, group: str) -> None:
    coordinator = await cluster.coordinator(group)
    response = await coordinator.request("DeleteGroups", messages.DeleteGroupsRequest(
        groups_names=[group]))
    (result,) = response.results
    check(result.error_code, None, f"group {group}")


async def describe_client_quotas(cluster: Cluster, entity: dict[str, str | None]
                                 ) -> list[tuple[dict[str, str | None], dict[str, float]]]:
    """The quotas of the entity (entity type -> name, None for the type's default entity), as
    kafka-configs.sh --describe shows them; with no entity, of every entity."""
    Request = messages.DescribeClientQuotasRequest
    response = await cluster.bootstrap.request("DescribeClientQuotas", Request(strict=bool(entity), components=[
        Request.ComponentData(entity_type=kind, match_type=MATCH_DEFAULT if name is None else MATCH_EXACT,
                              match=name)
        for kind, name in entity.items()]))
    check(response.error_code, response.error_message)
    return [({part.entity_type: part.entity_name for part in entry.entity},
             {value.key: value.value for value in entry.values}) for entry in response.entries]


async def alter_client_quotas(cluster: Cluster, entity: dict[str, str | None],
                              values: dict[str, float | None]) -> None:
    """Set the entity's quotas (None: remove that quota)."""
    Request = messages.AlterClientQuotasRequest
    response = await cluster.bootstrap.request("AlterClientQuotas", Request(validate_only=False, entries=[
        Request.EntryData(entity=[Request.EntityData(entity_type=kind, entity_name=name)
                                  for kind, name in entity.items()],
                          ops=[Request.OpData(key=key, value=value or 0.0, remove=value is None)
                               for key, value in values.items()])]))
    (entry,) = response.entries
    check(entry.error_code, entry.error_message)
