"""The broker's listeners, from Kafka's settings: `listeners`, `advertised.listeners`,
`listener.security.protocol.map`, `controller.listener.names`.

Rules (Kafka's, for one node):
 L1. `listeners` is a comma-separated list of NAME://HOST:PORT; NAME is a security protocol
     (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) or a name that `listener.security.protocol.map`
     maps to one. Names are case-insensitive (kept upper-case) and appear once each.
 L2. An empty HOST listens on every interface; port 0 takes a free port.
 L3. `advertised.listeners` gives, per listener name, the address clients are told; a listener
     without one advertises its own address (port 0 there: the port actually bound).
 L4. Listeners named in `controller.listener.names` serve the KRaft controller quorum, which a
     single node does not have: they are not opened.
No sockets here: the server binds what `listener_configs` describes.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from kbroker.protocol.errors import ErrorCode, KafkaError

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
DEFAULT_PROTOCOL_MAP = ",".join(["CONTROLLER:PLAINTEXT"] + [f"{p}:{p}" for p in SECURITY_PROTOCOLS])


def _invalid(why: str) -> ValueError:
    """What a setting's validator raises: the reason alone (kbroker/log/config.py names the setting)."""
    return ValueError(why)


class CannotListen(Exception):
    """A listener cannot be set up: its address cannot be bound (in use, not this host's, not
    allowed) or its TLS settings do not work."""


def host_port(host: str, port: int) -> str:
    """HOST:PORT, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_endpoints(text: str | None) -> list[tuple[str, str, int]]:
    """(NAME, host, port) of each NAME://HOST:PORT entry (rule L1, L2)."""
    endpoints: list[tuple[str, str, int]] = []
    for entry in filter(None, (part.strip() for part in (text or "").split(","))):
        name, separator, address = entry.partition("://")
        host, colon, port = address.rpartition(":")
        if not separator or not name or not colon or not port.isdigit() or int(port) > 65535:
            raise _invalid(f"{entry!r} is not NAME://HOST:PORT")
        if name.upper() in (known for known, _, _ in endpoints):
            raise _invalid(f"Each listener must have a different name, {name} is repeated")
        endpoints.append((name.upper(), host.strip("[]"), int(port)))
    return endpoints


def parse_protocol_map(text: str) -> dict[str, str]:
    """`listener.security.protocol.map`: NAME:PROTOCOL pairs."""
    mapping = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, _, protocol = entry.partition(":")
        if protocol.upper() not in SECURITY_PROTOCOLS or not name:
            raise _invalid(f"{entry!r} is not NAME:PROTOCOL with PROTOCOL one of "
                           f"{', '.join(SECURITY_PROTOCOLS)}")
        mapping[name.upper()] = protocol.upper()
    return mapping


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """One listener to open: where it listens and what it tells clients."""

    name: str  # upper-case, e.g. PLAINTEXT, SSL or EXTERNAL
    security_protocol: str
    host: str  # "" for every interface
    port: int  # 0 for a free one
    advertised_host: str
    advertised_port: int  # 0: the port bound

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def config_prefix(self) -> str:
        """Kafka's prefix of this listener's own settings (listener.name.sasl_ssl.ssl.keystore...)."""
        return f"listener.name.{self.name.lower()}."


def listener_configs(config) -> list[ListenerConfig]:
    """The listeners to open, in the order given; KafkaError(INVALID_CONFIG) when the settings
    do not fit together."""
    protocols = parse_protocol_map(config["listener.security.protocol.map"])
    controllers = {name.upper() for name in config["controller.listener.names"]}
    advertised = {name: (host, port) for name, host, port
                  in parse_endpoints(config["advertised.listeners"])}
    listeners = []
    for name, host, port in parse_endpoints(config["listeners"]):
        if name in controllers:
            continue
        protocol = protocols.get(name)
        if protocol is None:
            raise KafkaError(ErrorCode.INVALID_CONFIG, f"Listener {name} is not in "
                             f"listener.security.protocol.map; give its security protocol there")
        advertised_host, advertised_port = advertised.pop(name, (host, 0))
        if not advertised_host:
            advertised_host = socket.gethostname() if not host else host
        listeners.append(ListenerConfig(name, protocol, host, port, advertised_host, advertised_port))
    if advertised:
        raise KafkaError(ErrorCode.INVALID_CONFIG, "advertised.listeners names listeners that "
                         f"listeners does not have: {', '.join(sorted(advertised))}")
    if not listeners:
        raise KafkaError(ErrorCode.INVALID_CONFIG, "listeners gives no listener for clients")
    inter_broker = config["inter.broker.listener.name"]
    if inter_broker and inter_broker.upper() not in {listener.name for listener in listeners}:
        raise KafkaError(ErrorCode.INVALID_CONFIG, f"inter.broker.listener.name must be a listener "
                         f"name defined in listeners: {inter_broker} is not")
    return listeners
