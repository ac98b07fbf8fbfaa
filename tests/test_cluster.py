"""`kbroker serve --brokers 3`: one process, three simulated brokers, driven over the wire and by
real clients (kbroker/cluster.py is the model, kbroker/api/routing.py its rules)."""

from __future__ import annotations

import itertools
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from kbroker.protocol import messages
from kbroker.protocol.errors import ErrorCode as E
from kbroker.protocol.records import Record, build_batch
from kbroker.testing import running_broker
from tests.kafka_clients import kafka_python_consume, kafka_python_producer
from tests.wire import WireClient

NODES = [1, 2, 3]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_broker(data_dir=tmp_path_factory.mktemp("cluster"), brokers=3) as started:
        yield started


def metadata(address: str, *topics: str):
    with WireClient(address) as wire:
        return wire.request("Metadata", 12, allow_auto_topic_creation=False,
                            include_topic_authorized_operations=False,
                            topics=[messages.MetadataRequest.MetadataRequestTopic(name=t) for t in topics])


def create_topic(address: str, name: str, partitions: int = -1, replication_factor: int = -1,
                 assignments: list[list[int]] | None = None):
    request = messages.CreateTopicsRequest
    with WireClient(address) as wire:
        response = wire.request("CreateTopics", 7, timeout_ms=5000, validate_only=False, topics=[
            request.CreatableTopic(name=name, num_partitions=partitions,
                                   replication_factor=replication_factor, assignments=[
                                       request.CreatableReplicaAssignment(partition_index=i, broker_ids=ids)
                                       for i, ids in enumerate(assignments or [])])])
    return response.topics[0]


def leaders(address: str, topic: str) -> dict[int, int]:
    (entry,) = metadata(address, topic).topics
    return {p.partition_index: p.leader_id for p in entry.partitions}


def produce(address: str, topic: str, partition: int, version: int = 11, acks: int = -1):
    request = messages.ProduceRequest
    batch = build_batch([Record(timestamp=int(time.time() * 1000), value=b"v")])
    with WireClient(address) as wire:
        return wire.request("Produce", version, transactional_id=None, acks=acks, timeout_ms=5000,
                            topic_data=[request.TopicProduceData(name=topic, partition_data=[
                                request.PartitionProduceData(index=partition, records=batch)])])


def test_metadata_names_three_brokers_and_spreads_leaders(cluster, topic_name):
    assert len(cluster.addresses) == 3
    assert create_topic(cluster.bootstrap, topic_name, partitions=6).error_code == E.NONE
    for address in cluster.addresses:  # every broker answers the same
        response = metadata(address, topic_name)
        assert sorted((b.node_id, f"{b.host}:{b.port}") for b in response.brokers) == \
            list(zip(NODES, cluster.addresses))
        (topic,) = response.topics
        assert len(topic.partitions) == 6
        for partition in topic.partitions:
            assert sorted(partition.replica_nodes) == NODES
            assert partition.isr_nodes == partition.replica_nodes
            assert partition.leader_id == partition.replica_nodes[0]
            assert (partition.leader_epoch, partition.offline_replicas) == (0, [])
    assert sorted(leaders(cluster.bootstrap, topic_name).values()) == [1, 1, 2, 2, 3, 3]


def test_describe_cluster_lists_every_broker(cluster):
    with WireClient(cluster.addresses[2]) as wire:
        response = wire.request("DescribeCluster", 1, include_cluster_authorized_operations=False,
                                endpoint_type=1)
    assert sorted((b.broker_id, f"{b.host}:{b.port}") for b in response.brokers) == \
        list(zip(NODES, cluster.addresses))
    assert response.controller_id in NODES


