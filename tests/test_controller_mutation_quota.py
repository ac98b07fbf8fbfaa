"""controller_mutation_rate (KIP-599): CreateTopics, CreatePartitions and DeleteTopics charged
with the partitions they create or delete, strict for the newer versions (THROTTLING_QUOTA_EXCEEDED
per topic) and permissive for the older ones (accepted, the connection muted), with real admin
clients of both kinds."""

from __future__ import annotations

import json
import time

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from kafka.admin import KafkaAdminClient
from kafka.admin import NewTopic as KafkaPythonNewTopic
from kafka.errors import ThrottlingQuotaExceededError

from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.messages import CreatePartitionsRequest, DeleteTopicsRequest
from kbroker.quotas import ClientQuotas
from kbroker.testing import running_broker
from kbroker.throttling import CONTROLLER_MUTATION_RATE, ControllerMutationQuotas
from tests.cli_brokers import kbroker_command
from tests.test_acls_wire import _client as sasl_client
from tests.test_admin import create, topic
from tests.test_client_quotas import alter, alteration
from tests.wire import WireClient

RATE = 10.0  # partitions per second; with 2 windows of 1 s the bucket holds 20
BROKER_ARGS = ("--override", "controller.quota.window.num=2")


def _buckets(tmp_path) -> ControllerMutationQuotas:
    store = ClientQuotas(tmp_path)
    store.quotas = {(("client-id", None),): {CONTROLLER_MUTATION_RATE: RATE}}
    return ControllerMutationQuotas(store, samples=2, window_ms=1000)


def test_a_strict_quota_refuses_only_once_the_bucket_is_exhausted(tmp_path):
    buckets = _buckets(tmp_path)
    quota = buckets.for_request("ANONYMOUS", "admin", strict=True)
    quota.charge(30, now_ms=0)  # a full bucket (20) lets a larger topic through: -10 left
    assert quota.throttle_ms(now_ms=0) == 0
    with pytest.raises(KafkaError) as refused:
        quota.charge(1, now_ms=0)
    assert refused.value.code == ErrorCode.THROTTLING_QUOTA_EXCEEDED
    assert quota.throttle_ms(now_ms=0) == 1000  # 10 tokens short at 10 a second
    assert quota.throttle_ms(now_ms=400) == 600
    later = buckets.for_request("ANONYMOUS", "admin", strict=True)
    later.charge(5, now_ms=1000)  # refilled to 0: accepted
    # Each client id has a bucket of its own under the default client-id entity.
    buckets.for_request("ANONYMOUS", "other", strict=True).charge(20, now_ms=1000)


def test_a_permissive_quota_accepts_and_throttles(tmp_path):
    quota = _buckets(tmp_path).for_request("ANONYMOUS", "admin", strict=False)
    quota.charge(15, now_ms=0)
    assert quota.throttle_ms(now_ms=0) == 0
    quota.charge(15, now_ms=0)
    assert quota.throttle_ms(now_ms=0) == 1000
    unlimited = ControllerMutationQuotas(ClientQuotas(tmp_path / "none"), 2, 1000)
    unlimited.for_request("ANONYMOUS", "admin", strict=True).charge(10**6, now_ms=0)


def _limit(broker, client_id: str) -> None:
    with WireClient(broker.bootstrap) as client:
        assert alter(client, alteration({"client-id": client_id},
                                        controller_mutation_rate=RATE)) == [(0, None)]


def test_strict_versions_answer_throttling_quota_exceeded_per_topic(tmp_path):
    with running_broker(*BROKER_ARGS, data_dir=tmp_path) as broker:
        _limit(broker, "admin")
        with WireClient(broker.bootstrap, client_id="admin") as wire:
            response = wire.request("CreateTopics", 7, timeout_ms=5000, validate_only=False,
                                    topics=[topic("big", partitions=50), topic("small", partitions=2)])
            big, small = response.topics
            assert big.error_code == ErrorCode.NONE  # a full bucket (20) lets it through: -30
            assert small.error_code == ErrorCode.THROTTLING_QUOTA_EXCEEDED
            assert small.error_message == "The throttling quota has been exceeded."
            # The time to refill the 30 missing tokens (less the time creating `big` took, during
            # which the bucket refilled); the connection is muted as long.
            assert 0 < response.throttle_time_ms <= 3000
            time.sleep(0.2)
            grown = wire.request("CreatePartitions", 3, timeout_ms=5000, validate_only=False, topics=[
                CreatePartitionsRequest.CreatePartitionsTopic(name="big", count=76, assignments=None)])
            assert grown.results[0].error_code == ErrorCode.NONE  # refilled: accepted, below 0 again
            deleted = wire.request("DeleteTopics", 6, timeout_ms=5000, topics=[
                DeleteTopicsRequest.DeleteTopicState(name="big")])
            assert deleted.responses[0].error_code == ErrorCode.THROTTLING_QUOTA_EXCEEDED
            assert deleted.throttle_time_ms > 0
        with WireClient(broker.bootstrap, client_id="unlimited") as wire:
            assert create(wire, topic("free", partitions=100))["free"].error_code == ErrorCode.NONE


