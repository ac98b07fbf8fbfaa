"""Data survives restarts; a torn or corrupt segment tail is cut back on start."""

from __future__ import annotations

import os
from pathlib import Path

from kbroker.testing import BrokerProcess
from tests.kafka_clients import confluent_consume, confluent_producer, kafka_python_consume


def _produce_values(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = confluent_producer(bootstrap, **{"linger.ms": 0, "batch.num.messages": 1})
    for value in values:
        producer.produce(topic, value=value)
        producer.flush(10)  # one batch per value, so the tail holds several batches
    assert producer.flush(10) == 0


def _segment(data_dir: Path, topic: str) -> Path:
    [segment] = sorted((data_dir / f"{topic}-0").glob("*.log"))
    return segment


def test_clean_restart_keeps_data_topics_and_cluster_id(tmp_path):
    broker = BrokerProcess(tmp_path).start()
    try:
        from confluent_kafka.admin import AdminClient

        cluster_id = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(
            timeout=10).cluster_id
        values = [f"v{i}".encode() for i in range(10)]
        _produce_values(broker.bootstrap, "kept", values)
        assert broker.stop() == 0, "SIGTERM must shut down cleanly with exit code 0"
        broker.start(broker.port)
        assert [r.value for r in kafka_python_consume(broker.bootstrap, "kept", 10)] == values
        again = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
        assert again.cluster_id == cluster_id
        _produce_values(broker.bootstrap, "kept", [b"after"])
        records = confluent_consume(broker.bootstrap, "kept", 11)
        assert [m.offset() for m in records] == list(range(11))
    finally:
        broker.stop()


def _five_batches_then_crash(broker: BrokerProcess, topic: str) -> tuple[list[bytes], Path]:
    """Produce five one-record batches, kill -9 the broker; the values and the segment file."""
    values = [f"value-{i}".encode() for i in range(5)]
    _produce_values(broker.bootstrap, topic, values)
    broker.kill()
    return values, _segment(broker.data_dir, topic)


def test_truncated_tail_is_cut_back_to_the_last_whole_batch(tmp_path):
    broker = BrokerProcess(tmp_path).start()
    try:
        values, segment = _five_batches_then_crash(broker, "torn")
        size = segment.stat().st_size
        os.truncate(segment, size - 7)  # tear the last batch
        broker.start(broker.port)
        assert [r.value for r in kafka_python_consume(broker.bootstrap, "torn", 4)] == values[:4]
        _produce_values(broker.bootstrap, "torn", [b"new"])
        records = kafka_python_consume(broker.bootstrap, "torn", 5)
        assert [(r.offset, r.value) for r in records][-1] == (4, b"new")
    finally:
        broker.stop()


def test_corrupt_tail_batch_and_lost_indexes_are_recovered(tmp_path):
    broker = BrokerProcess(tmp_path).start()
    try:
        values, segment = _five_batches_then_crash(broker, "corrupt")
        with open(segment, "r+b") as f:
            f.seek(-3, os.SEEK_END)
            byte = f.read(1)
            f.seek(-3, os.SEEK_END)
            f.write(bytes([byte[0] ^ 0xFF]))  # the last batch's CRC no longer matches
        for index in segment.parent.glob("*index"):
            index.unlink()
        broker.start(broker.port)
        assert [r.value for r in kafka_python_consume(broker.bootstrap, "corrupt", 4)] == values[:4]
        rebuilt = {p.suffix for p in segment.parent.glob("*index")}
        assert {".index", ".timeindex"} <= rebuilt
    finally:
        broker.stop()


def test_idempotent_producer_state_survives_restart(tmp_path):
    broker = BrokerProcess(tmp_path).start()
    try:
        producer = confluent_producer(broker.bootstrap, **{"enable.idempotence": True})
        for i in range(5):
            producer.produce("idem", value=f"{i}".encode())
        assert producer.flush(10) == 0
        broker.stop()
        broker.start(broker.port)
        # The same producer keeps its id and sequence numbers across the broker restart.
        for i in range(5, 10):
            producer.produce("idem", value=f"{i}".encode())
        assert producer.flush(20) == 0
        records = kafka_python_consume(broker.bootstrap, "idem", 10)
        assert [r.value for r in records] == [f"{i}".encode() for i in range(10)]
    finally:
        broker.stop()
