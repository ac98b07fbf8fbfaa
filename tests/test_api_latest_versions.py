"""Kafka 4.2's latest API versions: every served range equals the schema's stable range, and
each version's new fields behave as Kafka's broker makes them behave (exact requests)."""

from __future__ import annotations

import itertools
import time
import uuid

import pytest

import kbroker.api  # noqa: F401  (registers every handler)
from kbroker.api.registry import supported_apis
from kbroker.protocol import messages, specs
from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.records import Record, build_batch
from tests.wire import WireClient

E = ErrorCode
_ids = itertools.count()

# Served ranges that differ from Kafka's stable range, and why.
NARROWER_THAN_KAFKA: dict[str, tuple[int, int]] = {}


def stable_range(api_key: int) -> tuple[int, int]:
    """The versions Kafka advertises: the schema's range without a latest unstable version
    and without the versions Kafka 4.0 removed (KIP-896, kept in the specs for --as-version)."""
    request = specs.api_specs()[api_key]["request"]
    low, high = request["valid_versions"]
    if request.get("removed_versions"):
        low = request["removed_versions"][1] + 1
    return low, high - 1 if request["latest_version_unstable"] else high


def test_every_served_range_is_kafkas_stable_range():
    served = {entry.name: (entry.min_version, entry.max_version) for entry in supported_apis()}
    expected = {entry.name: NARROWER_THAN_KAFKA.get(entry.name, stable_range(entry.api_key))
                for entry in supported_apis()}
    assert served == expected
    assert set(NARROWER_THAN_KAFKA) <= set(served)


def test_api_versions_advertises_the_registry(client):
    response = client.request("ApiVersions", 4, client_software_name="wire",
                              client_software_version="1")
    advertised = {key.api_key: (key.min_version, key.max_version) for key in response.api_keys}
    assert advertised == {e.api_key: (e.min_version, e.max_version) for e in supported_apis()}
    unstable = {key for key, spec in specs.api_specs().items()
                if spec["request"]["latest_version_unstable"]}
    for key in unstable & advertised.keys():
        assert advertised[key][1] < specs.api_specs()[key]["request"]["valid_versions"][1]


@pytest.fixture
def client(broker):
    with WireClient(broker.bootstrap) as wire:
        yield wire


def create(client: WireClient, topic: str, partitions: int = 2) -> uuid.UUID:
    request = messages.CreateTopicsRequest
    response = client.request("CreateTopics", 7, timeout_ms=5000, topics=[
        request.CreatableTopic(name=topic, num_partitions=partitions, replication_factor=1)])
    assert response.topics[0].error_code == E.NONE
    return response.topics[0].topic_id


def produce_v13(client, topic_id: uuid.UUID, partition: int, values: list[bytes]):
    request = messages.ProduceRequest
    batch = build_batch([Record(timestamp=int(time.time() * 1000), value=v) for v in values])
    response = client.request("Produce", 13, transactional_id=None, acks=-1, timeout_ms=5000,
                              topic_data=[request.TopicProduceData(topic_id=topic_id, partition_data=[
                                  request.PartitionProduceData(index=partition, records=batch)])])
    (topic,) = response.responses
    assert topic.topic_id == topic_id
    return topic.partition_responses[0]


# -- Produce v13, Fetch v18, ListOffsets v11, Metadata v13 ---------------------------------------

def test_produce_v13_names_topics_by_id(client, topic_name):
    topic_id = create(client, topic_name)
    first = produce_v13(client, topic_id, 1, [b"a", b"b"])
    second = produce_v13(client, topic_id, 1, [b"c"])
    assert (first.error_code, first.base_offset, second.base_offset) == (E.NONE, 0, 2)
    unknown = produce_v13(client, uuid.uuid4(), 0, [b"x"])
    assert unknown.error_code == E.UNKNOWN_TOPIC_ID
    missing_partition = produce_v13(client, topic_id, 7, [b"x"])
    assert missing_partition.error_code == E.UNKNOWN_TOPIC_OR_PARTITION

    request = messages.FetchRequest
    fetched = client.request("Fetch", 18, replica_id=-1, max_wait_ms=0, min_bytes=1,
                             max_bytes=1 << 20, isolation_level=0, topics=[request.FetchTopic(
                                 topic_id=topic_id, partitions=[request.FetchPartition(
                                     partition=1, fetch_offset=0, partition_max_bytes=1 << 20)])])
    partition = fetched.responses[0].partitions[0]
    assert (partition.error_code, partition.high_watermark) == (E.NONE, 3)


