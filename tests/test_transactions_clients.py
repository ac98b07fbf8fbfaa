"""Transactions with real clients over TCP: confluent-kafka, kafka-python and aiokafka producers;
read_committed consumers; fencing of zombies; exactly-once consume-process-produce through a
SIGKILL; a kbroker killed with -9 mid-transaction; a hanging transaction aborted by its timeout."""

from __future__ import annotations

import asyncio
import collections
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from kbroker.testing import running_broker
from tests.kafka_clients import confluent_producer
from tests.polling import wait_for
from tests.wire import WireClient

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """Timed-out transactions are looked for every 100 ms, so the timeout test is quick."""
    with running_broker("--override", "transaction.abort.timed.out.transaction.cleanup.interval.ms=100",
                        data_dir=tmp_path_factory.mktemp("txn-broker")) as started:
        yield started


def create_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(10)


def read_all(bootstrap: str, topic: str, isolation: str, partitions: int = 1) -> list[bytes]:
    """Every record of the topic a consumer with this isolation level gets, up to the end."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader",
                         "isolation.level": isolation, "enable.auto.commit": False})
    try:
        assigned = [TopicPartition(topic, p, 0) for p in range(partitions)]
        consumer.assign(assigned)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1]
                for p in range(partitions)}
        values, done = [], set()
        deadline = time.monotonic() + 20
        while len(done) < partitions and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and not message.error():
                values.append(message.value())
            for position in consumer.position(assigned):
                # read_committed skips markers and aborted records: the position tells the end.
                if position.offset >= ends[position.partition]:
                    done.add(position.partition)
        assert len(done) == partitions, "did not reach the end of the topic"
        return values
    finally:
        consumer.close()


def end_offset(bootstrap: str, topic: str, isolation: str = "read_committed") -> int:
    """The last stable offset (read_committed) or the high watermark of partition 0."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "ends",
                         "isolation.level": isolation})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), 10, cached=False)[1]
    finally:
        consumer.close()


def transactional(bootstrap: str, transactional_id: str, **config) -> Producer:
    producer = confluent_producer(bootstrap, **{"transactional.id": transactional_id, **config})
    producer.init_transactions(20)
    return producer


def describe(bootstrap: str, transactional_id: str):
    with WireClient(bootstrap) as client:
        response = client.request("DescribeTransactions", 0, transactional_ids=[transactional_id])
    return response.transaction_states[0]


# -- one committed, one aborted -------------------------------------------------------------

def test_confluent_commit_and_abort(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 2)
    producer = transactional(broker.bootstrap, f"ck-{topic_name}")
    producer.begin_transaction()
    for i in range(6):
        producer.produce(topic_name, value=b"commit-%d" % i, partition=i % 2)
    producer.commit_transaction(20)
    producer.begin_transaction()
    for i in range(4):
        producer.produce(topic_name, value=b"abort-%d" % i, partition=i % 2)
    producer.flush(20)  # in the log, so read_uncommitted sees them
    producer.abort_transaction(20)
    producer.begin_transaction()
    producer.produce(topic_name, value=b"commit-last", partition=0)
    producer.commit_transaction(20)

    committed = read_all(broker.bootstrap, topic_name, "read_committed", 2)
    assert sorted(committed) == sorted([b"commit-%d" % i for i in range(6)] + [b"commit-last"])
    everything = read_all(broker.bootstrap, topic_name, "read_uncommitted", 2)
    assert sorted(everything) == sorted(committed + [b"abort-%d" % i for i in range(4)])


def test_kafka_python_commit_and_abort(broker, topic_name):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KafkaPartition

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=f"kp-{topic_name}")
    producer.init_transactions()
    producer.begin_transaction()
    for i in range(3):
        producer.send(topic_name, b"c%d" % i)
    producer.commit_transaction()
    producer.begin_transaction()
    for i in range(2):
        producer.send(topic_name, b"a%d" % i)
    producer.flush()
    producer.abort_transaction()
    producer.close()

    def consume(isolation: str) -> list[bytes]:
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, isolation_level=isolation,
                                 enable_auto_commit=False, consumer_timeout_ms=1000)
        consumer.assign([KafkaPartition(topic_name, 0)])
        consumer.seek_to_beginning()
        values = [record.value for record in consumer]
        consumer.close()
        return values

    assert consume("read_committed") == [b"c0", b"c1", b"c2"]
    assert consume("read_uncommitted") == [b"c0", b"c1", b"c2", b"a0", b"a1"]


