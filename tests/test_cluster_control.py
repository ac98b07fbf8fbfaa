"""The simulated cluster's control on a real `serve --brokers 3 --http-port 0` process, with real
clients: GET /api/cluster, stopping and starting brokers, moving leaders, ElectLeaders and the
reassignment APIs, `kbroker ctl` and the kbroker.testing wrappers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import trio
from confluent_kafka import Consumer, ElectionType, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, KafkaProducer, TopicPartition as KpTopicPartition
from kafka.admin import KafkaAdminClient

from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.messages import (
    AlterPartitionReassignmentsRequest, AlterReplicaLogDirsRequest, DescribeLogDirsRequest, FetchRequest,
    ProduceRequest,
)
from kbroker.protocol.records import Record, build_batch
from kbroker.testing import embedded_broker, running_broker, serve_in_nursery
from tests.kafka_clients import confluent_producer
from tests.polling import wait_for
from tests.wire import WireClient

GROUP_KEY, TRANSACTION_KEY = 0, 1  # FindCoordinator key types


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # Leaders stay where the tests put them: no preferred-leader rebalancing behind their back.
    with running_broker("--brokers", "3", "--http-port", "0", "--override", "auto.leader.rebalance.enable=false",
                        data_dir=tmp_path_factory.mktemp("cluster")) as started:
        yield started


@pytest.fixture(autouse=True)
def every_broker_up_again(cluster):
    """Tests share the cluster: whatever a test stopped is started again after it."""
    yield
    for broker in cluster.cluster()["brokers"]:
        if not broker["up"]:
            cluster.start_broker(broker["id"])


def create(cluster, topic: str, partitions: int = 1, replication_factor: int = 3,
           assignment: list[list[int]] | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    new = (NewTopic(topic, len(assignment), replica_assignment=assignment) if assignment
           else NewTopic(topic, partitions, replication_factor))
    admin.create_topics([new])[topic].result(15)


def partition(cluster, topic: str, index: int = 0) -> dict:
    return cluster.cluster()["topics"][topic][index]


def address(cluster, node_id: int) -> str:
    broker = next(b for b in cluster.cluster()["brokers"] if b["id"] == node_id)
    return f"{broker['host']}:{broker['port']}"


def refuses_connections(cluster_address: str) -> bool:
    host, port = cluster_address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def coordinator(wire: WireClient, group: str) -> int:
    response = wire.request("FindCoordinator", 4, key_type=GROUP_KEY, coordinator_keys=[group])
    answer = response.coordinators[0]
    assert answer.error_code == ErrorCode.NONE
    return answer.node_id


def produce_once(wire: WireClient, topic: str) -> int:
    """The error code of a one-record Produce (v9, acks=1) to partition 0."""
    batch = build_batch([Record(timestamp=int(time.time() * 1000), key=b"k", value=b"v")])
    response = wire.request("Produce", 9, transactional_id=None, acks=1, timeout_ms=5000, topic_data=[
        ProduceRequest.TopicProduceData(name=topic, partition_data=[
            ProduceRequest.PartitionProduceData(index=0, records=batch)])])
    return response.responses[0].partition_responses[0].error_code


def fetch_error(wire: WireClient, topic: str, leader_epoch: int) -> int:
    response = wire.request("Fetch", 12, replica_id=-1, max_wait_ms=0, min_bytes=0, max_bytes=1 << 20,
                            isolation_level=0, session_id=0, session_epoch=-1, topics=[
                                FetchRequest.FetchTopic(topic=topic, partitions=[FetchRequest.FetchPartition(
                                    partition=0, fetch_offset=0, partition_max_bytes=1 << 20,
                                    current_leader_epoch=leader_epoch, log_start_offset=-1)])],
                            forgotten_topics_data=[], rack_id="")
    return response.responses[0].partitions[0].error_code


# -- GET /api/cluster ------------------------------------------------------------------------

def test_the_cluster_shows_three_brokers_and_every_partitions_leader_and_isr(cluster, topic_name):
    create(cluster, topic_name, partitions=3)
    shown = cluster.cluster()
    assert [(b["id"], b["host"], b["up"]) for b in shown["brokers"]] == [
        (1, "127.0.0.1", True), (2, "127.0.0.1", True), (3, "127.0.0.1", True)]
    assert len({b["port"] for b in shown["brokers"]}) == 3
    assert [b["listeners"] for b in shown["brokers"]] == [
        {"PLAINTEXT": f"{b['host']}:{b['port']}"} for b in shown["brokers"]]
    partitions = shown["topics"][topic_name]
    assert [p["partition"] for p in partitions] == [0, 1, 2]
    for p in partitions:
        assert sorted(p["replicas"]) == [1, 2, 3] and p["isr"] == p["replicas"]
        assert p["leader"] == p["replicas"][0] and p["leader_epoch"] == 0
    assert {p["leader"] for p in partitions} == {1, 2, 3}  # preferred leaders spread
    for broker in shown["brokers"]:  # each broker is a listener of its own that answers Metadata
        with WireClient(f"{broker['host']}:{broker['port']}") as wire:
            metadata = wire.request("Metadata", 12, topics=None, allow_auto_topic_creation=False)
            assert sorted(b.node_id for b in metadata.brokers) == [1, 2, 3]


# -- stopping and starting brokers -------------------------------------------------------------

def group_coordinator(cluster, topic: str, group: str) -> int:
    """Create the group (by committing an offset of the topic) and return its coordinator's node."""
    committer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group})
    committer.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    committer.close()
    with WireClient(address(cluster, 1)) as wire:
        return coordinator(wire, group)


