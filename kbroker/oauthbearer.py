"""SASL/OAUTHBEARER (RFC 7628) with Kafka's unsecured JWS validator, for local development.

Rules (Kafka's OAuthBearerSaslServer, OAuthBearerUnsecuredJws and
OAuthBearerUnsecuredValidatorCallbackHandler):
 O1. The client's first message is the GS2 header, then `auth=Bearer TOKEN` and optional
     key=value extensions, separated by 0x01 and ended by two 0x01.
 O2. The token is an unsecured JWS: three dot-separated Base64URL parts, a header with
     "alg": "none", a JSON claims object, an empty signature.
 O3. The principal claim (`sub`, or unsecuredValidatorPrincipalClaimName) must be a non-blank
     string; `exp` (seconds) must exist and lie after now minus the allowed clock skew
     (unsecuredValidatorAllowableClockSkewMs); `iat`, if present, not after now plus the skew,
     and before `exp`; the scope (a string or a list; `scope` or unsecuredValidatorScopeClaimName)
     must hold every unsecuredValidatorRequiredScope entry.
 O4. A token that fails is answered with the server message {"status":"invalid_token"}
     ("insufficient_scope" with the scope for a missing scope); the client acknowledges with a
     single 0x01 and the exchange then fails with that message.
 O5. The session lasts at most until the token's `exp` (KIP-368).
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from kbroker.sasl import AuthenticationFailed, Mechanism

_JAAS_OPTION = re.compile(r'(\w+)\s*=\s*"([^"]*)"')
_AUTH = re.compile(r"auth=Bearer\s+(\S+)$", re.IGNORECASE)


class InvalidToken(Exception):
    """Why a token is refused, in Kafka's words; `scope` for an insufficient scope."""

    def __init__(self, message: str, scope: str | None = None):
        super().__init__(message)
        self.scope = scope


def jaas_options(jaas_config: str | None) -> dict[str, str]:
    """The options of an OAuthBearerLoginModule JAAS line (unsecuredValidator...="...")."""
    return dict(_JAAS_OPTION.findall(jaas_config or ""))


