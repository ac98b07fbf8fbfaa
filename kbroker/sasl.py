"""SASL authentication as plain state machines (no I/O): PLAIN and SCRAM-SHA-256/512
(OAUTHBEARER: kbroker/oauthbearer.py).

A connection on a SASL_PLAINTEXT or SASL_SSL listener must authenticate before any request other than
ApiVersions, SaslHandshake and SaslAuthenticate. SaslHandshake picks a mechanism; each
SaslAuthenticate carries one client token to `Mechanism.step`, which returns the server's
token or raises AuthenticationFailed; `done` tells when the exchange succeeded.

ScramStore holds the SCRAM credentials that admin clients create and delete at runtime
(DescribeUserScramCredentials / AlterUserScramCredentials), with Kafka's validation rules.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
from collections import ChainMap
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

from kbroker.protocol.errors import ErrorCode

SCRAM_ITERATIONS = 4096
_JAAS_USER = re.compile(r'user_([^=\s]+)\s*=\s*"([^"]*)"')


class AuthenticationFailed(Exception):
    """The client's credentials or tokens were refused; `client_message` replaces Kafka's generic
    answer when the mechanism gives its own (OAUTHBEARER's error status)."""

    def __init__(self, reason: str, client_message: str | None = None):
        super().__init__(reason)
        self.client_message = client_message


def users_from_jaas(jaas_config: str) -> dict[str, str]:
    """Users of a PlainLoginModule JAAS line (`user_alice="secret"`), as Kafka configures them."""
    return dict(_JAAS_USER.findall(jaas_config))


class Mechanism:
    name: str
    done: bool = False
    user: str | None = None
    expires_ms: int | None = None  # when the credential expires (ms since the epoch), if it does

    def step(self, token: bytes) -> bytes:
        raise NotImplementedError


_PLAIN_REFUSED = "Authentication failed: Invalid username or password"
_PLAIN_OTHER_AUTHZID = "Authentication failed: Client requested an authorization id that is different from username"


class Plain(Mechanism):
    """RFC 4616: one token `authzid NUL user NUL password`."""

    name = "PLAIN"

    def __init__(self, users: dict[str, str]):
        self._users = users

    def step(self, token: bytes) -> bytes:
        """As Kafka's PlainSaslServer: a malformed token gets the generic answer, a refused one
        its own message (Kafka's SaslAuthenticationException reaches the client)."""
        parts = token.split(b"\0")
        if self.done or len(parts) != 3 or not all(parts[1:]):
            raise AuthenticationFailed("Invalid SASL/PLAIN request")
        authzid, user, password = (part.decode("utf-8", "replace") for part in parts)
        expected = self._users.get(user)
        if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
            raise AuthenticationFailed("Invalid username or password", client_message=_PLAIN_REFUSED)
        if authzid and authzid != user:
            raise AuthenticationFailed("authorization id differs", client_message=_PLAIN_OTHER_AUTHZID)
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
    return scram_credential_from_salted(salted, hash_name, salt, iterations)


def scram_credential_from_salted(salted_password: bytes, hash_name: str, salt: bytes,
                                 iterations: int) -> ScramCredential:
    """What the server keeps, from the PBKDF2 output an admin client sends (RFC 5802):
    StoredKey = H(HMAC(salted, "Client Key")), ServerKey = HMAC(salted, "Server Key")."""
    client_key = hmac.digest(salted_password, b"Client Key", hash_name)
    return ScramCredential(salt, hashlib.new(hash_name, client_key).digest(),
                           hmac.digest(salted_password, b"Server Key", hash_name), iterations)


def _attributes(message: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in message.split(",") if "=" in item)


class Scram(Mechanism):
    """RFC 5802 server side: client-first, server-first, client-final, server-final."""

    def __init__(self, hash_name: str, credentials: Mapping[str, ScramCredential]):
        self.name = f"SCRAM-SHA-{hash_name[3:]}"
        self._hash = hash_name
        self._credentials = credentials
        self._expect_final = False
        # (user, credential, client-first bare, server-first, nonce) once the first message is read
        self._state: tuple[str, ScramCredential, str, str, str] | None = None

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
        assert self._state is not None  # _first set it before it expected the final message
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


SCRAM_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
# Kafka's ScramMechanism type codes (org.apache.kafka.clients.admin.ScramMechanism); 0 is UNKNOWN.
SCRAM_MECHANISM_TYPES = {1: "SCRAM-SHA-256", 2: "SCRAM-SHA-512"}
SCRAM_MIN_ITERATIONS = 4096  # both mechanisms' minIterations in Kafka
SCRAM_MAX_ITERATIONS = 16384  # Kafka's ScramControlManager.MAX_ITERATIONS
_ALTERED_TWICE = "A user credential cannot be altered twice in the same request"
_DESCRIBED_TWICE = "Cannot describe SCRAM credentials for the same user twice in a single request: "
_DESCRIBE_MISSING = "Attempt to describe a user credential that does not exist: "


@dataclass(frozen=True, slots=True)
class ScramChange:
    """One accepted alteration: `credential` None deletes the user's credential for `mechanism`."""

    user: str
    mechanism: str
    credential: ScramCredential | None


class ScramStore:
    """SCRAM credentials managed at runtime with AlterUserScramCredentials, as Kafka's controller
    keeps them (ScramControlManager): per mechanism name, per user, only the salt, stored key,
    server key and iterations. Sans-IO: `plan_alter` decides, the caller persists `dumps(...)`
    and then calls `apply`, so a failed write changes nothing.
    """

    def __init__(self, credentials: dict[str, dict[str, ScramCredential]] | None = None):
        # One dict per mechanism, mutated in place: SaslUsers' lookups hold references to them.
        self.by_mechanism: dict[str, dict[str, ScramCredential]] = {
            mechanism: dict((credentials or {}).get(mechanism, {})) for mechanism in SCRAM_HASHES}

    def get(self, mechanism: str, user: str) -> ScramCredential | None:
        return self.by_mechanism.get(mechanism, {}).get(user)

    def users(self) -> list[str]:
        return sorted({user for users in self.by_mechanism.values() for user in users})

    # -- DescribeUserScramCredentials (Kafka's ScramImage.describe) ------------------------------

    def describe(self, names: list[str] | None) -> list[tuple[str, int, str | None, list[tuple[int, int]]]]:
        """(user, error code, error message, [(mechanism type, iterations)]) per user asked for;
        every user with a credential when `names` is None or empty."""
        if not names:
            names = self.users()
        counts: dict[str, int] = {}
        for name in names:
            counts[name] = counts.get(name, 0) + 1
        results: list[tuple[str, int, str | None, list[tuple[int, int]]]] = []
        for name, count in counts.items():
            if count > 1:
                results.append((name, ErrorCode.DUPLICATE_RESOURCE, _DESCRIBED_TWICE + name, []))
                continue
            infos = [(type_code, credential.iterations)
                     for type_code, mechanism in SCRAM_MECHANISM_TYPES.items()
                     if (credential := self.get(mechanism, name)) is not None]
            if infos:
                results.append((name, ErrorCode.NONE, None, infos))
            else:
                results.append((name, ErrorCode.RESOURCE_NOT_FOUND, _DESCRIBE_MISSING + name, []))
        return results

    # -- AlterUserScramCredentials (Kafka's ScramControlManager.alterCredentials) ---------------

    def plan_alter(self, deletions: list[tuple[str, int]],
                   upsertions: list[tuple[str, int, int, bytes, bytes]],
                   ) -> tuple[list[tuple[str, int, str | None]], list[ScramChange]]:
        """Validate one request: ([(user, error code, error message)] one per user named, in
        request order; the changes to make). Deletions are (user, mechanism type); upsertions
        (user, mechanism type, iterations, salt, salted password).

        As in Kafka, a user's first failing alteration decides its error and later ones for that
        user are ignored; a second alteration of a user whose earlier one was valid makes the
        user DUPLICATE_RESOURCE and drops both.
        """
        accepted: dict[str, ScramChange] = {}
        errors: dict[str, tuple[int, str | None]] = {}
        order: dict[str, None] = {}
        alterations: list[tuple[str, int, tuple[int, bytes, bytes] | None]] = [
            (name, mechanism, None) for name, mechanism in deletions]
        alterations += [(name, mechanism, (iterations, bytes(salt), bytes(salted)))
                        for name, mechanism, iterations, salt, salted in upsertions]
        for name, type_code, upsertion in alterations:
            order.setdefault(name)
            if name in errors:
                continue
            if accepted.pop(name, None) is not None:
                errors[name] = (ErrorCode.DUPLICATE_RESOURCE, _ALTERED_TWICE)
                continue
            outcome = (self._validate_deletion(name, type_code) if upsertion is None
                       else self._validate_upsertion(name, type_code, *upsertion))
            if isinstance(outcome, ScramChange):
                accepted[name] = outcome
            else:
                errors[name] = outcome
        results = [(name, *errors[name]) if name in errors else (name, ErrorCode.NONE, None)
                   for name in order]
        return results, list(accepted.values())

    def _validate_deletion(self, name: str, type_code: int) -> ScramChange | tuple[int, str]:
        error = _check_name_and_mechanism(name, type_code)
        if error is not None:
            return error
        mechanism = SCRAM_MECHANISM_TYPES[type_code]
        if self.get(mechanism, name) is None:
            return ErrorCode.RESOURCE_NOT_FOUND, "Attempt to delete a user credential that does not exist"
        return ScramChange(name, mechanism, None)

    @staticmethod
    def _validate_upsertion(name: str, type_code: int, iterations: int, salt: bytes,
                            salted_password: bytes) -> ScramChange | tuple[int, str | None]:
        error = _check_name_and_mechanism(name, type_code)
        if error is not None:
            return error
        if iterations < SCRAM_MIN_ITERATIONS:
            return ErrorCode.UNACCEPTABLE_CREDENTIAL, "Too few iterations"
        if iterations > SCRAM_MAX_ITERATIONS:
            return ErrorCode.UNACCEPTABLE_CREDENTIAL, "Too many iterations"
        if not salted_password:
            # Kafka's HMAC refuses an empty key, and the controller answers that exception as an
            # unknown server error without a message.
            return ErrorCode.UNKNOWN_SERVER_ERROR, None
        mechanism = SCRAM_MECHANISM_TYPES[type_code]
        return ScramChange(name, mechanism, scram_credential_from_salted(
            salted_password, SCRAM_HASHES[mechanism], salt, iterations))

    def apply(self, changes: list[ScramChange]) -> None:
        _apply(self.by_mechanism, changes)

    # -- persistence -----------------------------------------------------------------------------

    def dumps(self, pending: Sequence[ScramChange] = ()) -> str:
        """The store as JSON text (bytes in base64), with `pending` changes applied."""
        state = {mechanism: dict(users) for mechanism, users in self.by_mechanism.items()}
        _apply(state, pending)
        return json.dumps({"version": 1, "credentials": {
            mechanism: {user: {"salt": _b64(c.salt), "stored_key": _b64(c.stored_key),
                               "server_key": _b64(c.server_key), "iterations": c.iterations}
                        for user, c in sorted(users.items())}
            for mechanism, users in state.items()}}, indent=1)

    @classmethod
    def loads(cls, text: str) -> "ScramStore":
        stored = json.loads(text)
        return cls({
            mechanism: {user: ScramCredential(base64.b64decode(c["salt"]), base64.b64decode(c["stored_key"]),
                                              base64.b64decode(c["server_key"]), int(c["iterations"]))
                        for user, c in users.items()}
            for mechanism, users in stored.get("credentials", {}).items() if mechanism in SCRAM_HASHES})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _check_name_and_mechanism(name: str, type_code: int) -> tuple[int, str] | None:
    if not name:
        return ErrorCode.UNACCEPTABLE_CREDENTIAL, "Username must not be empty"
    if type_code not in SCRAM_MECHANISM_TYPES:
        return ErrorCode.UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism"
    return None


def _apply(by_mechanism: dict[str, dict[str, ScramCredential]], changes: Iterable[ScramChange]) -> None:
    for change in changes:
        users = by_mechanism.setdefault(change.mechanism, {})
        if change.credential is None:
            users.pop(change.user, None)
        else:
            users[change.user] = change.credential


class SaslUsers:
    """The users a SASL listener accepts.

    PLAIN checks the configured users (the JAAS setting / --sasl-user) only, as Kafka's PLAIN
    checks its JAAS config. SCRAM looks a user up in the runtime `store` first (credentials made
    with AlterUserScramCredentials, read at each exchange so changes apply to new connections at
    once), then in the SCRAM credentials derived once at start from the configured passwords.
    """

    def __init__(self, users: dict[str, str], mechanisms: list[str], store: ScramStore,
                 oauthbearer: Callable[[], Mechanism] | None = None):
        self.mechanisms = mechanisms
        self._plain = users
        self._oauthbearer = oauthbearer
        self._scram = {
            mechanism: ChainMap(store.by_mechanism[mechanism],
                                {user: scram_credential(password, hash_name)
                                 for user, password in users.items()})
            for mechanism, hash_name in SCRAM_HASHES.items() if mechanism in mechanisms
        }

    def start(self, mechanism: str) -> Mechanism | None:
        """A fresh exchange for an enabled mechanism, else None."""
        if mechanism not in self.mechanisms:
            return None
        if mechanism == "PLAIN":
            return Plain(self._plain)
        if mechanism in self._scram:
            return Scram(SCRAM_HASHES[mechanism], self._scram[mechanism])
        if mechanism == "OAUTHBEARER" and self._oauthbearer is not None:
            return self._oauthbearer()
        return None