def test_aiokafka_commit_abort_and_offsets(broker, topic_name):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka import TopicPartition as AioPartition

    group = f"aio-group-{topic_name}"
    partition = AioPartition(topic_name, 0)

    async def scenario():
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap,
                                    transactional_id=f"aio-{topic_name}")
        await producer.start()
        try:
            async with producer.transaction():
                for i in range(3):
                    await producer.send(topic_name, b"c%d" % i)
                await producer.send_offsets_to_transaction({partition: 7}, group)
            await producer.begin_transaction()
            await producer.send_and_wait(topic_name, b"aborted")
            await producer.send_offsets_to_transaction({partition: 99}, group)
            await producer.abort_transaction()
        finally:
            await producer.stop()
        results = {}
        for isolation in ("read_committed", "read_uncommitted"):
            consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap,
                                        isolation_level=isolation, enable_auto_commit=False)
            await consumer.start()
            consumer.assign([partition])
            await consumer.seek_to_beginning(partition)
            batches = await consumer.getmany(timeout_ms=2000)
            results[isolation] = [m.value for records in batches.values() for m in records]
            await consumer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group)
        await consumer.start()
        results["offset"] = await consumer.committed(partition)
        await consumer.stop()
        return results

    results = asyncio.run(scenario())
    assert results["read_committed"] == [b"c0", b"c1", b"c2"]
    assert results["read_uncommitted"] == [b"c0", b"c1", b"c2", b"aborted"]
    assert results["offset"] == 7


KAFKAJS = ROOT / "compat" / "node" / "node_modules" / "kafkajs"
KAFKAJS_SCENARIO = """
const { Kafka, logLevel } = require(process.argv[1]);
const [topic, source, group, id] = process.argv.slice(2, 6);
(async () => {
  const kafka = new Kafka({ brokers: [process.argv[6]], logLevel: logLevel.NOTHING });
  const producer = kafka.producer({ transactionalId: id, maxInFlightRequests: 1, idempotent: true });
  await producer.connect();
  let txn = await producer.transaction();
  await txn.send({ topic, messages: [{ value: 'c1' }, { value: 'c2' }] });
  await txn.sendOffsets({ consumerGroupId: group,
                          topics: [{ topic: source, partitions: [{ partition: 0, offset: '5' }] }] });
  await txn.commit();
  txn = await producer.transaction();
  await txn.send({ topic, messages: [{ value: 'a1' }] });
  await txn.abort();
  await producer.disconnect();
})().catch(error => { console.error(error); process.exit(1); });
"""


@pytest.mark.skipif(not KAFKAJS.exists(), reason="kafkajs is installed by scripts/install_test_tools.sh")
def test_kafkajs_commit_abort_and_offsets(broker, topic_name):
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KafkaPartition

    source = f"{topic_name}-source"
    create_topic(broker.bootstrap, topic_name)
    create_topic(broker.bootstrap, source)
    group = f"kjs-{topic_name}"
    subprocess.run(["node", "-e", KAFKAJS_SCENARIO, str(KAFKAJS), topic_name, source, group,
                    f"kjs-{topic_name}", broker.bootstrap], check=True, timeout=60)
    assert read_all(broker.bootstrap, topic_name, "read_committed") == [b"c1", b"c2"]
    assert read_all(broker.bootstrap, topic_name, "read_uncommitted") == [b"c1", b"c2", b"a1"]
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group,
                             enable_auto_commit=False)
    assert consumer.committed(KafkaPartition(source, 0)) == 5
    consumer.close()


# -- fencing -------------------------------------------------------------------------------------

