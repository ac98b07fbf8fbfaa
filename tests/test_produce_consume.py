"""Produce and consume through kbroker with kafka-python, confluent-kafka and aiokafka."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from kafka import TopicPartition as KPTopicPartition

from kbroker.testing import running_broker
from tests.kafka_clients import (
    confluent_consume, confluent_producer, kafka_python_consume, kafka_python_producer,
)

ONE_MIB = 1024 * 1024


@pytest.fixture(scope="module")
def broker3(tmp_path_factory):
    """A broker whose auto-created topics have three partitions."""
    with running_broker("--num-partitions", "3", data_dir=tmp_path_factory.mktemp("b3")) as b:
        yield b


def test_kafka_python_roundtrip_keys_headers_timestamps_nulls(broker, topic_name):
    producer = kafka_python_producer(broker.bootstrap)
    sent = [
        (b"k1", b"v1", [("h", b"x")], 1_700_000_000_000),
        (None, b"no key", [], 1_700_000_000_001),
        (b"k3", None, [], 1_700_000_000_002),
        (b"k4", b"", [("a", b""), ("b", b"2")], 1_700_000_000_003),
    ]
    for key, value, headers, ts in sent:
        producer.send(topic_name, key=key, value=value, headers=headers, timestamp_ms=ts)
    producer.flush()
    producer.close()
    records = kafka_python_consume(broker.bootstrap, topic_name, len(sent))
    got = [(r.key, r.value, list(r.headers), r.timestamp) for r in records]
    assert got == sent
    assert [r.offset for r in records] == [0, 1, 2, 3]


def test_confluent_roundtrip_large_values(broker, topic_name):
    big = bytes(range(256)) * (ONE_MIB // 256 - 1)  # just under max.message.bytes with overhead
    producer = confluent_producer(broker.bootstrap, **{"message.max.bytes": 2 * ONE_MIB})
    producer.produce(topic_name, key=b"big", value=big)
    producer.produce(topic_name, key=b"small", value=b"s")
    assert producer.flush(15) == 0
    records = confluent_consume(broker.bootstrap, topic_name, 2)
    assert [(m.key(), m.value()) for m in records] == [(b"big", big), (b"small", b"s")]


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compression_codecs_across_clients(broker, topic_name, codec):
    producer = confluent_producer(broker.bootstrap, **{"compression.type": codec})
    values = [f"value-{i}-{codec}".encode() * 10 for i in range(200)]
    for value in values:
        producer.produce(topic_name, value=value)
    assert producer.flush(15) == 0
    from_kafka_python = kafka_python_consume(broker.bootstrap, topic_name, len(values))
    assert [r.value for r in from_kafka_python] == values
    from_confluent = confluent_consume(broker.bootstrap, topic_name, len(values))
    assert [m.value() for m in from_confluent] == values


def test_key_stickiness_over_three_partitions(broker3, topic_name):
    broker = broker3
    producer = confluent_producer(broker.bootstrap)
    keys = [f"key-{i}".encode() for i in range(12)]
    for round_ in range(5):
        for key in keys:
            producer.produce(topic_name, key=key, value=f"{round_}".encode())
    assert producer.flush(15) == 0
    records = confluent_consume(broker.bootstrap, topic_name, 60)
    partitions_of_key: dict[bytes, set[int]] = {}
    values_of_key: dict[bytes, list[bytes]] = {}
    for message in records:
        partitions_of_key.setdefault(message.key(), set()).add(message.partition())
        values_of_key.setdefault(message.key(), []).append(message.value())
    assert all(len(parts) == 1 for parts in partitions_of_key.values())
    assert len({next(iter(p)) for p in partitions_of_key.values()}) > 1
    assert all(values == [b"0", b"1", b"2", b"3", b"4"] for values in values_of_key.values())


@pytest.mark.parametrize("acks", [0, 1, "all"])
def test_acks_levels_with_kafka_python(broker, topic_name, acks):
    producer = kafka_python_producer(broker.bootstrap, acks=acks, enable_idempotence=False)
    futures = [producer.send(topic_name, value=f"{i}".encode()) for i in range(50)]
    producer.flush()
    if acks != 0:
        offsets = [future.get(10).offset for future in futures]
        assert offsets == list(range(50))
    producer.close()
    records = kafka_python_consume(broker.bootstrap, topic_name, 50)
    assert [r.value for r in records] == [f"{i}".encode() for i in range(50)]


def test_aiokafka_produce_and_consume(broker, topic_name):
    async def scenario():
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            for i in range(20):
                await producer.send_and_wait(topic_name, key=b"k", value=f"{i}".encode(),
                                             headers=[("n", str(i).encode())])
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic_name, bootstrap_servers=broker.bootstrap,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            records = []
            while len(records) < 20:
                batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 20)
                for messages in batch.values():
                    records.extend(messages)
            return records
        finally:
            await consumer.stop()

    records = asyncio.run(scenario())
    assert [(r.key, r.value, r.headers) for r in records] == [
        (b"k", f"{i}".encode(), (("n", str(i).encode()),)) for i in range(20)
    ]


def test_list_offsets_earliest_latest_and_by_time(broker, topic_name):
    producer = kafka_python_producer(broker.bootstrap)
    base = 1_700_000_000_000
    for i in range(10):
        producer.send(topic_name, value=b"x", timestamp_ms=base + i * 1000)
    producer.flush()
    producer.close()
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    try:
        tp = KPTopicPartition(topic_name, 0)
        assert consumer.beginning_offsets([tp]) == {tp: 0}
        assert consumer.end_offsets([tp]) == {tp: 10}
        found = consumer.offsets_for_times({tp: base + 4500})[tp]
        assert (found.offset, found.timestamp) == (5, base + 5000)
        assert consumer.offsets_for_times({tp: base + 99_000})[tp] is None
    finally:
        consumer.close()
    confluent = confluent_producer(broker.bootstrap)
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "lo"})
    try:
        low, high = c.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=10)
        assert (low, high) == (0, 10)
        [found] = c.offsets_for_times([TopicPartition(topic_name, 0, base + 2000)], timeout=10)
        assert found.offset == 2
    finally:
        c.close()
    del confluent


def test_long_poll_wakes_when_data_arrives(broker, topic_name):
    producer = kafka_python_producer(broker.bootstrap)
    producer.send(topic_name, value=b"first").get(10)

    async def scenario():
        consumer = AIOKafkaConsumer(topic_name, bootstrap_servers=broker.bootstrap,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=10_000)
        await consumer.start()
        try:
            first = await asyncio.wait_for(consumer.getone(), 20)
            assert first.value == b"first"
            waiting = asyncio.ensure_future(consumer.getone())
            await asyncio.sleep(1.0)  # the consumer is now parked in a long poll
            sent_at = time.monotonic()
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: producer.send(topic_name, value=b"second").get(10))
            second = await asyncio.wait_for(waiting, 10)
            return second.value, time.monotonic() - sent_at
        finally:
            await consumer.stop()

    value, latency = asyncio.run(scenario())
    producer.close()
    assert value == b"second"
    assert latency < 2.0, "the long poll should wake on arrival, not at max_wait_ms"


def test_metadata_names_this_broker(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    metadata = admin.list_topics(timeout=10)
    assert metadata.cluster_id
    assert [(b.host, b.port) for b in metadata.brokers.values()] == [("127.0.0.1", broker.port)]
    assert metadata.controller_id == 1
