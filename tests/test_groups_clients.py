"""Consumer groups with real clients: kafka-python, confluent-kafka (librdkafka) and aiokafka.

Each group member runs in its own thread (or process, when it is to be killed), polls, records
what it consumed and commits after every batch and before giving partitions up, so that the
group as a whole must see every record exactly once.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.broker_fixtures import broker_fixtures
from tests.polling import wait_for

SESSION_MS = 6000
HEARTBEAT_MS = 500
PARTITIONS = 4
ALL = frozenset(range(PARTITIONS))
BROKER_ARGS = ("--num-partitions", str(PARTITIONS), "--override", "group.min.session.timeout.ms=1000")


broker, restartable_broker = broker_fixtures(*BROKER_ARGS, name="groups")


def exclusive_cover(members, partitions=ALL) -> bool:
    """Every partition owned by exactly one member, and every member owns some."""
    owned = [m.assigned for m in members]
    return all(owned) and sum(map(len, owned)) == len(partitions) and frozenset().union(*owned) == partitions


def create_topic(bootstrap: str, topic: str) -> str:
    """Auto-create the topic (num.partitions is 4) before any member subscribes."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    assert producer.partitions_for(topic) == set(ALL)
    producer.close()
    return topic


def produce(bootstrap: str, topic: str, count: int, start: int = 0, pause_s: float = 0.0) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    for i in range(start, start + count):
        producer.send(topic, str(i).encode(), partition=i % PARTITIONS)
        if pause_s:
            time.sleep(pause_s)
    producer.flush()
    producer.close()


def produce_throughout(bootstrap: str, topic: str, total: int) -> threading.Thread:
    """Create the topic, then produce `total` records over a few seconds in the background."""
    create_topic(bootstrap, topic)
    producer = threading.Thread(target=produce, args=(bootstrap, topic, total, 0, 0.01))
    producer.start()
    return producer


class Member(threading.Thread):
    """A consumer in a thread: `assigned` and `values` are what it owns and got so far."""

    def __init__(self, bootstrap: str, topic: str, group: str, **config):
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.group, self.config = bootstrap, topic, group, config
        self.assigned: frozenset = frozenset()
        self.values: list[int] = []
        self.rebalances: list[tuple[str, frozenset]] = []
        self.failed_commits: list[Exception] = []
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            self.consume()
        except BaseException as exc:  # reported by stop()
            self.error = exc

    @property
    def stopping(self) -> bool:
        return self._stop_event.is_set()

    def stop(self) -> None:
        """Leave the group (close) and report any failure of the thread."""
        self._stop_event.set()
        self.join(30)
        assert not self.is_alive(), "member did not stop"
        if self.error is not None:
            raise self.error

    def consume(self) -> None:
        raise NotImplementedError

    def poll_loop(self, poll, commit, assignment, commit_errors) -> None:
        """Until stopped: record each batch of values, commit it, note the assignment."""
        while not self.stopping:
            values = poll()
            self.values.extend(values)
            if values:
                try:
                    commit()
                except commit_errors as exc:  # a rebalance overtook it: the next one counts
                    self.failed_commits.append(exc)
            self.assigned = assignment()

    def python_client_config(self) -> dict:
        """kafka-python's and aiokafka's consumer settings (they share the names)."""
        return dict(bootstrap_servers=self.bootstrap, group_id=self.group,
                    auto_offset_reset="earliest", enable_auto_commit=False,
                    session_timeout_ms=SESSION_MS, heartbeat_interval_ms=HEARTBEAT_MS, **self.config)

    def listener(self, base: type, commit):
        """A rebalance listener (of the client's listener class) that records rebalances and
        commits what was consumed before partitions are given up."""
        member = self

        class Listener(base):
            async def on_partitions_revoked(self, revoked):
                member.rebalances.append(("revoked", frozenset(tp.partition for tp in revoked)))
                if revoked:
                    await commit()

            async def on_partitions_assigned(self, assigned):
                member.rebalances.append(("assigned", frozenset(tp.partition for tp in assigned)))

        return Listener()


