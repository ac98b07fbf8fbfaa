"""Client quota enforcement: the rates and throttle times of kbroker/throttling.py, and a real
producer held to its producer_byte_rate by throttling (KIP-219)."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, Producer

from kbroker.quotas import ClientQuotas
from kbroker.testing import running_broker
from kbroker.throttling import PRODUCER_BYTE_RATE, ClientQuotaManager, SampledRate
from tests.test_client_quotas import alter, alteration
from tests.wire import WireClient


def test_the_rate_is_measured_over_at_least_samples_minus_one_windows():
    rate = SampledRate(samples=11, window_ms=1000)
    rate.record(10_000, now_ms=0)
    assert rate.rate(0) == 1000  # 10000 bytes over the minimum of 10 windows
    rate.record(10_000, now_ms=15_000)
    assert rate.rate(15_000) == 1000  # the first sample expired
    for second in range(16, 31):
        rate.record(1000, now_ms=second * 1000)
    assert rate.rate(30_000) == 11 * 1000 / 10  # 11 samples left, 10 s since the oldest began


def _manager(tmp_path, quotas: dict) -> ClientQuotaManager:
    store = ClientQuotas(tmp_path)
    store.quotas = quotas
    return ClientQuotaManager(PRODUCER_BYTE_RATE, store, samples=11, window_ms=1000)


def test_throttle_time_and_the_order_of_quota_entities(tmp_path):
    user_quota = {(("user", "alice"),): {PRODUCER_BYTE_RATE: 1000.0},
                  (("client-id", None),): {PRODUCER_BYTE_RATE: 100.0}}
    manager = _manager(tmp_path, user_quota)
    assert manager.record("alice", "app", 10_000, now_ms=0) == 0  # 1000 B/s: at the quota
    # 20000 bytes in 10 s is 2000 B/s, twice the quota: throttled for one more window span.
    assert manager.record("alice", "other-app", 10_000, now_ms=0) == 10_000
    # Bob has no user quota: the default client-id quota applies, counted per client id.
    assert manager.record("bob", "app", 1000, now_ms=0) == 0
    assert manager.record("bob", "app", 1000, now_ms=0) == 10_000
    assert manager.record("bob", "tool", 1000, now_ms=0) == 0
    assert _manager(tmp_path, {}).record("alice", "app", 10**9, now_ms=0) == 0


def _produce_10_mb(broker, client_id: str, topic: str) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap, "client.id": client_id,
                         "linger.ms": 5, "batch.size": 256 * 1024, "compression.type": "none"})
    payload = bytes(10_000)
    for _ in range(1000):
        while True:
            try:
                producer.produce(topic, value=payload)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(120) == 0


def _set_quota(broker, client_id: str, **quota) -> None:
    with WireClient(broker.bootstrap) as client:
        assert alter(client, alteration({"client-id": client_id}, **quota)) == [(0, None)]


def test_a_producer_byte_rate_quota_slows_a_real_producer(tmp_path):
    """512000 B/s for the client id: 10 MB take about 10 s (Kafka's windows let the first
    ~5 MB through before the throttle builds up), not the fraction of a second they take unlimited."""
    with running_broker(data_dir=tmp_path) as broker:
        _set_quota(broker, "slow-producer", producer_byte_rate=512000.0)
        started = time.monotonic()
        _produce_10_mb(broker, "slow-producer", "throttled")
        assert time.monotonic() - started >= 5


def test_a_consumer_byte_rate_quota_slows_a_real_consumer(tmp_path):
    """Throttled fetches are answered empty and the consumer waits: 10 MB at 512000 B/s take
    about 10 s; every record still arrives once, in order."""
    with running_broker(data_dir=tmp_path) as broker:
        _produce_10_mb(broker, "fast-producer", "throttled-reads")
        _set_quota(broker, "slow-consumer", consumer_byte_rate=512000.0)
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "client.id": "slow-consumer",
                             "group.id": "slow", "auto.offset.reset": "earliest"})
        consumer.subscribe(["throttled-reads"])
        started = time.monotonic()
        offsets = []
        while len(offsets) < 1000 and time.monotonic() - started < 60:
            for message in consumer.consume(100, 1.0):
                assert message.error() is None
                offsets.append(message.offset())
        consumer.close()
        assert offsets == list(range(1000))
        assert time.monotonic() - started >= 5


def test_max_connection_creation_rate_makes_the_acceptor_wait(tmp_path):
    """5 connections a second over two 1 s windows: the 15th is answered a second or more after
    the first, where unlimited they all take milliseconds. None is refused."""
    with running_broker("--override", "max.connection.creation.rate=5", "--override",
                        "quota.window.num=2", data_dir=tmp_path) as broker:
        started = time.monotonic()
        for _ in range(15):
            with WireClient(broker.bootstrap) as client:
                assert client.request("ApiVersions", 3, client_software_name="t",
                                      client_software_version="1").error_code == 0
        assert time.monotonic() - started >= 1
