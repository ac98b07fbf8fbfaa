"""Topic and cluster administration over TCP: kafka-python's KafkaAdminClient, confluent-kafka's
AdminClient and aiokafka's AIOKafkaAdminClient, plus exact error codes on the wire."""

from __future__ import annotations

import asyncio
import json
import os
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin import NewPartitions as AioNewPartitions
from aiokafka.admin import NewTopic as AioNewTopic
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin import NewPartitions as CkNewPartitions
from confluent_kafka.admin import NewTopic as CkNewTopic
from kafka import KafkaAdminClient
from kafka import TopicPartition as KpTopicPartition
from kafka.admin import NewPartitions
from kafka.errors import InvalidPartitionsError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.messages import (
    AlterPartitionReassignmentsRequest, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteTopicsRequest, DescribeTopicPartitionsRequest, ElectLeadersRequest,
)
from kbroker.testing import running_broker
from tests.kafka_clients import confluent_consume, confluent_producer
from tests.polling import wait_for
from tests.wire import WireClient

Creatable = CreateTopicsRequest.CreatableTopic


def dir_bytes(path) -> int:
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path)
               for name in names)


@pytest.fixture(scope="module")
def admin_broker(tmp_path_factory):
    """A broker that records the API versions each client uses."""
    usage = tmp_path_factory.mktemp("usage") / "api-usage.json"
    with running_broker("--api-usage-file", str(usage), "--override", "log.segment.delete.delay.ms=0",
                        data_dir=tmp_path_factory.mktemp("admin")) as started:
        started.usage = usage
        yield started


def create(wire: WireClient, *topics, version: int = 7, validate_only: bool = False):
    response = wire.request("CreateTopics", version, topics=list(topics), timeout_ms=5000,
                            validate_only=validate_only)
    return {result.name: result for result in response.topics}


def topic(name, partitions=1, replicas=1, configs=(), assignments=()) -> Creatable:
    return Creatable(name=name, num_partitions=partitions, replication_factor=replicas,
                     assignments=list(assignments),
                     configs=[CreateTopicsRequest.CreatableTopicConfig(name=k, value=v) for k, v in configs])


# -- real clients ----------------------------------------------------------------------------

