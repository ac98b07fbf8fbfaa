"""`kbroker serve --as-version X.Y`: a broker that looks like an older Kafka release to its
clients (ApiVersions, the versions Kafka 4.0 removed, defaults), driven by kafka-python
speaking those old versions and by exact requests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

import kbroker.api  # noqa: F401  (registers every handler)
from kbroker import versions
from kbroker.api.registry import api_versions
from kbroker.protocol import codec, messages
from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.records import Record, build_batch
from kbroker.protocol.specs_path import SPECS_DIR
from kbroker.testing import running_broker
from tests.wire import WireClient

# APIs of a release's table kbroker does not serve at all (no handler), and why.
NOT_SERVED = {
    "WriteTxnMarkers",  # sent by the transaction coordinator to partition leaders: one broker here
    "CreateDelegationToken", "RenewDelegationToken", "ExpireDelegationToken",
    "DescribeDelegationToken",  # delegation tokens are not implemented
    "UnregisterBroker", "AddRaftVoter", "RemoveRaftVoter",  # KRaft administration of a quorum
    "InitializeShareGroupState", "ReadShareGroupState", "WriteShareGroupState",
    "DeleteShareGroupState", "ReadShareGroupStateSummary",  # broker to share coordinator
    "StreamsGroupHeartbeat", "StreamsGroupDescribe",  # KIP-1071 streams groups
}
LONG_MAX = 9223372036854775807
SARAMA_SOURCE = Path("/usr/share/gocode/src/github.com/Shopify/sarama")


def release_table(name: str) -> dict[str, tuple[int, int]]:
    with open(SPECS_DIR / "releases.json", encoding="utf-8") as f:
        table = json.load(f)["releases"][name]
    return {api: (low, high) for api, (low, high) in table.items() if api not in NOT_SERVED}


def by_name(ranges: dict[int, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    names = {key: name for name, key in messages.API_KEYS.items()}
    return {names[key]: value for key, value in ranges.items()}


@pytest.mark.parametrize("release", versions.release_names())
def test_every_release_advertises_its_table_within_what_kbroker_serves(release):
    advertised = api_versions(versions.release(release)).advertised
    assert by_name(advertised) == release_table(release)


@pytest.mark.parametrize("release", versions.release_names())
def test_every_release_range_is_within_the_specs(release):
    """The table names only APIs the specs describe, within the versions they describe (the
    removed versions included, restored for the APIs kbroker serves); before 4.0 every API
    started at v0."""
    from kbroker.protocol import specs

    by_api = {spec["name"]: spec["request"]["valid_versions"] for spec in specs.api_specs().values()}
    for api, (low, high) in versions.release(release).api_versions.items():
        assert api in by_api
        if api in NOT_SERVED:
            continue
        assert by_api[api][0] <= low <= high <= by_api[api][1], api
        assert low == 0 or versions.release(release).number >= (4, 0), api


def test_the_releases_are_2_1_to_4_2():
    names = versions.release_names()
    assert names[0] == "2.1" and names[-1] == "4.2" and "2.8" in names and "3.9" in names


def test_old_releases_serve_the_removed_versions_and_4_x_refuses_them():
    old, new = api_versions(versions.release("2.8")), api_versions(versions.release("4.0"))
    produce, fetch = messages.API_KEYS["Produce"], messages.API_KEYS["Fetch"]
    assert old.served[produce] == (0, 9) and old.served[fetch] == (0, 12)
    # Kafka 4.x advertises Produce from v0 for old librdkafka (KAFKA-18659) but refuses v0-v2.
    assert new.advertised[produce] == (0, 12) and new.served[produce] == (3, 12)
    assert new.served[fetch] == (4, 17)


@pytest.fixture(scope="module")
def broker_28(tmp_path_factory):
    with running_broker("--as-version", "2.8", data_dir=tmp_path_factory.mktemp("as-2.8")) as started:
        yield started


def test_api_versions_of_2_8_is_its_table_exactly_and_names_no_features(broker_28):
    with WireClient(broker_28.bootstrap) as wire:
        response = wire.request("ApiVersions", 3, client_software_name="wire",
                                client_software_version="1")
    assert response.error_code == ErrorCode.NONE
    advertised = {key.api_key: (key.min_version, key.max_version) for key in response.api_keys}
    assert by_name(advertised) == release_table("2.8")
    assert "DescribeTopicPartitions" not in by_name(advertised)  # came with 3.7's KRaft brokers
    assert response.supported_features == [] and response.finalized_features == []


def test_an_api_versions_request_newer_than_the_release_gets_its_range(tmp_path):
    body = messages.ApiVersionsRequest(client_software_name="wire", client_software_version="1")
    with running_broker("--as-version", "2.1", data_dir=tmp_path) as broker, \
            WireClient(broker.bootstrap) as wire:
        wire.send_raw(codec.encode_request(messages.API_KEYS["ApiVersions"], 3, 1, "wire", body))
        _, response = codec.decode_response(messages.API_KEYS["ApiVersions"], 0, wire.receive_frame())
    assert response.error_code == ErrorCode.UNSUPPORTED_VERSION
    assert [(k.api_key, k.min_version, k.max_version) for k in response.api_keys] == [(18, 0, 2)]


def produce_and_consume(bootstrap: str, api_version: tuple, topic: str, compression: str | None,
                        group: str | None) -> list:
    producer = KafkaProducer(bootstrap_servers=bootstrap, api_version=api_version,
                             compression_type=compression)
    for i in range(5):
        producer.send(topic, key=b"k%d" % i, value=b"v%d" % i).get(10)
    producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, api_version=api_version,
                             group_id=group, auto_offset_reset="earliest", consumer_timeout_ms=3000)
    try:
        records = [(r.offset, r.key, r.value, r.timestamp) for r in consumer]
        if group:
            consumer.commit()
    finally:
        consumer.close()
    return records


@pytest.mark.parametrize("api_version, compression, magic", [
    ((0, 8, 1), None, 0),  # Produce v0, Fetch v0, ListOffsets v0, OffsetCommit/OffsetFetch v0
    ((0, 8, 2), "snappy", 0),  # OffsetCommit v1 to the group coordinator
    ((0, 9), "gzip", 0),  # Produce v1, Fetch v1, JoinGroup v0
    ((0, 10, 1), "lz4", 1),  # Produce v2, Fetch v3, message format v1 with timestamps
])
def test_old_kafka_python_produces_and_consumes(broker_28, topic_name, api_version, compression, magic):
    started = int(time.time() * 1000)
    group = f"g-{topic_name}"
    records = produce_and_consume(broker_28.bootstrap, api_version, topic_name, compression, group)
    assert [(offset, key, value) for offset, key, value, _ in records] == [
        (i, b"k%d" % i, b"v%d" % i) for i in range(5)]
    if magic == 1:
        assert all(started - 1000 <= timestamp <= started + 60_000 for *_, timestamp in records)
    else:
        assert {timestamp for *_, timestamp in records} <= {None, -1}
    stored = broker_28.records(topic_name)  # up-converted: a modern reader sees the same records
    assert [(r.offset, r.key, r.value) for r in stored] == [(i, b"k%d" % i, b"v%d" % i) for i in range(5)]
    consumer = KafkaConsumer(bootstrap_servers=broker_28.bootstrap, api_version=api_version,
                             group_id=group, enable_auto_commit=False)
    try:
        assert consumer.committed(TopicPartition(topic_name, 0)) == 5
    finally:
        consumer.close()


def test_records_with_headers_reach_an_old_consumer_without_them(broker_28, topic_name):
    producer = KafkaProducer(bootstrap_servers=broker_28.bootstrap)  # a current client: v2 batches
    producer.send(topic_name, value=b"with headers", headers=[("h", b"1")]).get(10)
    producer.close()
    consumer = KafkaConsumer(topic_name, bootstrap_servers=broker_28.bootstrap, api_version=(0, 10, 1),
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    try:
        assert [(r.value, list(r.headers or [])) for r in consumer] == [(b"with headers", [])]
    finally:
        consumer.close()


def test_list_offsets_v0_answers_old_style_offsets(broker_28, topic_name):
    broker_28.create_topic(topic_name)
    request = messages.ListOffsetsRequest
    with WireClient(broker_28.bootstrap) as wire:
        batch = build_batch([Record(value=b"x")] * 3)
        produced = wire.request("Produce", 3, transactional_id=None, acks=1, timeout_ms=5000, topic_data=[
            messages.ProduceRequest.TopicProduceData(name=topic_name, partition_data=[
                messages.ProduceRequest.PartitionProduceData(index=0, records=batch)])])
        assert produced.responses[0].partition_responses[0].error_code == ErrorCode.NONE
        response = wire.request("ListOffsets", 0, replica_id=-1, topics=[request.ListOffsetsTopic(
            name=topic_name, partitions=[
                request.ListOffsetsPartition(partition_index=0, timestamp=-1, max_num_offsets=1),
                request.ListOffsetsPartition(partition_index=0, timestamp=-2, max_num_offsets=1)])])
    (topic,) = response.topics
    assert [(p.error_code, p.old_style_offsets) for p in topic.partitions] == [
        (ErrorCode.NONE, [3]), (ErrorCode.NONE, [0])]


def describe_broker_configs(bootstrap: str, version: int) -> dict:
    request = messages.DescribeConfigsRequest
    with WireClient(bootstrap) as wire:
        response = wire.request("DescribeConfigs", version, resources=[request.DescribeConfigsResource(
            resource_type=4, resource_name="1", configuration_keys=None)])
    (result,) = response.results
    assert result.error_code == ErrorCode.NONE
    return {entry.name: entry for entry in result.configs}


def test_describe_configs_shows_the_release_defaults(broker_28, broker):
    old = describe_broker_configs(broker_28.bootstrap, 0)["log.message.timestamp.after.max.ms"]
    assert (old.value, old.is_default) == (str(LONG_MAX), True)  # v0 says is_default
    latest = describe_broker_configs(broker.bootstrap, 4)["log.message.timestamp.after.max.ms"]
    assert latest.value == "3600000"


def test_a_far_future_timestamp_is_accepted_as_before_4_0(broker_28, broker, topic_name):
    """KIP-1030 made Kafka 4.0 refuse CreateTime more than an hour ahead; 2.8 took any."""
    future = int(time.time() * 1000) + 2 * 3600 * 1000
    for target, expected in ((broker_28, ErrorCode.NONE), (broker, ErrorCode.INVALID_TIMESTAMP)):
        with WireClient(target.bootstrap) as wire:
            wire.request("Metadata", 4, topics=[messages.MetadataRequest.MetadataRequestTopic(
                name=topic_name)], allow_auto_topic_creation=True)
            response = wire.request("Produce", 3, transactional_id=None, acks=1, timeout_ms=5000, topic_data=[
                messages.ProduceRequest.TopicProduceData(name=topic_name, partition_data=[
                    messages.ProduceRequest.PartitionProduceData(
                        index=0, records=build_batch([Record(timestamp=future, value=b"x")]))])])
        assert response.responses[0].partition_responses[0].error_code == expected


@pytest.mark.parametrize("as_version", [None, "4.0"])
def test_latest_and_4_x_brokers_still_refuse_produce_v2(tmp_path, as_version):
    args = ("--as-version", as_version) if as_version else ()
    with running_broker(*args, data_dir=tmp_path) as broker, WireClient(broker.bootstrap) as wire:
        response = wire.request("ApiVersions", 3, client_software_name="wire", client_software_version="1")
        produce = next(k for k in response.api_keys if k.api_key == messages.API_KEYS["Produce"])
        assert produce.min_version == (0 if as_version else 3)
        body = messages.ProduceRequest(acks=1, timeout_ms=1000, topic_data=[])
        wire.send_raw(codec.encode_request(messages.API_KEYS["Produce"], 2, 7, "wire", body))
        assert wire.is_closed_by_peer()


def test_an_unknown_release_stops_the_start_with_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "kbroker", "serve", "--port", "0", "--data-dir",
                           str(tmp_path), "--as-version", "1.0"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"kbroker: --as-version 1.0: not a Kafka release kbroker can act as; supported: "
        f"{', '.join(versions.release_names())}"]


def test_pykafka_produces_and_consumes_in_a_balanced_group(broker_28, topic_name):
    """pykafka 2.8 speaks Produce v0, Fetch v2, ListOffsets v0, JoinGroup v0, OffsetCommit v1."""
    from pykafka import KafkaClient

    client = KafkaClient(hosts=broker_28.bootstrap, broker_version="0.10.0")
    topic = client.topics[topic_name]
    with topic.get_sync_producer() as producer:
        for i in range(3):
            producer.produce(b"m%d" % i, partition_key=b"k%d" % i)
    consumer = topic.get_balanced_consumer(consumer_group=b"g-" + topic_name.encode(),
                                           auto_offset_reset=-2, consumer_timeout_ms=5000, managed=True)
    try:
        assert [(m.offset, m.partition_key, m.value) for m in consumer] == [
            (i, b"k%d" % i, b"m%d" % i) for i in range(3)]
        consumer.commit_offsets()
    finally:
        consumer.stop()
    assert [r.value for r in broker_28.records(topic_name)] == [b"m0", b"m1", b"m2"]


@pytest.fixture(scope="module")
def old_sarama(tmp_path_factory) -> Path:
    """tests/sarama_old built with Debian's sarama (skipped where Go or sarama is missing)."""
    if shutil.which("go") is None or not SARAMA_SOURCE.is_dir():
        pytest.skip("needs Go and Debian's golang-github-shopify-sarama-dev")
    binary = tmp_path_factory.mktemp("sarama") / "sarama-old"
    subprocess.run(["go", "build", "-o", str(binary), "main.go"], cwd=Path(__file__).parent / "sarama_old",
                   env={**os.environ, "GO111MODULE": "off", "GOPATH": "/usr/share/gocode"},
                   check=True, capture_output=True, timeout=600)
    return binary


