"""Compacted topics end to end: consumers reading from the beginning see the latest value per key,
tombstones go after delete.retention.ms, producers carry on, and a kill -9 loses nothing."""

from __future__ import annotations

import random
import time

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTopicPartition

from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.records import Record, build_batch
from kbroker.testing import BrokerProcess, running_broker
from tests.kafka_clients import confluent_producer, kafka_python_producer
from tests.polling import wait_for
from tests.test_admin import create, topic
from tests.test_transactions_wire import produce
from tests.wire import WireClient

CLEANER = ("--override", "log.cleaner.backoff.ms=50", "--override", "log.segment.delete.delay.ms=100")
COMPACT = [("cleanup.policy", "compact"), ("segment.ms", "100"), ("min.cleanable.dirty.ratio", "0.01")]


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with running_broker(*CLEANER, data_dir=tmp_path_factory.mktemp("compaction")) as started:
        yield started


def produce_rounds(bootstrap: str, topic_name: str, rounds: list[dict], start_ms: int) -> None:
    """Each round's records share a timestamp a second after the previous round's, so that each
    round lands in its own segment (segment.ms=100)."""
    producer = confluent_producer(bootstrap, **{"linger.ms": 5})
    for number, records in enumerate(rounds):
        for key, value in records.items():
            producer.produce(topic_name, key=key, value=value, timestamp=start_ms + number * 1000)
        assert producer.flush(10) == 0