def test_kafka_python_topic_lifecycle(admin_broker, topic_name):
    admin = KafkaAdminClient(bootstrap_servers=admin_broker.bootstrap)
    try:
        created = admin.create_topics({topic_name: {"num_partitions": 2, "configs": {"retention.ms": "5000"}}})
        result = created["topics"][0]
        assert (result["error_code"], result["num_partitions"], result["replication_factor"]) == (0, 2, 1)
        assert result["configs"]["retention.ms"]["value"] == "5000"
        assert result["configs"]["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
        assert result["configs"]["segment.bytes"]["config_source"] == "DEFAULT_CONFIG"
        with pytest.raises(TopicAlreadyExistsError):
            admin.create_topics({topic_name: {"num_partitions": 1}})
        admin.create_topics({topic_name + "-dry": {"num_partitions": 1}}, validate_only=True)
        assert topic_name + "-dry" not in admin.list_topics()
        admin.create_partitions({topic_name: NewPartitions(4)})
        with pytest.raises(InvalidPartitionsError):
            admin.create_partitions({topic_name: NewPartitions(3)})
        described = admin.describe_topics([topic_name])[0]
        assert [p["partition_index"] for p in described["partitions"]] == [0, 1, 2, 3]
        assert described["topic_id"] == result["topic_id"]
        admin.delete_topics([topic_name])
        assert topic_name not in admin.list_topics()
        with pytest.raises(UnknownTopicOrPartitionError):
            admin.delete_topics([topic_name])
    finally:
        admin.close()


def test_kafka_python_cluster_log_dirs_and_topic_partitions(admin_broker, topic_name):
    producer = confluent_producer(admin_broker.bootstrap)
    for _ in range(20):
        producer.produce(topic_name, key=b"k", value=b"x" * 100, partition=0)
    assert producer.flush(10) == 0
    admin = KafkaAdminClient(bootstrap_servers=admin_broker.bootstrap)
    try:
        cluster = admin.describe_cluster()
        assert cluster["controller_id"] == 1 and [b["broker_id"] for b in cluster["brokers"]] == [1]
        dirs = admin.describe_log_dirs()[0]["log_dirs"]
        assert len(dirs) == 1 and dirs[0]["error_code"] == 0 and dirs[0]["total_bytes"] > 0
        sizes = {t["name"]: t["partitions"][0]["partition_size"] for t in dirs[0]["topics"]}
        assert sizes[topic_name] > 2000
        described = admin.describe_topic_partitions([topic_name])
        partitions = described["topics"][0]["partitions"]
        assert [(p["partition_index"], p["leader_id"], p["isr_nodes"]) for p in partitions] == [(0, 1, [1])]
        elected = admin.elect_leaders(0, {topic_name: [0]})  # ELECTION_NOT_NEEDED is not an error
        assert elected.replica_election_results[0].partition_result[0].error_code == ErrorCode.ELECTION_NOT_NEEDED
        tp = KpTopicPartition(topic_name, 0)
        admin.alter_partition_reassignments({tp: [1]})
        assert admin.list_partition_reassignments() == {}
    finally:
        admin.close()


def test_deleted_topic_name_is_reusable_at_once(admin_broker, topic_name):
    with WireClient(admin_broker.bootstrap) as wire:
        for round_ in range(2):
            create(wire, topic(topic_name))
            producer = confluent_producer(admin_broker.bootstrap)
            producer.produce(topic_name, value=b"round %d" % round_)
            assert producer.flush(10) == 0
            assert [m.value() for m in confluent_consume(admin_broker.bootstrap, topic_name, 1)] == \
                [b"round %d" % round_]
            wire.request("DeleteTopics", 6, timeout_ms=5000,
                         topics=[DeleteTopicsRequest.DeleteTopicState(name=topic_name)])


def test_topic_deletion_disabled(tmp_path, topic_name):
    with running_broker("--override", "delete.topic.enable=false", data_dir=tmp_path) as broker:
        with WireClient(broker.bootstrap) as wire:
            create(wire, topic(topic_name))
            new = wire.request("DeleteTopics", 6, timeout_ms=5000,
                               topics=[DeleteTopicsRequest.DeleteTopicState(name=topic_name)])
            old = wire.request("DeleteTopics", 2, timeout_ms=5000, topic_names=[topic_name])
            assert [r.error_code for r in new.responses + old.responses] == [
                ErrorCode.TOPIC_DELETION_DISABLED, ErrorCode.INVALID_REQUEST]


def test_confluent_topic_lifecycle(admin_broker, topic_name):
    admin = AdminClient({"bootstrap.servers": admin_broker.bootstrap})
    futures = admin.create_topics([
        CkNewTopic(topic_name, 3, 1, config={"cleanup.policy": "compact"}),
        CkNewTopic(topic_name + "-rf", 1, 3),
        CkNewTopic(topic_name + "-cfg", 1, 1, config={"retention.ms": "soon"}),
        CkNewTopic("bad/name", 1, 1),
    ])
    futures[topic_name].result()
    codes = {}
    for name in (topic_name + "-rf", topic_name + "-cfg", "bad/name"):
        with pytest.raises(KafkaException) as caught:
            futures[name].result()
        codes[name] = caught.value.args[0].code()
    assert codes == {topic_name + "-rf": ErrorCode.INVALID_REPLICATION_FACTOR,
                     topic_name + "-cfg": ErrorCode.INVALID_CONFIG,
                     "bad/name": ErrorCode.INVALID_TOPIC_EXCEPTION}
    admin.create_partitions([CkNewPartitions(topic_name, 5)])[topic_name].result()
    metadata = admin.list_topics(topic_name, timeout=10)
    assert len(metadata.topics[topic_name].partitions) == 5
    cluster = admin.describe_cluster().result()
    assert [node.id for node in cluster.nodes] == [1] and cluster.controller.id == 1
    admin.delete_topics([topic_name])[topic_name].result()
    with pytest.raises(KafkaException) as caught:
        admin.delete_topics([topic_name])[topic_name].result()
    assert caught.value.args[0].code() == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    wait_for(lambda: topic_name not in admin.list_topics(timeout=10).topics)


def test_confluent_elect_leaders_and_delete_records(admin_broker, topic_name):
    from confluent_kafka import ElectionType

    admin = AdminClient({"bootstrap.servers": admin_broker.bootstrap})
    admin.create_topics([CkNewTopic(topic_name, 1, 1)])[topic_name].result()
    producer = confluent_producer(admin_broker.bootstrap)
    for i in range(10):
        producer.produce(topic_name, value=b"%d" % i)
    assert producer.flush(10) == 0
    elected = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition(topic_name, 0)]).result()
    assert elected[TopicPartition(topic_name, 0)].code() == ErrorCode.ELECTION_NOT_NEEDED
    deleted = admin.delete_records([TopicPartition(topic_name, 0, 4)])
    result = list(deleted.values())[0].result()
    assert result.low_watermark == 4


