"""OAUTHBEARER's unsecured tokens and re-authentication (KIP-368), over the wire and with
confluent-kafka; the validator's rules as a unit."""

from __future__ import annotations

import base64
import json
import logging
import time

import pytest
from confluent_kafka import Producer

from kbroker.clock import TOLERANCE_MS as CLOCK_TOLERANCE_MS
from kbroker.oauthbearer import InvalidToken, validate_unsecured_token
from kbroker.protocol.errors import ErrorCode
from kbroker.testing import running_broker
from tests.wire import WireClient

REAUTH_MS = 1500


def unsecured_token(claims: dict, header: dict | None = None, signature: str = "") -> str:
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
    return f"{part(header or {'alg': 'none'})}.{part(claims)}.{signature}"


def bearer(token: str) -> bytes:
    return f"n,,\x01auth=Bearer {token}\x01\x01".encode()


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory):
    with running_broker("--sasl-user", "alice:alice-secret",
                        "--override", "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,OAUTHBEARER",
                        "--override", f"connections.max.reauth.ms={REAUTH_MS}",
                        "--override", "connection.failed.authentication.delay.ms=0",
                        data_dir=tmp_path_factory.mktemp("oauth")) as started:
        yield started


def authenticate(client: WireClient, mechanism: str, token: bytes):
    handshake = client.request("SaslHandshake", 1, mechanism=mechanism)
    assert handshake.error_code == ErrorCode.NONE
    return client.request("SaslAuthenticate", 1, auth_bytes=token)


def test_valid_token_names_the_principal_and_bounds_the_session(sasl_broker):
    expires = time.time() + 3600
    with WireClient(sasl_broker.bootstrap) as client:
        done = authenticate(client, "OAUTHBEARER", bearer(unsecured_token({"sub": "alice", "exp": expires})))
        assert (done.error_code, done.auth_bytes) == (ErrorCode.NONE, b"")
        assert done.session_lifetime_ms == REAUTH_MS  # shorter than the token's hour
        assert client.request("Metadata", 12, topics=[]).brokers


def test_token_expiring_first_shortens_the_session(sasl_broker):
    expires = time.time() + 1.0
    with WireClient(sasl_broker.bootstrap) as client:
        done = authenticate(client, "OAUTHBEARER", bearer(unsecured_token({"sub": "alice", "exp": expires})))
        assert done.error_code == ErrorCode.NONE
        # the broker's clock may trail the wall clock by up to its resync tolerance
        assert 0 < done.session_lifetime_ms <= 1000 + CLOCK_TOLERANCE_MS


@pytest.mark.parametrize("token", [
    unsecured_token({"sub": "alice", "exp": time.time() - 60}),
    unsecured_token({"sub": "alice"}),
    unsecured_token({"sub": "alice", "exp": time.time() + 60}, header={"alg": "HS256"}),
    "not-a-jws",
])
def test_invalid_token_gets_the_error_status_then_fails(sasl_broker, token):
    with WireClient(sasl_broker.bootstrap) as client:
        first = authenticate(client, "OAUTHBEARER", bearer(token))
        assert (first.error_code, bytes(first.auth_bytes)) == (ErrorCode.NONE, b'{"status":"invalid_token"}')
        final = client.request("SaslAuthenticate", 1, auth_bytes=b"\x01")
        assert final.error_code == ErrorCode.SASL_AUTHENTICATION_FAILED
        assert final.error_message == '{"status":"invalid_token"}'
        assert client.is_closed_by_peer()


def test_expired_session_is_closed_at_the_next_request(sasl_broker):
    with WireClient(sasl_broker.bootstrap) as client:
        done = authenticate(client, "PLAIN", b"\0alice\0alice-secret")
        assert done.session_lifetime_ms == REAUTH_MS
        time.sleep(REAUTH_MS / 1000 + 0.2)
        with pytest.raises(ConnectionError):
            client.request("Metadata", 12, topics=[])