def test_zombie_producer_is_fenced(broker, topic_name):
    create_topic(broker.bootstrap, topic_name)
    transactional_id = f"zombie-{topic_name}"
    zombie = transactional(broker.bootstrap, transactional_id)
    zombie.begin_transaction()
    zombie.produce(topic_name, value=b"from-zombie")
    zombie.flush(20)
    successor = transactional(broker.bootstrap, transactional_id)  # aborts the zombie's work
    successor.begin_transaction()
    successor.produce(topic_name, value=b"from-successor")
    successor.commit_transaction(20)
    with pytest.raises(KafkaException) as failure:
        zombie.commit_transaction(20)
    error = failure.value.args[0]
    assert error.code() == KafkaError._FENCED and error.fatal()
    assert read_all(broker.bootstrap, topic_name, "read_committed") == [b"from-successor"]
    assert sorted(read_all(broker.bootstrap, topic_name, "read_uncommitted")) == \
        [b"from-successor", b"from-zombie"]


def test_kafka_python_and_aiokafka_zombies_are_fenced(broker, topic_name):
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import ProducerFenced
    from kafka import KafkaProducer
    from kafka.errors import ProducerFencedError

    def kafka_python_producer(transactional_id: str) -> KafkaProducer:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=transactional_id)
        producer.init_transactions()
        return producer

    async def scenario():
        # A kafka-python zombie fenced by an aiokafka successor ...
        zombie = kafka_python_producer(f"kp-zombie-{topic_name}")
        zombie.begin_transaction()
        zombie.send(topic_name, b"kafka-python zombie").get(10)
        successor = AIOKafkaProducer(bootstrap_servers=broker.bootstrap,
                                     transactional_id=f"kp-zombie-{topic_name}")
        await successor.start()
        async with successor.transaction():
            await successor.send(topic_name, b"aiokafka successor")
        await successor.stop()
        with pytest.raises(ProducerFencedError):
            zombie.commit_transaction()
        zombie.close(timeout=1)
        # ... and an aiokafka zombie fenced by a kafka-python successor.
        zombie = AIOKafkaProducer(bootstrap_servers=broker.bootstrap,
                                  transactional_id=f"aio-zombie-{topic_name}")
        await zombie.start()
        await zombie.begin_transaction()
        await zombie.send_and_wait(topic_name, b"aiokafka zombie")
        successor = kafka_python_producer(f"aio-zombie-{topic_name}")
        successor.begin_transaction()
        successor.send(topic_name, b"kafka-python successor")
        successor.commit_transaction()
        successor.close()
        with pytest.raises(ProducerFenced):
            await zombie.commit_transaction()
        await zombie.stop()

    asyncio.run(scenario())
    assert read_all(broker.bootstrap, topic_name, "read_committed") == \
        [b"aiokafka successor", b"kafka-python successor"]


# -- timeouts ------------------------------------------------------------------------------------

def test_hanging_transaction_is_aborted_after_its_timeout(broker, topic_name):
    create_topic(broker.bootstrap, topic_name)
    transactional_id = f"hanging-{topic_name}"
    producer = transactional(broker.bootstrap, transactional_id, **{"transaction.timeout.ms": 1000})
    producer.begin_transaction()
    producer.produce(topic_name, value=b"never-committed")
    producer.flush(20)
    assert end_offset(broker.bootstrap, topic_name) == 0
    started = time.monotonic()
    wait_for(lambda: end_offset(broker.bootstrap, topic_name) == 2, 10)
    assert time.monotonic() - started < 5
    state = describe(broker.bootstrap, transactional_id)
    assert (state.transaction_state, state.producer_epoch) == ("CompleteAbort", 1)
    with pytest.raises(KafkaException):
        producer.commit_transaction(10)
    assert read_all(broker.bootstrap, topic_name, "read_committed") == []
    # A new producer instance carries on.
    successor = transactional(broker.bootstrap, transactional_id)
    successor.begin_transaction()
    successor.produce(topic_name, value=b"later")
    successor.commit_transaction(20)
    assert read_all(broker.bootstrap, topic_name, "read_committed") == [b"later"]


