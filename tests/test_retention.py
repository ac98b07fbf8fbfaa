"""Retention by time and size, DeleteRecords and topic deletion, observed through real clients:
ListOffsets earliest, consumers' auto.offset.reset, Fetch errors and the disk."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.structs import TopicPartition as AioTopicPartition
from confluent_kafka import Consumer, TopicPartition
from kafka import KafkaAdminClient, KafkaConsumer
from kafka import TopicPartition as KpTopicPartition
from kafka.errors import PolicyViolationError

from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.messages import DeleteRecordsRequest, DeleteTopicsRequest, FetchRequest
from kbroker.testing import running_broker
from tests.kafka_clients import confluent_producer
from tests.polling import wait_for
from tests.test_admin import create, dir_bytes, topic
from tests.test_admin_configs import TOPIC, SET, incremental
from tests.wire import WireClient

HOUR = 3_600_000


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """Retention checked every 200 ms; deleted files removed 100 ms later."""
    with running_broker("--override", "log.retention.check.interval.ms=200",
                        "--override", "log.segment.delete.delay.ms=100",
                        data_dir=tmp_path_factory.mktemp("retention")) as started:
        yield started


def now_ms() -> int:
    return int(time.time() * 1000)


def produce_batches(bootstrap: str, topic_name: str, timestamps, value: bytes = b"v" * 1000) -> None:
    """One single-record batch per timestamp; with segment.ms=1 each lands in its own segment."""
    producer = confluent_producer(bootstrap, **{"linger.ms": 0})
    for timestamp in timestamps:
        producer.produce(topic_name, key=b"k", value=value, timestamp=timestamp)
        assert producer.flush(10) == 0


def watermarks(bootstrap: str, topic_name: str, partition: int = 0) -> tuple[int, int]:
    """(earliest, latest) offsets, as ListOffsets answers them."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic_name, partition), timeout=10, cached=False)
    finally:
        consumer.close()


def fetch_at(wire: WireClient, topic_name: str, offset: int):
    Topic, Partition = FetchRequest.FetchTopic, FetchRequest.FetchPartition
    response = wire.request("Fetch", 12, replica_id=-1, max_wait_ms=0, min_bytes=0, max_bytes=1 << 20,
                            isolation_level=0, session_id=0, session_epoch=-1, topics=[Topic(
                                topic=topic_name, partitions=[Partition(
                                    partition=0, fetch_offset=offset, partition_max_bytes=1 << 20,
                                    current_leader_epoch=-1, log_start_offset=-1)])],
                            forgotten_topics_data=[], rack_id="")
    return response.responses[0].partitions[0]


def test_retention_by_time(broker, topic_name):
    with WireClient(broker.bootstrap) as wire:
        create(wire, topic(topic_name, configs=[("segment.ms", "1"), ("retention.ms", str(HOUR))]))
    now = now_ms()
    produce_batches(broker.bootstrap, topic_name, [now - 3 * HOUR, now - 2 * HOUR, now, now + 10])
    # The two segments older than an hour go; the log start offset moves past them.
    assert wait_for(lambda: watermarks(broker.bootstrap, topic_name) == (2, 4))
    wait_for(lambda: not any(path.name.endswith(".deleted")
                             for path in (broker.data_dir / f"{topic_name}-0").iterdir()))


def test_an_empty_cleanup_policy_keeps_everything(broker, topic_name):
    """cleanup.policy="" (Kafka 4.2): neither retention nor compaction touches the topic."""
    kept, deleted = topic_name + "-kept", topic_name + "-deleted"
    with WireClient(broker.bootstrap) as wire:
        for name, policy in ((kept, ""), (deleted, "delete")):
            create(wire, topic(name, configs=[("segment.ms", "1"), ("retention.ms", str(HOUR)),
                                              ("cleanup.policy", policy)]))
    now = now_ms()
    for name in (kept, deleted):
        produce_batches(broker.bootstrap, name, [now - 3 * HOUR, now - 2 * HOUR, now])
    # one retention pass covers every topic: once the "delete" topic lost its old segments,
    # the other one has been looked at too
    assert wait_for(lambda: watermarks(broker.bootstrap, deleted) == (2, 3))
    assert watermarks(broker.bootstrap, kept) == (0, 3)


