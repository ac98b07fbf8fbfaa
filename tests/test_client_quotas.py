"""Client quotas: AlterClientQuotas and DescribeClientQuotas on the wire (no installed client
library has them), with Kafka's validation, default entities and filters, kept across restarts;
the rules' corners on the store itself."""

from __future__ import annotations

import pytest

from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.messages import AlterClientQuotasRequest, DescribeClientQuotasRequest
from kbroker.quotas import MATCH_DEFAULT, MATCH_EXACT, MATCH_SPECIFIED, ClientQuotas
from kbroker.testing import running_broker
from tests.wire import WireClient

Alter = AlterClientQuotasRequest
Describe = DescribeClientQuotasRequest


def alteration(entity: dict, **ops):
    """An entry of AlterClientQuotas: ops map keys to values, None removes the key."""
    return Alter.EntryData(
        entity=[Alter.EntityData(entity_type=t, entity_name=n) for t, n in entity.items()],
        ops=[Alter.OpData(key=k, value=v or 0.0, remove=v is None)
             for k, v in ops.items()])


def alter(client, *entries, validate_only=False, version=1):
    response = client.request("AlterClientQuotas", version, entries=list(entries),
                              validate_only=validate_only)
    return [(e.error_code, e.error_message) for e in response.entries]


def describe(client, *components, strict=False, version=1):
    response = client.request("DescribeClientQuotas", version, strict=strict, components=[
        Describe.ComponentData(entity_type=t, match_type=m, match=n) for t, m, n in components])
    if response.error_code:
        return response.error_code, response.error_message
    return {tuple((e.entity_type, e.entity_name) for e in entry.entity):
            {v.key: v.value for v in entry.values} for entry in response.entries}


def test_quotas_stored_described_and_kept(tmp_path):
    with running_broker(data_dir=tmp_path) as broker, WireClient(broker.bootstrap) as client:
        assert alter(client,
                     alteration({"user": "alice"}, producer_byte_rate=1024.0, request_percentage=50.5),
                     alteration({"user": None}, consumer_byte_rate=2048.0),  # the default user
                     alteration({"user": "alice", "client-id": "app"}, consumer_byte_rate=10.0),
                     alteration({"ip": "127.0.0.1"}, connection_creation_rate=5.0),
                     alteration({"ip": None}, connection_creation_rate=50.0),
                     ) == [(0, None)] * 5
        assert describe(client, ("user", MATCH_EXACT, "alice"), strict=True) == {
            (("user", "alice"),): {"producer_byte_rate": 1024.0, "request_percentage": 50.5}}
        assert describe(client, ("user", MATCH_DEFAULT, None)) == {
            (("user", None),): {"consumer_byte_rate": 2048.0}}
        specified = describe(client, ("user", MATCH_SPECIFIED, None))
        assert set(specified) == {(("user", "alice"),), (("user", None),),
                                  (("client-id", "app"), ("user", "alice"))}
        assert len(describe(client)) == 5  # no filter: every entity
        # removing the last key removes the entity; removing an absent key is no change
        assert alter(client, alteration({"ip": None}, connection_creation_rate=None),
                     alteration({"user": "bob"}, producer_byte_rate=None)) == [(0, None)] * 2
        assert describe(client, ("ip", MATCH_SPECIFIED, None)) == {
            (("ip", "127.0.0.1"),): {"connection_creation_rate": 5.0}}
        assert alter(client, alteration({"user": "carol"}, producer_byte_rate=1.0),
                     validate_only=True) == [(0, None)]
        assert describe(client, ("user", MATCH_EXACT, "carol")) == {}
    with running_broker(data_dir=tmp_path) as broker, WireClient(broker.bootstrap) as client:
        assert len(describe(client, version=0)) == 4


def test_alter_errors_as_kafka(broker):
    with WireClient(broker.bootstrap) as client:
        INVALID = ErrorCode.INVALID_REQUEST
        answers = alter(
            client,
            alteration({"user": "dave"}, producer_byte_rate=1.5),
            alteration({"user": "dave", "ip": "1.2.3.4"}, consumer_byte_rate=1.0),
            alteration({"ip": "1.2.3.4"}, producer_byte_rate=1.0),
            alteration({"ip": "no-such-host.invalid"}, connection_creation_rate=1.0),
            alteration({"ip": "10.0.0.1"}, connection_creation_rate=2.0**31),
            alteration({"group": "g"}, producer_byte_rate=1.0),
            alteration({"user": ""}, producer_byte_rate=1.0),
            alteration({"client-id": "c"}, request_percentage=-1.0),
            alteration({}, producer_byte_rate=1.0),
            alteration({"user": "erin"}, producer_byte_rate=1.0),
            alteration({"user": "erin"}, consumer_byte_rate=1.0),
        )
        assert answers == [
            (INVALID, "Proposed value for producer_byte_rate is not an integer."),
            (INVALID, ("Invalid quota entity combination, IP entity should not be combined with "
                       "User or ClientId")),
            (INVALID, "Invalid configuration key producer_byte_rate"),
            (INVALID, "no-such-host.invalid is not a valid IP or resolvable host."),
            (INVALID, "Proposed value for connection_creation_rate is too large for an INT."),
            (INVALID, "Unhandled client quota entity type: group"),
            (INVALID, "Empty user not supported"),
            (INVALID, "Quota request_percentage must be greater than 0"),
            (INVALID, "Invalid empty client quota entity"),
            (0, None),
            (INVALID, "Ignoring duplicate entity ClientQuotaEntity(entries={user=erin})"),
        ]


def test_describe_filter_errors(broker):
    with WireClient(broker.bootstrap) as client:
        assert describe(client, ("", MATCH_EXACT, "x")) == (
            ErrorCode.INVALID_REQUEST, "Invalid empty entity type.")
        assert describe(client, ("user", MATCH_EXACT, "a"), ("user", MATCH_SPECIFIED, None))[0] == (
            ErrorCode.INVALID_REQUEST)
        assert describe(client, ("group", MATCH_EXACT, "a")) == (
            ErrorCode.UNSUPPORTED_VERSION, "Unsupported entity type group")
        assert describe(client, ("user", MATCH_EXACT, None))[0] == ErrorCode.INVALID_REQUEST
        assert describe(client, ("user", MATCH_DEFAULT, "a"))[0] == ErrorCode.INVALID_REQUEST
        assert describe(client, ("user", 7, None))[0] == ErrorCode.UNSUPPORTED_VERSION
        assert describe(client, ("ip", MATCH_SPECIFIED, None), ("client-id", MATCH_SPECIFIED, None))[
            0] == ErrorCode.INVALID_REQUEST


def test_duplicate_key_answers_as_kafka(tmp_path):
    quotas = ClientQuotas(tmp_path)
    [(_, error)] = quotas.alter([([("client-id", "c"), ("user", "u")],
                                  [("producer_byte_rate", 1.0), ("producer_byte_rate", 2.0)])],
                                resolvable=set(), validate_only=False)
    assert error.message == "Ignoring duplicate entity ClientQuotaEntity(entries={client-id=c, user=u})"
    assert quotas.quotas == {}
    with pytest.raises(Exception, match="cannot appear more than once"):
        quotas.describe([("user", MATCH_SPECIFIED, None), ("user", MATCH_DEFAULT, None)], False)