# -- exactly once through crashes ----------------------------------------------------------------

class Processor:
    """tests/transactions_processor.py in a child process; its output lines are collected."""

    def __init__(self, *args: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.transactions_processor", *args], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.lines: list[str] = []
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.strip())

    def commits(self) -> int:
        return sum(1 for line in self.lines if line.startswith("committed"))

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def test_consume_process_produce_exactly_once_through_sigkill(broker, topic_name):
    bootstrap = broker.bootstrap
    source, sink = f"{topic_name}-in", f"{topic_name}-out"
    create_topic(bootstrap, source, 2)
    create_topic(bootstrap, sink, 2)
    inputs = [b"record-%03d" % i for i in range(300)]
    feeder = confluent_producer(bootstrap, **{"enable.idempotence": True})
    for i, value in enumerate(inputs):
        feeder.produce(source, value=value, partition=i % 2)
    feeder.flush(20)
    args = (bootstrap, source, sink, f"eos-{topic_name}", f"eos-{topic_name}")

    first = Processor(*args)
    try:
        wait_for(lambda: first.commits() >= 2, 30)
        # Kill it while a transaction with records in the broker is open.
        wait_for(lambda: first.lines[-1] == "open", 10)
    finally:
        first.kill()
    second = Processor(*args)
    try:
        expected = sorted(value.upper() for value in inputs)
        wait_for(lambda: len(read_all(bootstrap, sink, "read_committed", 2)) >= len(inputs), 60)
    finally:
        second.kill()
    output = read_all(bootstrap, sink, "read_committed", 2)
    duplicates = [v for v, n in collections.Counter(output).items() if n > 1]
    assert not duplicates, f"{len(duplicates)} records were committed twice"
    assert sorted(output) == expected
    # The killed transaction's records are in the log, aborted.
    assert len(read_all(bootstrap, sink, "read_uncommitted", 2)) > len(inputs)


def test_kbroker_killed_mid_transaction(tmp_path, topic_name):
    with running_broker(data_dir=tmp_path) as killed:
        bootstrap = killed.bootstrap
        create_topic(bootstrap, topic_name)
        transactional_id = f"crash-{topic_name}"
        producer = transactional(bootstrap, transactional_id)
        producer.begin_transaction()
        producer.produce(topic_name, value=b"committed-before")
        producer.commit_transaction(20)
        producer.begin_transaction()
        producer.produce(topic_name, value=b"open-at-crash")
        producer.flush(20)
        assert end_offset(bootstrap, topic_name) == 2
        # A read_committed consumer that lives through the crash, held at the LSO.
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "survivor",
                             "isolation.level": "read_committed", "enable.auto.commit": False})
        consumer.assign([TopicPartition(topic_name, 0, 0)])
        seen = []

        def consumed(count: int) -> bool:
            message = consumer.poll(0.1)
            if message is not None and not message.error():
                seen.append(message.value())
            return len(seen) >= count

        wait_for(lambda: consumed(1), 20)
        killed.kill()
        killed.start(killed.port)
        # As with Kafka, the open transaction survives the restart and its producer ends it.
        assert describe(bootstrap, transactional_id).transaction_state == "Ongoing"
        producer.commit_transaction(30)
        assert read_all(bootstrap, topic_name, "read_committed") == \
            [b"committed-before", b"open-at-crash"]
        # A successor with the same id fences the old producer and carries on.
        successor = transactional(bootstrap, transactional_id)
        with pytest.raises(KafkaException):
            producer.begin_transaction()
            producer.produce(topic_name, value=b"zombie")
            producer.commit_transaction(20)
        successor.begin_transaction()
        successor.produce(topic_name, value=b"after-restart")
        successor.commit_transaction(20)
        expected = [b"committed-before", b"open-at-crash", b"after-restart"]
        assert read_all(bootstrap, topic_name, "read_committed") == expected
        wait_for(lambda: consumed(3), 30)
        consumer.close()
        assert seen == expected
