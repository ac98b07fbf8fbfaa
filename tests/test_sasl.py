"""SASL/PLAIN and SCRAM on a SASL_PLAINTEXT listener, with real clients."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from confluent_kafka import KafkaError as ConfluentError
from confluent_kafka import Producer
from confluent_kafka.admin import (
    AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import ScramMechanism as KpScramMechanism
from kafka.admin import UserScramCredentialUpsertion as KpUpsertion

from kbroker.protocol import messages
from kbroker.protocol.errors import ErrorCode
from kbroker.sasl import Scram, scram_credential
from kbroker.testing import running_broker
from tests.kafka_clients import confluent_consume
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
        # PlainSaslServer's own message reaches the client (kafkajs's suite shows it).
        assert failed.error_message == "Authentication failed: Invalid username or password"
        assert client.is_closed_by_peer()
    with WireClient(sasl_broker.bootstrap) as client:
        client.request("SaslHandshake", 1, mechanism="PLAIN")
        malformed = client.request("SaslAuthenticate", 2, auth_bytes=b"\0alice\0")
        assert (malformed.error_code, malformed.error_message) == (
            ErrorCode.SASL_AUTHENTICATION_FAILED,
            "Authentication failed during authentication due to invalid credentials with SASL mechanism PLAIN")
    with WireClient(sasl_broker.bootstrap) as client:
        client.send_raw(b"")
        with pytest.raises(ConnectionError):
            client.request("Metadata", 12, topics=[])  # not authenticated: connection closed
    with WireClient(broker.bootstrap) as plaintext:
        answer = plaintext.request("SaslHandshake", 1, mechanism="PLAIN")
        assert answer.error_code == ErrorCode.ILLEGAL_SASL_STATE


def test_handshake_v0_then_bare_tokens(sasl_broker):
    """SaslHandshake v0 (Kafka serves 0-1): the tokens then travel bare in size-prefixed frames."""
    with WireClient(sasl_broker.bootstrap) as client:
        versions = client.request("ApiVersions", 3, client_software_name="t", client_software_version="1")
        handshake = next(key for key in versions.api_keys if key.api_key == messages.API_KEYS["SaslHandshake"])
        assert (handshake.min_version, handshake.max_version) == (0, 1)
        assert client.request("SaslHandshake", 0, mechanism="PLAIN").error_code == ErrorCode.NONE
        token = b"\0alice\0alice-secret"
        client.send_raw(len(token).to_bytes(4, "big") + token)
        assert client.receive_frame() == b""  # PLAIN's (empty) server token, bare
        assert client.request("Metadata", 12, topics=[]).brokers
    with WireClient(sasl_broker.bootstrap) as client:
        assert client.request("SaslHandshake", 0, mechanism="PLAIN").error_code == ErrorCode.NONE
        token = b"\0alice\0wrong"
        client.send_raw(len(token).to_bytes(4, "big") + token)
        assert client.is_closed_by_peer()


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


# -- SCRAM users managed at runtime (DescribeUserScramCredentials, AlterUserScramCredentials) ----

ADMIN = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
         "sasl.username": "admin", "sasl.password": "admin-secret"}


@pytest.fixture(scope="module")
def scram_admin_broker(tmp_path_factory):
    with running_broker("--sasl-user", "admin:admin-secret",
                        data_dir=tmp_path_factory.mktemp("scram-admin")) as started:
        yield started


def admin_wire(bootstrap: str) -> WireClient:
    """A WireClient authenticated as admin with SASL/PLAIN."""
    client = WireClient(bootstrap)
    assert client.request("SaslHandshake", 1, mechanism="PLAIN").error_code == ErrorCode.NONE
    assert client.request("SaslAuthenticate", 2,
                          auth_bytes=b"\0admin\0admin-secret").error_code == ErrorCode.NONE
    return client


def authentication_error(bootstrap: str, mechanism: str, user: str, password: str):
    """The error a confluent-kafka producer reports when connecting, or None if it connects."""
    errors = []
    producer = Producer({"bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT",
                         "sasl.mechanism": mechanism, "sasl.username": user,
                         "sasl.password": password, "error_cb": errors.append})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        producer.poll(0.1)  # serves error_cb
        if errors:
            return errors[0]
        try:
            producer.list_topics(timeout=0.5)
            return None
        except Exception:
            pass
    raise AssertionError(f"{user} neither connected nor failed with {mechanism}")


def test_confluent_admin_creates_scram_user_that_produces_and_consumes(scram_admin_broker, topic_name):
    bootstrap = scram_admin_broker.bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap, **ADMIN})
    # Before: no such user, and SCRAM as carol is refused.
    missing = admin.describe_user_scram_credentials(["carol"])["carol"]
    with pytest.raises(Exception) as raised:
        missing.result(10)
    assert raised.value.args[0].code() == ConfluentError.RESOURCE_NOT_FOUND
    assert authentication_error(bootstrap, "SCRAM-SHA-512", "carol", "carol-pw").code() \
        == ConfluentError._AUTHENTICATION

    sha512 = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    futures = admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion("carol", sha512, b"carol-pw", b"some-salt")])
    assert futures["carol"].result(10) is None

    described = admin.describe_user_scram_credentials(["carol"])["carol"].result(10)
    assert [(info.mechanism, info.iterations) for info in described.scram_credential_infos] \
        == [(ScramMechanism.SCRAM_SHA_512, 8192)]
    everyone = admin.describe_user_scram_credentials().result(10)
    assert set(everyone) == {"carol"}  # --sasl-user users are config, not stored credentials

    carol = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
             "sasl.username": "carol", "sasl.password": "carol-pw"}
    producer = Producer({"bootstrap.servers": bootstrap, **carol})
    delivered = []
    producer.produce(topic_name, value=b"from carol", on_delivery=lambda err, msg: delivered.append(err))
    assert producer.flush(15) == 0 and delivered == [None]
    records = confluent_consume(bootstrap, topic_name, 1, **carol)
    assert [record.value() for record in records] == [b"from carol"]
    # SCRAM-SHA-256 has no credential for carol, and PLAIN only knows the configured users.
    assert authentication_error(bootstrap, "SCRAM-SHA-256", "carol", "carol-pw") is not None
    assert authentication_error(bootstrap, "PLAIN", "carol", "carol-pw") is not None

    futures = admin.alter_user_scram_credentials(
        [UserScramCredentialDeletion("carol", ScramMechanism.SCRAM_SHA_512)])
    assert futures["carol"].result(10) is None
    assert authentication_error(bootstrap, "SCRAM-SHA-512", "carol", "carol-pw").code() \
        == ConfluentError._AUTHENTICATION
    assert admin.describe_user_scram_credentials().result(10) == {}


def test_scram_users_survive_a_restart(tmp_path, topic_name):
    with running_broker("--sasl-user", "admin:admin-secret", data_dir=tmp_path) as started:
        admin = KafkaAdminClient(bootstrap_servers=started.bootstrap, security_protocol="SASL_PLAINTEXT",
                                 sasl_mechanism="PLAIN", sasl_plain_username="admin",
                                 sasl_plain_password="admin-secret")
        salt = b"dave-salt"
        result = admin.alter_user_scram_credentials(
            [KpUpsertion("dave", KpScramMechanism.SCRAM_SHA_256, "dave-pw", iterations=4096, salt=salt)])
        admin.close()
        assert result == {"dave": None}

        # Only the derived keys are stored, never the password or the salted password.
        stored = json.loads((tmp_path / "scram-credentials.json").read_text())
        entry = stored["credentials"]["SCRAM-SHA-256"]["dave"]
        salted = hashlib.pbkdf2_hmac("sha256", b"dave-pw", salt, 4096)
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        assert base64.b64decode(entry["stored_key"]) == hashlib.sha256(client_key).digest()
        assert base64.b64decode(entry["server_key"]) == hmac.digest(salted, b"Server Key", "sha256")
        assert set(entry) == {"salt", "stored_key", "server_key", "iterations"}

        started.restart()
        dave = dict(security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
                    sasl_plain_username="dave", sasl_plain_password="dave-pw")
        producer = KafkaProducer(bootstrap_servers=started.bootstrap, **dave)
        metadata = producer.send(topic_name, value=b"after restart").get(10)
        producer.close()
        assert metadata.offset == 0
        with admin_wire(started.bootstrap) as client:
            described = client.request("DescribeUserScramCredentials", 0, users=None)
        assert [(r.user, r.error_code, [(i.mechanism, i.iterations) for i in r.credential_infos])
                for r in described.results] == [("dave", ErrorCode.NONE, [(1, 4096)])]


def test_scram_admin_error_codes_over_the_wire(scram_admin_broker):
    Upsertion = messages.AlterUserScramCredentialsRequest.ScramCredentialUpsertion
    Deletion = messages.AlterUserScramCredentialsRequest.ScramCredentialDeletion
    UserName = messages.DescribeUserScramCredentialsRequest.UserName
    salted = hashlib.pbkdf2_hmac("sha256", b"pw", b"salt", 4096)

    def upsert(name, mechanism=1, iterations=4096):
        return Upsertion(name=name, mechanism=mechanism, iterations=iterations, salt=b"salt",
                         salted_password=salted)

    with admin_wire(scram_admin_broker.bootstrap) as client:
        altered = client.request("AlterUserScramCredentials", 0, deletions=[
            Deletion(name="wire-missing", mechanism=1),
        ], upsertions=[
            upsert("wire-bad-mechanism", mechanism=3),
            upsert("wire-few", iterations=1000),
            upsert("wire-many", iterations=16385),
            upsert(""),
            upsert("wire-twice"),
            upsert("wire-ok", iterations=16384),
            upsert("wire-twice", mechanism=2),
            # As in Kafka, a user whose first alteration already failed keeps that error.
            upsert("wire-missing"),
        ])
        results = {r.user: (r.error_code, r.error_message) for r in altered.results}
        assert results == {
            "wire-missing": (ErrorCode.RESOURCE_NOT_FOUND,
                             "Attempt to delete a user credential that does not exist"),
            "wire-twice": (ErrorCode.DUPLICATE_RESOURCE,
                           "A user credential cannot be altered twice in the same request"),
            "wire-bad-mechanism": (ErrorCode.UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism"),
            "wire-few": (ErrorCode.UNACCEPTABLE_CREDENTIAL, "Too few iterations"),
            "wire-many": (ErrorCode.UNACCEPTABLE_CREDENTIAL, "Too many iterations"),
            "": (ErrorCode.UNACCEPTABLE_CREDENTIAL, "Username must not be empty"),
            "wire-ok": (ErrorCode.NONE, None),
        }
        assert len(altered.results) == 7

        described = client.request("DescribeUserScramCredentials", 0, users=[
            UserName(name="wire-ok"), UserName(name="wire-unknown"), UserName(name="wire-few"),
            UserName(name="wire-dup"), UserName(name="wire-dup")])
        assert described.error_code == ErrorCode.NONE
        rows = {r.user: (r.error_code, r.error_message,
                         [(i.mechanism, i.iterations) for i in r.credential_infos])
                for r in described.results}
        assert rows == {
            "wire-ok": (ErrorCode.NONE, None, [(1, 16384)]),
            "wire-unknown": (ErrorCode.RESOURCE_NOT_FOUND,
                             "Attempt to describe a user credential that does not exist: wire-unknown", []),
            "wire-few": (ErrorCode.RESOURCE_NOT_FOUND,
                         "Attempt to describe a user credential that does not exist: wire-few", []),
            "wire-dup": (ErrorCode.DUPLICATE_RESOURCE,
                         "Cannot describe SCRAM credentials for the same user twice in a single "
                         "request: wire-dup", []),
        }
        # The duplicated user's valid alterations were both dropped.
        twice = client.request("DescribeUserScramCredentials", 0, users=[UserName(name="wire-twice")])
        assert twice.results[0].error_code == ErrorCode.RESOURCE_NOT_FOUND
        deleted = client.request("AlterUserScramCredentials", 0, deletions=[
            Deletion(name="wire-ok", mechanism=1)], upsertions=[])
        assert [(r.user, r.error_code) for r in deleted.results] == [("wire-ok", ErrorCode.NONE)]