def test_produce_to_a_follower_gets_not_leader_with_the_leader(cluster, topic_name):
    create_topic(cluster.bootstrap, topic_name, partitions=3)
    leader = leaders(cluster.bootstrap, topic_name)[0]
    follower = next(node for node in NODES if node != leader)
    response = produce(cluster.addresses[follower - 1], topic_name, 0)
    answer = response.responses[0].partition_responses[0]
    assert answer.error_code == E.NOT_LEADER_OR_FOLLOWER
    assert (answer.current_leader.leader_id, answer.current_leader.leader_epoch) == (leader, 0)
    assert [(n.node_id, f"{n.host}:{n.port}") for n in response.node_endpoints] == \
        [(leader, cluster.addresses[leader - 1])]  # KIP-951
    answer = produce(cluster.addresses[leader - 1], topic_name, 0).responses[0].partition_responses[0]
    assert (answer.error_code, answer.base_offset) == (E.NONE, 0)


def test_fetch_and_list_offsets_only_from_the_leader(cluster, topic_name):
    topic_id = create_topic(cluster.bootstrap, topic_name, partitions=1).topic_id
    leader = leaders(cluster.bootstrap, topic_name)[0]
    follower = next(node for node in NODES if node != leader)
    fetch = messages.FetchRequest
    list_offsets = messages.ListOffsetsRequest

    def fetch_from(node: int, epoch: int = -1):
        with WireClient(cluster.addresses[node - 1]) as wire:
            return wire.request("Fetch", 16, replica_id=-1, max_wait_ms=0, min_bytes=1, max_bytes=1 << 20,
                                isolation_level=0, session_id=0, session_epoch=-1, topics=[fetch.FetchTopic(
                                    topic_id=topic_id, partitions=[fetch.FetchPartition(
                                        partition=0, fetch_offset=0, partition_max_bytes=1 << 20,
                                        current_leader_epoch=epoch)])])

    refused = fetch_from(follower)
    data = refused.responses[0].partitions[0]
    assert data.error_code == E.NOT_LEADER_OR_FOLLOWER
    assert data.current_leader.leader_id == leader
    assert [n.node_id for n in refused.node_endpoints] == [leader]
    assert fetch_from(leader).responses[0].partitions[0].error_code == E.NONE
    assert fetch_from(leader, epoch=5).responses[0].partitions[0].error_code == E.UNKNOWN_LEADER_EPOCH
    for node, expected in ((follower, E.NOT_LEADER_OR_FOLLOWER), (leader, E.NONE)):
        with WireClient(cluster.addresses[node - 1]) as wire:
            response = wire.request("ListOffsets", 7, replica_id=-1, isolation_level=0, topics=[
                list_offsets.ListOffsetsTopic(name=topic_name, partitions=[
                    list_offsets.ListOffsetsPartition(partition_index=0, timestamp=-1,
                                                      current_leader_epoch=-1)])])
        assert response.topics[0].partitions[0].error_code == expected


def find_coordinator(address: str, key: str, key_type: int = 0):
    with WireClient(address) as wire:
        return wire.request("FindCoordinator", 4, key_type=key_type, coordinator_keys=[key]).coordinators[0]


def key_coordinated_by(cluster, node: int, prefix: str, key_type: int = 0) -> str:
    """A group id (transactional id) whose coordinator is `node`."""
    for index in itertools.count():
        key = f"{prefix}-{index}"
        if find_coordinator(cluster.bootstrap, key, key_type).node_id == node:
            return key
    raise AssertionError("unreachable")


def test_coordinators_are_internal_topic_leaders(cluster):
    found = {find_coordinator(cluster.bootstrap, f"g-{i}").node_id for i in range(30)}
    assert found == set(NODES)  # __consumer_offsets has 3 partitions, one led by each broker
    group = key_coordinated_by(cluster, 2, "placed")
    answer = find_coordinator(cluster.addresses[2], group)  # any broker gives the same answer
    assert (answer.error_code, answer.node_id, f"{answer.host}:{answer.port}") == \
        (E.NONE, 2, cluster.addresses[1])
    request = messages.JoinGroupRequest
    for node, expected in ((1, E.NOT_COORDINATOR), (2, E.MEMBER_ID_REQUIRED)):
        with WireClient(cluster.addresses[node - 1]) as wire:
            joined = wire.request("JoinGroup", 9, group_id=group, session_timeout_ms=10000,
                                  rebalance_timeout_ms=10000, member_id="", group_instance_id=None,
                                  protocol_type="consumer", reason=None, protocols=[
                                      request.JoinGroupRequestProtocol(name="range", metadata=b"")])
        assert joined.error_code == expected