def list_offsets(client, version: int, topic: str, timestamp: int):
    request = messages.ListOffsetsRequest
    response = client.request("ListOffsets", version, replica_id=-1, isolation_level=0, topics=[
        request.ListOffsetsTopic(name=topic, partitions=[
            request.ListOffsetsPartition(partition_index=0, timestamp=timestamp)])])
    return response.topics[0].partitions[0]


def test_list_offsets_v11_earliest_pending_upload(client, topic_name):
    """-6 (KIP-1023) is answered as Kafka answers it without tiered storage: no offset."""
    create(client, topic_name, partitions=1)
    answer = list_offsets(client, 11, topic_name, -6)
    assert (answer.error_code, answer.offset, answer.leader_epoch) == (E.NONE, -1, -1)
    assert list_offsets(client, 10, topic_name, -6).error_code == E.UNSUPPORTED_VERSION
    assert list_offsets(client, 8, topic_name, -5).error_code == E.UNSUPPORTED_VERSION
    assert list_offsets(client, 11, topic_name, -7).error_code == E.UNSUPPORTED_VERSION
    assert list_offsets(client, 11, topic_name, -2).offset == 0


def test_metadata_v13_has_a_top_level_error_code(client, topic_name):
    topic_id = create(client, topic_name)
    request = messages.MetadataRequest
    response = client.request("Metadata", 13, topics=[request.MetadataRequestTopic(name=topic_name)],
                              allow_auto_topic_creation=False)
    assert response.error_code == E.NONE
    assert response.topics[0].topic_id == topic_id


# -- OffsetCommit v10, OffsetFetch v10, DescribeGroups v6, DeleteGroups v3 ---------------------

def commit_v10(client, group: str, topics: dict[uuid.UUID, dict[int, int]]):
    request = messages.OffsetCommitRequest
    response = client.request("OffsetCommit", 10, group_id=group, generation_id_or_member_epoch=-1,
                              member_id="", topics=[
                                  request.OffsetCommitRequestTopic(topic_id=topic_id, partitions=[
                                      request.OffsetCommitRequestPartition(
                                          partition_index=p, committed_offset=o)
                                      for p, o in offsets.items()])
                                  for topic_id, offsets in topics.items()])
    return {(t.topic_id, p.partition_index): p.error_code
            for t in response.topics for p in t.partitions}


def fetch_offsets_v10(client, group: str, topics: dict[uuid.UUID, list[int]] | None):
    request = messages.OffsetFetchRequest
    wanted = None if topics is None else [
        request.OffsetFetchRequestTopics(topic_id=topic_id, partition_indexes=partitions)
        for topic_id, partitions in topics.items()]
    response = client.request("OffsetFetch", 10, groups=[
        request.OffsetFetchRequestGroup(group_id=group, topics=wanted)])
    (answer,) = response.groups
    assert answer.error_code == E.NONE
    return {(t.topic_id, p.partition_index): (p.error_code, p.committed_offset)
            for t in answer.topics for p in t.partitions}


def test_offset_commit_and_fetch_v10_name_topics_by_id(client, topic_name):
    topic_id = create(client, topic_name)
    unknown = uuid.uuid4()
    group = f"g-v10-{next(_ids)}"
    assert commit_v10(client, group, {topic_id: {0: 5, 1: 7, 9: 1}, unknown: {0: 1}}) == {
        (topic_id, 0): E.NONE, (topic_id, 1): E.NONE, (topic_id, 9): E.UNKNOWN_TOPIC_OR_PARTITION,
        (unknown, 0): E.UNKNOWN_TOPIC_ID,
    }
    assert fetch_offsets_v10(client, group, {topic_id: [0, 1, 2], unknown: [3]}) == {
        (topic_id, 0): (E.NONE, 5), (topic_id, 1): (E.NONE, 7), (topic_id, 2): (E.NONE, -1),
        (unknown, 3): (E.UNKNOWN_TOPIC_ID, -1),
    }
    assert fetch_offsets_v10(client, group, None) == {
        (topic_id, 0): (E.NONE, 5), (topic_id, 1): (E.NONE, 7)}

    # The same offsets by name, through v9.
    request = messages.OffsetFetchRequest
    by_name = client.request("OffsetFetch", 9, groups=[request.OffsetFetchRequestGroup(
        group_id=group, topics=None)])
    assert {(t.name, p.partition_index, p.committed_offset) for t in by_name.groups[0].topics
            for p in t.partitions} == {(topic_name, 0, 5), (topic_name, 1, 7)}


