"""Share groups (KIP-932) driven by confluent-kafka's ShareConsumer against a real kbroker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from confluent_kafka import AcknowledgeType, ShareConsumer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType

from kbroker.testing import running_broker
from tests.kafka_clients import confluent_producer

LOCK_MS = 1500
# Short locks need a lower bound below Kafka's 15 s; a small delivery limit keeps tests short.
BROKER_ARGS = ("--override", "group.share.min.record.lock.duration.ms=1000",
               "--override", "group.share.delivery.count.limit=3",
               "--override", "group.share.partition.max.record.locks=100")


@pytest.fixture(scope="module")
def share_broker(tmp_path_factory):
    with running_broker(*BROKER_ARGS, data_dir=tmp_path_factory.mktemp("share")) as started:
        yield started


def set_group_configs(bootstrap: str, group: str, **configs: str) -> None:
    resource = ConfigResource(ResourceType.GROUP, group, incremental_configs=[
        ConfigEntry(name.replace("_", "."), value, incremental_operation=AlterConfigOpType.SET)
        for name, value in configs.items()])
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.incremental_alter_configs([resource])[resource].result()


def new_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions)])[name].result()


def produce(bootstrap: str, topic: str, count: int, per_batch: int = 10) -> None:
    producer = confluent_producer(bootstrap, **{"linger.ms": 0})
    for start in range(0, count, per_batch):
        for index in range(start, min(start + per_batch, count)):
            producer.produce(topic, value=f"m{index}".encode())
        producer.flush()


def share_group(bootstrap: str, topic: str, group: str, **configs: str) -> None:
    """A new topic and a share group on it reading from the earliest offset."""
    new_topic(bootstrap, topic)
    set_group_configs(bootstrap, group, share_auto_offset_reset="earliest", **configs)


def consumer(bootstrap: str, group: str, topic: str, explicit: bool = True) -> ShareConsumer:
    share_consumer = ShareConsumer({"bootstrap.servers": bootstrap, "group.id": group,
                                    "share.acknowledgement.mode": "explicit" if explicit else "implicit"})
    share_consumer.subscribe([topic])
    return share_consumer


def poll_some(share_consumer: ShareConsumer, timeout_s: float = 15.0) -> list:
    """The next non-empty poll's records (empty after timeout_s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        messages = [m for m in share_consumer.poll(0.5) if m.error() is None]
        if messages:
            return messages
    return []


def test_two_consumers_split_the_records_and_each_is_delivered_once(share_broker, topic_name):
    bootstrap = share_broker.bootstrap
    share_group(bootstrap, topic_name, "split")
    produce(bootstrap, topic_name, 600)
    first, second = consumer(bootstrap, "split", topic_name), consumer(bootstrap, "split", topic_name)
    seen: dict[str, list[int]] = {"first": [], "second": []}
    deadline = time.monotonic() + 60
    while len(seen["first"]) + len(seen["second"]) < 600 and time.monotonic() < deadline:
        for name, share_consumer in (("first", first), ("second", second)):
            messages = [m for m in share_consumer.poll(0.3) if m.error() is None]
            for message in messages:
                share_consumer.acknowledge(message, AcknowledgeType.ACCEPT)
                seen[name].append(message.offset())
            if messages:
                share_consumer.commit_sync()
    first.close()
    second.close()
    offsets = seen["first"] + seen["second"]
    assert sorted(offsets) == list(range(600))  # every record once: none twice, none lost
    assert seen["first"] and seen["second"]


def test_released_records_come_back_with_a_higher_delivery_count(share_broker, topic_name):
    bootstrap = share_broker.bootstrap
    share_group(bootstrap, topic_name, "release")
    produce(bootstrap, topic_name, 5, per_batch=5)
    share_consumer = consumer(bootstrap, "release", topic_name)
    first = poll_some(share_consumer)
    assert [(m.offset(), m.delivery_count()) for m in first] == [(i, 1) for i in range(5)]
    for message in first:
        share_consumer.acknowledge(message, AcknowledgeType.RELEASE)
    share_consumer.commit_sync()
    again = poll_some(share_consumer)
    assert [(m.offset(), m.value(), m.delivery_count()) for m in again] == \
        [(i, f"m{i}".encode(), 2) for i in range(5)]
    for message in again:
        share_consumer.acknowledge(message, AcknowledgeType.ACCEPT)
    share_consumer.commit_sync()
    assert poll_some(share_consumer, timeout_s=2) == []
    share_consumer.close()


def test_rejected_records_are_never_delivered_again(share_broker, topic_name):
    bootstrap = share_broker.bootstrap
    share_group(bootstrap, topic_name, "reject")
    produce(bootstrap, topic_name, 4, per_batch=4)
    share_consumer = consumer(bootstrap, "reject", topic_name)
    messages = poll_some(share_consumer)
    for message in messages:
        share_consumer.acknowledge(message, AcknowledgeType.REJECT if message.offset() % 2 else AcknowledgeType.ACCEPT)
    share_consumer.commit_sync()
    produce(bootstrap, topic_name, 1)
    later = poll_some(share_consumer)
    assert [m.offset() for m in later] == [4]  # only the new record, never a rejected one
    share_consumer.acknowledge(later[0], AcknowledgeType.ACCEPT)
    share_consumer.commit_sync()
    share_consumer.close()


