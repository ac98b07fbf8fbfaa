"""Exact bytes: hand-assembled frames, frames captured from kafka-python, and a byte-for-byte
cross-check against kafka-python's own encoder for every message both sides know."""

from __future__ import annotations

import importlib
import pkgutil
import socket
import struct
import threading
import uuid
import warnings

import pytest

from kbroker.protocol import codec, messages
from kbroker.protocol.codec import (
    decode_request, decode_request_header, decode_response, encode_request, encode_response,
)
from tests.test_protocol_roundtrip import all_versions, sample_struct

ApiVersionsRequest = messages.ApiVersionsRequest
ApiVersionsResponse = messages.ApiVersionsResponse
MetadataRequest = messages.MetadataRequest


def i16(v): return struct.pack(">h", v)  # noqa: E704
def i32(v): return struct.pack(">i", v)  # noqa: E704
def i64(v): return struct.pack(">q", v)  # noqa: E704
def framed(body: bytes) -> bytes: return i32(len(body)) + body  # noqa: E704


def decode_frame(frame: bytes):
    header, offset = decode_request_header(frame[4:])
    return header, decode_request(header, frame[4:], offset)


def response_frame(api_key, version, correlation_id, body) -> bytes:
    return b"".join(bytes(p) for p in encode_response(api_key, version, correlation_id, body))


# -- hand-assembled frames -----------------------------------------------------------------

def test_api_versions_v0_request():
    expected = framed(i16(18) + i16(0) + i32(7) + i16(3) + b"cli")  # header v1, empty body
    assert encode_request(18, 0, 7, "cli", ApiVersionsRequest()) == expected
    header, body = decode_frame(expected)
    assert (header.api_key, header.api_version, header.correlation_id, header.client_id) == (18, 0, 7, "cli")
    assert body == ApiVersionsRequest()


def test_api_versions_v3_request():
    # Header v2: client_id keeps its int16 length, then an empty tagged section.
    header = i16(18) + i16(3) + i32(8) + i16(3) + b"cli" + b"\x00"
    body = b"\x03kp" + b"\x041.0" + b"\x00"  # compact strings (N+1), tagged section
    expected = framed(header + body)
    request = ApiVersionsRequest(client_software_name="kp", client_software_version="1.0")
    assert encode_request(18, 3, 8, "cli", request) == expected
    assert decode_frame(expected)[1] == request


def test_api_versions_v0_response():
    response = ApiVersionsResponse(
        error_code=0, api_keys=[ApiVersionsResponse.ApiVersion(api_key=0, min_version=3, max_version=11)]
    )
    expected = framed(i32(5) + i16(0) + i32(1) + i16(0) + i16(3) + i16(11))
    assert response_frame(18, 0, 5, response) == expected
    assert decode_response(18, 0, expected[4:]) == (5, response)


def test_api_versions_v3_response_uses_header_v0():
    response = ApiVersionsResponse(
        error_code=0, throttle_time_ms=1,
        api_keys=[ApiVersionsResponse.ApiVersion(api_key=18, min_version=0, max_version=4)],
        finalized_features_epoch=5, zk_migration_ready=True,
    )
    expected = framed(
        i32(9)  # response header v0: no tagged section even though v3 is flexible
        + i16(0)
        + b"\x02" + i16(18) + i16(0) + i16(4) + b"\x00"  # compact array of one, element tags
        + i32(1)
        + b"\x02"  # two tagged fields, ascending tags
        + b"\x01\x08" + i64(5)  # tag 1 FinalizedFeaturesEpoch, 8 bytes
        + b"\x03\x01\x01"  # tag 3 ZkMigrationReady = true
    )
    assert response_frame(18, 3, 9, response) == expected
    assert decode_response(18, 3, expected[4:]) == (9, response)


def test_tagged_field_equal_to_default_is_not_written():
    response = ApiVersionsResponse(finalized_features_epoch=-1, zk_migration_ready=False)
    assert response_frame(18, 3, 1, response) == framed(i32(1) + i16(0) + b"\x01" + i32(0) + b"\x00")


def test_flexible_response_header_v1():
    frame = response_frame(22, 2, 3, messages.InitProducerIdResponse(producer_id=7, producer_epoch=1))
    assert frame == framed(i32(3) + b"\x00" + i32(0) + i16(0) + i64(7) + i16(1) + b"\x00")  # v2 is flexible


