"""Fault injection seen by real clients: errors they retry, a slow fetch, a dropped
connection, faults narrowed to one client, and the HTTP API and `kbroker ctl` around them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from kbroker.testing import running_broker
from tests.kafka_clients import confluent_consume, confluent_producer, kafka_python_consume, kafka_python_producer

RECORDS = 30


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with running_broker("--http-port", "0", data_dir=tmp_path_factory.mktemp("broker")) as started:
        yield started


def _hits(broker, fault_id: str) -> int:
    return next(fault["hits"] for fault in broker.faults() if fault["id"] == fault_id)


def _produce_idempotently(broker, topic: str, client_id: str) -> list:
    """Send RECORDS records with an idempotent confluent-kafka producer; the delivery errors."""
    errors = []
    producer = confluent_producer(broker.bootstrap, **{"enable.idempotence": True,
                                                       "client.id": client_id})
    for i in range(RECORDS):
        producer.produce(topic, value=b"%d" % i,
                         on_delivery=lambda err, msg: err is not None and errors.append(err))
    assert producer.flush(30) == 0
    return errors


def test_an_idempotent_producer_retries_through_not_leader_and_writes_each_record_once(broker, topic_name):
    broker.create_topic(topic_name)
    fault = broker.add_fault("Produce", "NOT_LEADER_OR_FOLLOWER", times=3, client_id="retrying")
    assert _produce_idempotently(broker, topic_name, "retrying") == []
    assert [r.value for r in broker.records(topic_name)] == [b"%d" % i for i in range(RECORDS)]
    assert _hits(broker, fault) == 3


def test_a_dropped_connection_makes_the_client_reconnect_and_deliver(broker, topic_name):
    broker.create_topic(topic_name)
    fault = broker.add_fault("Produce", disconnect=True, times=1, client_id="dropped")
    assert _produce_idempotently(broker, topic_name, "dropped") == []
    assert [r.value for r in broker.records(topic_name)] == [b"%d" % i for i in range(RECORDS)]
    assert _hits(broker, fault) == 1


def test_a_delayed_fetch_is_answered_late_and_in_full(broker, topic_name):
    producer = kafka_python_producer(broker.bootstrap)
    for i in range(RECORDS):
        producer.send(topic_name, b"%d" % i)
    producer.flush()
    producer.close()
    fault = broker.add_fault("Fetch", delay_ms=1500, times=1, client_id="slow-reader")
    started = time.monotonic()
    records = kafka_python_consume(broker.bootstrap, topic_name, RECORDS, client_id="slow-reader")
    assert time.monotonic() - started >= 1.5  # the injected delay happened (a lower bound)
    assert [r.value for r in records] == [b"%d" % i for i in range(RECORDS)]
    assert _hits(broker, fault) == 1


@pytest.mark.parametrize("consume, client_setting", [(kafka_python_consume, "client_id"),
                                                     (confluent_consume, "client.id")],
                         ids=["kafka-python", "confluent-kafka"])
def test_consumers_fetch_again_after_not_leader(broker, topic_name, consume, client_setting):
    producer = confluent_producer(broker.bootstrap)
    for i in range(RECORDS):
        producer.produce(topic_name, value=b"%d" % i)
    assert producer.flush(30) == 0
    fault = broker.add_fault("Fetch", "NOT_LEADER_OR_FOLLOWER", times=2, client_id=topic_name)
    records = consume(broker.bootstrap, topic_name, RECORDS, **{client_setting: topic_name})
    assert [r.value() if callable(r.value) else r.value for r in records] == \
        [b"%d" % i for i in range(RECORDS)]
    assert _hits(broker, fault) == 2


def test_a_fault_for_one_client_id_leaves_the_others_alone(broker, topic_name):
    broker.create_topic(topic_name)
    fault = broker.add_fault("Produce", "TOPIC_AUTHORIZATION_FAILED", client_id="refused")
    assert _produce_idempotently(broker, topic_name, "someone-else") == []
    assert _hits(broker, fault) == 0
    errors = _produce_idempotently(broker, topic_name, "refused")
    assert errors and {e.name() for e in errors} == {"TOPIC_AUTHORIZATION_FAILED"}
    assert _hits(broker, fault) >= 1
    broker.delete_fault(fault)
    assert fault not in [f["id"] for f in broker.faults()]
    assert _produce_idempotently(broker, topic_name, "refused") == []
    assert len(broker.records(topic_name)) == 2 * RECORDS


def _post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, body, method="POST")
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("body, complaint", [
    (b'{"api": "Produce", "error": "NOT_A_LEADER"}', "unknown error"),
    (b'{"api": "Produc", "error": "NOT_LEADER_OR_FOLLOWER"}', "unknown API"),
    (b'{"api": "Produce", "error": "NOT_LEADER_OR_FOLLOWER", "times": -1}', "times"),
    (b'{"api": ', "not JSON"),
])
def test_a_bad_fault_gets_400_with_a_json_error(broker, body, complaint):
    status, answer = _post(broker.http + "/api/faults", body)
    assert status == 400 and complaint in answer["error"]


def test_deleting_an_unknown_fault_gets_404(broker):
    request = urllib.request.Request(broker.http + "/api/faults/nope", method="DELETE")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request)
    assert refused.value.code == 404


def _ctl(broker, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kbroker", "ctl", "--http", broker.http, "faults", *args],
                          check=False, capture_output=True, text=True, timeout=30)


def test_kbroker_ctl_adds_lists_and_deletes_faults(broker):
    added = _ctl(broker, "add", "--api", "Heartbeat", "--error", "REBALANCE_IN_PROGRESS",
                 "--times", "2", "--client-id", "ctl-test")
    assert added.returncode == 0, added.stderr
    fault_id = added.stdout.strip()
    listed = json.loads(_ctl(broker, "list", "--json").stdout)
    assert {"id": fault_id, "api": "Heartbeat", "error": "REBALANCE_IN_PROGRESS", "times": 2,
            "client_id": "ctl-test", "broker": None, "delay_ms": 0, "disconnect": False,
            "hits": 0} in listed
    assert "REBALANCE_IN_PROGRESS" in _ctl(broker, "list").stdout
    assert _ctl(broker, "delete", fault_id).returncode == 0
    assert fault_id not in [f["id"] for f in broker.faults()]
    refused = _ctl(broker, "add", "--api", "Heartbeat", "--error", "NO_SUCH_ERROR")
    assert refused.returncode == 1 and "unknown error" in refused.stderr


def test_a_group_consumer_rides_out_coordinator_errors(broker, topic_name):
    from confluent_kafka import Consumer

    producer = confluent_producer(broker.bootstrap)
    for i in range(RECORDS):
        producer.produce(topic_name, value=b"%d" % i)
    assert producer.flush(30) == 0
    lookups = broker.add_fault("FindCoordinator", "COORDINATOR_NOT_AVAILABLE", times=2, client_id="grouped")
    joins = broker.add_fault("JoinGroup", "COORDINATOR_LOAD_IN_PROGRESS", times=1, client_id="grouped")
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"g-{topic_name}",
                         "client.id": "grouped", "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe([topic_name])
        values, deadline = [], time.monotonic() + 60
        while len(values) < RECORDS and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                values.append(message.value())
    finally:
        consumer.close()
    assert values == [b"%d" % i for i in range(RECORDS)]
    assert [_hits(broker, fault) for fault in (lookups, joins)] == [2, 1]


def test_brokers_in_a_trio_nursery_take_faults_too():
    import trio

    from kbroker.protocol.errors import ErrorCode, KafkaError
    from kbroker.testing import serve_in_nursery

    async def main():
        async with trio.open_nursery() as nursery:
            async with serve_in_nursery(nursery) as broker:
                fault = await broker.add_fault("CreateTopics", "POLICY_VIOLATION", times=1)
                with pytest.raises(KafkaError) as refused:
                    await broker.create_topic("refused-once")
                assert refused.value.code == ErrorCode.POLICY_VIOLATION
                await broker.create_topic("refused-once")
                assert [(f["id"], f["hits"]) for f in await broker.faults()] == [(fault, 1)]
                await broker.delete_fault(fault)
                assert await broker.faults() == []
            nursery.cancel_scope.cancel()

    trio.run(main)
