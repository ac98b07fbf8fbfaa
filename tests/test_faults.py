"""Unit tests of fault injection: the matcher (kbroker/faults.py) and the error response
built for any request (kbroker/protocol/error_responses.py)."""

from __future__ import annotations

import uuid

import pytest

import kbroker.api  # noqa: F401  (registers every handler)
from kbroker.api.registry import supported_apis
from kbroker.faults import FaultInjector, InvalidFault
from kbroker.protocol import codec, messages
from kbroker.protocol.error_responses import error_response
from kbroker.protocol.errors import ErrorCode

PRODUCE, FETCH = messages.API_KEYS["Produce"], messages.API_KEYS["Fetch"]
NOT_LEADER = ErrorCode.NOT_LEADER_OR_FOLLOWER


# -- the matcher ---------------------------------------------------------------------------

def test_a_fault_fires_times_then_stops_matching_but_stays_listed():
    faults = FaultInjector()
    fault = faults.add({"api": "Produce", "error": "NOT_LEADER_OR_FOLLOWER", "times": 2})
    assert [faults.take(PRODUCE, "c", 1) for _ in range(3)] == [fault, fault, None]
    assert fault.hits == 2 and faults.by_api == {}  # nothing left to check on the hot path
    assert faults.list() == [fault]


def test_without_times_a_fault_fires_until_deleted():
    faults = FaultInjector()
    fault = faults.add({"api": "Fetch", "delay_ms": 10, "times": None})
    assert all(faults.take(FETCH, "c", 1) is fault for _ in range(50))
    assert faults.take(PRODUCE, "c", 1) is None
    assert faults.delete(fault.id) and not faults.delete(fault.id)
    assert faults.take(FETCH, "c", 1) is None and faults.list() == [] and faults.by_api == {}


def test_client_id_and_broker_narrow_a_fault():
    faults = FaultInjector()
    fault = faults.add({"api": "Produce", "disconnect": True, "client_id": "a", "broker": 2})
    assert faults.take(PRODUCE, "b", 2) is None
    assert faults.take(PRODUCE, "a", 1) is None
    assert faults.take(PRODUCE, "a", 2) is fault
    assert fault.hits == 1


def test_the_first_fault_added_that_matches_fires():
    faults = FaultInjector()
    narrow = faults.add({"api": "Produce", "error": "KAFKA_STORAGE_ERROR", "client_id": "a", "times": 1})
    broad = faults.add({"api": "Produce", "error": "NOT_LEADER_OR_FOLLOWER"})
    assert faults.take(PRODUCE, "a", 1) is narrow
    assert faults.take(PRODUCE, "a", 1) is broad
    assert faults.take(PRODUCE, "b", 1) is broad
    assert (narrow.hits, broad.hits) == (1, 2)


def test_a_fault_describes_itself_as_the_api_shows_it():
    fault = FaultInjector().add({"api": "Produce", "error": "NOT_LEADER_OR_FOLLOWER", "times": 3,
                                 "client_id": None, "broker": None, "delay_ms": 0, "disconnect": False})
    assert fault.describe() == {"id": "1", "api": "Produce", "error": "NOT_LEADER_OR_FOLLOWER",
                                "times": 3, "client_id": None, "broker": None, "delay_ms": 0,
                                "disconnect": False, "hits": 0}


@pytest.mark.parametrize("spec, complaint", [
    ({"api": "Produc", "error": "NOT_LEADER_OR_FOLLOWER"}, "unknown API"),
    ({"error": "NOT_LEADER_OR_FOLLOWER"}, "unknown API"),
    ({"api": "Produce", "error": "NOT_A_LEADER"}, "unknown error"),
    ({"api": "Produce", "error": "NONE"}, "unknown error"),
    ({"api": "Produce", "error": 6}, "bad error"),
    ({"api": "Produce", "error": "NOT_LEADER_OR_FOLLOWER", "times": 0}, "times"),
    ({"api": "Produce", "error": "NOT_LEADER_OR_FOLLOWER", "times": "3"}, "bad times"),
    ({"api": "Produce", "delay_ms": -1}, "delay_ms"),
    ({"api": "Produce", "delay_ms": True}, "bad delay_ms"),
    ({"api": "Produce", "broker": "1", "disconnect": True}, "bad broker"),
    ({"api": "Produce", "disconnect": "yes"}, "bad disconnect"),
    ({"api": "Produce", "error": "NOT_LEADER_OR_FOLLOWER", "disconnect": True}, "not both"),
    ({"api": "Produce"}, "needs an error"),
    ({"api": "Produce", "error": "NOT_LEADER_OR_FOLLOWER", "retries": 3}, "unknown fault fields"),
    (["Produce"], "JSON object"),
])
def test_bad_fault_descriptions_are_refused(spec, complaint):
    faults = FaultInjector()
    with pytest.raises(InvalidFault, match=complaint):
        faults.add(spec)
    assert faults.list() == [] and faults.by_api == {}