def test_describe_groups_v6_reports_unknown_groups(client):
    group = f"g-none-{next(_ids)}"
    (v6,) = client.request("DescribeGroups", 6, groups=[group]).groups
    assert (v6.error_code, v6.error_message, v6.group_state) == (
        E.GROUP_ID_NOT_FOUND, f"Group {group} not found.", "Dead")
    (v5,) = client.request("DescribeGroups", 5, groups=[group]).groups
    assert (v5.error_code, v5.group_state) == (E.NONE, "Dead")


def test_delete_groups_v3(client, topic_name):
    topic_id = create(client, topic_name)
    group = f"g-del-{next(_ids)}"
    commit_v10(client, group, {topic_id: {0: 1}})
    response = client.request("DeleteGroups", 3, groups_names=[group, group + "-none"])
    assert [(r.group_id, r.error_code, r.error_message) for r in response.results] == [
        (group, E.NONE, None), (group + "-none", E.GROUP_ID_NOT_FOUND, None)]


# -- ApiVersions v5 (KIP-1242) ---------------------------------------------------------------

def api_versions_v5(client, cluster_id, node_id):
    return client.request("ApiVersions", 5, client_software_name="wire",
                          client_software_version="1", cluster_id=cluster_id,
                          node_id=node_id).error_code


def test_api_versions_v5_checks_the_cluster_and_node(client):
    cluster_id = client.request("DescribeCluster", 2).cluster_id
    node_id = client.request("DescribeCluster", 2).brokers[0].broker_id
    assert api_versions_v5(client, None, -1) == E.NONE
    assert api_versions_v5(client, cluster_id, node_id) == E.NONE
    assert api_versions_v5(client, "another-cluster", node_id) == E.REBOOTSTRAP_REQUIRED
    assert api_versions_v5(client, cluster_id, node_id + 1) == E.REBOOTSTRAP_REQUIRED
    assert api_versions_v5(client, cluster_id, -1) == E.INVALID_REQUEST
    assert api_versions_v5(client, None, node_id) == E.INVALID_REQUEST


# -- admin: DescribeCluster v2, AlterPartitionReassignments v1, DescribeLogDirs v5 -------------

def test_admin_latest_versions(client, topic_name):
    create(client, topic_name, partitions=1)
    cluster = client.request("DescribeCluster", 2, include_fenced_brokers=True)
    assert cluster.error_code == E.NONE
    assert [broker.is_fenced for broker in cluster.brokers] == [False]

    request = messages.AlterPartitionReassignmentsRequest
    node_id = cluster.brokers[0].broker_id
    for allow in (True, False):
        response = client.request(
            "AlterPartitionReassignments", 1, timeout_ms=5000, allow_replication_factor_change=allow,
            topics=[request.ReassignableTopic(name=topic_name, partitions=[
                request.ReassignablePartition(partition_index=0, replicas=[node_id])])])
        assert response.allow_replication_factor_change is allow
        assert response.responses[0].partitions[0].error_code == E.NONE

    log_dirs = client.request("DescribeLogDirs", 5, topics=None)
    assert [(result.error_code, result.is_cordoned) for result in log_dirs.results] == [
        (E.NONE, False)]


# -- ListTransactions v2 ---------------------------------------------------------------------

def test_list_transactions_v2_filters_by_pattern(client):
    prefix = f"lt-{next(_ids)}"
    for suffix in ("orders-1", "orders-2", "billing"):
        init = client.request("InitProducerId", 5, transactional_id=f"{prefix}-{suffix}",
                              transaction_timeout_ms=60_000)
        assert init.error_code == E.NONE

    def listed(pattern):
        response = client.request("ListTransactions", 2, state_filters=[], producer_id_filters=[],
                                  duration_filter=-1, transactional_id_pattern=pattern)
        return response.error_code, sorted(state.transactional_id for state in response.transaction_states
                                           if state.transactional_id.startswith(prefix))

    assert listed(f"{prefix}-orders-.*") == (E.NONE, [f"{prefix}-orders-1", f"{prefix}-orders-2"])
    assert listed("orders") == (E.NONE, [])  # the whole id must match
    assert listed(None)[1] == listed("")[1] == [
        f"{prefix}-billing", f"{prefix}-orders-1", f"{prefix}-orders-2"]
    assert listed("(unclosed") == (E.INVALID_REGULAR_EXPRESSION, [])