def test_aiokafka_admin(admin_broker, topic_name):
    async def scenario():
        admin = AIOKafkaAdminClient(bootstrap_servers=admin_broker.bootstrap)
        await admin.start()
        try:
            response = await admin.create_topics([AioNewTopic(topic_name, 2, 1,
                                                              topic_configs={"retention.ms": "60000"})])
            assert response.topic_errors[0][1] == 0
            response = await admin.create_topics([AioNewTopic(topic_name, 2, 1)])
            assert response.topic_errors[0][1] == ErrorCode.TOPIC_ALREADY_EXISTS
            await admin.create_partitions({topic_name: AioNewPartitions(3)})
            described = await admin.describe_topics([topic_name])
            assert len(described[0]["partitions"]) == 3
            response = await admin.delete_topics([topic_name])
            assert response.topic_error_codes[0][1] == 0
        finally:
            await admin.close()

    asyncio.run(scenario())


def test_client_versions(admin_broker):
    """Each client used the newest version it knows of each API (the codec handles them all)."""
    def by_software():
        if not admin_broker.usage.exists():
            return None
        merged: dict = {}
        for client, apis in json.loads(admin_broker.usage.read_text()).items():
            merged.setdefault(client.split()[0], {}).update(apis)
        return merged if "DeleteRecords" in merged.get("confluent-kafka-python", {}) else None

    by_software = wait_for(by_software, 10)  # the broker saves the file every 2 s
    assert by_software["kafka-python"]["CreateTopics"] == [7]
    assert by_software["kafka-python"]["DeleteTopics"] == [6]
    assert by_software["kafka-python"]["CreatePartitions"] == [3]
    assert by_software["kafka-python"]["DescribeLogDirs"] == [5]
    assert by_software["kafka-python"]["DescribeCluster"] == [2]
    assert by_software["confluent-kafka-python"]["CreateTopics"] == [4]
    assert by_software["confluent-kafka-python"]["DeleteRecords"] == [2]


# -- exact answers on the wire ---------------------------------------------------------------