TOPIC_ID = uuid.UUID("01234567-89ab-cdef-0123-456789abcdef")


def metadata_v12_frame(topic_tags: bytes = b"\x00", body_tags: bytes = b"\x00") -> bytes:
    header = i16(3) + i16(12) + i32(11) + i16(1) + b"c" + b"\x00"
    topic = TOPIC_ID.bytes + b"\x06topic" + topic_tags
    body = b"\x02" + topic + b"\x01" + b"\x00" + body_tags  # 1 topic; auto-create; no authz ops
    return framed(header + body)


def test_metadata_v12_request():
    request = MetadataRequest(
        topics=[MetadataRequest.MetadataRequestTopic(topic_id=TOPIC_ID, name="topic")],
        allow_auto_topic_creation=True, include_topic_authorized_operations=False,
    )
    assert encode_request(3, 12, 11, "c", request) == metadata_v12_frame()
    assert decode_frame(metadata_v12_frame())[1] == request


def test_unknown_tags_are_skipped():
    unknown = b"\x02" + b"\x07\x03xyz" + b"\x1f\x00"  # tag 7 (3 bytes) and tag 31 (empty)
    frame = metadata_v12_frame(topic_tags=unknown, body_tags=unknown)
    _, request = decode_frame(frame)
    assert request.topics[0].name == "topic"
    # Re-encoding drops what we do not know.
    assert encode_request(3, 12, 11, "c", request) == metadata_v12_frame()


def test_header_tagged_section_is_read():
    frame = framed(i16(18) + i16(3) + i32(1) + i16(-1) + b"\x01\x05\x02ab" + b"\x01\x01\x00")
    header, offset = decode_request_header(frame[4:])
    assert header.client_id is None
    assert offset == 4 + 2 + 4 + 5
    assert decode_request(header, frame[4:], offset) == ApiVersionsRequest()


# -- frames captured from kafka-python 3.0.12 (KafkaConsumer.topics() against a stub server) --

KAFKA_PYTHON_API_VERSIONS_V4 = bytes.fromhex(
    "00120004000000010006676f6c64656e000d6b61666b612d707974686f6e07332e302e313200"
)
KAFKA_PYTHON_METADATA_V12_ALL_TOPICS = bytes.fromhex("0003000c000000020006676f6c64656e0000010000")
KAFKA_PYTHON_METADATA_V12_NO_TOPICS = bytes.fromhex("0003000c000000020006676f6c64656e0001010000")


def test_kafka_python_golden_frames():
    header, request = decode_frame(framed(KAFKA_PYTHON_API_VERSIONS_V4))
    assert (header.api_key, header.api_version, header.correlation_id, header.client_id) == (18, 4, 1, "golden")
    assert request == ApiVersionsRequest(client_software_name="kafka-python", client_software_version="3.0.12")
    assert encode_request(18, 4, 1, "golden", request)[4:] == KAFKA_PYTHON_API_VERSIONS_V4

    header, request = decode_frame(framed(KAFKA_PYTHON_METADATA_V12_ALL_TOPICS))
    assert (header.api_key, header.api_version) == (3, 12)
    assert request == MetadataRequest(topics=None, allow_auto_topic_creation=True)
    assert encode_request(3, 12, 2, "golden", request)[4:] == KAFKA_PYTHON_METADATA_V12_ALL_TOPICS

    _, request = decode_frame(framed(KAFKA_PYTHON_METADATA_V12_NO_TOPICS))
    assert request.topics == []


# -- frames captured from confluent-kafka 2.16.1 / librdkafka 2.16.0 (AdminClient.list_topics) --

LIBRDKAFKA_API_VERSIONS_V3 = bytes.fromhex(
    "00120003000000010006676f6c64656e0017636f6e666c75656e742d6b61666b612d707974686f6e"
    "16322e31362e312d72646b61666b612d322e31362e3000"
)
# Three bytes follow the body's tagged section; the Java broker ignores them, so do we.
LIBRDKAFKA_METADATA_V12_PADDED = bytes.fromhex("0003000c000000030006676f6c64656e0000000000010000")


def test_librdkafka_golden_frames():
    header, request = decode_frame(framed(LIBRDKAFKA_API_VERSIONS_V3))
    assert (header.api_key, header.api_version, header.client_id) == (18, 3, "golden")
    assert request == ApiVersionsRequest(
        client_software_name="confluent-kafka-python", client_software_version="2.16.1-rdkafka-2.16.0"
    )
    header, request = decode_frame(framed(LIBRDKAFKA_METADATA_V12_PADDED))
    assert (header.api_key, header.api_version, header.correlation_id) == (3, 12, 3)
    assert request == MetadataRequest(topics=None, allow_auto_topic_creation=False)


