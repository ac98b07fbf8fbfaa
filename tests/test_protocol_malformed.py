"""Bad input never escapes as anything but CorruptFrame / UnsupportedVersion, and never hangs."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kbroker.protocol import codec, messages
from kbroker.protocol.codec import (
    CorruptFrame, ProtocolError, UnsupportedVersion, decode_request, decode_request_header,
    decode_response, encode_request, encode_response,
)
from tests.test_protocol_roundtrip import sample_struct


def interesting_versions():
    """Each API at its oldest, newest and first flexible version."""
    for info in messages.API_INFO.values():
        versions = {info.min_version, info.max_version}
        if info.flexible_min_version is not None:  # (some APIs start after their first flexible version)
            versions.add(max(info.flexible_min_version, info.min_version))
        for version in sorted(versions):
            yield pytest.param(info, version, id=f"{info.name}-v{version}")


def request_frame(info, version) -> bytes:
    return encode_request(info.api_key, version, 1, "client", sample_struct(info.request, version))[4:]


def response_frame(info, version) -> bytes:
    parts = encode_response(info.api_key, version, 1, sample_struct(info.response, version))
    return b"".join(bytes(p) for p in parts)[4:]


def decode_whole_request(frame):
    header, offset = decode_request_header(frame)
    return decode_request(header, frame, offset)


@pytest.mark.parametrize("info,version", list(interesting_versions()))
def test_every_truncation_is_corrupt(info, version):
    request = request_frame(info, version)
    response = response_frame(info, version)
    for cut in range(len(request)):
        with pytest.raises(CorruptFrame):
            decode_whole_request(memoryview(request)[:cut])
    for cut in range(len(response)):
        with pytest.raises(CorruptFrame):
            decode_response(info.api_key, version, response[:cut])


@pytest.mark.parametrize("info,version", list(interesting_versions()))
def test_trailing_bytes(info, version):
    # Requests: ignored, as the Java broker does (librdkafka pads some requests).
    assert decode_whole_request(request_frame(info, version) + b"\x00") == sample_struct(info.request, version)
    # Responses (tests and tools only): an error, to catch encoder mistakes.
    with pytest.raises(CorruptFrame, match="unexpected bytes"):
        decode_response(info.api_key, version, response_frame(info, version) + b"\x00")


def header(api_key, version, client_id=b"c") -> bytes:
    flexible = codec.request_header_version(api_key, version) == 2
    return struct.pack(">hhih", api_key, version, 1, len(client_id)) + client_id + (b"\x00" if flexible else b"")


@pytest.mark.parametrize("body, reason", [
    # Produce v3: int16 transactional id length -2 is neither null nor a length.
    (b"\xff\xfe", "negative length"),
    # Produce v3: null transactional id, acks, timeout, then 2**31-1 topics in a tiny frame.
    (b"\xff\xff" + struct.pack(">hii", 1, 1000, 2**31 - 1), "longer than the frame"),
    # Produce v3: a topic whose name (non-nullable) is null.
    (b"\xff\xff" + struct.pack(">hiih", 1, 1000, 1, -1), "null in non-nullable"),
    # Produce v3: a topic name that is not UTF-8.
    (b"\xff\xff" + struct.pack(">hiih", 1, 1000, 1, 2) + b"\xff\xfe" + struct.pack(">i", 0), "malformed"),
])
def test_specific_corruptions(body, reason):
    frame = header(0, 3) + body
    with pytest.raises(CorruptFrame, match=reason):
        decode_whole_request(frame)


def test_overlong_varint_is_corrupt():
    frame = header(18, 3) + b"\xff" * 12
    with pytest.raises(CorruptFrame, match="varint is too long"):
        decode_whole_request(frame)


def test_tagged_field_with_wrong_size_is_corrupt():
    # ApiVersionsResponse v3, tag 1 (FinalizedFeaturesEpoch, an int64) declared 9 bytes long.
    body = struct.pack(">ih", 1, 0) + b"\x01" + struct.pack(">i", 0) + b"\x01\x01\x09" + bytes(9)
    with pytest.raises(CorruptFrame, match="wrong size"):
        decode_response(18, 3, body)


def test_unknown_api_key_or_version():
    with pytest.raises(UnsupportedVersion):
        decode_whole_request(header(999, 0))
    with pytest.raises(UnsupportedVersion):
        decode_whole_request(header(0, 99))
    with pytest.raises(UnsupportedVersion):
        encode_response(0, 99, 1, messages.ProduceResponse())
    # The header of any ApiVersions request stays readable (clients probe with new versions).
    parsed, _ = decode_request_header(header(18, 99))
    assert (parsed.api_key, parsed.api_version, parsed.client_id) == (18, 99, "c")


def test_encode_rejects_the_wrong_body_type():
    with pytest.raises(TypeError):
        encode_response(0, 9, 1, messages.FetchResponse())


def test_encode_reports_unencodable_values():
    with pytest.raises(ValueError, match="ProduceResponse v9"):
        encode_response(0, 9, 1, messages.ProduceResponse(throttle_time_ms=2**40))


API_VERSIONS = [(info.api_key, v) for info in messages.API_INFO.values()
                for v in range(info.min_version, info.max_version + 1)]
FUZZ = settings(max_examples=400, deadline=1000, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=200))
def test_garbage_requests(data):
    try:
        decode_whole_request(data)
    except ProtocolError:
        pass


@FUZZ
@given(st.sampled_from(API_VERSIONS), st.binary(max_size=300))
def test_garbage_bodies(api_version, data):
    api_key, version = api_version
    try:
        decode_whole_request(header(api_key, version) + data)
    except ProtocolError:
        pass
    try:
        decode_response(api_key, version, data)
    except ProtocolError:
        pass


@FUZZ
@given(st.sampled_from(API_VERSIONS), st.data())
def test_mutated_frames(api_version, data):
    api_key, version = api_version
    info = messages.API_INFO[api_key]
    frame = bytearray(request_frame(info, version))
    for _ in range(data.draw(st.integers(1, 4))):
        frame[data.draw(st.integers(0, len(frame) - 1))] = data.draw(st.integers(0, 255))
    try:
        decode_whole_request(bytes(frame))
    except ProtocolError:
        pass