def test_a_stopped_broker_drops_its_connections_and_its_leaderships_and_coordinators_move(cluster, topic_name):
    create(cluster, topic_name, partitions=3)
    group = topic_name + "-group"
    victim = group_coordinator(cluster, topic_name, group)
    before = {p["partition"]: p for p in cluster.cluster()["topics"][topic_name]}
    victim_address = address(cluster, victim)
    connection = WireClient(victim_address)
    try:
        assert cluster.stop_broker(victim)["up"] is False
        assert refuses_connections(victim_address)
        assert wait_for(connection.is_closed_by_peer, 10, "the stopped broker dropping its connections")
    finally:
        connection.close()
    after = {p["partition"]: p for p in cluster.cluster()["topics"][topic_name]}
    for index, was in before.items():
        now = after[index]
        assert victim not in now["isr"] and now["replicas"] == was["replicas"]
        if was["leader"] == victim:
            assert now["leader"] in now["isr"] and now["leader_epoch"] == was["leader_epoch"] + 1
        else:
            assert (now["leader"], now["leader_epoch"]) == (was["leader"], was["leader_epoch"])
    survivor = next(b for b in cluster.cluster()["brokers"] if b["up"])
    with WireClient(f"{survivor['host']}:{survivor['port']}") as wire:
        assert coordinator(wire, group) not in (victim, -1)
        metadata = wire.request("Metadata", 12, topics=None, allow_auto_topic_creation=False)
        assert victim not in [b.node_id for b in metadata.brokers]

    assert cluster.start_broker(victim)["up"] is True
    with WireClient(victim_address) as wire:  # the same port again
        assert coordinator(wire, group) != -1
    for p in cluster.cluster()["topics"][topic_name]:
        assert sorted(p["isr"]) == [1, 2, 3]


def test_a_group_started_while_the_first_broker_is_stopped_finds_a_coordinator(tmp_path):
    """Before __consumer_offsets exists the coordinator is a live node, not the stopped node 1."""
    with running_broker("--brokers", "3", "--http-port", "0", data_dir=tmp_path) as fresh:
        create(fresh, "orders")
        fresh.stop_broker(1)
        consumer = Consumer({"bootstrap.servers": address(fresh, 2), "group.id": "g",
                             "auto.offset.reset": "earliest"})
        try:
            consumer.subscribe(["orders"])
            assert wait_for(lambda: consumer.poll(0.2) is None and consumer.assignment(), 30,
                            "the group's assignment")
        finally:
            consumer.close()


