"""SASL/PLAIN and SCRAM on a SASL_PLAINTEXT listener, with real clients."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer
from kafka import KafkaConsumer, KafkaProducer

from kbroker.protocol import messages
from kbroker.protocol.errors import ErrorCode
from kbroker.sasl import Scram, scram_credential
from kbroker.testing import running_broker
from tests.wire import WireClient


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory):
    with running_broker("--sasl-user", "alice:alice-secret", "--sasl-user", "bob:b0b",
                        data_dir=tmp_path_factory.mktemp("sasl")) as started:
        yield started


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_kafka_python_authenticates_and_produces(sasl_broker, mechanism):
    topic = f"sasl-{mechanism.lower()}"
    credentials = dict(security_protocol="SASL_PLAINTEXT", sasl_mechanism=mechanism,
                       sasl_plain_username="alice", sasl_plain_password="alice-secret")
    producer = KafkaProducer(bootstrap_servers=sasl_broker.bootstrap, **credentials)
    producer.send(topic, value=b"secret hello").get(10)
    producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=sasl_broker.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=10000, **credentials)
    assert next(consumer).value == b"secret hello"
    consumer.close()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_confluent_kafka_authenticates(sasl_broker, mechanism):
    producer = Producer({
        "bootstrap.servers": sasl_broker.bootstrap, "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism, "sasl.username": "bob", "sasl.password": "b0b",
    })
    delivered = []
    producer.produce("sasl-confluent", value=b"x", on_delivery=lambda err, msg: delivered.append(err))
    assert producer.flush(15) == 0
    assert delivered == [None]


def test_wrong_password_is_refused(sasl_broker):
    from confluent_kafka import KafkaError as ConfluentError

    errors = []
    producer = Producer({
        "bootstrap.servers": sasl_broker.bootstrap, "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "alice", "sasl.password": "wrong",
        "error_cb": errors.append,
    })
    import time

    deadline = time.monotonic() + 10
    while not errors and time.monotonic() < deadline:
        producer.poll(0.2)
    assert errors and errors[0].code() == ConfluentError._AUTHENTICATION


def test_exact_error_codes_over_the_wire(sasl_broker, broker):
    with WireClient(sasl_broker.bootstrap) as client:
        refused = client.request("SaslHandshake", 1, mechanism="GSSAPI")
        assert refused.error_code == ErrorCode.UNSUPPORTED_SASL_MECHANISM
        assert refused.mechanisms == ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
    with WireClient(sasl_broker.bootstrap) as client:
        assert client.request("SaslHandshake", 1, mechanism="PLAIN").error_code == ErrorCode.NONE
        failed = client.request("SaslAuthenticate", 2, auth_bytes=b"\0alice\0nope")
        assert failed.error_code == ErrorCode.SASL_AUTHENTICATION_FAILED
        assert failed.error_message
        assert client.is_closed_by_peer()
    with WireClient(sasl_broker.bootstrap) as client:
        client.send_raw(b"")
        with pytest.raises(ConnectionError):
            client.request("Metadata", 12, topics=[])  # not authenticated: connection closed
    with WireClient(broker.bootstrap) as plaintext:
        answer = plaintext.request("SaslHandshake", 1, mechanism="PLAIN")
        assert answer.error_code == ErrorCode.ILLEGAL_SASL_STATE


def test_scram_exchange_rejects_a_wrong_proof():
    credential = scram_credential("pw", "sha256", salt=b"salt", iterations=4096)
    server = Scram("sha256", {"u": credential})
    first = server.step(b"n,,n=u,r=abc").decode()
    assert first.startswith("r=abc") and ",s=" in first and first.endswith(",i=4096")
    nonce = first.split(",")[0][2:]
    from kbroker.sasl import AuthenticationFailed

    with pytest.raises(AuthenticationFailed):
        server.step(f"c=biws,r={nonce},p=AAAA".encode())
    assert messages.API_KEYS["SaslAuthenticate"] == 36
