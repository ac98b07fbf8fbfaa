"""The client side of SASL PLAIN and SCRAM-SHA-256/512 (RFC 4616, RFC 5802), without I/O.

A mechanism yields the client's tokens one at a time: `first()`, then `next(server_token)`
until it returns None (SCRAM checks the server's signature on the last step).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass

MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class SaslFailed(Exception):
    """The server's answer does not fit the exchange (or proves it does not know the password)."""


@dataclass(frozen=True)
class SaslCredentials:
    mechanism: str
    username: str
    password: str

    def exchange(self):
        if self.mechanism == "PLAIN":
            return PlainExchange(self.username, self.password)
        return ScramExchange(self.mechanism, self.username, self.password)


class PlainExchange:
    def __init__(self, username: str, password: str):
        self._token = f"\0{username}\0{password}".encode()

    def first(self) -> bytes:
        return self._token

    def next(self, server_token: bytes) -> bytes | None:
        return None


def _scram_name(username: str) -> str:
    return username.replace("=", "=3D").replace(",", "=2C")


class ScramExchange:
    def __init__(self, mechanism: str, username: str, password: str):
        self._hash = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}[mechanism]
        self._password = password.encode()
        self._nonce = base64.b64encode(os.urandom(24)).decode()
        self._client_first_bare = f"n={_scram_name(username)},r={self._nonce}"
        self._server_signature: bytes | None = None

    def first(self) -> bytes:
        return f"n,,{self._client_first_bare}".encode()

    def _hmac(self, key: bytes, message: bytes) -> bytes:
        return hmac.new(key, message, self._hash).digest()

    def next(self, server_token: bytes) -> bytes | None:
        if self._server_signature is not None:  # server-final: v=<signature>
            if not hmac.compare_digest(server_token, b"v=" + base64.b64encode(self._server_signature)):
                raise SaslFailed("the server's SCRAM signature is wrong")
            return None
        server_first = server_token.decode()
        fields = dict(part.split("=", 1) for part in server_first.split(",") if "=" in part)
        nonce, salt, iterations = fields.get("r", ""), fields.get("s"), fields.get("i", "")
        if not nonce.startswith(self._nonce) or salt is None or not iterations.isdigit():
            raise SaslFailed(f"unexpected SCRAM server-first message {server_first!r}")
        salted = hashlib.pbkdf2_hmac(self._hash, self._password, base64.b64decode(salt),
                                     int(iterations))
        client_key = self._hmac(salted, b"Client Key")
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._client_first_bare},{server_first},{without_proof}".encode()
        signature = self._hmac(hashlib.new(self._hash, client_key).digest(), auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        self._server_signature = self._hmac(self._hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()
