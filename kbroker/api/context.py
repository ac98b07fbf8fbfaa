"""What a handler knows about a request beyond its body, and about the client that sent it.

Handlers never see the connection that owns the socket: the server gives them a
`RequestContext` per request and a `ClientSession` per connection, which holds what a
connection's requests learn about their client (its software, its SASL exchange and principal).
"""

from __future__ import annotations

from dataclasses import dataclass

from kbroker.broker import Broker
from kbroker.sasl import Mechanism


@dataclass(slots=True)
class ClientSession:
    """One connection's client, as its requests see it."""

    peer: str  # "host:port"
    listener: str  # the listener's security protocol, e.g. PLAINTEXT or SASL_PLAINTEXT
    authenticated: bool
    client_software: str | None = None  # "name version" from ApiVersions v3+
    sasl: Mechanism | None = None  # the SASL exchange under way, from SaslHandshake
    principal: str | None = None  # the authenticated user

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