def test_a_transaction_commits_after_its_coordinator_stopped(cluster, topic_name):
    create(cluster, topic_name)
    transactional_id = topic_name + "-txn"
    producer = confluent_producer(cluster.bootstrap, **{"transactional.id": transactional_id})
    producer.init_transactions(30)
    with WireClient(address(cluster, 1)) as wire:
        response = wire.request("FindCoordinator", 4, key_type=TRANSACTION_KEY, coordinator_keys=[transactional_id])
        coordinator_node = response.coordinators[0].node_id
    producer.begin_transaction()
    producer.produce(topic_name, b"before", partition=0)
    producer.flush(30)
    cluster.stop_broker(coordinator_node)
    producer.produce(topic_name, b"after", partition=0)
    producer.commit_transaction(60)  # EndTxn finds the coordinator that took the partition over
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": topic_name,
                         "isolation.level": "read_committed", "auto.offset.reset": "earliest"})
    try:
        consumer.assign([TopicPartition(topic_name, 0, 0)])
        values: list[bytes] = []
        wait_for(lambda: values.extend(m.value() for m in consumer.consume(10, 0.2) if not m.error())
                 or len(values) >= 2, 30, "the committed records")
    finally:
        consumer.close()
    assert values == [b"before", b"after"]


def test_embedded_and_nursery_clusters_have_the_same_controls():
    with embedded_broker({"simulated.brokers": "3"}) as embedded:
        embedded.create_topic("orders")
        assert embedded.stop_broker(2)["up"] is False
        assert [b["up"] for b in embedded.cluster()["brokers"]] == [True, False, True]
        assert embedded.start_broker(2)["up"] is True

    async def main():
        async with trio.open_nursery() as nursery:
            async with serve_in_nursery(nursery, {"simulated.brokers": "3"}) as broker:
                await broker.create_topic("orders")
                leader = (await broker.cluster())["topics"]["orders"][0]["leader"]
                other = next(n for n in (1, 2, 3) if n != leader)
                assert (await broker.move_leader("orders", 0, other))["leader"] == other
                assert (await broker.stop_broker(other))["up"] is False
                assert (await broker.cluster())["topics"]["orders"][0]["leader"] != other
                await broker.start_broker(other)
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_faults_narrowed_to_one_broker_fire_only_there(cluster, topic_name):
    create(cluster, topic_name)
    leader = partition(cluster, topic_name)["leader"]
    follower = next(n for n in (1, 2, 3) if n != leader)
    at_leader = cluster.add_fault("Produce", "NOT_LEADER_OR_FOLLOWER", times=2, broker=leader)
    at_follower = cluster.add_fault("Produce", disconnect=True, broker=follower)
    try:
        producer = confluent_producer(cluster.bootstrap, **{"enable.idempotence": True})
        for i in range(5):
            producer.produce(topic_name, b"%d" % i, partition=0)
        assert producer.flush(30) == 0
        hits = {fault["id"]: fault["hits"] for fault in cluster.faults()}
        assert (hits[at_leader], hits[at_follower]) == (2, 0)
        assert [r.value for r in cluster.records(topic_name)] == [b"%d" % i for i in range(5)]
    finally:
        cluster.delete_fault(at_leader)
        cluster.delete_fault(at_follower)


def _stop_and_start(cluster, topic) -> list[tuple[str, dict]]:
    leader = partition(cluster, topic)["leader"]
    return [(f"/api/brokers/{leader}/stop", {}), (f"/api/brokers/{leader}/start", {})]


def _move_leader_twice(cluster, topic) -> list[tuple[str, dict]]:
    first = partition(cluster, topic)
    other = next(n for n in first["isr"] if n != first["leader"])
    path = f"/api/partitions/{topic}/0/leader"
    return [(path, {"node": other}), (path, {"node": first["leader"]})]


def _stop_the_coordinator(cluster, topic) -> list[tuple[str, dict]]:
    """Stop and start the node coordinating the run's group (topic + "-g"), wherever the
    partition's leader is."""
    node = group_coordinator(cluster, topic, topic + "-g")
    return [(f"/api/brokers/{node}/stop", {}), (f"/api/brokers/{node}/start", {})]


# Two HTTP calls, each made between two chunks of 100 records.
DISRUPTIONS = {"stop-start": _stop_and_start, "move-leader": _move_leader_twice,
               "stop-coordinator": _stop_the_coordinator}