def test_clients_produce_and_consume_across_leaders_with_a_group_elsewhere(cluster, topic_name):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    admin.create_topics([NewTopic(topic_name, 6)])[topic_name].result(10)
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
    for index in range(60):
        producer.produce(topic_name, key=str(index).encode(), value=b"%d" % index)
    assert producer.flush(20) == 0
    group = key_coordinated_by(cluster, 3, "consumers")
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic_name])
    seen: set[bytes] = set()
    deadline = time.monotonic() + 30
    while len(seen) < 60 and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            seen.add(message.value())
    consumer.commit(asynchronous=False)
    committed = consumer.committed([p for p in consumer.assignment()], timeout=10)
    consumer.close()
    assert seen == {b"%d" % index for index in range(60)}
    assert sum(p.offset for p in committed) == 60
    (offsets,) = metadata(cluster.bootstrap, "__consumer_offsets").topics  # written by now
    assert sorted(p.leader_id for p in offsets.partitions) == NODES
    listed = admin.list_consumer_groups().result(10).valid  # asks every broker: each lists its own
    assert [g.group_id for g in listed].count(group) == 1


def test_kafka_python_across_leaders_with_a_group_elsewhere(cluster, topic_name):
    create_topic(cluster.bootstrap, topic_name, partitions=3)
    producer = kafka_python_producer(cluster.addresses, acks="all")
    for index in range(30):
        producer.send(topic_name, value=b"%d" % index, partition=index % 3)
    producer.flush(20)
    producer.close()
    group = key_coordinated_by(cluster, 2, "kafka-python")
    records = kafka_python_consume(cluster.addresses, topic_name, 30, group_id=group)
    assert sorted(int(r.value) for r in records) == list(range(30))
    assert {r.partition for r in records} == {0, 1, 2}


def test_transactions_with_a_coordinator_on_another_broker(cluster, topic_name):
    create_topic(cluster.bootstrap, topic_name, partitions=3)
    transactional_id = key_coordinated_by(cluster, 2, f"txn-{uuid.uuid4().hex[:6]}", key_type=1)
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "transactional.id": transactional_id})
    producer.init_transactions(20)
    producer.begin_transaction()
    for partition in range(3):
        producer.produce(topic_name, value=b"committed", partition=partition)
    producer.commit_transaction(20)
    producer.begin_transaction()
    producer.produce(topic_name, value=b"aborted", partition=0)
    producer.abort_transaction(20)
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": f"g-{topic_name}",
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    consumer.subscribe([topic_name])
    values = []
    deadline = time.monotonic() + 20
    while len(values) < 3 and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            values.append(message.value())
    consumer.close()
    assert values == [b"committed"] * 3


def test_replication_factor_and_manual_assignments(cluster, topic_name):
    too_many = create_topic(cluster.bootstrap, topic_name, partitions=1, replication_factor=4)
    assert too_many.error_code == E.INVALID_REPLICATION_FACTOR
    assert "only 3 broker(s) are registered" in too_many.error_message
    unknown = create_topic(cluster.bootstrap, topic_name, assignments=[[1, 9]])
    assert unknown.error_code == E.INVALID_REPLICA_ASSIGNMENT
    created = create_topic(cluster.bootstrap, topic_name, assignments=[[3, 1], [2, 3]])
    assert (created.error_code, created.replication_factor) == (E.NONE, 2)
    (topic,) = metadata(cluster.bootstrap, topic_name).topics
    assert [(p.replica_nodes, p.leader_id) for p in topic.partitions] == [([3, 1], 3), ([2, 3], 2)]
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    with pytest.raises(KafkaException, match="INVALID_REPLICATION_FACTOR"):
        admin.create_topics([NewTopic(f"{topic_name}-rf", 1, replication_factor=5)])[f"{topic_name}-rf"].result(10)