def test_an_expired_lock_hands_the_records_to_another_consumer(share_broker, topic_name):
    bootstrap = share_broker.bootstrap
    share_group(bootstrap, topic_name, "expire", share_record_lock_duration_ms=str(LOCK_MS))
    produce(bootstrap, topic_name, 3, per_batch=3)
    holder = consumer(bootstrap, "expire", topic_name)
    held = poll_some(holder)
    assert [m.offset() for m in held] == [0, 1, 2]
    other = consumer(bootstrap, "expire", topic_name)
    redelivered = poll_some(other)  # nothing until the holder's lock expires
    assert [(m.offset(), m.delivery_count()) for m in redelivered] == [(0, 2), (1, 2), (2, 2)]
    for message in redelivered:
        other.acknowledge(message)
    other.commit_sync()
    other.close()
    holder.close()


def test_records_past_the_delivery_limit_are_archived(share_broker, topic_name):
    bootstrap = share_broker.bootstrap
    share_group(bootstrap, topic_name, "limit")
    produce(bootstrap, topic_name, 2, per_batch=2)
    share_consumer = consumer(bootstrap, "limit", topic_name)
    counts = []
    for _ in range(3):  # group.share.delivery.count.limit=3
        messages = poll_some(share_consumer)
        counts.append([m.delivery_count() for m in messages])
        for message in messages:
            share_consumer.acknowledge(message, AcknowledgeType.RELEASE)
        share_consumer.commit_sync()
    assert counts == [[1, 1], [2, 2], [3, 3]]
    produce(bootstrap, topic_name, 1)
    assert [m.offset() for m in poll_some(share_consumer)] == [2]
    share_consumer.close()


_HOLDER = """
import sys, time
from confluent_kafka import ShareConsumer
consumer = ShareConsumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2],
                          "share.acknowledgement.mode": "explicit"})
consumer.subscribe([sys.argv[3]])
while True:
    messages = [m for m in consumer.poll(0.5) if m.error() is None]
    if messages:
        print(" ".join(str(m.offset()) for m in messages), flush=True)
        time.sleep(3600)
"""


def test_records_of_a_killed_consumer_return_after_the_lock_duration(share_broker, topic_name):
    bootstrap = share_broker.bootstrap
    share_group(bootstrap, topic_name, "killed", share_record_lock_duration_ms=str(LOCK_MS))
    produce(bootstrap, topic_name, 3, per_batch=3)
    process = subprocess.Popen([sys.executable, "-c", _HOLDER, bootstrap, "killed", topic_name],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().split() == ["0", "1", "2"]
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    share_consumer = consumer(bootstrap, "killed", topic_name)
    messages = poll_some(share_consumer)
    assert [(m.offset(), m.delivery_count()) for m in messages] == [(0, 2), (1, 2), (2, 2)]
    for message in messages:
        share_consumer.acknowledge(message)
    share_consumer.commit_sync()
    share_consumer.close()


def test_a_broker_killed_midway_delivers_exactly_what_was_not_accepted(tmp_path, topic_name):
    with running_broker(*BROKER_ARGS, data_dir=tmp_path) as broker:
        share_group(broker.bootstrap, topic_name, "restart")
        produce(broker.bootstrap, topic_name, 40)
        share_consumer = consumer(broker.bootstrap, "restart", topic_name)
        accepted = []
        while len(accepted) < 20:
            for message in poll_some(share_consumer):
                if message.offset() % 2 == 0:  # accept the even ones, leave the rest acquired
                    share_consumer.acknowledge(message, AcknowledgeType.ACCEPT)
                    accepted.append(message.offset())
                else:
                    share_consumer.acknowledge(message, AcknowledgeType.RELEASE)
            share_consumer.commit_sync()
        port = broker.port
        broker.kill()
        broker.start(port)
        share_consumer.close()
        after = consumer(broker.bootstrap, "restart", topic_name)
        redelivered = []
        deadline = time.monotonic() + 30
        while len(redelivered) < 20 and time.monotonic() < deadline:
            for message in poll_some(after, timeout_s=2):
                after.acknowledge(message, AcknowledgeType.ACCEPT)
                redelivered.append(message.offset())
            after.commit_sync()
        assert sorted(redelivered) == list(range(1, 40, 2))
        assert not set(redelivered) & set(accepted)
        after.close()


def test_read_committed_share_groups_skip_aborted_and_open_transactions(share_broker, topic_name):
    bootstrap = share_broker.bootstrap
    new_topic(bootstrap, topic_name)
    producer = confluent_producer(bootstrap, **{"transactional.id": "tx-" + topic_name})
    producer.init_transactions()
    for values, commit in ((["a0", "a1"], True), (["b0", "b1"], False), (["c0"], True)):
        producer.begin_transaction()
        for value in values:
            producer.produce(topic_name, value=value.encode())
        producer.flush()  # an abort would otherwise drop records never sent
        producer.commit_transaction() if commit else producer.abort_transaction()
    producer.begin_transaction()
    producer.produce(topic_name, value=b"open")
    producer.flush()

    def values(group: str, isolation: str, count: int) -> list[bytes]:
        set_group_configs(bootstrap, group, share_auto_offset_reset="earliest", share_isolation_level=isolation)
        share_consumer = consumer(bootstrap, group, topic_name)
        got = []
        deadline = time.monotonic() + 20
        while len(got) < count and time.monotonic() < deadline:
            for message in poll_some(share_consumer, timeout_s=1):
                share_consumer.acknowledge(message)
                got.append(message.value())
            share_consumer.commit_sync()
        got += [m.value() for m in poll_some(share_consumer, timeout_s=1)]  # nothing more may come
        share_consumer.close()
        return got

    assert values("committed-" + topic_name, "read_committed", 3) == [b"a0", b"a1", b"c0"]
    assert values("uncommitted-" + topic_name, "read_uncommitted", 6) == [b"a0", b"a1", b"b0", b"b1", b"c0", b"open"]
    producer.commit_transaction()