def _post(url: str, body: bytes = b"{}") -> tuple[int, dict]:
    request = urllib.request.Request(url, body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _step(cluster, steps: list[tuple[str, dict]], chunk: int) -> None:
    if chunk:
        path, body = steps[chunk - 1]
        assert _post(cluster.http + path, json.dumps(body).encode())[0] == 200


def _confluent_run(cluster, topic, steps) -> list[bytes]:
    """An idempotent producer writes 3 x 100 records and a group consumer reads them; between the
    chunks the partition's leader (and maybe the group's coordinator) goes away and comes back."""
    producer = confluent_producer(cluster.bootstrap, **{"enable.idempotence": True, "acks": "all"})
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": topic + "-g",
                         "auto.offset.reset": "earliest", "enable.auto.commit": True,
                         "auto.commit.interval.ms": 100})
    consumer.subscribe([topic])
    seen: list[bytes] = []
    try:
        for chunk in range(3):
            _step(cluster, steps, chunk)
            for i in range(100):
                producer.produce(topic, value=b"%d" % (chunk * 100 + i), partition=0)
            assert producer.flush(60) == 0
            deadline = time.monotonic() + 60
            while len(set(seen)) < (chunk + 1) * 100 and time.monotonic() < deadline:
                message = consumer.poll(0.2)
                if message is not None and not message.error():
                    seen.append(message.value())
    finally:
        consumer.close()
    return seen


def _kafka_python_run(cluster, topic, steps) -> list[bytes]:
    producer = KafkaProducer(bootstrap_servers=cluster.bootstrap, enable_idempotence=True, acks="all",
                             retries=20, retry_backoff_ms=100)
    consumer = KafkaConsumer(topic, bootstrap_servers=cluster.bootstrap, group_id=topic + "-g",
                             auto_offset_reset="earliest", auto_commit_interval_ms=100)
    seen: list[bytes] = []
    try:
        for chunk in range(3):
            _step(cluster, steps, chunk)
            futures = [producer.send(topic, value=b"%d" % (chunk * 100 + i), partition=0) for i in range(100)]
            producer.flush(60)
            assert all(f.succeeded() for f in futures)
            deadline = time.monotonic() + 60
            while len(set(seen)) < (chunk + 1) * 100 and time.monotonic() < deadline:
                for records in consumer.poll(200).values():
                    seen += [r.value for r in records]
    finally:
        producer.close()
        consumer.close()
    return seen


KAFKAJS = Path(__file__).resolve().parent.parent / "compat" / "node" / "node_modules" / "kafkajs"
KAFKAJS_RUN = """
const { Kafka, logLevel } = require(process.argv[1]);
const [bootstrap, http, topic, steps] = [...process.argv.slice(2, 5), JSON.parse(process.argv[5])];
const kafka = new Kafka({ brokers: bootstrap.split(","), logLevel: logLevel.WARN,  // to stderr
                          retry: { retries: 30, initialRetryTime: 100, maxRetryTime: 1000 } });
const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
// kafkajs restarts a member that lost its coordinator under a new member id: the group waits for
// the old one's session to expire, as Kafka's does, so the session is short.
const consumer = kafka.consumer({ groupId: topic + "-g", maxWaitTimeInMs: 100, heartbeatInterval: 100,
                                  sessionTimeout: 6000 });
const seen = [];
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));
(async () => {
  await producer.connect();
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({ eachMessage: async ({ message }) => { seen.push(message.value.toString()); } });
  for (let chunk = 0; chunk < 3; chunk++) {
    if (chunk) {
      const [path, body] = steps[chunk - 1];
      const answer = await fetch(http + path, { method: "POST", body: JSON.stringify(body) });
      if (!answer.ok) throw new Error(await answer.text());
    }
    const messages = Array.from({ length: 100 }, (_, i) => ({ value: String(chunk * 100 + i), partition: 0 }));
    await producer.send({ topic, acks: -1, messages });
    const deadline = Date.now() + 60000;
    while (new Set(seen).size < (chunk + 1) * 100 && Date.now() < deadline) await sleep(50);
  }
  // A coordinator that moved is found by the next heartbeat (as a running application's would
  // be); leaving the group before that would send LeaveGroup to the old one.
  await new Promise(resolve => consumer.on(consumer.events.HEARTBEAT, resolve));
  await consumer.disconnect();
  await producer.disconnect();
  // exit once written: a restart timer kafkajs left behind must not keep node running
  process.stdout.write(JSON.stringify(seen) + "\\n", () => process.exit(0));
})().catch(error => { console.error(error); process.exit(1); });
"""