class KafkaPythonMember(Member):
    def consume(self) -> None:
        from kafka import AsyncConsumerRebalanceListener, KafkaConsumer
        from kafka.errors import KafkaError

        consumer = KafkaConsumer(**self.python_client_config())

        async def commit_consumed():  # on the IO loop only the async commit may be used
            await consumer._coordinator._commit_offsets_sync_async(
                consumer._subscription.all_consumed_offsets())

        consumer.subscribe([self.topic], listener=self.listener(AsyncConsumerRebalanceListener,
                                                                  commit_consumed))
        try:
            self.poll_loop(
                lambda: [int(r.value) for batch in consumer.poll(timeout_ms=100).values() for r in batch],
                consumer.commit, lambda: frozenset(tp.partition for tp in consumer.assignment()),
                KafkaError)
        finally:
            consumer.close()


class ConfluentMember(Member):
    def consume(self) -> None:
        from confluent_kafka import Consumer, KafkaException

        settings = {"bootstrap.servers": self.bootstrap, "group.id": self.group,
                    "auto.offset.reset": "earliest", "enable.auto.commit": False}
        if self.config.get("group.protocol") != "consumer":  # KIP-848 sessions are the broker's
            settings.update({"session.timeout.ms": SESSION_MS, "heartbeat.interval.ms": HEARTBEAT_MS})
        consumer = Consumer({**settings, **self.config})

        def on_assign(_consumer, partitions):
            self.rebalances.append(("assigned", frozenset(p.partition for p in partitions)))

        def on_revoke(_consumer, partitions):
            self.rebalances.append(("revoked", frozenset(p.partition for p in partitions)))
            try:
                consumer.commit(asynchronous=False)
            except KafkaException:  # nothing consumed yet: nothing to commit
                pass

        consumer.subscribe([self.topic], on_assign=on_assign, on_revoke=on_revoke)
        try:
            self.poll_loop(
                lambda: [int(m.value()) for m in consumer.consume(200, timeout=0.1) if not m.error()],
                lambda: consumer.commit(asynchronous=False),
                lambda: frozenset(p.partition for p in consumer.assignment()), KafkaException)
        finally:
            consumer.close()


class AiokafkaMember(Member):
    def consume(self) -> None:
        asyncio.run(self._consume())

    async def _consume(self) -> None:
        from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
        from aiokafka.errors import KafkaError

        consumer = AIOKafkaConsumer(**self.python_client_config())
        consumer.subscribe([self.topic], listener=self.listener(ConsumerRebalanceListener,
                                                                  consumer.commit))
        await consumer.start()
        try:
            while not self.stopping:
                batches = await consumer.getmany(timeout_ms=100)
                for records in batches.values():
                    self.values.extend(int(r.value) for r in records)
                if batches:
                    try:
                        await consumer.commit()
                    except KafkaError as exc:  # a rebalance overtook it: the next one counts
                        self.failed_commits.append(exc)
                self.assigned = frozenset(tp.partition for tp in consumer.assignment())
        finally:
            await consumer.stop()


def assert_exactly_once(members, count: int) -> None:
    wait_for(lambda: len(Counter(v for m in members for v in m.values)) >= count, 30,
             f"{count} distinct records")
    seen = Counter(v for m in members for v in m.values)
    assert set(seen) == set(range(count))
    assert [v for v, n in seen.items() if n > 1] == []


def committed(bootstrap: str, topic: str, group: str) -> dict[int, int]:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(group)[group]
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


