"""SASL authentication as plain state machines (no I/O): PLAIN and SCRAM-SHA-256/512.

A connection on a SASL_PLAINTEXT listener must authenticate before any request other than
ApiVersions, SaslHandshake and SaslAuthenticate. SaslHandshake picks a mechanism; each
SaslAuthenticate carries one client token to `Mechanism.step`, which returns the server's
token or raises AuthenticationFailed; `done` tells when the exchange succeeded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass

SCRAM_ITERATIONS = 4096
_JAAS_USER = re.compile(r'user_([^=\s]+)\s*=\s*"([^"]*)"')


class AuthenticationFailed(Exception):
    """The client's credentials or tokens were refused."""


def users_from_jaas(jaas_config: str) -> dict[str, str]:
    """Users of a PlainLoginModule JAAS line (`user_alice="secret"`), as Kafka configures them."""
    return dict(_JAAS_USER.findall(jaas_config))


class Mechanism:
    name: str
    done: bool = False
    user: str | None = None

    def step(self, token: bytes) -> bytes:
        raise NotImplementedError


class Plain(Mechanism):
    """RFC 4616: one token `authzid NUL user NUL password`."""

    name = "PLAIN"

    def __init__(self, users: dict[str, str]):
        self._users = users

    def step(self, token: bytes) -> bytes:
        parts = token.split(b"\0")
        if self.done or len(parts) != 3:
            raise AuthenticationFailed("Invalid SASL/PLAIN request")
        authzid, user, password = (part.decode("utf-8", "replace") for part in parts)
        expected = self._users.get(user)
        if expected is None or not hmac.compare_digest(expected.encode(), password.encode()) \
                or (authzid and authzid != user):
            raise AuthenticationFailed("Invalid username or password")
        self.user, self.done = user, True
        return b""


@dataclass(frozen=True, slots=True)
class ScramCredential:
    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int


def scram_credential(password: str, hash_name: str, salt: bytes | None = None,
                     iterations: int = SCRAM_ITERATIONS) -> ScramCredential:
    """What the server keeps of a password (RFC 5802 section 3)."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac(hash_name, password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", hash_name)
    return ScramCredential(salt, hashlib.new(hash_name, client_key).digest(),
                           hmac.digest(salted, b"Server Key", hash_name), iterations)


def _attributes(message: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in message.split(",") if "=" in item)


class Scram(Mechanism):
    """RFC 5802 server side: client-first, server-first, client-final, server-final."""

    def __init__(self, hash_name: str, credentials: dict[str, ScramCredential]):
        self.name = f"SCRAM-SHA-{hash_name[3:]}"
        self._hash = hash_name
        self._credentials = credentials
        self._expect_final = False
        self._state: tuple | None = None

    def step(self, token: bytes) -> bytes:
        if self.done:
            raise AuthenticationFailed("SCRAM exchange already complete")
        message = token.decode("utf-8", "replace")
        return self._final(message) if self._expect_final else self._first(message)

    def _first(self, message: str) -> bytes:
        # gs2 header "n,," (or "n,a=authzid,") then the bare client-first message.
        try:
            _cbind, _authzid, bare = message.split(",", 2)
            attributes = _attributes(bare)
            user = attributes["n"].replace("=2C", ",").replace("=3D", "=")
            client_nonce = attributes["r"]
        except (ValueError, KeyError):
            raise AuthenticationFailed("Invalid SCRAM client-first message") from None
        credential = self._credentials.get(user)
        if credential is None:
            raise AuthenticationFailed("Authentication failed: Invalid user credentials")
        nonce = client_nonce + base64.b64encode(os.urandom(18)).decode()
        server_first = (f"r={nonce},s={base64.b64encode(credential.salt).decode()},"
                        f"i={credential.iterations}")
        self._state = (user, credential, bare, server_first, nonce)
        self._expect_final = True
        return server_first.encode()

    def _final(self, message: str) -> bytes:
        user, credential, client_first_bare, server_first, nonce = self._state
        try:
            without_proof, proof_text = message.rsplit(",p=", 1)
            proof = base64.b64decode(proof_text)
        except ValueError:
            raise AuthenticationFailed("Invalid SCRAM client-final message") from None
        if _attributes(without_proof).get("r") != nonce:
            raise AuthenticationFailed("Invalid SCRAM nonce")
        auth_message = f"{client_first_bare},{server_first},{without_proof}".encode()
        signature = hmac.digest(credential.stored_key, auth_message, self._hash)
        if len(proof) != len(signature):
            raise AuthenticationFailed("Invalid SCRAM proof")
        client_key = bytes(a ^ b for a, b in zip(proof, signature))
        if not hmac.compare_digest(hashlib.new(self._hash, client_key).digest(), credential.stored_key):
            raise AuthenticationFailed("Authentication failed: Invalid user credentials")
        self.user, self.done = user, True
        server_signature = hmac.digest(credential.server_key, auth_message, self._hash)
        return b"v=" + base64.b64encode(server_signature)


class SaslUsers:
    """The users a SASL listener accepts, with SCRAM credentials derived once at start."""

    SCRAM_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}

    def __init__(self, users: dict[str, str], mechanisms: list[str]):
        self.mechanisms = mechanisms
        self._plain = users
        self._scram = {
            mechanism: {user: scram_credential(password, hash_name)
                        for user, password in users.items()}
            for mechanism, hash_name in self.SCRAM_HASHES.items() if mechanism in mechanisms
        }

    def start(self, mechanism: str) -> Mechanism | None:
        """A fresh exchange for an enabled mechanism, else None."""
        if mechanism not in self.mechanisms:
            return None
        if mechanism == "PLAIN":
            return Plain(self._plain)
        if mechanism in self._scram:
            return Scram(self.SCRAM_HASHES[mechanism], self._scram[mechanism])
        return None