def _json_part(part: str) -> dict:
    try:
        decoded = base64.urlsafe_b64decode(part.replace("+", "-").replace("/", "_") + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("malformed Base64 URL encoded value") from None
    try:
        value = json.loads(decoded)
    except (ValueError, UnicodeDecodeError):
        raise InvalidToken("malformed JSON") from None
    if not isinstance(value, dict):
        raise InvalidToken("malformed JSON")
    return value


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _java_type(value) -> str:
    """The Java class name Kafka's JSON parser gives a claim's value, for its error messages."""
    if isinstance(value, bool):
        return "String"  # Kafka reads booleans as text
    if isinstance(value, int):
        return "Integer" if -2**31 <= value < 2**31 else "Long"
    return {str: "String", list: "ArrayList", float: "Double"}.get(type(value), "String")


def validate_unsecured_token(token: str, now_ms: int, principal_claim: str = "sub",
                             scope_claim: str = "scope", required_scope: tuple[str, ...] = (),
                             clock_skew_ms: int = 0) -> tuple[str, int]:
    """(principal name, expiration in ms since the epoch) of a valid token (rules O2, O3);
    InvalidToken otherwise."""
    if ".." in token:
        raise InvalidToken("Malformed compact serialization contains '..'")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("Unsecured JWS compact serializations must have 3 dot-separated "
                           "Base64URL-encoded values")
    header, claims = _json_part(parts[0]), _json_part(parts[1])
    if header.get("alg") != "none":
        raise InvalidToken("Unsecured JWS must have 'none' for an algorithm")
    if parts[2]:
        raise InvalidToken("Unsecured JWS must not contain a digital signature")
    scope = _scope(claims.get(scope_claim), scope_claim)
    for name in ("exp", "iat"):
        if name in claims and not _is_number(claims[name]):
            raise InvalidToken(f"The '{name}' claim was not of type Number: {_java_type(claims[name])}")
    expiration = claims.get("exp")
    if expiration is None:
        raise InvalidToken("No expiration time in JWT")
    principal = claims.get(principal_claim)
    if principal is not None and not isinstance(principal, str):
        raise InvalidToken(f"The '{principal_claim}' claim was not of type String: {_java_type(principal)}")
    if not principal or not principal.strip():
        raise InvalidToken(f"No principal name in JWT claim: {principal_claim}")
    issued_at = claims.get("iat")
    if issued_at is not None and 1000 * issued_at > now_ms + clock_skew_ms:
        raise InvalidToken(f"The Issued At value ({issued_at:f} seconds) was after the indicated "
                           f"time ({now_ms} ms) plus allowable clock skew ({clock_skew_ms} ms)")
    if now_ms - clock_skew_ms >= 1000 * expiration:
        raise InvalidToken(f"The indicated time ({now_ms} ms) minus allowable clock skew "
                           f"({clock_skew_ms} ms) was on or after the Expiration Time value "
                           f"({expiration:f} seconds)")
    if issued_at is not None and expiration <= issued_at:
        raise InvalidToken(f"The Expiration Time time ({expiration:f} seconds) was not after the "
                           f"Issued At time ({issued_at:f} seconds)")
    for element in required_scope:
        if element not in scope:
            raise InvalidToken(f"The provided scope ({sorted(scope)}) was missing a required scope "
                               f"({element}).  All required scope elements: {list(required_scope)}",
                               scope=str(list(required_scope)))
    return principal, int(expiration * 1000)  # truncated, as Kafka's long conversion does


def _scope(value, claim: str) -> set[str]:
    if value is None:
        return set()
    if isinstance(value, str):
        return {value.strip()} if value.strip() else set()
    if isinstance(value, list):
        return {str(item).strip() for item in value if str(item).strip()}
    raise InvalidToken(f"The '{claim}' claim was not of type List: {_java_type(value)}")


class OAuthBearer(Mechanism):
    """The server side of one OAUTHBEARER exchange (rules O1, O4, O5)."""

    name = "OAUTHBEARER"

    def __init__(self, options: dict[str, str], clock_ms, principal_claim: str = "sub",
                 scope_claim: str = "scope"):
        self._options = options
        self._clock_ms = clock_ms
        self._principal_claim = options.get("unsecuredValidatorPrincipalClaimName", "").strip() or principal_claim
        self._scope_claim = options.get("unsecuredValidatorScopeClaimName", "").strip() or scope_claim
        self._error: str | None = None  # the error status sent, once a token failed
        self._failure = ""  # why, for the broker's log
        self.expires_ms: int | None = None

    def step(self, token: bytes) -> bytes:
        if self._error is not None:
            if token == b"\x01":
                raise AuthenticationFailed(self._failure, client_message=self._error)
            raise AuthenticationFailed("Unexpected message after an OAUTHBEARER error")
        if self.done:
            raise AuthenticationFailed("OAUTHBEARER exchange already complete")
        text = token.decode("utf-8", "replace")
        gs2, _, rest = text.partition("\x01")
        if not gs2.startswith(("n,", "y,")) or not rest.endswith("\x01\x01"):
            raise AuthenticationFailed("Invalid OAUTHBEARER client first message")
        pairs = [pair for pair in rest[:-2].split("\x01") if pair]
        bearer = [match.group(1) for pair in pairs if (match := _AUTH.match(pair))]
        if len(bearer) != 1:
            raise AuthenticationFailed("Invalid OAUTHBEARER client first message: no auth=Bearer token")
        try:
            skew = int(self._options.get("unsecuredValidatorAllowableClockSkewMs", "0").strip() or 0)
        except ValueError:
            skew = 0
        required = tuple(self._options.get("unsecuredValidatorRequiredScope", "").split())
        try:
            self.user, self.expires_ms = validate_unsecured_token(
                bearer[0], self._clock_ms(), self._principal_claim, self._scope_claim, required,
                max(skew, 0))
        except InvalidToken as exc:
            status = {"status": "insufficient_scope" if exc.scope else "invalid_token"}
            if exc.scope:
                status["scope"] = exc.scope
            self._error = json.dumps(status, separators=(",", ":"))
            self._failure = str(exc)
            return self._error.encode()
        self.done = True
        return b""