@pytest.mark.parametrize("sarama_version, timestamps", [
    ("0.8.2.0", False),  # Produce v0, Fetch v0, ListOffsets v0
    ("0.9.0.0", False),  # Produce v1, Fetch v1
    ("0.10.0.0", True),  # Produce v2 (message format v1), Fetch v2
    ("0.10.2.0", True),  # Fetch v3, ListOffsets v1
])
def test_sarama_with_an_old_version_produces_and_consumes(broker_28, old_sarama, topic_name,
                                                          sarama_version, timestamps):
    broker_28.create_topic(topic_name)
    started = int(time.time() * 1000)
    done = subprocess.run([str(old_sarama), broker_28.bootstrap, topic_name, sarama_version],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout)
    assert [(r["offset"], r["key"], r["value"]) for r in records] == [(i, f"k{i}", f"v{i}") for i in range(3)]
    assert all(started - 1000 <= r["timestamp"] <= started + 60_000 for r in records) == timestamps


def removed_versions() -> list[tuple[str, int]]:
    from kbroker.protocol import specs

    return [(spec["name"], version) for spec in specs.api_specs().values()
            if spec["request"].get("removed_versions") and spec["name"] not in NOT_SERVED
            for version in range(spec["request"]["removed_versions"][0],
                                 spec["request"]["removed_versions"][1] + 1)]