def test_reauthentication_renews_the_session(sasl_broker):
    with WireClient(sasl_broker.bootstrap) as client:
        authenticate(client, "PLAIN", b"\0alice\0alice-secret")
        time.sleep(REAUTH_MS / 2000)
        renewed = authenticate(client, "PLAIN", b"\0alice\0alice-secret")
        assert (renewed.error_code, renewed.session_lifetime_ms) == (ErrorCode.NONE, REAUTH_MS)
        time.sleep(REAUTH_MS / 1000 * 0.75)  # past the first session's end, within the second
        assert client.request("Metadata", 12, topics=[]).brokers


def test_reauthentication_cannot_change_the_principal(sasl_broker):
    with WireClient(sasl_broker.bootstrap) as client:
        expires = time.time() + 60
        authenticate(client, "OAUTHBEARER", bearer(unsecured_token({"sub": "alice", "exp": expires})))
        other = authenticate(client, "OAUTHBEARER", bearer(unsecured_token({"sub": "mallory", "exp": expires})))
        assert other.error_code == ErrorCode.SASL_AUTHENTICATION_FAILED
        assert other.error_message == ("Cannot change principals during re-authentication from "
                                       "User:alice: User:mallory")


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_confluent_kafka_reauthenticates_and_keeps_producing(sasl_broker):
    lines = _Lines()
    logger = logging.getLogger("test-reauth-librdkafka")
    logger.addHandler(lines)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    producer = Producer({"bootstrap.servers": sasl_broker.bootstrap, "security.protocol": "SASL_PLAINTEXT",
                         "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "alice",
                         "sasl.password": "alice-secret", "debug": "security"}, logger=logger)
    errors = []
    for index in range(8):  # spans two session lifetimes
        producer.produce("reauth", value=b"%d" % index, on_delivery=lambda error, message: errors.append(error))
        assert producer.flush(15) == 0
        time.sleep(REAUTH_MS / 4000)
    assert errors == [None] * 8
    producer.poll(0)  # hands over the remaining log lines
    assert any("Auth in state REAUTH" in line for line in lines.lines)  # renewed on its connection


NOW_MS = 1_800_000_000_000


@pytest.mark.parametrize("claims,header,signature,message", [
    ({"sub": "a", "exp": 1}, {"alg": "none"}, "", ("The indicated time (1800000000000 ms) minus allowable "
     "clock skew (0 ms) was on or after the Expiration Time value (1.000000 seconds)")),
    ({"sub": "a"}, {"alg": "none"}, "", "No expiration time in JWT"),
    ({"exp": 2e9}, {"alg": "none"}, "", "No principal name in JWT claim: sub"),
    ({"sub": 7, "exp": 2e9}, {"alg": "none"}, "", "The 'sub' claim was not of type String: Integer"),
    ({"sub": "a", "exp": 2e9}, {"alg": "RS256"}, "", "Unsecured JWS must have 'none' for an algorithm"),
    ({"sub": "a", "exp": 2e9}, {"alg": "none"}, "c2ln", "Unsecured JWS must not contain a digital signature"),
    ({"sub": "a", "exp": 2e9, "iat": 2.1e9}, {"alg": "none"}, "", ("The Issued At value (2100000000.000000 "
     "seconds) was after the indicated time (1800000000000 ms) plus allowable clock skew (0 ms)")),
])
def test_validator_refuses_with_kafkas_messages(claims, header, signature, message):
    with pytest.raises(InvalidToken) as refused:
        validate_unsecured_token(unsecured_token(claims, header, signature), NOW_MS)
    assert str(refused.value) == message


def test_validator_reads_principal_expiry_and_required_scope():
    token = unsecured_token({"sub": "svc", "exp": 2e9, "scope": ["read", "write"]})
    assert validate_unsecured_token(token, NOW_MS, required_scope=("read",)) == ("svc", 2_000_000_000_000)
    with pytest.raises(InvalidToken) as refused:
        validate_unsecured_token(token, NOW_MS, required_scope=("admin",))
    assert refused.value.scope == "['admin']"
    custom = unsecured_token({"client_id": "svc2", "exp": 2e9})
    assert validate_unsecured_token(custom, NOW_MS, principal_claim="client_id")[0] == "svc2"