def test_create_topics_errors(admin_broker, topic_name):
    Assignment = CreateTopicsRequest.CreatableReplicaAssignment
    with WireClient(admin_broker.bootstrap) as wire:
        answers = create(
            wire,
            topic(topic_name + "-dup"), topic(topic_name + "-dup"),
            topic(topic_name + "-p0", partitions=0),
            topic(topic_name + "-rf0", replicas=0),
            topic(topic_name + "-rf2", replicas=2),
            topic(topic_name + "-null", configs=[("retention.ms", None)]),
            topic(topic_name + "-unknown", configs=[("no.such.config", "1")]),
            topic(topic_name + "-lag", configs=[("min.compaction.lag.ms", "10"), ("max.compaction.lag.ms", "5")]),
            topic(topic_name + "-a2", partitions=-1, replicas=-1,
                  assignments=[Assignment(partition_index=0, broker_ids=[2])]),
            topic(topic_name + "-gap", partitions=-1, replicas=-1,
                  assignments=[Assignment(partition_index=1, broker_ids=[1])]),
            topic(topic_name + "-arf", partitions=-1, replicas=1,
                  assignments=[Assignment(partition_index=0, broker_ids=[1])]),
            topic("a" * 250),
        )
        codes = {name.replace(topic_name, ""): result.error_code for name, result in answers.items()}
        assert codes == {
            "-dup": ErrorCode.INVALID_REQUEST, "-p0": ErrorCode.INVALID_PARTITIONS,
            "-rf0": ErrorCode.INVALID_REPLICATION_FACTOR, "-rf2": ErrorCode.INVALID_REPLICATION_FACTOR,
            "-null": ErrorCode.INVALID_CONFIG, "-unknown": ErrorCode.INVALID_CONFIG,
            "-lag": ErrorCode.INVALID_CONFIG, "-a2": ErrorCode.INVALID_REPLICA_ASSIGNMENT,
            "-gap": ErrorCode.INVALID_REPLICA_ASSIGNMENT, "-arf": ErrorCode.INVALID_REQUEST,
            "a" * 250: ErrorCode.INVALID_TOPIC_EXCEPTION,
        }
        assert answers[topic_name + "-dup"].error_message == "Duplicate topic name."
        assert answers[topic_name + "-rf2"].error_message.startswith("Unable to replicate the partition 2 time(s)")
        # Manual assignments and defaults (-1) create topics; v5+ answers carry counts and configs.
        answers = create(wire, topic(topic_name, partitions=-1, replicas=-1, configs=[("segment.ms", "1000")]),
                         topic(topic_name + "-m", partitions=-1, replicas=-1, assignments=[
                             Assignment(partition_index=1, broker_ids=[1]),
                             Assignment(partition_index=0, broker_ids=[1])]))
        made = answers[topic_name]
        assert (made.error_code, made.num_partitions, made.replication_factor) == (0, 1, 1)
        assert made.error_message is None  # null, not "": aiokafka's and kafkajs's tests check it
        assert made.topic_id != uuid.UUID(int=0)
        configs = {c.name: (c.value, c.config_source) for c in made.configs}
        assert configs["segment.ms"] == ("1000", 1) and configs["retention.ms"] == ("604800000", 5)
        assert answers[topic_name + "-m"].num_partitions == 2
        assert create(wire, topic(topic_name))[topic_name].error_code == ErrorCode.TOPIC_ALREADY_EXISTS
        assert create(wire, topic(topic_name + "-v2", partitions=2), version=2)[topic_name + "-v2"].error_code == 0


def test_delete_topics_by_name_and_id(admin_broker, topic_name):
    with WireClient(admin_broker.bootstrap) as wire:
        ids = {name: result.topic_id for name, result in create(
            wire, topic(topic_name + "-a", partitions=2), topic(topic_name + "-b")).items()}
        directory = admin_broker.data_dir / f"{topic_name}-a-1"
        assert directory.is_dir()
        State = DeleteTopicsRequest.DeleteTopicState
        response = wire.request("DeleteTopics", 6, timeout_ms=5000, topics=[
            State(name=None, topic_id=ids[topic_name + "-a"]),
            State(name=None, topic_id=uuid.uuid4()),
            State(name=topic_name + "-b", topic_id=ids[topic_name + "-b"]),
            State(name=None, topic_id=uuid.UUID(int=0)),
        ])
        answers = {(r.name, r.error_code) for r in response.responses}
        assert (topic_name + "-a", 0) in answers
        assert (None, ErrorCode.UNKNOWN_TOPIC_ID) in answers
        assert (topic_name + "-b", ErrorCode.INVALID_REQUEST) in answers
        assert (None, ErrorCode.INVALID_REQUEST) in answers
        response = wire.request("DeleteTopics", 1, timeout_ms=5000, topic_names=[topic_name + "-b", "nope"])
        assert [(r.name, r.error_code) for r in response.responses] == [
            ("nope", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION), (topic_name + "-b", 0)]
        wait_for(lambda: not any(name.startswith(topic_name) for name in os.listdir(admin_broker.data_dir)))