def read_all(bootstrap: str, topic_name: str) -> list[tuple[int, bytes, bytes | None]]:
    """(offset, key, value) of every record from the beginning up to the end offset."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    try:
        end = consumer.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=10, cached=False)[1]
        consumer.assign([TopicPartition(topic_name, 0, 0)])
        records, deadline = [], time.monotonic() + 15
        while (not records or records[-1][0] < end - 1) and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None:
                assert message.error() is None, message.error()
                records.append((message.offset(), message.key(), message.value()))
        return records
    finally:
        consumer.close()


def test_consumer_sees_latest_value_per_key_and_tombstones_go(broker, topic_name):
    with WireClient(broker.bootstrap) as wire:
        create(wire, topic(topic_name, configs=COMPACT + [("delete.retention.ms", "1500")]))
    keys = [b"k%d" % i for i in range(10)]
    rounds = [{key: b"%s-v%d" % (key, r) for key in keys} for r in range(4)]
    rounds.append({b"k3": None, b"k5": b"k5-last"})
    rounds.append({b"later": b"active"})  # rolls the segment before it, so that it can be cleaned
    produce_rounds(broker.bootstrap, topic_name, rounds, int(time.time() * 1000) - 60_000)
    expected = {key: b"%s-v3" % key for key in keys} | {b"k3": None, b"k5": b"k5-last", b"later": b"active"}

    def compacted():
        records = read_all(broker.bootstrap, topic_name)
        return records if len(records) == len(expected) else None

    records = wait_for(compacted)
    assert {key: value for _, key, value in records} == expected
    offsets = [offset for offset, _, _ in records]
    assert offsets == [30, 31, 32, 34, 36, 37, 38, 39, 40, 41, 42]  # offsets kept, with gaps
    assert (40, b"k3", None) in records
    # After delete.retention.ms the tombstone goes too.
    records = wait_for(lambda: (lambda got: got if len(got) == len(expected) - 1 else None)(
        read_all(broker.bootstrap, topic_name)))
    assert b"k3" not in {key for _, key, _ in records}


def test_kafka_python_reads_compacted_topic_and_idempotent_producer_carries_on(broker, topic_name):
    with WireClient(broker.bootstrap) as wire:
        create(wire, topic(topic_name, configs=COMPACT))
    producer = kafka_python_producer(broker.bootstrap, linger_ms=5)  # idempotent by default
    start = int(time.time() * 1000) - 60_000
    for round_ in range(3):
        futures = [producer.send(topic_name, key=b"k%d" % k, value=b"%d-%d" % (round_, k),
                                 timestamp_ms=start + round_ * 1000) for k in range(5)]
        producer.flush()
        assert all(future.get(10) for future in futures)
    producer.send(topic_name, key=b"roll", value=b"", timestamp_ms=start + 3000).get(10)
    wait_for(lambda: [offset for offset, _, _ in read_all(broker.bootstrap, topic_name)] == [10, 11, 12, 13, 14, 15])
    assert producer.send(topic_name, key=b"k0", value=b"after", timestamp_ms=start + 4000).get(10).offset == 16
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=3000)
    consumer.assign([KpTopicPartition(topic_name, 0)])
    got = [(record.offset, record.key, record.value) for record in consumer]
    consumer.close()
    assert got == [(10 + k, b"k%d" % k, b"2-%d" % k) for k in range(5)] + [(15, b"roll", b""),
                                                                          (16, b"k0", b"after")]


def test_keyless_records_are_rejected(broker, topic_name):
    with WireClient(broker.bootstrap) as wire:
        create(wire, topic(topic_name, configs=COMPACT))
    producer = confluent_producer(broker.bootstrap, **{"linger.ms": 0})
    errors = []
    producer.produce(topic_name, value=b"no key", on_delivery=lambda err, msg: errors.append(err))
    producer.flush(10)
    producer.produce(topic_name, key=b"k", value=b"keyed", on_delivery=lambda err, msg: errors.append(err))
    producer.flush(10)
    assert [err.code() if err else None for err in errors] == [ErrorCode.INVALID_RECORD, None]


def test_only_the_keyless_records_of_a_batch_fail(broker, topic_name):
    """KIP-467: the broker names the refused records of a batch (RecordErrors, v8+), so librdkafka
    fails those with INVALID_RECORD and the rest of the batch, stored as little as the refused
    records, with _INVALID_DIFFERENT_RECORD ("a different record in the batch was invalid")."""
    with WireClient(broker.bootstrap) as wire:
        create(wire, topic(topic_name, configs=COMPACT))
    producer = confluent_producer(broker.bootstrap, **{"linger.ms": 500})
    reports = {}
    keys = [b"k0", None, b"k2", None, b"k4"]
    for index, key in enumerate(keys):
        producer.produce(topic_name, key=key, value=b"v%d" % index, partition=0,
                         on_delivery=lambda err, msg, index=index: reports.__setitem__(index, err))
    assert producer.flush(15) == 0
    other = KafkaError._INVALID_DIFFERENT_RECORD
    assert {index: err.code() for index, err in reports.items()} == {
        0: other, 1: ErrorCode.INVALID_RECORD, 2: other, 3: ErrorCode.INVALID_RECORD, 4: other}
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "watermarks"})
    assert consumer.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=10) == (0, 0)
    consumer.close()
    with WireClient(broker.bootstrap) as wire:
        now = int(time.time() * 1000)
        records = [Record(timestamp=now, key=None if i % 2 else b"k", value=b"v") for i in range(5)]
        answer = produce(wire, topic_name, 0, build_batch(records), None)
        assert answer.error_code == ErrorCode.INVALID_RECORD and answer.base_offset == -1
        why = f"Compacted topic cannot accept message without key in topic partition {topic_name}-0."
        assert [(e.batch_index, e.batch_index_error_message) for e in answer.record_errors] == [
            (1, why), (3, why)]
        assert answer.error_message == (
            "One or more records have been rejected due to 2 record errors in total, and only "
            f"showing the first three errors at most: [RecordError(batchIndex=1, message='{why}'), "
            f"RecordError(batchIndex=3, message='{why}')]")


def test_kill_9_while_cleaning_loses_nothing(tmp_path, topic_name):
    """Kill the broker at random moments while it compacts, restart, and find every key's value."""
    rng = random.Random(5)
    keys = [b"key-%04d" % i for i in range(2000)]
    start = int(time.time() * 1000) - 600_000
    latest: dict[bytes, bytes] = {}
    broker = BrokerProcess(tmp_path, list(CLEANER)).start()
    try:
        with WireClient(broker.bootstrap) as wire:
            create(wire, topic(topic_name, configs=COMPACT))
        for round_ in range(12):
            records = {key: b"%s=%d" % (key, round_) + b"." * 100 for key in rng.sample(keys, 1500)}
            produce_rounds(broker.bootstrap, topic_name, [records], start + round_ * 1000)
            latest.update(records)
            if round_ % 3 == 2:
                time.sleep(rng.uniform(0.0, 0.4))
                broker.kill()
                broker.start(broker.port)
        produce_rounds(broker.bootstrap, topic_name, [{b"last": b"one"}], start + 20_000)
        latest[b"last"] = b"one"
        broker.kill()
        broker.start(broker.port)
        records = wait_for(lambda: (lambda got: got if len(got) == len(latest) else None)(
            read_all(broker.bootstrap, topic_name)), timeout_s=30)
        assert {key: value for _, key, value in records} == latest
    finally:
        broker.stop()
