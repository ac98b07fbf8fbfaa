"""ListConfigResources and AlterReplicaLogDirs, with kafka-python's admin client and the wire
client: what a one-broker Kafka with one log dir answers."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType
from confluent_kafka.admin import NewTopic as CkNewTopic
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import LogDirNotFoundError, NoError, ReplicaNotAvailableError

from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.messages import AlterReplicaLogDirsRequest as Request
from tests.wire import WireClient


@pytest.fixture
def admin(broker):
    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    yield client
    client.close()


def test_list_config_resources(broker, admin, topic_name):
    admin.create_topics([NewTopic(topic_name, 1, 1)])
    listed = admin.list_config_resources()
    assert topic_name in listed["topic"]
    assert listed["broker"] == ["1"] and listed["broker_logger"] == ["1"]
    assert set(admin.list_config_resources(["TOPIC"])) == {"topic"}
    with WireClient(broker.bootstrap) as client:
        # v0 (ListClientMetricsResources) knows client metrics only, and kbroker keeps none
        response = client.request("ListConfigResources", 0)
        assert (response.error_code, response.config_resources) == (ErrorCode.NONE, [])
        response = client.request("ListConfigResources", 0, resource_types=[2])
        assert response.error_code == ErrorCode.NONE  # v0 has no types field: all it knows
        response = client.request("ListConfigResources", 1, resource_types=[2, 99])
        assert response.error_code == ErrorCode.UNSUPPORTED_VERSION


def test_alter_replica_log_dirs(broker, admin, topic_name):
    admin.create_topics([NewTopic(topic_name, 2, 1)])
    (described,) = admin.describe_log_dirs()
    log_dir = described["log_dirs"][0]["log_dir"]
    results = admin.alter_replica_log_dirs({
        (topic_name, 0, 1): log_dir,  # where it already is: done
        (topic_name, 1, 1): "/no/such/dir",
        (topic_name, 5, 1): log_dir,
    })
    assert {replica.partition: error for replica, error in results.items()} == {
        0: NoError, 1: LogDirNotFoundError, 5: ReplicaNotAvailableError}
    with WireClient(broker.bootstrap) as client:  # a topic name too long for a "-future" dir
        response = client.request("AlterReplicaLogDirs", 2, dirs=[Request.AlterReplicaLogDir(
            path=log_dir, topics=[Request.AlterReplicaLogDirTopic(name="x" * 240, partitions=[0])])])
        assert response.results[0].partitions[0].error_code == ErrorCode.INVALID_TOPIC_EXCEPTION


def test_describe_configs_lists_kafka_4_topic_configs(broker, topic_name):
    """confluent-kafka sets cleanup.policy to the empty list and sees every Kafka 4.2 topic config."""
    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    client.create_topics([CkNewTopic(topic_name, 1, 1, config={"cleanup.policy": ""})])[
        topic_name].result(10)
    resource = ConfigResource(ResourceType.TOPIC, topic_name)
    entries = client.describe_configs([resource])[resource].result(10)
    assert entries["cleanup.policy"].value == ""
    assert {name: entries[name].value for name in (
        "leader.replication.throttled.replicas", "follower.replication.throttled.replicas",
        "remote.storage.enable", "local.retention.ms", "local.retention.bytes",
        "remote.log.copy.disable", "remote.log.delete.on.disable")} == {
        "leader.replication.throttled.replicas": "", "follower.replication.throttled.replicas": "",
        "remote.storage.enable": "false", "local.retention.ms": "-2", "local.retention.bytes": "-2",
        "remote.log.copy.disable": "false", "remote.log.delete.on.disable": "false"}