class StubBroker:
    """A thread-per-connection socket server answering ApiVersions and Metadata with our codec."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.frames: list[bytes] = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        with conn, conn.makefile("rb") as stream:
            while (size := stream.read(4)) and len(size) == 4:
                frame = stream.read(int.from_bytes(size, "big"))
                self.frames.append(frame)
                header, offset = decode_request_header(frame)
                decode_request(header, frame, offset)
                conn.sendall(response_frame(
                    header.api_key, header.api_version, header.correlation_id, self.answer(header.api_key)
                ))

    def answer(self, api_key):
        if api_key == 18:
            # Metadata is offered up to v12, the version the golden frames above were captured at.
            return ApiVersionsResponse(api_keys=[
                ApiVersionsResponse.ApiVersion(api_key=k, min_version=i.min_version,
                                               max_version=min(i.max_version, 12) if k == 3 else i.max_version)
                for k, i in messages.API_INFO.items()
            ])
        assert api_key == 3
        M = messages.MetadataResponse
        return M(
            brokers=[M.MetadataResponseBroker(node_id=0, host="127.0.0.1", port=self.port)],
            cluster_id="golden", controller_id=0,
            topics=[M.MetadataResponseTopic(name="t", topic_id=TOPIC_ID, partitions=[
                M.MetadataResponsePartition(partition_index=0, leader_id=0, replica_nodes=[0], isr_nodes=[0]),
            ])],
        )


def test_kafka_python_live_capture():
    kafka = pytest.importorskip("kafka")
    stub = StubBroker()
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=f"127.0.0.1:{stub.port}", client_id="golden", request_timeout_ms=5000
    )
    try:
        assert consumer.topics() == {"t"}  # kafka-python understood our ApiVersions v4 and Metadata v12
        assert consumer.partitions_for_topic("t") == {0}
    finally:
        consumer.close()
        stub.sock.close()
    assert stub.frames[0] == KAFKA_PYTHON_API_VERSIONS_V4
    assert KAFKA_PYTHON_METADATA_V12_NO_TOPICS in stub.frames or KAFKA_PYTHON_METADATA_V12_ALL_TOPICS in stub.frames


# -- byte-for-byte agreement with kafka-python's own schema-driven encoder -----------------

def kafka_python_classes() -> dict:
    """kafka-python's message classes by name (its loader uses deprecated importlib.resources calls)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import kafka.protocol as kp
            from kafka.protocol.api_message import ApiMessage
        except ImportError:
            return {}
        for module in pkgutil.walk_packages(kp.__path__, "kafka.protocol."):
            if ".old" not in module.name and "generate" not in module.name:
                importlib.import_module(module.name)
    found, todo = {}, [ApiMessage]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if getattr(cls, "_class_version", 1) is None:  # the primary (unversioned) class
            found[cls.__name__] = cls
    return found


KAFKA_PYTHON = kafka_python_classes()


def body_bytes(info, version, obj, is_request) -> bytes:
    if is_request:
        frame = encode_request(info.api_key, version, 1, "c", obj)[4:]
        return frame[decode_request_header(frame)[1]:]
    frame = response_frame(info.api_key, version, 1, obj)[4:]
    return frame[4 + codec.response_header_version(info.api_key, version):]


@pytest.mark.parametrize("info,version", list(all_versions()))
def test_same_bytes_as_kafka_python(info, version):
    checked = 0
    for cls, is_request in ((info.request, True), (info.response, False)):
        theirs = KAFKA_PYTHON.get(cls.__name__)
        if theirs is None or version > theirs.max_version:
            continue
        for nulls in (False, True):
            obj = sample_struct(cls, version, nulls=nulls)
            if cls is ApiVersionsResponse:
                obj.error_code = 0  # kafka-python reads any error answer as v0
            ours = body_bytes(info, version, obj, is_request)
            decoded = theirs.decode(ours, version=version)
            decoded._header = None  # decode() skips __init__, encode() expects the slot set
            assert bytes(decoded.encode(version=version)) == ours
            checked += 1
    if not checked:
        pytest.skip(f"kafka-python has no {info.name} v{version}")
