"""Every request and response of every spec, at every version: encode -> decode gives it back.

Values are built from the spec so every field present in the version holds a non-default
value (tagged fields too), and a second variant sets every nullable field to null.
"""

from __future__ import annotations

import itertools
import uuid

import pytest

from kbroker.protocol import codec, messages
from kbroker.protocol.codec import (
    decode_request, decode_request_header, decode_response, encode_request, encode_response,
)
from kbroker.protocol.specs import in_range

INT_RANGES = {
    "int8": (-128, 127), "int16": (-32768, 32767), "uint16": (0, 65535),
    "int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1), "int64": (-(2**63), 2**63 - 1),
}


def sample_value(field, version: int, seed: int, nulls: bool, big_records: bool = False):
    """A value of ``field``'s type that differs from its default (or None when ``nulls``)."""
    if nulls and in_range(field.nullable_versions, version):
        return None
    if field.array:
        return [sample_element(field, version, seed + i, nulls, big_records) for i in range(2)]
    return sample_element(field, version, seed, nulls, big_records)


def sample_element(field, version: int, seed: int, nulls: bool, big_records: bool):
    kind = field.type
    if kind in INT_RANGES:
        lo, hi = INT_RANGES[kind]
        value = lo + (seed * 7919 + 12345) % (hi - lo)
        return value if value != field.default else value + 1
    if kind == "bool":
        return not field.default if field.default is not None else True
    if kind == "float64":
        return seed + 0.25
    if kind == "string":
        return f"{field.name}-{seed}-é"
    if kind == "bytes":
        return bytes([seed % 256, 1, 2, 3])
    if kind == "records":
        return bytes(range(256)) * 8 if big_records else b"records-%d" % seed
    if kind == "uuid":
        return uuid.UUID(int=seed * 0x1000100010001 + 1)
    return sample_struct(field.struct, version, seed * 3 + 1, nulls, big_records)


def sample_struct(cls, version: int, seed: int = 1, nulls: bool = False, big_records: bool = False):
    values = {}
    for i, field in enumerate(cls._fields):
        if in_range(field.versions, version):
            values[field.attr] = sample_value(field, version, seed + i, nulls, big_records)
    return cls(**values)


def all_versions():
    for info in messages.API_INFO.values():
        for version in range(info.min_version, info.max_version + 1):
            yield pytest.param(info, version, id=f"{info.name}-v{version}")


def response_bytes(parts) -> bytes:
    return b"".join(bytes(p) for p in parts)


@pytest.mark.parametrize("nulls", [False, True], ids=["values", "nulls"])
@pytest.mark.parametrize("info,version", list(all_versions()))
def test_request_round_trip(info, version, nulls):
    request = sample_struct(info.request, version, nulls=nulls)
    frame = encode_request(info.api_key, version, 1234, "client-é", request)
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    header, offset = decode_request_header(frame[4:])
    assert (header.api_key, header.api_version, header.correlation_id) == (info.api_key, version, 1234)
    header_version = codec.request_header_version(info.api_key, version)
    assert header.client_id == ("client-é" if header_version >= 1 else "")
    assert decode_request(header, frame[4:], offset) == request


@pytest.mark.parametrize("nulls", [False, True], ids=["values", "nulls"])
@pytest.mark.parametrize("info,version", list(all_versions()))
def test_response_round_trip(info, version, nulls):
    response = sample_struct(info.response, version, nulls=nulls, big_records=True)
    parts = encode_response(info.api_key, version, 99, response)
    frame = response_bytes(parts)
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    correlation_id, decoded = decode_response(info.api_key, version, frame[4:])
    assert correlation_id == 99
    assert decoded == response


@pytest.mark.parametrize("cls", [messages.ConsumerProtocolSubscription, messages.ConsumerProtocolAssignment])
def test_embedded_formats_round_trip(cls):
    lo, hi = cls._valid_versions
    for version, nulls in itertools.product(range(lo, hi + 1), (False, True)):
        value = sample_struct(cls, version, nulls=nulls)
        data = codec.encode_data(value, version)
        assert data[:2] == version.to_bytes(2, "big")
        assert codec.decode_data(cls, data) == (version, value)


def test_defaults_are_schema_defaults():
    partition = messages.FetchResponse.PartitionData()
    assert partition.last_stable_offset == -1
    assert partition.aborted_transactions == []
    assert partition.records is None
    assert partition.current_leader == messages.FetchResponse.LeaderIdAndEpoch(leader_id=-1, leader_epoch=-1)
    assert messages.ProduceRequest().transactional_id is None
    assert messages.FetchRequest.FetchTopic().topic_id == uuid.UUID(int=0)
    assert messages.MetadataResponse.MetadataResponseTopic().name == ""  # nullable, no null default
    assert messages.FetchResponse.NodeEndpoint().rack is None  # default "null"
    # Mutable defaults are never shared between objects.
    assert messages.ProduceRequest().topic_data is not messages.ProduceRequest().topic_data


def test_class_shape():
    assert messages.request_class(0) is messages.ProduceRequest
    assert messages.response_class(1) is messages.FetchResponse
    assert messages.API_NAMES[18] == "ApiVersions"
    assert messages.API_INFO[1].flexible_min_version == 12
    assert messages.ProduceResponse.PartitionProduceResponse.__slots__[0] == "index"
    assert "high_watermark" in messages.FetchResponse.PartitionData.__slots__
    with pytest.raises(TypeError):
        messages.ProduceRequest(0)  # keyword-only
    with pytest.raises(AttributeError):
        messages.ProduceRequest().not_a_field = 1
