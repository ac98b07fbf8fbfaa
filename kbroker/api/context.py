"""What a handler knows about a request beyond its body, and about the client that sent it.

Handlers never see the connection that owns the socket: the server gives them a
`RequestContext` per request and a `ClientSession` per connection, which holds what a
connection's requests learn about their client (its software, its SASL exchange and principal).
"""

from __future__ import annotations

from dataclasses import dataclass

from kbroker.broker import Broker
from kbroker.sasl import Mechanism
from kbroker.security.principal import ANONYMOUS


@dataclass(slots=True)
class ClientSession:
    """One connection's client, as its requests see it."""

    peer: str  # "host:port"
    listener: str  # the listener's name, e.g. PLAINTEXT, SASL_SSL or EXTERNAL
    security_protocol: str  # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    advertised: tuple[str, int]  # (host, port) of this listener, as clients are told
    authenticated: bool
    node_id: int  # the node whose listener it connected to (one of several with --brokers N)
    client_software: str | None = None  # "name version" from ApiVersions v3+
    sasl: Mechanism | None = None  # the SASL exchange under way, from SaslHandshake
    sasl_raw_tokens: bool = False  # after SaslHandshake v0: tokens come bare, not in SaslAuthenticate
    principal: str = ANONYMOUS  # Kafka's principal: User:alice, User:CN=alice,O=example
    sasl_mechanism: str | None = None  # of the last successful authentication
    sasl_version: int = 0  # SaslAuthenticate version it used; re-authentication needs 1+
    session_expires: float | None = None  # time.monotonic() when re-authentication is due (KIP-368)

    def may_send_requests(self, now: float) -> bool:
        """Authenticated, and its session not expired (KIP-368: the connection is closed at the
        first request after that, other than a re-authentication)."""
        return self.authenticated and (self.session_expires is None or now < self.session_expires)

    @property
    def peer_host(self) -> str:
        return self.peer.rpartition(":")[0]


@dataclass(slots=True)
class RequestContext:
    """One request: the broker's parts, the client session, the header's fields."""

    broker: Broker
    session: ClientSession
    api_version: int
    correlation_id: int
    client_id: str
    close_after_response: bool = False  # Kafka answers, then closes the connection
    request_bytes: int = 0  # size of the request frame
    throttle_ms: int = 0  # set by quotas: the connection is muted this long after the response
    waited_seconds: float = 0.0  # long polling, left out of the request quota's time

    @property
    def node_id(self) -> int:
        """The node the request was sent to (the routing checks of --brokers N compare it)."""
        return self.session.node_id
