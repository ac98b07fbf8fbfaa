"""The checks of librdkafka's tests/0103-transactions.c that need its three-broker test cluster
(topics with replication factor 3), run through confluent-kafka against `kbroker serve
--brokers 3`: committed and aborted transactions, fencing, the read_committed high watermark and
the offset an aborted transaction's control record takes. docs/CLIENT_SUITES.md runs 0103."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from kbroker.testing import running_broker


@pytest.fixture(scope="module")
def three_brokers(tmp_path_factory):
    with running_broker("--override", "group.initial.rebalance.delay.ms=0", brokers=3,
                        data_dir=tmp_path_factory.mktemp("suites-transactions")) as started:
        yield started


def _topic_with_three_replicas(bootstrap: str, partitions: int = 1) -> str:
    name = f"0103-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 3)])[name].result()
    return name


def _transactional(bootstrap: str, transactional_id: str) -> Producer:
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id})
    producer.init_transactions(30)
    return producer


def _read_committed(bootstrap: str, topic: str, partitions: int = 1) -> tuple[list[bytes], Consumer]:
    """Every record a read_committed consumer (group `topic`) sees until each partition's end."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": topic, "auto.offset.reset": "earliest",
                         "isolation.level": "read_committed", "enable.auto.commit": False,
                         "enable.partition.eof": True})
    consumer.subscribe([topic])
    values, ended = [], set()
    for _ in range(80):
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            if message.error().code() != KafkaError._PARTITION_EOF:
                raise KafkaException(message.error())
            ended.add(message.partition())
            if len(ended) == partitions:
                return values, consumer
        else:
            values.append(message.value())
    raise AssertionError(f"partitions {ended} of {partitions} ended after {values}")


def test_basic_producer_txn_commits_and_aborts(three_brokers):
    topic = _topic_with_three_replicas(three_brokers.bootstrap, partitions=4)
    producer = _transactional(three_brokers.bootstrap, topic)
    for commit in (True, False, True):
        producer.begin_transaction()
        for partition in range(4):
            producer.produce(topic, value=b"committed" if commit else b"aborted", partition=partition)
        assert producer.flush(10) == 0  # written, so that aborting has something to abort
        (producer.commit_transaction if commit else producer.abort_transaction)(30)
    values, consumer = _read_committed(three_brokers.bootstrap, topic, partitions=4)
    consumer.close()
    assert values == [b"committed"] * 8


def test_fenced_txn(three_brokers):
    topic = _topic_with_three_replicas(three_brokers.bootstrap)
    first = _transactional(three_brokers.bootstrap, topic)
    first.begin_transaction()
    first.produce(topic, value=b"from the fenced producer")
    first.flush(10)
    second = _transactional(three_brokers.bootstrap, topic)  # bumps the epoch: the first is fenced
    with pytest.raises(KafkaException) as fenced:
        first.commit_transaction(30)
    assert fenced.value.args[0].fatal()
    second.begin_transaction()
    second.produce(topic, value=b"from the new producer")
    second.commit_transaction(30)
    values, consumer = _read_committed(three_brokers.bootstrap, topic)
    consumer.close()
    assert values == [b"from the new producer"]


def test_wmark_isolation_level(three_brokers):
    """An open transaction holds read_committed's high watermark (the LSO) back; committed, it
    equals read_uncommitted's."""
    topic = _topic_with_three_replicas(three_brokers.bootstrap)
    plain = Producer({"bootstrap.servers": three_brokers.bootstrap})
    for index in range(100):
        plain.produce(topic, value=b"%d" % index, partition=0)
    assert plain.flush(10) == 0
    consumers = {level: Consumer({"bootstrap.servers": three_brokers.bootstrap, "group.id": f"{topic}-{level}",
                                  "isolation.level": level}) for level in ("read_committed", "read_uncommitted")}

    def high_watermarks() -> tuple[int, int]:
        return tuple(consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)[1]
                     for consumer in consumers.values())

    producer = _transactional(three_brokers.bootstrap, topic)
    producer.begin_transaction()
    for index in range(100):
        producer.produce(topic, value=b"txn %d" % index, partition=0)
    producer.flush(10)
    committed, uncommitted = high_watermarks()
    assert 0 < committed < uncommitted
    producer.commit_transaction(30)
    committed, uncommitted = high_watermarks()
    assert committed == uncommitted == 201  # 200 records and the commit marker
    for consumer in consumers.values():
        consumer.close()


def test_txn_abort_control_message_leader_epoch(three_brokers):
    """The aborted record and its control record are consumed past: the committed offset is 2."""
    topic = _topic_with_three_replicas(three_brokers.bootstrap)
    producer = _transactional(three_brokers.bootstrap, topic)
    producer.begin_transaction()
    producer.produce(topic, value=b"aborted")
    assert producer.flush(10) == 0  # abort_transaction() drops records not yet sent
    producer.abort_transaction(30)
    values, consumer = _read_committed(three_brokers.bootstrap, topic)
    try:
        assert values == []
        consumer.commit(asynchronous=False)
        (committed,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        assert committed.offset == 2
        assert committed.leader_epoch is not None and committed.leader_epoch >= 0
    finally:
        consumer.close()