def test_two_then_three_members_share_partitions_exactly_once(broker, topic_name):
    total = 600
    producer = produce_throughout(broker.bootstrap, topic_name, total)
    group = f"{topic_name}-group"
    a = KafkaPythonMember(broker.bootstrap, topic_name, group)
    a.start()
    wait_for(lambda: a.assigned == ALL, what="the first member owning every partition")
    b = KafkaPythonMember(broker.bootstrap, topic_name, group)
    b.start()
    wait_for(lambda: exclusive_cover([a, b]), what="two members sharing the partitions")
    c = KafkaPythonMember(broker.bootstrap, topic_name, group)
    c.start()
    wait_for(lambda: exclusive_cover([a, b, c]), what="three members sharing the partitions")
    c.stop()  # leaves the group: the others take its partitions over at once
    started = time.monotonic()
    wait_for(lambda: exclusive_cover([a, b]), what="two members after one left")
    assert time.monotonic() - started < SESSION_MS / 1000
    producer.join()
    assert_exactly_once([a, b, c], total)
    a.stop()
    b.stop()
    assert committed(broker.bootstrap, topic_name, group) == {p: total // PARTITIONS for p in ALL}


MEMBER_SCRIPT = """
import sys, time
from kafka import KafkaConsumer
bootstrap, topic, group, session, heartbeat = sys.argv[1:]
consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                         session_timeout_ms=int(session), heartbeat_interval_ms=int(heartbeat),
                         enable_auto_commit=False, auto_offset_reset="earliest")
owned = None
while True:
    consumer.poll(timeout_ms=100)
    now = sorted(tp.partition for tp in consumer.assignment())
    if now != owned:
        owned = now
        print("assigned", *now, flush=True)
"""


def test_killed_member_is_replaced_within_the_session_timeout(broker, topic_name):
    group = f"{topic_name}-group"
    produce(broker.bootstrap, topic_name, 8)
    survivor = ConfluentMember(broker.bootstrap, topic_name, group)
    survivor.start()
    wait_for(lambda: survivor.assigned == ALL, what="the first member owning every partition")
    victim = subprocess.Popen(
        [sys.executable, "-c", MEMBER_SCRIPT, broker.bootstrap, topic_name, group, str(SESSION_MS),
         str(HEARTBEAT_MS)], stdout=subprocess.PIPE, text=True)
    try:
        for line in victim.stdout:
            if line.split()[1:]:  # the victim owns partitions
                break
        wait_for(lambda: survivor.assigned and survivor.assigned != ALL, what="a shared group")
        victim.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: survivor.assigned == ALL, 3 * SESSION_MS / 1000,
                 "the survivor taking the partitions over")
        took = time.monotonic() - killed
        # Kafka removes the member when its session expires, then rebalances at once.
        assert SESSION_MS / 1000 - 1 < took < SESSION_MS / 1000 + 4
        # The victim committed nothing, so the survivor reads its partitions from the start.
        wait_for(lambda: set(survivor.values) == set(range(8)), what="the survivor reading every record")
    finally:
        victim.kill()
        victim.wait()
        survivor.stop()


def test_commit_close_and_resume_from_the_committed_offset(broker, topic_name):
    from kafka import KafkaConsumer

    produce(broker.bootstrap, topic_name, 100)
    group = f"{topic_name}-group"
    consumer = KafkaConsumer(topic_name, bootstrap_servers=broker.bootstrap, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             max_poll_records=5, session_timeout_ms=SESSION_MS,
                             heartbeat_interval_ms=HEARTBEAT_MS)
    first = []
    while len(first) < 30:
        for records in consumer.poll(timeout_ms=500).values():
            first.extend(records)
    consumer.commit()
    positions = {tp.partition: consumer.position(tp) for tp in consumer.assignment()}
    consumer.close()
    assert committed(broker.bootstrap, topic_name, group) == positions
    resumed = KafkaConsumer(topic_name, bootstrap_servers=broker.bootstrap, group_id=group,
                            auto_offset_reset="earliest", enable_auto_commit=False,
                            consumer_timeout_ms=10_000)
    rest = []
    for record in resumed:
        rest.append(record)
        if len(first) + len(rest) >= 100:
            break
    resumed.close()
    assert sorted(int(r.value) for r in first + rest) == list(range(100))
    resumed_at = {p: min(r.offset for r in rest if r.partition == p) for p in {r.partition for r in rest}}
    per_partition = 100 // PARTITIONS
    assert resumed_at == {p: o for p, o in positions.items() if o < per_partition}