# -- the error response of every API -----------------------------------------------------

_SAMPLES = {"string": "x", "int8": 1, "int16": 1, "int32": 1, "int64": 1, "uint16": 1,
            "float64": 1.0, "bool": True, "bytes": b"x", "records": b"", "uuid": uuid.UUID(int=7)}


def _sample(cls, version: int):
    """A request with one element in every array and a value in every field."""
    values = {}
    for field in cls._fields:
        low, high = field.versions or (0, None)
        if version < low or (high is not None and version > high):
            continue
        if field.struct is not None:
            value = _sample(field.struct, version)
            values[field.attr] = [value] if field.array else value
        else:
            value = _SAMPLES[field.type]
            values[field.attr] = [value] if field.array else value
    return cls(**values)


def _error_codes(value, version: int) -> list[int]:
    """Every error code a decoded response carries at `version`, depth first."""
    found = []
    for field in type(value)._fields:
        low, high = field.versions or (0, None)
        item = getattr(value, field.attr)
        if version < low or (high is not None and version > high) or item is None:
            continue
        if field.attr in ("error_code", "partition_error_code"):
            found.append(item)
        elif field.struct is not None:
            for element in item if field.array else [item]:
                found.extend(_error_codes(element, version))
    return found


@pytest.mark.parametrize("entry", supported_apis(), ids=lambda entry: entry.name)
def test_every_api_has_an_error_response_that_encodes(entry):
    version = entry.max_version
    request = _sample(messages.request_class(entry.api_key), version)
    response = error_response(entry.api_key, version, request, NOT_LEADER, "injected")
    frame = b"".join(bytes(part) for part in codec.encode_response(entry.api_key, version, 7, response))
    correlation_id, decoded = codec.decode_response(entry.api_key, version, memoryview(frame)[4:])
    codes = _error_codes(decoded, version)
    assert correlation_id == 7 and codes and set(codes) == {NOT_LEADER}


def _round_trip(api_name: str, version: int, request):
    api_key = messages.API_KEYS[api_name]
    response = error_response(api_key, version, request, NOT_LEADER)
    frame = b"".join(bytes(part) for part in codec.encode_response(api_key, version, 1, response))
    return codec.decode_response(api_key, version, memoryview(frame)[4:])[1]


def test_produce_answers_every_partition_of_every_topic():
    request = messages.ProduceRequest(acks=-1, topic_data=[
        messages.ProduceRequest.TopicProduceData(name=topic, partition_data=[
            messages.ProduceRequest.PartitionProduceData(index=index, records=b"") for index in (0, 2)])
        for topic in ("a", "b")])
    response = _round_trip("Produce", 9, request)
    assert [(t.name, [(p.index, p.error_code) for p in t.partition_responses])
            for t in response.responses] == [("a", [(0, 6), (2, 6)]), ("b", [(0, 6), (2, 6)])]


def test_fetch_answers_each_partition_by_topic_id_with_a_top_level_error():
    topic_id = uuid.uuid4()
    request = messages.FetchRequest(topics=[messages.FetchRequest.FetchTopic(
        topic_id=topic_id, partitions=[messages.FetchRequest.FetchPartition(partition=3)])])
    response = _round_trip("Fetch", 17, request)
    assert response.error_code == NOT_LEADER
    assert [(t.topic_id, [(p.partition_index, p.error_code) for p in t.partitions])
            for t in response.responses] == [(topic_id, [(3, NOT_LEADER)])]
    # empty records, as Kafka sends: sarama 1.22 cannot read a null record set
    assert bytes(response.responses[0].partitions[0].records) == b""


def test_metadata_answers_every_requested_topic_and_lists_no_broker():
    request = messages.MetadataRequest(topics=[messages.MetadataRequest.MetadataRequestTopic(name="a")])
    response = _round_trip("Metadata", 12, request)
    assert [(t.name, t.error_code, t.partitions) for t in response.topics] == [("a", NOT_LEADER, [])]
    assert response.brokers == []


def test_coordinator_lookups_answer_each_key_or_the_single_one():
    old = _round_trip("FindCoordinator", 3, messages.FindCoordinatorRequest(key="g"))
    assert old.error_code == NOT_LEADER
    batched = _round_trip("FindCoordinator", 6, messages.FindCoordinatorRequest(coordinator_keys=["g", "h"]))
    assert [(c.key, c.error_code) for c in batched.coordinators] == [("g", NOT_LEADER), ("h", NOT_LEADER)]


def test_group_apis_answer_with_their_error_code():
    assert _round_trip("Heartbeat", 4, messages.HeartbeatRequest(group_id="g")).error_code == NOT_LEADER
    groups = _round_trip("DescribeGroups", 5, messages.DescribeGroupsRequest(groups=["g"])).groups
    assert [(g.group_id, g.error_code) for g in groups] == [("g", NOT_LEADER)]
