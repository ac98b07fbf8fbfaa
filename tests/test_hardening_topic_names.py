"""Topic names of every legal length (Kafka allows 249 characters) work end to end: created,
written, read, kept across a restart, deleted and created again. Names of 247-249 characters
used to drop the connection: the per-topic metadata file `<name>.json` (plus `.tmp` while it
is written) was longer than a file name may be."""

from __future__ import annotations

import pytest

from kbroker.log import LogConfig, LogManager
from kbroker.log.manager import TOPICS_DIR
from kbroker.protocol.messages import DeleteTopicsRequest
from kbroker.testing import running_broker
from tests.kafka_clients import confluent_consume, confluent_producer
from tests.polling import wait_for
from tests.test_admin import create, topic
from tests.wire import WireClient


def _produce(bootstrap: str, name: str, values: list[bytes]) -> None:
    producer = confluent_producer(bootstrap)
    for value in values:
        producer.produce(name, value=value, partition=1)
    assert producer.flush(15) == 0


@pytest.mark.parametrize("length", [247, 249])
def test_the_longest_topic_names_live_a_whole_life(tmp_path, length):
    name = ("t%d-" % length).ljust(length, "x")
    with running_broker(data_dir=tmp_path) as broker:
        with WireClient(broker.bootstrap) as wire:
            assert create(wire, topic(name, partitions=2))[name].error_code == 0
        _produce(broker.bootstrap, name, [b"before restart"])
        broker.restart()
        _produce(broker.bootstrap, name, [b"after restart"])
        records = confluent_consume(broker.bootstrap, name, 2)
        assert [record.value() for record in records] == [b"before restart", b"after restart"]
        with WireClient(broker.bootstrap) as wire:
            response = wire.request("DeleteTopics", 6, timeout_ms=5000, topics=[
                DeleteTopicsRequest.DeleteTopicState(name=name)])
            assert response.responses[0].error_code == 0
            wait_for(lambda: create(wire, topic(name))[name].error_code == 0, timeout_s=10,
                     what="the name free again")


def test_metadata_files_named_by_topic_are_still_loaded(tmp_path):
    """Data dirs written before topic files were named by topic id still open, and move over."""
    manager = LogManager(tmp_path, LogConfig())
    info = manager.create_topic("orders", 2, {"retention.ms": "1000"})
    manager.close()
    topics_dir = tmp_path / TOPICS_DIR
    (topics_dir / f"{info.topic_id}.json").rename(topics_dir / "orders.json")
    reopened = LogManager(tmp_path, LogConfig())
    loaded = reopened.topics["orders"]
    assert (loaded.topic_id, loaded.partitions, loaded.configs) == (info.topic_id, 2, {"retention.ms": "1000"})
    assert sorted(path.name for path in topics_dir.iterdir()) == [f"{info.topic_id}.json"]
    reopened.close()