def test_committed_offsets_survive_restart_and_kill(restartable_broker, topic_name):
    broker = restartable_broker
    group = f"{topic_name}-group"
    produce(broker.bootstrap, topic_name, 40)
    member = KafkaPythonMember(broker.bootstrap, topic_name, group)
    member.start()
    wait_for(lambda: len(member.values) == 40, what="the first 40 records")
    rebalances = list(member.rebalances)
    broker.restart()  # the member stays in the group across the restart and goes on
    produce(broker.bootstrap, topic_name, 40, start=40)
    wait_for(lambda: len(set(member.values)) == 80, what="the records produced after the restart")
    assert member.rebalances == rebalances  # its membership was restored, no rebalance
    every_record = {p: 80 // PARTITIONS for p in ALL}
    wait_for(lambda: committed(broker.bootstrap, topic_name, group) == every_record,
             what="the member's last commit")
    broker.kill()  # a crash: acknowledged commits were written before they were acknowledged
    broker.start(broker.port)
    assert committed(broker.bootstrap, topic_name, group) == every_record
    member.stop()
    assert sorted(member.values) == list(range(80))


def test_static_members_restart_without_a_rebalance(broker, topic_name):
    group = f"{topic_name}-group"
    produce(broker.bootstrap, topic_name, 8)
    a = ConfluentMember(broker.bootstrap, topic_name, group, **{"group.instance.id": "a"})
    b = ConfluentMember(broker.bootstrap, topic_name, group, **{"group.instance.id": "b"})
    a.start()
    b.start()
    wait_for(lambda: exclusive_cover([a, b]), what="two static members sharing the partitions")
    wait_for(lambda: len(set(a.values + b.values)) == 8, what="the first records")
    time.sleep(HEARTBEAT_MS * 3 / 1000)  # let any trailing rebalance of the start settle
    before = list(b.rebalances)
    a_partitions = a.assigned
    a.stop()  # a static member does not leave the group when it closes
    restarted = ConfluentMember(broker.bootstrap, topic_name, group, **{"group.instance.id": "a"})
    restarted.start()
    wait_for(lambda: restarted.assigned == a_partitions, what="the static member's partitions back")
    produce(broker.bootstrap, topic_name, 8, start=8)
    wait_for(lambda: set(restarted.values + b.values) >= set(range(8, 16)),
             what="the records produced after the restart")
    assert b.rebalances == before  # the other member never rebalanced
    assert b.assigned == ALL - a_partitions
    restarted.stop()
    b.stop()


def test_confluent_kafka_python_and_aiokafka_in_one_group(broker, topic_name):
    total = 400
    group = f"{topic_name}-group"
    producer = produce_throughout(broker.bootstrap, topic_name, total)
    confluent = ConfluentMember(broker.bootstrap, topic_name, group)
    python = KafkaPythonMember(broker.bootstrap, topic_name, group)
    confluent.start()
    python.start()
    wait_for(lambda: exclusive_cover([confluent, python]), what="confluent and kafka-python sharing")
    # aiokafka only offers roundrobin: the group switches to the protocol all three support
    aio = AiokafkaMember(broker.bootstrap, topic_name, group)
    aio.start()
    wait_for(lambda: exclusive_cover([confluent, python, aio]), what="three client libraries sharing")
    producer.join()
    assert_exactly_once([confluent, python, aio], total)
    for member in (aio, python, confluent):
        member.stop()


def test_cooperative_sticky_rebalances_incrementally(broker, topic_name):
    total = 400
    group = f"{topic_name}-group"
    cooperative = {"partition.assignment.strategy": "cooperative-sticky"}
    producer = produce_throughout(broker.bootstrap, topic_name, total)
    a = ConfluentMember(broker.bootstrap, topic_name, group, **cooperative)
    a.start()
    wait_for(lambda: a.assigned == ALL, what="the first member owning every partition")
    b = ConfluentMember(broker.bootstrap, topic_name, group, **cooperative)
    b.start()
    wait_for(lambda: exclusive_cover([a, b]), what="two cooperative members sharing")
    producer.join()
    assert_exactly_once([a, b], total)
    # a gave up only the partitions b took (two incremental rounds), never all of them
    revoked = [p for kind, p in a.rebalances if kind == "revoked"]
    assert revoked and all(len(p) < PARTITIONS for p in revoked)
    assert [p for kind, p in a.rebalances if kind == "assigned"][0] == ALL
    b.stop()
    wait_for(lambda: a.assigned == ALL, what="the remaining member taking all partitions back")
    a.stop()


KAFKAJS = Path(__file__).resolve().parent.parent / "compat" / "node" / "node_modules" / "kafkajs"
KAFKAJS_MEMBER = """
const { Kafka, logLevel } = require(process.argv[1]);
const [bootstrap, topic, group, session, heartbeat] = process.argv.slice(2);
const kafka = new Kafka({ brokers: [bootstrap], logLevel: logLevel.NOTHING });
// kafkajs heartbeats and rejoins between fetches: short fetch waits keep rebalances quick
const consumer = kafka.consumer({ groupId: group, sessionTimeout: Number(session),
                                  heartbeatInterval: Number(heartbeat), maxWaitTimeInMs: 100 });
const say = line => process.stdout.write(JSON.stringify(line) + "\\n");
consumer.on(consumer.events.GROUP_JOIN, e => say({ assigned: e.payload.memberAssignment[topic] || [] }));
process.on("SIGTERM", () => consumer.disconnect().then(() => process.exit(0)));
(async () => {
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({ eachMessage: async ({ message }) => say({ value: Number(message.value) }) });
})().catch(error => { console.error(error); process.exit(1); });
"""


class KafkajsMember(Member):
    """A kafkajs consumer in a node process (kafkajs names its assigner differently from the
    Java-derived clients, so it can only share a group with other kafkajs members)."""

    def consume(self) -> None:
        process = subprocess.Popen(
            ["node", "-e", KAFKAJS_MEMBER, str(KAFKAJS), self.bootstrap, self.topic, self.group,
             str(SESSION_MS), str(HEARTBEAT_MS)], stdout=subprocess.PIPE, text=True)
        def terminate_on_stop():
            self._stop_event.wait()
            process.terminate()  # the member disconnects, leaving the group

        threading.Thread(target=terminate_on_stop, daemon=True).start()
        for line in process.stdout:
            event = json.loads(line)
            if "assigned" in event:
                self.assigned = frozenset(event["assigned"])
            else:
                self.values.append(event["value"])
        assert process.wait() == 0


@pytest.mark.skipif(not KAFKAJS.exists(), reason="kafkajs is installed by scripts/install_test_tools.sh")
def test_kafkajs_members_share_and_take_over(broker, topic_name):
    total = 200
    group = f"{topic_name}-group"
    producer = produce_throughout(broker.bootstrap, topic_name, total)
    a = KafkajsMember(broker.bootstrap, topic_name, group)
    b = KafkajsMember(broker.bootstrap, topic_name, group)
    a.start()
    wait_for(lambda: a.assigned == ALL, what="the first kafkajs member owning every partition")
    b.start()
    wait_for(lambda: exclusive_cover([a, b]), what="two kafkajs members sharing")
    producer.join()
    wait_for(lambda: set(a.values + b.values) == set(range(total)), what="every record")
    b.stop()  # disconnects: LeaveGroup, and a takes over at once
    wait_for(lambda: a.assigned == ALL, SESSION_MS / 1000, "the remaining member taking over")
    a.stop()
    assert committed(broker.bootstrap, topic_name, group) == {p: total // PARTITIONS for p in ALL}


def test_group_admin_with_kafka_python(broker, topic_name):
    from kafka import KafkaAdminClient, TopicPartition
    from kafka.structs import OffsetAndMetadata

    group = f"{topic_name}-group"
    produce(broker.bootstrap, topic_name, 8)
    member = KafkaPythonMember(broker.bootstrap, topic_name, group)
    member.start()
    wait_for(lambda: len(member.values) == 8, what="the records")
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    first, second = TopicPartition(topic_name, 0), TopicPartition(topic_name, 1)
    try:
        listed = {g["group_id"]: g for g in admin.list_groups(states_filter=["Stable"])}
        assert listed[group]["protocol_type"] == "consumer"
        described = admin.describe_groups([group])[group]
        assert (described["group_state"], described["protocol_data"]) == ("Stable", "range")
        (described_member,) = described["members"]
        assert described_member["member_metadata"]["topics"] == [topic_name]
        assert described_member["member_assignment"]["assigned_partitions"] == \
            [{"topic": topic_name, "partitions": sorted(ALL)}]
        member.stop()
        assert committed(broker.bootstrap, topic_name, group) == {p: 2 for p in ALL}
        admin.alter_group_offsets(group, {first: OffsetAndMetadata(1, "rewound", -1)})
        admin.delete_group_offsets(group, [second])
        offsets = admin.list_group_offsets(group)[group]
        assert (offsets[first].offset, offsets[first].metadata) == (1, "rewound")
        assert second not in offsets
        assert admin.delete_groups([group, f"{group}-never"]) == \
            {group: "OK", f"{group}-never": "GroupIdNotFoundError"}
        assert admin.list_group_offsets(group)[group] == {}
        assert group not in {g["group_id"] for g in admin.list_groups()}
    finally:
        admin.close()
