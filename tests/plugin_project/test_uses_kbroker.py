"""How a user's test suite uses the kbroker pytest plugin and the embedding helpers."""

import asyncio
import json
import urllib.request

import pytest
import trio
from kafka import KafkaConsumer, KafkaProducer

from kbroker.testing import asyncio_broker, embedded_broker, serve_in_nursery


def test_session_broker_stores_what_a_client_produces(kbroker):
    kbroker.create_topic("orders", partitions=2, retention_ms=3_600_000)
    producer = KafkaProducer(bootstrap_servers=kbroker.bootstrap)
    producer.send("orders", key=b"o-1", value=json.dumps({"total": 12}).encode(), partition=1,
                  headers=[("source", b"web")])
    producer.flush()
    producer.close()
    (record,) = kbroker.records("orders")
    assert (record.partition, record.offset, record.key) == (1, 0, b"o-1")
    assert json.loads(record.value) == {"total": 12}
    assert record.headers == (("source", b"web"),)


def test_session_broker_is_shared(kbroker):
    assert kbroker.records("orders")  # the previous test's record is still there


def test_session_broker_serves_metrics(kbroker):
    with urllib.request.urlopen(kbroker.http + "/metrics") as response:
        assert 'kafka_server_brokertopicmetrics_messagesin_total{topic="orders"} 1' in \
            response.read().decode()


def test_fresh_broker_starts_empty(kbroker_fresh, kbroker):
    assert kbroker_fresh.bootstrap != kbroker.bootstrap
    kbroker_fresh.create_topic("orders")
    assert kbroker_fresh.records("orders") == []


def test_embedded_broker_serves_a_consumer():
    with embedded_broker({"num.partitions": "1"}) as broker:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
        producer.send("events", b"hello")
        producer.flush()
        producer.close()
        consumer = KafkaConsumer("events", bootstrap_servers=broker.bootstrap,
                                 auto_offset_reset="earliest", consumer_timeout_ms=10_000)
        assert next(iter(consumer)).value == b"hello"
        consumer.close()


@pytest.mark.trio
async def test_broker_in_a_trio_nursery():
    async with trio.open_nursery() as nursery:
        async with serve_in_nursery(nursery) as broker:
            await broker.create_topic("audit", partitions=3)
            assert await broker.records("audit") == []

            def produce():  # a blocking client must not block the loop that serves the broker
                producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
                producer.send("audit", b"x").get(10)
                producer.close()

            await trio.to_thread.run_sync(produce)
            assert [r.value for r in await broker.records("audit")] == [b"x"]


def test_broker_for_an_asyncio_program():
    async def main():
        async with asyncio_broker() as broker:
            broker.create_topic("jobs")
            from aiokafka import AIOKafkaProducer
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
            await producer.start()
            await producer.send_and_wait("jobs", b"job-1", key=b"k")
            await producer.stop()
            return broker.records("jobs")

    (record,) = asyncio.run(main())
    assert (record.key, record.value) == (b"k", b"job-1")
