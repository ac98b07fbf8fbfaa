"""Client telemetry (KIP-714): confluent-kafka (enable.metrics.push is on by default) asks for
its subscription and, once a CLIENT_METRICS subscription set with kafka-python's admin client
matches it, pushes metrics that the broker keeps; Kafka's errors on the wire."""

from __future__ import annotations

import contextlib
import threading
import uuid

import trio
from confluent_kafka import Producer
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from kbroker.broker import Broker
from kbroker.config import Config
from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.messages import IncrementalAlterConfigsRequest as Resource
from kbroker.server import serve
from tests.polling import wait_for
from tests.wire import WireClient

ZERO = uuid.UUID(int=0)


@contextlib.contextmanager
def broker_in_thread(data_dir, **settings):
    """A broker served in a thread of this process, so that the test sees what it keeps."""
    broker = Broker(Config({"listeners": "PLAINTEXT://127.0.0.1:0", "log.dirs": str(data_dir),
                            **settings}))
    started, state = threading.Event(), {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            host, port, _ = await nursery.start(lambda task_status: serve(broker, task_status=task_status))
            state.update(bootstrap=f"{host}:{port}", cancel=nursery.cancel_scope.cancel,
                         token=trio.lowlevel.current_trio_token())
            started.set()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield broker, state["bootstrap"]
    finally:
        trio.from_thread.run_sync(state["cancel"], trio_token=state["token"])
        thread.join()
        broker.close()


def subscribe(bootstrap: str, name: str, **configs: str) -> dict:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        resource = ConfigResource(ConfigResourceType.CLIENT_METRICS, name,
                                  configs={key.replace("_", "."): value for key, value in configs.items()})
        return admin.alter_configs([resource], incremental=True, raise_on_unknown=False)
    finally:
        admin.close()


def test_confluent_kafka_gets_an_empty_subscription_then_pushes_when_subscribed(tmp_path):
    with broker_in_thread(tmp_path) as (broker, bootstrap):
        producer = Producer({"bootstrap.servers": bootstrap})
        producer.produce("telemetry-a", b"x")
        assert producer.flush(10) == 0
        # asked by default; no subscription: no metrics wanted, nothing pushed
        (instance,) = wait_for(lambda: list(broker.telemetry.clients.values()))
        assert (instance.metrics, instance.push_interval_ms) == ([], 300_000)
        assert not broker.telemetry.latest
        producer.flush()
        del producer
        assert subscribe(bootstrap, "producers", metrics="org.apache.kafka.producer.",
                         interval_ms="200", match="client_software_name=confluent.*") == {
            "client_metrics": {"producers": "OK"}}
        producer = Producer({"bootstrap.servers": bootstrap, "client.id": "billing"})
        producer.produce("telemetry-a", b"y")
        assert producer.flush(10) == 0
        pushed = wait_for(lambda: list(broker.telemetry.latest.values()), what="a push")[0]
        assert pushed.selectors["client_id"] == "billing"
        assert pushed.selectors["client_software_name"] == "confluent-kafka-python"
        assert b"org.apache.kafka.producer" in pushed.metrics  # decompressed OTLP protobuf
        del producer


def test_subscription_configs_as_kafka(broker):
    with WireClient(broker.bootstrap) as client:
        def alter(name, *configs, operation=0):
            response = client.request("IncrementalAlterConfigs", 1, validate_only=False, resources=[
                Resource.AlterConfigsResource(resource_type=16, resource_name=name, configs=[
                    Resource.AlterableConfig(name=key, config_operation=operation, value=value)
                    for key, value in configs])])
            return response.responses[0].error_code, response.responses[0].error_message

        assert alter("s", ("interval.ms", "50")) == (
            ErrorCode.INVALID_REQUEST,
            "Invalid value 50 for interval.ms, interval must be between 100 and 3600000 (1 hour)")
        assert alter("s", ("color", "red")) == (
            ErrorCode.INVALID_REQUEST, "Unknown client metrics configuration: color")
        assert alter("s", ("match", "client_rack=a")) == (
            ErrorCode.INVALID_CONFIG, "Illegal client matching pattern: client_rack=a")
        assert alter("", ("metrics", "*")) == (ErrorCode.INVALID_REQUEST, "Subscription name can't be empty")
        assert alter("s", ("metrics", "*"), ("match", "client_id=app-.*")) == (0, None)
        response = client.request("ListConfigResources", 1, resource_types=[16])
        assert [r.resource_name for r in response.config_resources] == ["s"]
        # deleting every config removes the subscription
        assert alter("s", ("metrics", None), ("match", None), operation=1) == (0, None)
        response = client.request("ListConfigResources", 1, resource_types=[16])
        assert response.config_resources == []


def test_push_errors_as_kafka(tmp_path):
    with (broker_in_thread(tmp_path, **{"telemetry.max.bytes": "64"}) as (broker, bootstrap),
          WireClient(bootstrap) as client):
        subscribe(bootstrap, "all", metrics="*", interval_ms="60000")

        def push(instance_id, subscription_id, metrics=b"", compression=0, terminating=False):
            return client.request("PushTelemetry", 0, client_instance_id=instance_id,
                                  subscription_id=subscription_id, terminating=terminating,
                                  compression_type=compression, metrics=metrics).error_code

        got = client.request("GetTelemetrySubscriptions", 0, client_instance_id=ZERO)
        assert got.error_code == 0 and got.client_instance_id != ZERO
        assert (got.requested_metrics, got.push_interval_ms, got.accepted_compression_types,
                got.telemetry_max_bytes, got.delta_temporality) == (["*"], 60000, [4, 3, 1, 2], 64, True)
        me, subscription = got.client_instance_id, got.subscription_id
        again = client.request("GetTelemetrySubscriptions", 0, client_instance_id=me)
        assert again.error_code == ErrorCode.THROTTLING_QUOTA_EXCEEDED
        assert push(ZERO, subscription) == ErrorCode.INVALID_REQUEST
        assert push(me, subscription + 1) == ErrorCode.UNKNOWN_SUBSCRIPTION_ID
        # after an unknown subscription id the client may ask again at once (not throttled)
        assert client.request("GetTelemetrySubscriptions", 0, client_instance_id=me).error_code == 0

        def fresh():
            answer = client.request("GetTelemetrySubscriptions", 0, client_instance_id=ZERO)
            return answer.client_instance_id, answer.subscription_id

        assert push(*fresh(), compression=7) == ErrorCode.UNSUPPORTED_COMPRESSION_TYPE
        assert push(*fresh(), metrics=b"m" * 65) == ErrorCode.TELEMETRY_TOO_LARGE
        assert push(*fresh(), metrics=b"not zstd", compression=4) == ErrorCode.INVALID_RECORD
        client_id, subscription = fresh()
        assert push(client_id, subscription, metrics=b"m" * 64) == 0
        assert push(client_id, subscription) == ErrorCode.THROTTLING_QUOTA_EXCEEDED  # too soon
        assert push(client_id, subscription, metrics=b"last", terminating=True) == 0
        assert broker.telemetry.latest[client_id].metrics == b"last"
        assert push(client_id, subscription, terminating=True) == ErrorCode.INVALID_REQUEST
