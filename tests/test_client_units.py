"""Unit tests of kbroker.client's pure parts: the range assignor, murmur2, SASL client tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from kbroker.client.group_member import range_assignment
from kbroker.client.producer import murmur2, partition_for_key
from kbroker.client.sasl import SaslCredentials, SaslFailed


def test_range_assignor_splits_each_topic_into_contiguous_ranges():
    subscriptions = {"m-b": ["orders", "audit"], "m-a": ["orders"], "m-c": ["orders"]}
    assert range_assignment(subscriptions, {"orders": 7, "audit": 2}) == {
        "m-a": {"orders": [0, 1, 2]},
        "m-b": {"orders": [3, 4], "audit": [0, 1]},
        "m-c": {"orders": [5, 6]},
    }
    assert range_assignment({"x": ["t"], "y": ["t"]}, {"t": 1}) == {"x": {"t": [0]}, "y": {}}


@pytest.mark.parametrize(("key", "expected"), [  # Kafka's own UtilsTest vectors
    (b"21", -973932308), (b"foobar", -790332482), (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
])
def test_murmur2_matches_kafka(key, expected):
    assert murmur2(key) == expected


def test_keyed_partition_is_positive_murmur2_modulo():
    assert partition_for_key(b"21", 4) == (-973932308 & 0x7FFFFFFF) % 4


def test_scram_client_proves_the_password_and_checks_the_server():
    exchange = SaslCredentials("SCRAM-SHA-256", "al=ice,", "pencil").exchange()
    first = exchange.first().decode()
    assert first.startswith("n,,n=al=3Dice=2C,r=")
    client_nonce = first.split("r=", 1)[1]
    salt, iterations = b"salt-bytes", 4096
    server_first = f"r={client_nonce}srv,s={base64.b64encode(salt).decode()},i={iterations}"
    final = exchange.next(server_first.encode()).decode()
    without_proof, proof = final.rsplit(",p=", 1)
    assert without_proof == f"c=biws,r={client_nonce}srv"

    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    auth = f"{first[3:]},{server_first},{without_proof}".encode()
    signature = hmac.new(hashlib.sha256(client_key).digest(), auth, "sha256").digest()
    recovered = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature))
    assert hashlib.sha256(recovered).digest() == hashlib.sha256(client_key).digest()

    server_signature = hmac.new(hmac.new(salted, b"Server Key", "sha256").digest(), auth,
                                "sha256").digest()
    with pytest.raises(SaslFailed):
        SaslCredentials("SCRAM-SHA-256", "a", "b").exchange().next(b"x=1")
    assert exchange.next(b"v=" + base64.b64encode(server_signature)) is None


def test_plain_token():
    assert SaslCredentials("PLAIN", "alice", "secret").exchange().first() == b"\0alice\0secret"