@pytest.mark.parametrize("api, version", removed_versions())
def test_every_removed_version_is_answered_as_2_8(broker_28, api, version):
    fields = {"acks": 1} if api == "Produce" else {}
    with WireClient(broker_28.bootstrap) as wire:
        response = wire.request(api, version, **fields)
    assert type(response).__name__ == f"{api}Response"


def test_an_embedded_broker_acts_as_a_release_too():
    from kbroker.testing import embedded_broker

    with embedded_broker(as_version="2.8") as embedded:
        producer = KafkaProducer(bootstrap_servers=embedded.bootstrap, api_version=(0, 10, 1))
        producer.send("embedded-old", b"v1 message").get(10)
        producer.close()
        assert [r.value for r in embedded.records("embedded-old")] == [b"v1 message"]
    with pytest.raises(ValueError, match="supported: 2.1"):
        with embedded_broker(as_version="9.9"):
            pass


def test_offset_commit_v1_commit_timestamps_age_the_offsets(tmp_path, topic_name):
    """v1 may date a commit (Kafka 2.8 kept it as the commit timestamp); offsets of a group
    without members expire offsets.retention.minutes after it, so an old date expires at once."""
    request = messages.OffsetCommitRequest
    old = int(time.time() * 1000) - 10 * 60_000
    with running_broker("--as-version", "2.8", "--override", "offsets.retention.minutes=1",
                        "--override", "offsets.retention.check.interval.ms=200",
                        data_dir=tmp_path) as broker, WireClient(broker.bootstrap) as wire:
        broker.create_topic(topic_name, partitions=2)
        response = wire.request("OffsetCommit", 1, group_id="dated", generation_id_or_member_epoch=-1,
                                member_id="", topics=[request.OffsetCommitRequestTopic(name=topic_name, partitions=[
                                    request.OffsetCommitRequestPartition(partition_index=0, committed_offset=5,
                                                                         commit_timestamp=old),
                                    request.OffsetCommitRequestPartition(partition_index=1, committed_offset=7)])])
        assert [p.error_code for p in response.topics[0].partitions] == [ErrorCode.NONE] * 2
        fetch = messages.OffsetFetchRequest
        deadline = time.monotonic() + 10
        while True:
            fetched = wire.request("OffsetFetch", 1, group_id="dated", topics=[
                fetch.OffsetFetchRequestTopic(name=topic_name, partition_indexes=[0, 1])])
            offsets = [p.committed_offset for p in fetched.topics[0].partitions]
            if offsets[0] == -1 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert offsets == [-1, 7]