def test_a_restart_keeps_replicas_and_leaders(tmp_path, topic_name):
    with running_broker(data_dir=tmp_path, brokers=3) as broker:
        create_topic(broker.bootstrap, topic_name, partitions=4, replication_factor=2)
        before = metadata(broker.bootstrap, topic_name).topics[0].partitions
        assert produce(broker.addresses[before[0].leader_id - 1], topic_name, 0).responses[0] \
            .partition_responses[0].error_code == E.NONE
        broker.restart()
        after = metadata(broker.bootstrap, topic_name).topics[0].partitions
        assert [(p.replica_nodes, p.leader_id) for p in after] == \
            [(p.replica_nodes, p.leader_id) for p in before]
        answer = produce(broker.addresses[after[0].leader_id - 1], topic_name, 0).responses[0] \
            .partition_responses[0]
        assert (answer.error_code, answer.base_offset) == (E.NONE, 1)


def test_a_stopped_broker_moves_leaders_and_shrinks_isrs(tmp_path, topic_name):
    request = messages.CreateTopicsRequest
    with running_broker("--http-port", "0", data_dir=tmp_path, brokers=3) as broker:
        with WireClient(broker.bootstrap) as wire:
            created = wire.request("CreateTopics", 7, timeout_ms=5000, validate_only=False, topics=[
                request.CreatableTopic(name=topic_name, num_partitions=3, replication_factor=3,
                                       assignments=[], configs=[request.CreatableTopicConfig(
                                           name="min.insync.replicas", value="3")])])
        assert created.topics[0].error_code == E.NONE
        group = key_coordinated_by(broker, 3, "moved")
        broker.stop_broker(3)
        response = metadata(broker.bootstrap, topic_name)
        assert sorted(b.node_id for b in response.brokers) == [1, 2]
        for partition in response.topics[0].partitions:
            assert partition.leader_id in (1, 2) and 3 not in partition.isr_nodes
            assert partition.offline_replicas == [3]
            assert partition.leader_epoch == (1 if partition.replica_nodes[0] == 3 else 0)
        leader = response.topics[0].partitions[0].leader_id
        answer = produce(broker.addresses[leader - 1], topic_name, 0).responses[0].partition_responses[0]
        assert answer.error_code == E.NOT_ENOUGH_REPLICAS  # acks=all, ISR 2 < min.insync.replicas 3
        assert "ISR 2 is insufficient" in answer.error_message
        answer = produce(broker.addresses[leader - 1], topic_name, 0, acks=1).responses[0].partition_responses[0]
        assert (answer.error_code, answer.base_offset) == (E.NONE, 0)
        assert find_coordinator(broker.bootstrap, group).node_id in (1, 2)  # the coordinator moved

        broker.start_broker(3)
        (topic,) = metadata(broker.bootstrap, topic_name).topics
        assert all(sorted(p.isr_nodes) == NODES for p in topic.partitions)
        answer = produce(broker.addresses[leader - 1], topic_name, 0).responses[0].partition_responses[0]
        assert (answer.error_code, answer.base_offset) == (E.NONE, 1)

        (state,) = [p for p in metadata(broker.bootstrap, topic_name).topics[0].partitions if p.partition_index == 0]
        other = next(node for node in state.isr_nodes if node != state.leader_id)
        broker.move_leader(topic_name, 0, other)
        list_offsets = messages.ListOffsetsRequest
        with WireClient(broker.addresses[other - 1]) as wire:  # the new leader, asked with the old epoch
            response = wire.request("ListOffsets", 7, replica_id=-1, isolation_level=0, topics=[
                list_offsets.ListOffsetsTopic(name=topic_name, partitions=[
                    list_offsets.ListOffsetsPartition(partition_index=0, timestamp=-1,
                                                      current_leader_epoch=state.leader_epoch)])])
        assert response.topics[0].partitions[0].error_code == E.FENCED_LEADER_EPOCH