def test_older_versions_are_accepted_and_the_connection_muted(tmp_path):
    with running_broker(*BROKER_ARGS, data_dir=tmp_path) as broker:
        _limit(broker, "admin")
        with WireClient(broker.bootstrap, client_id="admin") as wire:
            first = wire.request("CreateTopics", 5, topics=[topic("a", partitions=40)],
                                 timeout_ms=5000, validate_only=False)
            assert first.topics[0].error_code == ErrorCode.NONE
            # 20 tokens short: 2 s, less the time the creation took (long on a loaded machine)
            assert 0 < first.throttle_time_ms <= 2000
            started = time.monotonic()
            second = wire.request("CreateTopics", 5, topics=[topic("b", partitions=10)],
                                  timeout_ms=5000, validate_only=False)
            # Read only after the throttle.
            assert time.monotonic() - started >= 0.9 * first.throttle_time_ms / 1000
            assert second.topics[0].error_code == ErrorCode.NONE


def test_kafka_python_admin_gets_throttling_quota_exceeded(tmp_path):
    """kafka-python 3 sends CreateTopics v7: the second topic beyond the bucket is refused."""
    with running_broker(*BROKER_ARGS, data_dir=tmp_path) as broker:
        _limit(broker, "kafka-python-admin")
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="kafka-python-admin")
        try:
            admin.create_topics([KafkaPythonNewTopic("first", 60, 1)])  # 40 short: 4 s to refill
            with pytest.raises(ThrottlingQuotaExceededError):
                admin.create_topics([KafkaPythonNewTopic("second", 5, 1)])
            with WireClient(broker.bootstrap) as wire:  # the admin client waits out its throttle
                listed = wire.request("Metadata", 12, topics=None, allow_auto_topic_creation=False,
                                      include_topic_authorized_operations=False).topics
            assert {t.name for t in listed} == {"first"}
        finally:
            admin.close()


def test_confluent_admin_is_slowed_down_not_refused(tmp_path):
    """librdkafka sends CreateTopics v4 (permissive): every topic is created, each request after
    the bucket ran dry waits for the throttle time."""
    with running_broker(*BROKER_ARGS, data_dir=tmp_path) as broker:
        _limit(broker, "rdkafka-admin")
        admin = AdminClient({"bootstrap.servers": broker.bootstrap, "client.id": "rdkafka-admin"})
        started = time.monotonic()
        for index in range(3):
            for future in admin.create_topics([NewTopic(f"topic-{index}", 20)]).values():
                future.result(30)
        # The second request empties the bucket 20 below zero: the third waits 2 s for it.
        assert time.monotonic() - started >= 1.5
        assert {f"topic-{index}" for index in range(3)} <= set(admin.list_topics(timeout=10).topics)


def test_quota_command_sets_describes_and_removes_quotas(tmp_path):
    """`kbroker quota` sets the quota kbroker's own tools are then held to (they send
    CreateTopics v7: refused once the bucket is empty)."""
    with running_broker(*BROKER_ARGS, data_dir=tmp_path) as broker:
        def kb(*args: str) -> tuple[int, str, str]:
            done = kbroker_command(broker.bootstrap, *args)
            return done.returncode, done.stdout.decode(), done.stderr.decode().strip()

        assert kb("quota", "alter", "--client-id", "kbroker-cli", "--add",
                  "controller_mutation_rate=1")[0] == 0  # 2 tokens: 30 partitions leave it 28 s short
        assert kb("quota", "alter", "--ip-default", "--add", "connection_creation_rate=50")[0] == 0
        listed = json.loads(kb("quota", "describe", "--json")[1])
        assert sorted(map(str, listed)) == sorted(map(str, [
            {"entity": {"client-id": "kbroker-cli"}, "quotas": {"controller_mutation_rate": 1.0}},
            {"entity": {"ip": None}, "quotas": {"connection_creation_rate": 50.0}}]))
        assert "client-id=kbroker-cli  controller_mutation_rate=1" in kb(
            "quota", "describe", "--client-id", "kbroker-cli")[1]
        assert kb("topic", "create", "big", "-p", "30")[0] == 0
        assert kb("topic", "create", "small", "-p", "1") == (
            1, "", "kbroker: THROTTLING_QUOTA_EXCEEDED: topic small: The throttling quota has been exceeded.")
        assert kb("quota", "alter", "--client-id", "kbroker-cli", "--delete", "controller_mutation_rate")[0] == 0
        assert kb("topic", "create", "small", "-p", "1")[0] == 0
        assert kb("quota", "alter", "--ip", "10.0.0.1", "--add", "producer_byte_rate=5") == (
            1, "", "kbroker: INVALID_REQUEST: Invalid configuration key producer_byte_rate")


def test_the_default_user_quota_gives_each_user_a_bucket_of_its_own(tmp_path):
    with running_broker(*BROKER_ARGS, "--sasl-user", "alice:alice-secret", "--sasl-user",
                        "bob:bob-secret", data_dir=tmp_path) as broker:
        with sasl_client(broker, "alice") as alice, sasl_client(broker, "bob") as bob:
            assert alter(alice, alteration({"user": None}, controller_mutation_rate=1.0)) == [(0, None)]
            assert create(alice, topic("alice-1", partitions=30))["alice-1"].error_code == ErrorCode.NONE
            assert create(bob, topic("bob-1", partitions=30))["bob-1"].error_code == ErrorCode.NONE
            assert create(bob, topic("bob-2"))["bob-2"].error_code == ErrorCode.THROTTLING_QUOTA_EXCEEDED