def test_a_corrupt_message_set_is_answered_corrupt_message(broker_28, topic_name):
    from tests.test_message_formats import message

    payload = bytearray(message(1, b"k", b"v"))
    payload[-1] ^= 1  # the CRC no longer matches
    broker_28.create_topic(topic_name)
    request = messages.ProduceRequest
    with WireClient(broker_28.bootstrap) as wire:
        response = wire.request("Produce", 2, acks=1, timeout_ms=5000, topic_data=[
            request.TopicProduceData(name=topic_name, partition_data=[
                request.PartitionProduceData(index=0, records=bytes(payload))])])
        (partition,) = response.responses[0].partition_responses
        assert partition.error_code == ErrorCode.CORRUPT_MESSAGE
        assert wire.request("Metadata", 0, topics=[]).topics  # the connection stays usable
    assert broker_28.records(topic_name) == []


@pytest.mark.parametrize("codec, api_version", [("gzip", (0, 9)), ("snappy", (0, 10, 1)),
                                                ("lz4", (0, 8, 2))])
def test_an_old_consumer_reads_a_compressed_batch_from_its_middle(broker_28, topic_name, codec,
                                                                  api_version):
    """Down-converted as one wrapper message (format v0 for Fetch v0-1, v1 with relative inner
    offsets for v2-3); the consumer skips the records before its position."""
    producer = KafkaProducer(bootstrap_servers=broker_28.bootstrap, compression_type=codec, linger_ms=200)
    for i in range(5):
        producer.send(topic_name, value=b"v%d" % i)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=broker_28.bootstrap, api_version=api_version,
                             consumer_timeout_ms=2000)
    try:
        partition = TopicPartition(topic_name, 0)
        consumer.assign([partition])
        consumer.seek(partition, 2)
        assert [(r.offset, r.value) for r in consumer] == [(2, b"v2"), (3, b"v3"), (4, b"v4")]
    finally:
        consumer.close()