def _kafkajs_run(cluster, topic, steps) -> list[bytes]:
    if not KAFKAJS.exists():
        pytest.skip("kafkajs is installed by scripts/install_test_tools.sh")
    done = subprocess.run(["node", "-e", KAFKAJS_RUN, str(KAFKAJS), cluster.bootstrap, cluster.http, topic,
                           json.dumps(steps)], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    return [value.encode() for value in json.loads(done.stdout.splitlines()[-1])]


@pytest.mark.parametrize("disruption", DISRUPTIONS)
@pytest.mark.parametrize("run", [_confluent_run, _kafka_python_run, _kafkajs_run],
                         ids=["confluent", "kafka-python", "kafkajs"])
def test_clients_produce_and_consume_through_leader_changes_without_loss_or_duplicates(
        cluster, topic_name, run, disruption):
    create(cluster, topic_name)
    seen = run(cluster, topic_name, DISRUPTIONS[disruption](cluster, topic_name))
    # Every record reaches the group, in order; a member that rejoins (kafkajs does on
    # NOT_LEADER_OR_FOLLOWER) may read again what it had not committed: at least once.
    assert list(dict.fromkeys(seen)) == [b"%d" % i for i in range(300)]
    stored = [r.value for r in cluster.records(topic_name)]
    assert stored == [b"%d" % i for i in range(300)]  # the idempotent producer wrote each once


# -- moving leaders --------------------------------------------------------------------------

def test_a_moved_leadership_answers_not_leader_at_the_old_leader_and_fences_the_old_epoch(cluster, topic_name):
    create(cluster, topic_name)
    was = partition(cluster, topic_name)
    new_leader = next(n for n in was["isr"] if n != was["leader"])
    moved = cluster.move_leader(topic_name, 0, new_leader)
    assert (moved["leader"], moved["leader_epoch"]) == (new_leader, was["leader_epoch"] + 1)
    assert partition(cluster, topic_name) == moved
    with WireClient(address(cluster, was["leader"])) as wire:
        assert produce_once(wire, topic_name) == ErrorCode.NOT_LEADER_OR_FOLLOWER
    with WireClient(address(cluster, new_leader)) as wire:
        assert produce_once(wire, topic_name) == ErrorCode.NONE
        assert fetch_error(wire, topic_name, was["leader_epoch"]) == ErrorCode.FENCED_LEADER_EPOCH
        assert fetch_error(wire, topic_name, moved["leader_epoch"]) == ErrorCode.NONE
    assert cluster.move_leader(topic_name, 0, new_leader) == moved  # already there: no change


# -- ElectLeaders ----------------------------------------------------------------------------

def _elect(admin: AdminClient, election: ElectionType, topic: str, index: int = 0):
    """The election's error code for one partition (0: elected)."""
    results = admin.elect_leaders(election, [TopicPartition(topic, index)]).result(15)
    error = results[TopicPartition(topic, index)]
    return ErrorCode.NONE if error is None else ErrorCode(error.code())


def test_preferred_and_unclean_elections_through_confluent_admin(cluster, topic_name):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    create(cluster, topic_name)
    was = partition(cluster, topic_name)
    preferred = was["replicas"][0]
    assert _elect(admin, ElectionType.PREFERRED, topic_name) == ErrorCode.ELECTION_NOT_NEEDED
    cluster.move_leader(topic_name, 0, was["replicas"][1])
    assert _elect(admin, ElectionType.PREFERRED, topic_name) == ErrorCode.NONE
    now = partition(cluster, topic_name)
    assert (now["leader"], now["leader_epoch"]) == (preferred, was["leader_epoch"] + 2)
    assert _elect(admin, ElectionType.UNCLEAN, topic_name) == ErrorCode.ELECTION_NOT_NEEDED

    cluster.stop_broker(preferred)
    assert _elect(admin, ElectionType.PREFERRED, topic_name) == ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE
    assert _elect(admin, ElectionType.PREFERRED, topic_name + "-none") == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    cluster.start_broker(preferred)

    # A partition whose only ISR member is stopped has no leader; another replica that was out
    # of the ISR may lead it only by an unclean election.
    offline = topic_name + "-offline"
    create(cluster, offline, assignment=[[2, 3]])
    cluster.stop_broker(3)
    cluster.stop_broker(2)
    assert partition(cluster, offline)["leader"] == -1
    assert _elect(admin_at(cluster, 1), ElectionType.UNCLEAN, offline) == ErrorCode.ELIGIBLE_LEADERS_NOT_AVAILABLE
    cluster.start_broker(3)
    assert (partition(cluster, offline)["leader"], partition(cluster, offline)["isr"]) == (-1, [2])
    assert _elect(admin_at(cluster, 1), ElectionType.UNCLEAN, offline) == ErrorCode.NONE
    assert (partition(cluster, offline)["leader"], partition(cluster, offline)["isr"]) == (3, [3])
    producer = confluent_producer(cluster.bootstrap)
    producer.produce(offline, b"after the unclean election", partition=0)
    assert producer.flush(30) == 0


def admin_at(cluster, node_id: int) -> AdminClient:
    return AdminClient({"bootstrap.servers": address(cluster, node_id)})


def test_elect_leaders_for_every_partition_lists_only_those_it_moved(cluster, topic_name):
    create(cluster, topic_name, partitions=3)
    leaders = {p["partition"]: p["leader"] for p in cluster.cluster()["topics"][topic_name]}
    moved = 1
    cluster.move_leader(topic_name, moved, next(n for n in (1, 2, 3) if n != leaders[moved]))
    with WireClient(address(cluster, 1)) as wire:
        response = wire.request("ElectLeaders", 2, election_type=0, timeout_ms=5000, topic_partitions=None)
    assert response.error_code == ErrorCode.NONE
    answered = {r.topic: [(p.partition_id, p.error_code) for p in r.partition_result]
                for r in response.replica_election_results}
    assert answered[topic_name] == [(moved, ErrorCode.NONE)]  # not the two already led by their preferred
    assert {p["partition"]: p["leader"] for p in cluster.cluster()["topics"][topic_name]} == leaders


# -- reassignments ---------------------------------------------------------------------------

def test_reassignments_through_kafka_python_admin(cluster, topic_name):
    create(cluster, topic_name, assignment=[[2, 3]])
    # kafka-python sends these to the controller it learnt first: node 1, which stays up
    admin = KafkaAdminClient(bootstrap_servers=address(cluster, 1))
    tp = KpTopicPartition(topic_name, 0)
    try:
        assert admin.alter_partition_reassignments({tp: [1, 3]}) == {tp: None}  # all live: done at once
        now = partition(cluster, topic_name)
        assert (now["replicas"], now["isr"], now["leader"]) == ([1, 3], [1, 3], 1)
        assert admin.list_partition_reassignments() == {}

        cluster.stop_broker(2)  # a reassignment onto a stopped broker waits for it
        assert admin.alter_partition_reassignments({tp: [2, 3]}) == {tp: None}
        assert admin.list_partition_reassignments()[tp] == {
            "replicas": [2, 3, 1], "adding_replicas": [2], "removing_replicas": [1]}
        assert admin.alter_partition_reassignments({tp: None}) == {tp: None}  # cancelled
        assert partition(cluster, topic_name)["replicas"] == [3, 1]  # Kafka's revert: replicas - adding
        assert admin.list_partition_reassignments() == {}
        assert admin.alter_partition_reassignments({tp: [2, 3]}) == {tp: None}
        cluster.start_broker(2)
        now = partition(cluster, topic_name)
        assert (now["replicas"], now["isr"], now["leader"]) == ([2, 3], [2, 3], 2)
        assert admin.list_partition_reassignments() == {}

        errors = admin.alter_partition_reassignments({
            tp: [1, 9], KpTopicPartition(topic_name, 4): [1], KpTopicPartition(topic_name + "-none", 0): [1]})
        assert {key.partition if key.topic == topic_name else key.topic: error.errno
                for key, error in errors.items()} == {
            0: ErrorCode.INVALID_REPLICA_ASSIGNMENT, 4: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
            topic_name + "-none": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}
        assert admin.alter_partition_reassignments({tp: None})[tp].errno == ErrorCode.NO_REASSIGNMENT_IN_PROGRESS
    finally:
        admin.close()


KAFKAJS_REASSIGN = """
const { Kafka, logLevel } = require(process.argv[1]);
const [bootstrap, topic] = process.argv.slice(2);
const admin = new Kafka({ brokers: bootstrap.split(","), logLevel: logLevel.NOTHING }).admin();
const reassign = replicas => admin.alterPartitionReassignments({
  topics: [{ topic, partitionAssignment: [{ partition: 0, replicas }] }] });
(async () => {
  await admin.connect();
  await reassign([2, 3]);
  const ongoing = await admin.listPartitionReassignments({ topics: [{ topic, partitions: [0] }] });
  const refused = await reassign([1, 9]).then(() => null, error => error.errors.map(e => e.type));
  await admin.disconnect();
  process.stdout.write(JSON.stringify({ ongoing: ongoing.topics, refused }) + "\\n", () => process.exit(0));
})().catch(error => { console.error(error); process.exit(1); });
"""


@pytest.mark.skipif(not KAFKAJS.exists(), reason="kafkajs is installed by scripts/install_test_tools.sh")
def test_kafkajs_admin_reassigns_and_lists_ongoing_reassignments(cluster, topic_name):
    create(cluster, topic_name, assignment=[[1, 3]])
    cluster.stop_broker(2)
    done = subprocess.run(["node", "-e", KAFKAJS_REASSIGN, str(KAFKAJS), address(cluster, 1), topic_name],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "ongoing": [{"name": topic_name, "partitions": [
            {"partition": 0, "replicas": [2, 3, 1], "addingReplicas": [2], "removingReplicas": [1]}]}],
        "refused": ["INVALID_REPLICA_ASSIGNMENT"]}
    cluster.start_broker(2)  # the reassignment completes
    assert partition(cluster, topic_name)["replicas"] == [2, 3]


def test_a_reassignment_may_refuse_a_replication_factor_change(cluster, topic_name):
    """KIP-860: AlterPartitionReassignments v1 with AllowReplicationFactorChange false."""
    create(cluster, topic_name, assignment=[[1, 2]])
    Topic = AlterPartitionReassignmentsRequest.ReassignableTopic
    Partition = AlterPartitionReassignmentsRequest.ReassignablePartition
    with WireClient(address(cluster, 1)) as wire:
        response = wire.request("AlterPartitionReassignments", 1, timeout_ms=5000,
                                allow_replication_factor_change=False, topics=[Topic(name=topic_name, partitions=[
                                    Partition(partition_index=0, replicas=[1, 2, 3])])])
        answer = response.responses[0].partitions[0]
        assert (answer.error_code, answer.error_message) == (
            ErrorCode.INVALID_REPLICATION_FACTOR, "The replication factor is changed from 2 to 3")
        response = wire.request("AlterPartitionReassignments", 1, timeout_ms=5000,
                                allow_replication_factor_change=False, topics=[Topic(name=topic_name, partitions=[
                                    Partition(partition_index=0, replicas=[2, 3])])])
        assert response.responses[0].partitions[0].error_code == ErrorCode.NONE
    assert partition(cluster, topic_name)["replicas"] == [2, 3]


def test_each_broker_describes_and_moves_only_its_own_replicas(cluster, topic_name):
    create(cluster, topic_name, assignment=[[1, 2], [2, 3]])
    Topic = DescribeLogDirsRequest.DescribableLogDirTopic
    hosted = {}
    for node in (1, 2, 3):
        with WireClient(address(cluster, node)) as wire:
            response = wire.request("DescribeLogDirs", 4, topics=[Topic(topic=topic_name, partitions=[0, 1])])
            hosted[node] = [p.partition_index for result in response.results for t in result.topics
                            for p in t.partitions]
            log_dir = response.results[0].log_dir
            moved = wire.request("AlterReplicaLogDirs", 2, dirs=[AlterReplicaLogDirsRequest.AlterReplicaLogDir(
                path=log_dir, topics=[AlterReplicaLogDirsRequest.AlterReplicaLogDirTopic(
                    name=topic_name, partitions=[0])])])
            assert moved.results[0].partitions[0].error_code == (
                ErrorCode.NONE if 0 in hosted[node] else ErrorCode.REPLICA_NOT_AVAILABLE)
    assert hosted == {1: [0], 2: [0, 1], 3: [1]}


# -- the HTTP API's refusals and `kbroker ctl` -------------------------------------------------

def test_unknown_brokers_and_partitions_bad_bodies_and_ineligible_leaders_are_refused(cluster, topic_name):
    create(cluster, topic_name, assignment=[[1, 2]])
    leader_url = f"{cluster.http}/api/partitions/{topic_name}/0/leader"
    for url, body, status in [
            (f"{cluster.http}/api/brokers/9/stop", b"{}", 404),
            (f"{cluster.http}/api/brokers/one/start", b"{}", 404),
            (f"{cluster.http}/api/partitions/{topic_name}/7/leader", b'{"node": 1}', 404),
            (f"{cluster.http}/api/partitions/nope/0/leader", b'{"node": 1}', 404),
            (leader_url, b"not json", 400),
            (leader_url, b'{"node": "2"}', 400),
            (leader_url, b'{"node": 3}', 409)]:  # not a replica
        answer_status, answer = _post(url, body)
        assert (answer_status, bool(answer["error"])) == (status, True), url
    cluster.stop_broker(2)
    assert _post(leader_url, b'{"node": 2}')[0] == 409  # stopped, so out of the ISR
    assert partition(cluster, topic_name)["leader"] == 1


def test_a_broker_whose_port_was_taken_meanwhile_stays_stopped(cluster):
    host, port = address(cluster, 3).rsplit(":", 1)
    cluster.stop_broker(3)
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the node's TIME_WAITs
    try:
        squatter.bind((host, int(port)))
        squatter.listen()
        status, answer = _post(f"{cluster.http}/api/brokers/3/start")
        assert status == 409 and f"cannot listen on {host}:{port}" in answer["error"]
        assert [b["up"] for b in cluster.cluster()["brokers"]] == [True, True, False]
    finally:
        squatter.close()
    assert cluster.start_broker(3)["up"] is True
    with WireClient(address(cluster, 3)) as wire:
        assert wire.request("Metadata", 12, topics=None, allow_auto_topic_creation=False).brokers


def _ctl(cluster, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "kbroker", "ctl", "--http", cluster.http, *args],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_kbroker_ctl_shows_the_cluster_stops_and_starts_brokers_and_moves_leaders(cluster, topic_name):
    create(cluster, topic_name, assignment=[[1, 2, 3]])
    shown = json.loads(_ctl(cluster, "cluster", "--json"))
    assert shown["topics"][topic_name][0]["leader"] == 1
    assert _ctl(cluster, "broker", "stop", "1").strip() == "stopped broker 1"
    table = _ctl(cluster, "cluster").splitlines()
    assert table[0].split() == ["ID", "HOST", "PORT", "UP"]
    assert [line.split()[3] for line in table[1:4]] == ["False", "True", "True"]
    row = next(line.split() for line in table if line.startswith(topic_name + " "))
    assert row[1:] == ["0", "2", "1", "1,2,3", "2,3"]  # partition, leader, epoch, replicas, isr
    assert _ctl(cluster, "leader", topic_name, "0", "3").strip() == f"{topic_name}-0: leader 3, leader epoch 2"
    assert _ctl(cluster, "broker", "start", "1").strip() == "started broker 1"
    assert sorted(partition(cluster, topic_name)["isr"]) == [1, 2, 3]
    failed = subprocess.run([sys.executable, "-m", "kbroker", "ctl", "--http", cluster.http,
                             "broker", "stop", "7"], capture_output=True, text=True, timeout=30)
    assert failed.returncode == 1 and "no broker 7" in failed.stderr
