"""Bad input gets Kafka's error code or a closed connection; the broker and the log carry on."""

from __future__ import annotations

import struct
import time

import pytest

from kbroker.protocol import codec, messages
from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.records import Record, build_batch
from kbroker.testing import running_broker
from tests.wire import WireClient

PRODUCE_VERSION = 9


@pytest.fixture(scope="module")
def strict_broker(tmp_path_factory):
    """Small limits so that limit errors are cheap to provoke."""
    with running_broker(
        "--override", "message.max.bytes=2000",
        "--override", "socket.request.max.bytes=100000",
        "--override", "log.message.timestamp.before.max.ms=3600000",
        data_dir=tmp_path_factory.mktemp("strict"),
    ) as started:
        yield started


def _produce(client: WireClient, topic: str, records, acks: int = -1):
    request = messages.ProduceRequest
    response = client.request(
        "Produce", PRODUCE_VERSION, acks=acks, timeout_ms=5000,
        topic_data=[request.TopicProduceData(name=topic, partition_data=[
            request.PartitionProduceData(index=0, records=records)])],
    )
    return response.responses[0].partition_responses[0]


def _latest_offset(client: WireClient, topic: str) -> int:
    request = messages.ListOffsetsRequest
    response = client.request("ListOffsets", 7, replica_id=-1, topics=[
        request.ListOffsetsTopic(name=topic, partitions=[
            request.ListOffsetsPartition(partition_index=0, timestamp=-1)])])
    partition = response.topics[0].partitions[0]
    assert partition.error_code == ErrorCode.NONE
    return partition.offset


def _create(client: WireClient, topic: str) -> None:
    response = client.request("Metadata", 12, topics=[
        messages.MetadataRequest.MetadataRequestTopic(name=topic)], allow_auto_topic_creation=True)
    assert response.topics[0].error_code == ErrorCode.NONE


def _now_batch(count: int = 3, value: bytes = b"v") -> bytearray:
    now = int(time.time() * 1000)
    return bytearray(build_batch([Record(timestamp=now, key=b"k", value=value)] * count))


def test_metadata_invalid_topic_name(strict_broker):
    with WireClient(strict_broker.bootstrap) as client:
        for name in ["bad name!", "a" * 250, ".."]:
            response = client.request("Metadata", 12, topics=[
                messages.MetadataRequest.MetadataRequestTopic(name=name)],
                allow_auto_topic_creation=True)
            assert response.topics[0].error_code == ErrorCode.INVALID_TOPIC_EXCEPTION, name


def test_metadata_unknown_topic_without_auto_create(strict_broker):
    with WireClient(strict_broker.bootstrap) as client:
        response = client.request("Metadata", 12, topics=[
            messages.MetadataRequest.MetadataRequestTopic(name="never-created")],
            allow_auto_topic_creation=False)
        assert response.topics[0].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def test_batch_errors_leave_the_log_untouched(strict_broker):
    topic = "bad-batches"
    with WireClient(strict_broker.bootstrap) as client:
        _create(client, topic)
        assert _produce(client, topic, bytes(_now_batch())).error_code == ErrorCode.NONE

        flipped = _now_batch()
        flipped[-1] ^= 0xFF  # inside the CRC-covered records
        assert _produce(client, topic, bytes(flipped)).error_code == ErrorCode.CORRUPT_MESSAGE

        too_large = bytes(_now_batch(1, value=b"x" * 3000))
        assert _produce(client, topic, too_large).error_code == ErrorCode.MESSAGE_TOO_LARGE

        old = bytes(build_batch([Record(timestamp=1_000, key=b"k", value=b"old")]))
        assert _produce(client, topic, old).error_code == ErrorCode.INVALID_TIMESTAMP

        miscounted = _now_batch(2)
        struct.pack_into(">i", miscounted, 57, 5)  # recordsCount no longer lastOffsetDelta + 1
        from kbroker.protocol.records import compute_crc

        struct.pack_into(">I", miscounted, 17, compute_crc(miscounted))
        assert _produce(client, topic, bytes(miscounted)).error_code == ErrorCode.INVALID_RECORD

        # Kafka's batch iterator drops an incomplete batch, leaving none: INVALID_RECORD.
        truncated = bytes(_now_batch())[:-5]
        assert _produce(client, topic, truncated).error_code == ErrorCode.INVALID_RECORD

        control = bytes(build_batch([Record(timestamp=int(time.time() * 1000), key=b"\0\0\0\1",
                                            value=b"\0\0\0\0\0\0")], control=True))
        assert _produce(client, topic, control).error_code == ErrorCode.INVALID_RECORD

        unknown = _produce(client, "no-such-topic-here", bytes(_now_batch()))
        assert unknown.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION

        assert _latest_offset(client, topic) == 3
        assert _produce(client, topic, bytes(_now_batch())).base_offset == 3


