"""What the server holds back: request memory, connection counts, repeated warnings.

- `RequestMemory` is Kafka's `queued.max.request.bytes` (KIP-72): a request larger than one
  receive reserves its announced size before its body is read; while the reservations reach the
  bound, no further large request is read (its connection simply stops reading, so TCP pushes
  back on the client). Like Kafka's non-strict memory pool, one request may take the total over
  the bound when anything is left, so a request of socket.request.max.bytes always gets through.
- `ConnectionQuotas` is `max.connections`, `max.connections.per.ip` and
  `max.connections.per.ip.overrides`: a connection counts from the moment it is accepted; and
  `max.connection.creation.rate`: beyond it the acceptor waits (Kafka's connection throttling,
  at most one quota window at a time) instead of refusing; and the `ip` entities'
  `connection_creation_rate` client quotas (KIP-612): a connection from an address over its
  rate is not counted, and is closed after the time the rate needs to come back to the quota
  (at most one quota window), as Kafka's acceptor does.
- `RepeatedWarnings` logs one warning per kind and client at most once a minute, with a count of
  those held back, so one misbehaving client cannot flood the log.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from typing import Callable

import trio

from kbroker.config import parse_ip_overrides
from kbroker.log.config import INT_MAX
from kbroker.quotas import IP, ClientQuotas
from kbroker.throttling import SampledRate

CONNECTION_CREATION_RATE = "connection_creation_rate"
_IP_RATES_KEPT = 10_000  # beyond this many addresses, those without recent connections are forgotten


class RequestMemory:
    """Bytes reserved by large requests being read or handled, against queued.max.request.bytes."""

    def __init__(self, limit: int):
        self.limit = limit  # 0 or less: unbounded, as in Kafka
        self.used = 0
        self._released = trio.Event()

    async def reserve(self, size: int) -> None:
        """Wait until something is left under the bound, then take `size` bytes."""
        while 0 < self.limit <= self.used:
            await self._released.wait()
        self.used += size

    def release(self, size: int) -> None:
        if size:
            self.used -= size
            self._released.set()
            self._released = trio.Event()


class ConnectionQuotas:
    """Counts open connections, in total and by client address, against the configured limits."""

    def __init__(self, config, client_quotas: ClientQuotas | None = None):
        self._config = config
        self.total = 0
        self.by_ip: dict[str, int] = {}
        self._window_ms = config["quota.window.size.seconds"] * 1000
        self._creations = SampledRate(config["quota.window.num"], self._window_ms)
        self._client_quotas = client_quotas
        self._ip_limits_of: dict | None = None  # the quotas the limits below were read from
        self._ip_limits: dict[str | None, float] = {}  # address (None: the default) -> rate
        self._ip_creations: dict[str, SampledRate] = {}

    def creation_delay_ms(self, now_ms: int) -> int:
        """Count a new connection against max.connection.creation.rate; the ms the acceptor must
        wait before the next one (rule Q4 of kbroker/throttling.py, bounded by one window)."""
        limit = self._config["max.connection.creation.rate"]
        if limit >= INT_MAX:
            return 0
        self._creations.record(1, now_ms)
        return min(self._creations.throttle_ms(limit, now_ms), self._window_ms)

    def ip_throttle_ms(self, ip: str, now_ms: int) -> int:
        """Count a new connection from `ip` against its connection_creation_rate; when over it,
        take the connection back and return the ms after which it must be closed (else 0)."""
        limit = self._ip_limit(ip)
        if limit is None:
            return 0
        rate = self._ip_creations.get(ip)
        if rate is None:
            if len(self._ip_creations) >= _IP_RATES_KEPT:
                self._ip_creations = {address: kept for address, kept in self._ip_creations.items()
                                      if kept.rate(now_ms) > 0}
            rate = self._ip_creations[ip] = SampledRate(self._config["quota.window.num"], self._window_ms)
        rate.record(1, now_ms)
        delay_ms = min(rate.throttle_ms(limit, now_ms), self._window_ms)
        if delay_ms:
            rate.record(-1, now_ms)
        return delay_ms

    def _ip_limit(self, ip: str) -> float | None:
        store = self._client_quotas
        if store is None or not store.quotas:
            return None
        if self._ip_limits_of is not store.quotas:
            self._ip_limits = _ip_limits(store)
            self._ip_limits_of = store.quotas
        if not self._ip_limits:
            return None
        return self._ip_limits.get(_normalized(ip), self._ip_limits.get(None))

    def refusal(self, ip: str) -> str | None:
        """Why a new connection from `ip` must be refused, or None to let it in."""
        config = self._config
        if self.total >= config["max.connections"]:
            return f"max.connections ({config['max.connections']}) reached"
        limit = parse_ip_overrides(config["max.connections.per.ip.overrides"]).get(
            ip, config["max.connections.per.ip"])
        if self.by_ip.get(ip, 0) >= limit:
            return f"too many connections from {ip} (max.connections.per.ip: {limit})"
        return None

    def opened(self, ip: str) -> None:
        self.total += 1
        self.by_ip[ip] = self.by_ip.get(ip, 0) + 1

    def closed(self, ip: str) -> None:
        self.total -= 1
        left = self.by_ip[ip] - 1
        if left:
            self.by_ip[ip] = left
        else:
            del self.by_ip[ip]


def _normalized(address: str) -> str:
    try:
        return ipaddress.ip_address(address).compressed
    except ValueError:
        return address


def _ip_limits(store: ClientQuotas) -> dict[str | None, float]:
    """The connection_creation_rate of each ip entity by address, host names resolved as Kafka
    resolves them when the quota is set (a name that no longer resolves is left out)."""
    limits: dict[str | None, float] = {}
    for entity, values in store.quotas.items():
        rate = values.get(CONNECTION_CREATION_RATE)
        if rate is None or entity[0][0] != IP:
            continue
        name = entity[0][1]
        if name is None:
            limits[None] = rate
            continue
        try:
            addresses = {ipaddress.ip_address(name).compressed}
        except ValueError:
            try:
                addresses = {_normalized(str(info[4][0])) for info in socket.getaddrinfo(name, None)}
            except OSError:
                continue
        limits.update(dict.fromkeys(addresses, rate))
    return limits


class RepeatedWarnings:
    """Logs a warning of one kind (e.g. one client's unsupported API version) at most once per
    interval, saying how many like it were held back."""

    _MAX_KINDS = 10_000  # forget them all beyond this, so that varied junk cannot grow memory

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._kinds: dict[object, list] = {}  # kind -> [last logged (monotonic), held back]

    def warning(self, kind: object, message: str, *args) -> None:
        now = self._clock()
        state = self._kinds.get(kind)
        if state is not None and now - state[0] < self._interval_s:
            state[1] += 1
            return
        if state is not None and state[1]:
            message += f" ({state[1]} more like this in the last {now - state[0]:.0f} s)"
        if len(self._kinds) >= self._MAX_KINDS:
            self._kinds.clear()
        self._kinds[kind] = [now, 0]
        self._logger.warning(message, *args)