def test_create_partitions_errors(admin_broker, topic_name):
    Topic = CreatePartitionsRequest.CreatePartitionsTopic
    Assignment = CreatePartitionsRequest.CreatePartitionsAssignment
    with WireClient(admin_broker.bootstrap) as wire:
        create(wire, topic(topic_name, partitions=2))

        def grow(count, assignments=None, validate_only=False):
            response = wire.request("CreatePartitions", 3, timeout_ms=5000, validate_only=validate_only,
                                    topics=[Topic(name=topic_name, count=count, assignments=assignments)])
            return response.results[0].error_code, response.results[0].error_message

        assert grow(2) == (ErrorCode.INVALID_PARTITIONS, "Topic already has 2 partition(s).")
        assert grow(1)[0] == ErrorCode.INVALID_PARTITIONS
        assert grow(4, [Assignment(broker_ids=[1])])[0] == ErrorCode.INVALID_REPLICA_ASSIGNMENT
        assert grow(3, [Assignment(broker_ids=[3])])[0] == ErrorCode.INVALID_REPLICA_ASSIGNMENT
        assert grow(3, validate_only=True) == (0, None)
        assert grow(3, [Assignment(broker_ids=[1])]) == (0, None)
        response = wire.request("CreatePartitions", 0, timeout_ms=5000, validate_only=False,
                                topics=[Topic(name="nope", count=2, assignments=None)])
        assert response.results[0].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        response = wire.request("Metadata", 12, topics=None, allow_auto_topic_creation=False)
        assert [len(t.partitions) for t in response.topics if t.name == topic_name] == [3]