def test_records_out_of_range_are_named(strict_broker):
    """A record older than message.timestamp.before.max.ms is refused even when it is not the
    batch's first (whose timestamp is the header's base), and Produce v8+ names it (KIP-467
    RecordErrors). librdkafka uses the names for INVALID_RECORD only: here the batch fails. The
    linger outlasts the produce calls even on a loaded machine, and flush sends at once: one batch."""
    from confluent_kafka import Producer

    now = int(time.time() * 1000)
    producer = Producer({"bootstrap.servers": strict_broker.bootstrap, "linger.ms": 10_000})
    reports = {}
    for index, timestamp in enumerate((now, now - 2 * 3_600_000, now)):
        producer.produce("timestamps", b"v", partition=0, timestamp=timestamp,
                         on_delivery=lambda err, msg, index=index: reports.__setitem__(index, err))
    assert producer.flush(15) == 0
    assert {index: err.code() if err else None for index, err in reports.items()} == {
        0: ErrorCode.INVALID_TIMESTAMP, 1: ErrorCode.INVALID_TIMESTAMP, 2: ErrorCode.INVALID_TIMESTAMP}
    with WireClient(strict_broker.bootstrap) as client:
        batch = build_batch([Record(timestamp=ts, key=b"k", value=b"v") for ts in (now, 1_000)])
        answer = _produce(client, "timestamps", bytes(batch))
        assert [error.batch_index for error in answer.record_errors] == [1]
        assert answer.record_errors[0].batch_index_error_message.startswith(
            "Timestamp 1000 of message with offset 1 is out of range.")


@pytest.mark.parametrize("junk", [
    b"\x00\x00\x00\x02ab",  # a frame too short to hold a header
    b"\x7f\xff\xff\xff",  # a size over socket.request.max.bytes
    struct.pack(">ihhi", 8, 999, 0, 1),  # an unknown api key
    struct.pack(">ihhi", 8, 0, 99, 1),  # Produce at a version nobody serves
    b"\x00\x00\x00\x10" + bytes(range(16)),  # garbage
])
def test_bad_frames_close_only_their_connection(strict_broker, junk):
    with WireClient(strict_broker.bootstrap) as bystander, \
            WireClient(strict_broker.bootstrap) as offender:
        assert bystander.request("ApiVersions", 3, client_software_name="t",
                                 client_software_version="1").error_code == ErrorCode.NONE
        offender.send_raw(junk)
        assert offender.is_closed_by_peer()
        again = bystander.request("Metadata", 12, topics=[])
        assert again.brokers[0].port == strict_broker.port


def test_truncated_frame_then_hang_up(strict_broker):
    with WireClient(strict_broker.bootstrap) as offender:
        offender.send_raw(struct.pack(">i", 500) + b"only part of it")
    with WireClient(strict_broker.bootstrap) as client:
        assert client.request("Metadata", 12, topics=[]).brokers


def test_too_new_api_versions_is_answered_in_v0(strict_broker):
    with WireClient(strict_broker.bootstrap) as client:
        api_key = messages.API_KEYS["ApiVersions"]
        # A v99 request: header v2 with an empty body, as a future client would send it.
        header = struct.pack(">hhih", api_key, 99, 7, 4) + b"test" + b"\x00"
        client.send_raw(struct.pack(">i", len(header) + 1) + header + b"\x00")
        correlation_id, body = codec.decode_response(api_key, 0, client.receive_frame())
        assert correlation_id == 7
        assert body.error_code == ErrorCode.UNSUPPORTED_VERSION
        assert [(k.api_key, k.min_version, k.max_version) for k in body.api_keys] == [(18, 0, 5)]


def test_acks_zero_failure_closes_the_connection(strict_broker):
    with WireClient(strict_broker.bootstrap) as client:
        api_key = messages.API_KEYS["Produce"]
        request = messages.ProduceRequest(acks=0, timeout_ms=1000, topic_data=[
            messages.ProduceRequest.TopicProduceData(name="no-such-topic-acks0", partition_data=[
                messages.ProduceRequest.PartitionProduceData(index=0, records=bytes(_now_batch()))])])
        client.send_raw(codec.encode_request(api_key, PRODUCE_VERSION, 1, "t", request))
        assert client.is_closed_by_peer()


def test_invalid_client_software_name_is_an_invalid_request(strict_broker):
    with WireClient(strict_broker.bootstrap) as client:
        response = client.request("ApiVersions", 3, client_software_name="bad name",
                                  client_software_version="1.0")
        assert response.error_code == ErrorCode.INVALID_REQUEST


def test_fetch_without_data_answers_empty_records_not_null(strict_broker):
    """librdkafka rejects a null records field, so Kafka always sends empty records."""
    with WireClient(strict_broker.bootstrap) as client:
        _create(client, "empty-fetch")
        request = messages.FetchRequest
        response = client.request("Fetch", 12, replica_id=-1, max_wait_ms=0, min_bytes=1,
                                  max_bytes=1 << 20, session_epoch=-1, topics=[
                                      request.FetchTopic(topic="empty-fetch", partitions=[
                                          request.FetchPartition(partition=0, fetch_offset=0,
                                                                 partition_max_bytes=1 << 20)])])
        [partition] = response.responses[0].partitions
        assert partition.error_code == ErrorCode.NONE
        assert partition.records is not None and bytes(partition.records) == b""
