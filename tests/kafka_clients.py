"""Thin helpers over the real clients, so tests say what they check and not how to connect."""

from __future__ import annotations

import asyncio

from confluent_kafka import Consumer, Producer
from kafka import KafkaConsumer, KafkaProducer


def confluent_producer(bootstrap: str, **config) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **config})


def confluent_consume(bootstrap: str, topic: str, count: int, timeout_s: float = 20.0,
                      **config) -> list:
    """Read `count` records of `topic` from the beginning with a group-less assign()."""
    from confluent_kafka import TopicPartition

    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False,
        "auto.offset.reset": "earliest", **config,
    })
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        records = []
        import time

        deadline = time.monotonic() + timeout_s
        while len(records) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                raise RuntimeError(message.error())
            records.append(message)
        return records
    finally:
        consumer.close()


def kafka_python_consume(bootstrap: str, topic: str, count: int, timeout_s: float = 20.0,
                         **config) -> list:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        enable_auto_commit=False, consumer_timeout_ms=int(timeout_s * 1000), **config,
    )
    try:
        records = []
        for record in consumer:
            records.append(record)
            if len(records) >= count:
                break
        return records
    finally:
        consumer.close()


def kafka_python_producer(bootstrap: str, **config) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=bootstrap, **config)


def run_async(coroutine):
    return asyncio.run(coroutine)