def test_retention_by_size_follows_a_config_change(broker, topic_name):
    with WireClient(broker.bootstrap) as wire:
        create(wire, topic(topic_name, configs=[("segment.ms", "1")]))
        now = now_ms()
        produce_batches(broker.bootstrap, topic_name, [now + i * 10 for i in range(5)])
        time.sleep(0.5)
        assert watermarks(broker.bootstrap, topic_name) == (0, 5)  # retention.bytes -1: no limit
        segment = dir_bytes_of_logs(broker, topic_name) // 5
        assert incremental(wire, TOPIC, topic_name, ("retention.bytes", SET, str(2 * segment + segment // 2))) \
            == (0, None)
        # The oldest segments go until the partition fits: 5 -> 3 segments (the last one stays).
        assert wait_for(lambda: watermarks(broker.bootstrap, topic_name) == (2, 5))


def dir_bytes_of_logs(broker, topic_name: str) -> int:
    directory = broker.data_dir / f"{topic_name}-0"
    return sum(path.stat().st_size for path in directory.glob("*.log"))


def test_consumers_before_the_log_start_follow_auto_offset_reset(broker, topic_name):
    with WireClient(broker.bootstrap) as wire:
        create(wire, topic(topic_name, configs=[("segment.ms", "1"), ("retention.ms", str(HOUR))]))
    now = now_ms()
    produce_batches(broker.bootstrap, topic_name, [now - 2 * HOUR, now - 2 * HOUR + 10, now, now + 10])
    wait_for(lambda: watermarks(broker.bootstrap, topic_name)[0] == 2)
    tp = KpTopicPartition(topic_name, 0)
    for reset, expected in (("earliest", [2, 3]), ("latest", [4])):
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset=reset,
                                 enable_auto_commit=False)
        consumer.assign([tp])
        consumer.seek(tp, 0)  # a position retention has removed
        got: list[int] = []

        # (the noqa: these closures are only called within this iteration)
        def received():
            got.extend(record.offset for records in consumer.poll(200).values() for record in records)  # noqa: B023
            return len(got) >= len(expected)  # noqa: B023

        if reset == "latest":
            wait_for(lambda: received() or consumer.position(tp) == 4)  # noqa: B023
            produce_batches(broker.bootstrap, topic_name, [now + 20])
        wait_for(received)
        consumer.close()
        assert got == expected
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic_name, 0, 0)])
    first = wait_for(lambda: consumer.poll(0.5))
    consumer.close()
    assert first.error() is None and first.offset() == 2


def test_delete_records(broker, topic_name):
    with WireClient(broker.bootstrap) as wire:
        create(wire, topic(topic_name, configs=[("segment.ms", "1")]),
               topic(topic_name + "-compact", configs=[("cleanup.policy", "compact")]))
        now = now_ms()
        produce_batches(broker.bootstrap, topic_name, [now + i for i in range(6)])
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            result = admin.delete_records({KpTopicPartition(topic_name, 0): 3})
            assert result[KpTopicPartition(topic_name, 0)]["low_watermark"] == 3
            with pytest.raises(PolicyViolationError):
                admin.delete_records({KpTopicPartition(topic_name + "-compact", 0): 0})
        finally:
            admin.close()
        assert watermarks(broker.bootstrap, topic_name) == (3, 6)
        below = fetch_at(wire, topic_name, 1)
        assert (below.error_code, below.log_start_offset) == (ErrorCode.OFFSET_OUT_OF_RANGE, 3)
        assert fetch_at(wire, topic_name, 3).error_code == 0
        Topic, Partition = DeleteRecordsRequest.DeleteRecordsTopic, DeleteRecordsRequest.DeleteRecordsPartition

        def delete_before(*pairs, name=topic_name):
            response = wire.request("DeleteRecords", 2, timeout_ms=5000, topics=[Topic(name=name, partitions=[
                Partition(partition_index=p, offset=o) for p, o in pairs])])
            return [(r.error_code, r.low_watermark) for r in response.topics[0].partitions]

        assert delete_before((0, 99), (0, -7), (4, 1)) == [
            (ErrorCode.OFFSET_OUT_OF_RANGE, -1), (ErrorCode.OFFSET_OUT_OF_RANGE, -1),
            (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1)]
        assert delete_before((0, 2)) == [(0, 3)]  # never moves back
        assert delete_before((0, -1)) == [(0, 6)]  # -1: up to the high watermark
        assert delete_before((0, 0), name="__consumer_offsets")[0][0] in (
            ErrorCode.INVALID_TOPIC_EXCEPTION, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
    # The segments wholly below the new log start offset are gone from the disk.
    wait_for(lambda: len(list((broker.data_dir / f"{topic_name}-0").glob("*.log"))) == 1)


def test_aiokafka_delete_records(broker, topic_name):
    with WireClient(broker.bootstrap) as wire:
        create(wire, topic(topic_name))
    produce_batches(broker.bootstrap, topic_name, [now_ms()] * 4)

    async def scenario():
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            return await admin.delete_records({AioTopicPartition(topic_name, 0): RecordsToDelete(2)})
        finally:
            await admin.close()

    assert asyncio.run(scenario()) == {AioTopicPartition(topic_name, 0): 2}
    assert watermarks(broker.bootstrap, topic_name) == (2, 4)


def test_deleting_topics_frees_the_disk(broker, topic_name):
    baseline = dir_bytes(broker.data_dir)
    with WireClient(broker.bootstrap) as wire:
        create(wire, topic(topic_name, partitions=3))
        producer = confluent_producer(broker.bootstrap)
        for i in range(3000):
            producer.produce(topic_name, value=b"x" * 1000, partition=i % 3)
        assert producer.flush(30) == 0
        assert dir_bytes(broker.data_dir) > baseline + 3_000_000
        response = wire.request("DeleteTopics", 6, timeout_ms=5000, topics=[
            DeleteTopicsRequest.DeleteTopicState(name=topic_name)])
        assert response.responses[0].error_code == 0
    # Files go after log.segment.delete.delay.ms; only the broker's small state files remain.
    wait_for(lambda: not any(path.name.startswith(topic_name) for path in broker.data_dir.iterdir()))
    assert dir_bytes(broker.data_dir) < baseline + 50_000

