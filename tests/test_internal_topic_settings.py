"""The internal topics' replication settings under Kafka's names, as docker-compose files and the
clients' own test clusters set them (offsets.topic.replication.factor=1, ...)."""

from __future__ import annotations

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from kbroker.testing import running_broker
from tests.test_cluster import metadata


def replicas(bootstrap: str, topic: str) -> list[list[int]]:
    (found,) = metadata(bootstrap, topic).topics
    return [list(p.replica_nodes) for p in sorted(found.partitions, key=lambda p: p.partition_index)]


def use_the_coordinators(bootstrap: str, topic: str) -> None:
    """Commit an offset and a transaction, so that both internal topics are written."""
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "settings-txn"})
    producer.init_transactions(20)
    producer.begin_transaction()
    producer.produce(topic, b"v")
    producer.commit_transaction(20)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "settings-group"})
    consumer.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
    consumer.close()


def test_factors_and_min_isr_of_the_internal_topics_on_three_brokers(tmp_path):
    args = ("--override", "offsets.topic.replication.factor=1",
            "--override", "transaction.state.log.replication.factor=2",
            "--override", "transaction.state.log.min.isr=2")
    with running_broker(*args, data_dir=tmp_path, brokers=3) as broker:
        use_the_coordinators(broker.bootstrap, "events")
        assert {len(r) for r in replicas(broker.bootstrap, "__consumer_offsets")} == {1}
        assert {len(r) for r in replicas(broker.bootstrap, "__transaction_state")} == {2}
        assert {len(r) for r in replicas(broker.bootstrap, "events")} == {3}  # min(3, N)
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        resource = ConfigResource(ConfigResource.Type.TOPIC, "__transaction_state")
        configs = admin.describe_configs([resource])[resource].result(20)
        assert configs["min.insync.replicas"].value == "2"


def test_a_factor_over_the_brokers_places_the_topic_on_every_broker(tmp_path):
    """Kafka would leave the coordinator unavailable; a one-broker kbroker takes docker-compose
    style settings of any size and works."""
    args = ("--override", "offsets.topic.replication.factor=3",
            "--override", "transaction.state.log.replication.factor=3",
            "--override", "transaction.state.log.min.isr=1")
    with running_broker(*args, data_dir=tmp_path) as broker:
        use_the_coordinators(broker.bootstrap, "events")
        assert replicas(broker.bootstrap, "__consumer_offsets") == [[1]]
        assert replicas(broker.bootstrap, "__transaction_state") == [[1]]