def test_leader_elections_and_reassignments(admin_broker, topic_name):
    with WireClient(admin_broker.bootstrap) as wire:
        create(wire, topic(topic_name, partitions=2))
        Partitions = ElectLeadersRequest.TopicPartitions
        response = wire.request("ElectLeaders", 2, election_type=0, timeout_ms=5000, topic_partitions=[
            Partitions(topic=topic_name, partitions=[0, 5]), Partitions(topic="nope", partitions=[0])])
        results = [(r.topic, p.partition_id, p.error_code) for r in response.replica_election_results
                   for p in r.partition_result]
        assert results == [(topic_name, 0, ErrorCode.ELECTION_NOT_NEEDED),
                           (topic_name, 5, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
                           ("nope", 0, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)]
        response = wire.request("ElectLeaders", 1, election_type=1, timeout_ms=5000, topic_partitions=None)
        assert response.error_code == 0 and all(not r.partition_result for r in response.replica_election_results)
        response = wire.request("ElectLeaders", 2, election_type=7, timeout_ms=5000, topic_partitions=[])
        assert response.error_code == ErrorCode.INVALID_REQUEST
        response = wire.request("ListPartitionReassignments", 0, timeout_ms=5000, topics=None)
        assert (response.error_code, response.topics) == (0, [])
        Reassignable = AlterPartitionReassignmentsRequest.ReassignableTopic
        Partition = AlterPartitionReassignmentsRequest.ReassignablePartition
        response = wire.request("AlterPartitionReassignments", 0, timeout_ms=5000, topics=[Reassignable(
            name=topic_name, partitions=[Partition(partition_index=0, replicas=[1]),
                                         Partition(partition_index=1, replicas=[1, 2]),
                                         Partition(partition_index=1, replicas=None),
                                         Partition(partition_index=9, replicas=[1])])])
        assert [p.error_code for p in response.responses[0].partitions] == [
            0, ErrorCode.INVALID_REPLICA_ASSIGNMENT, ErrorCode.NO_REASSIGNMENT_IN_PROGRESS,
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION]


def test_describe_topic_partitions_pages(admin_broker, topic_name):
    with WireClient(admin_broker.bootstrap) as wire:
        create(wire, topic(topic_name + "-a", partitions=3), topic(topic_name + "-b", partitions=2))
        Request = DescribeTopicPartitionsRequest
        names = [Request.TopicRequest(name=n) for n in (topic_name + "-b", topic_name + "-a", "nope")]
        seen, cursor = [], None
        while True:
            response = wire.request("DescribeTopicPartitions", 0, topics=names, response_partition_limit=2,
                                    cursor=cursor)
            seen += [(t.name, t.error_code, [p.partition_index for p in t.partitions]) for t in response.topics]
            if response.next_cursor is None:
                break
            cursor = Request.Cursor(topic_name=response.next_cursor.topic_name,
                                    partition_index=response.next_cursor.partition_index)
        assert seen == [("nope", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, []),  # names in order
                        (topic_name + "-a", 0, [0, 1]), (topic_name + "-a", 0, [2]),
                        (topic_name + "-b", 0, [0]), (topic_name + "-b", 0, [1])]


def test_acl_apis_answer_security_disabled_as_kafka_without_an_authorizer(broker):
    """Kafka with no authorizer.class.name allows everything and answers the ACL APIs with
    SECURITY_DISABLED; admin clients must get that error, not an unsupported version."""
    from confluent_kafka.admin import (
        AclBinding, AclBindingFilter, AclOperation, AclPermissionType, ResourcePatternType,
        ResourceType,
    )
    from kafka.admin import (
        ACL, ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType, ResourcePattern,
        ResourcePatternFilter,
    )
    from kafka.admin import ResourceType as KpResourceType
    from kafka.errors import SecurityDisabledError

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    binding = AclBinding(ResourceType.TOPIC, "acl-topic", ResourcePatternType.LITERAL,
                         "User:alice", "*", AclOperation.READ, AclPermissionType.ALLOW)
    every = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                             AclOperation.ANY, AclPermissionType.ANY)
    for future in (*admin.create_acls([binding], request_timeout=10).values(),
                   *admin.delete_acls([every], request_timeout=10).values()):
        with pytest.raises(KafkaException) as raised:
            future.result(10)
        assert raised.value.args[0].code() == ErrorCode.SECURITY_DISABLED
    # librdkafka drops DescribeAcls' top-level error code, against Kafka too: an empty list.
    assert admin.describe_acls(every, request_timeout=10).result(10) == []
    with WireClient(broker.bootstrap) as wire:
        response = wire.request("DescribeAcls", 3, resource_type_filter=1, pattern_type_filter=1,
                                operation=1, permission_type=1)
        assert (response.error_code, response.resources) == (ErrorCode.SECURITY_DISABLED, [])

    kp_admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        with pytest.raises(SecurityDisabledError):
            kp_admin.describe_acls(ACLFilter(
                principal=None, host="*", operation=ACLOperation.ANY,
                permission_type=ACLPermissionType.ANY,
                resource_pattern=ResourcePatternFilter(KpResourceType.TOPIC, None,
                                                       ACLResourcePatternType.ANY)))
        result = kp_admin.create_acls([ACL(
            principal="User:alice", host="*", operation=ACLOperation.READ,
            permission_type=ACLPermissionType.ALLOW,
            resource_pattern=ResourcePattern(KpResourceType.TOPIC, "acl-topic"))])
        assert result == {"succeeded": [], "failed": [SecurityDisabledError]}
    finally:
        kp_admin.close()
