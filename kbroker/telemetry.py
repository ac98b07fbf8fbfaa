"""Client telemetry (KIP-714): metrics subscriptions, and the latest metrics each client pushed.

Subscriptions are Kafka's CLIENT_METRICS config resources (`metrics`, `interval.ms`, `match`),
altered and described with the config APIs and kept in the data dir; none exist by default, so
clients are asked for no metrics. Rules, as Kafka's ClientMetricsManager applies them:
1. GetTelemetrySubscriptions with a zero client instance id gets a new id. A client matches a
   subscription when each `match` selector (client_id=regex, client_software_name=...,
   client_source_address=..., ...) fully matches it; it is asked for the union of the matching
   subscriptions' metric prefixes ("*" alone when one asks for all), at the shortest of their
   intervals (5 minutes when none match).
2. A client asking again before its push interval has passed gets THROTTLING_QUOTA_EXCEEDED,
   unless its last push failed for an unknown subscription or an unsupported compression type.
3. PushTelemetry: a zero id is INVALID_REQUEST; after a push marked terminating, INVALID_REQUEST;
   a push sooner than the interval (the first after a GetTelemetrySubscriptions excepted) is
   THROTTLING_QUOTA_EXCEEDED; an outdated subscription id UNKNOWN_SUBSCRIPTION_ID (a changed
   subscription gives clients new ids); a codec outside the accepted ones
   UNSUPPORTED_COMPRESSION_TYPE; metrics over `telemetry.max.bytes` TELEMETRY_TOO_LARGE; metrics
   that do not decompress INVALID_RECORD.
4. The latest metrics a client pushed are kept, decompressed, with who sent them and when, for
   at most CLIENTS_KEPT clients (the least recently heard of are forgotten). They are OpenTelemetry
   protobuf bytes as the client sent them; kbroker does not decode them.
"""

from __future__ import annotations

import json
import re
import uuid
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from kbroker.log.files import read_if_exists, write_atomically
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.records import decompress

SUBSCRIPTIONS_FILE = "client-metrics-subscriptions.json"
METRICS, INTERVAL_MS, MATCH = "metrics", "interval.ms", "match"
ALL_METRICS = "*"
DEFAULT_INTERVAL_MS = 300_000
MIN_INTERVAL_MS, MAX_INTERVAL_MS = 100, 3_600_000
# Selectors a subscription may match clients on (Kafka's ClientMetricsConfigs).
MATCH_KEYS = ("client_instance_id", "client_id", "client_software_name", "client_software_version",
              "client_source_address", "client_source_port")
ACCEPTED_COMPRESSION = [4, 3, 1, 2]  # zstd, lz4, gzip, snappy, Kafka's order of preference
NO_COMPRESSION = 0
CLIENTS_KEPT = 16384  # Kafka's client instance cache size


def _invalid_request(message: str) -> KafkaError:
    return KafkaError(ErrorCode.INVALID_REQUEST, message)


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_match(patterns: list[str]) -> dict[str, re.Pattern]:
    """`key=regex` selectors; INVALID_CONFIG for anything else, with Kafka's message."""
    parsed = {}
    for pattern in patterns:
        parts = pattern.split("=")
        if len(parts) != 2 or parts[0].strip() not in MATCH_KEYS:
            raise KafkaError(ErrorCode.INVALID_CONFIG, f"Illegal client matching pattern: {pattern}")
        try:
            parsed[parts[0].strip()] = re.compile(parts[1].strip())
        except re.error:
            raise KafkaError(ErrorCode.INVALID_CONFIG,
                             f"Illegal client matching pattern: {pattern}") from None
    return parsed


def check_subscription(name: str, texts: dict[str, str]) -> None:
    """Kafka's ClientMetricsConfigs.validate."""
    if not name:
        raise _invalid_request("Subscription name can't be empty")
    for key in texts:
        if key not in (METRICS, INTERVAL_MS, MATCH):
            raise _invalid_request(f"Unknown client metrics configuration: {key}")
    if INTERVAL_MS in texts:
        try:
            interval = int(texts[INTERVAL_MS])
        except ValueError:
            raise KafkaError(ErrorCode.INVALID_CONFIG, f"Invalid value {texts[INTERVAL_MS]} for "
                             f"configuration {INTERVAL_MS}: Not a number of type INT") from None
        if not MIN_INTERVAL_MS <= interval <= MAX_INTERVAL_MS:
            raise _invalid_request(f"Invalid value {interval} for {INTERVAL_MS}, interval must be "
                                   "between 100 and 3600000 (1 hour)")
    if MATCH in texts:
        parse_match(_items(texts[MATCH]))


class Subscriptions:
    """The CLIENT_METRICS config resources, by subscription name, kept in the data dir."""

    def __init__(self, data_dir: Path):
        self._path = data_dir / SUBSCRIPTIONS_FILE
        stored = read_if_exists(str(self._path))
        self._texts: dict[str, dict[str, str]] = json.loads(stored) if stored else {}
        self.version = 0  # grows at every change, so clients get the new subscriptions

    def names(self) -> list[str]:
        return sorted(self._texts)

    def texts(self, name: str) -> dict[str, str]:
        return dict(self._texts.get(name, {}))

    def replace(self, name: str, texts: dict[str, str], validate_only: bool) -> None:
        """Make `texts` the configs of subscription `name` (none: it is removed)."""
        check_subscription(name, texts)
        if validate_only:
            return
        if texts:
            self._texts[name] = dict(texts)
        else:
            self._texts.pop(name, None)
        write_atomically(str(self._path), json.dumps(self._texts, sort_keys=True).encode())
        self.version += 1

    def for_client(self, selectors: dict[str, str]) -> tuple[list[str], int]:
        """(metric prefixes, push interval) for a client with these selector values (rule 1)."""
        metrics: list[str] = []
        interval = DEFAULT_INTERVAL_MS
        everything = False
        for texts in self._texts.values():
            patterns = parse_match(_items(texts.get(MATCH, "")))
            if all(pattern.fullmatch(selectors.get(key, "")) for key, pattern in patterns.items()):
                wanted = _items(texts.get(METRICS, ""))
                everything = everything or ALL_METRICS in wanted
                metrics += [metric for metric in wanted if metric not in metrics]
                interval = min(interval, int(texts.get(INTERVAL_MS, DEFAULT_INTERVAL_MS)))
        return ([ALL_METRICS] if everything else metrics), interval


@dataclass(slots=True)
class PushedMetrics:
    """The latest metrics one client pushed."""

    received_ms: int
    selectors: dict[str, str]  # client_id, client_software_name, client_source_address, ...
    compression_type: int  # as it was sent
    metrics: bytes  # decompressed OpenTelemetry protobuf (MetricsData)
    terminating: bool


@dataclass(slots=True)
class ClientInstance:
    subscription_id: int
    metrics: list[str]
    push_interval_ms: int
    version: int  # of the subscriptions it was computed from
    last_get_ms: int = 0
    last_push_ms: int = 0
    terminating: bool = False
    last_error: ErrorCode = ErrorCode.NONE

    def may_get(self, now_ms: int) -> bool:
        if now_ms - max(self.last_get_ms, self.last_push_ms) >= self.push_interval_ms:
            self.last_get_ms = now_ms
            return True
        return False

    def may_push(self, now_ms: int) -> bool:
        allowed = (self.last_get_ms > self.last_push_ms
                   or now_ms - max(self.last_get_ms, self.last_push_ms) >= self.push_interval_ms)
        if allowed:
            self.last_push_ms = now_ms
        return allowed


class Telemetry:
    """What clients were asked for and what they pushed (rules 1-4)."""

    def __init__(self, subscriptions: Subscriptions, max_bytes: int):
        self.subscriptions = subscriptions
        self.max_bytes = max_bytes  # telemetry.max.bytes
        self.clients: OrderedDict[uuid.UUID, ClientInstance] = OrderedDict()
        self.latest: OrderedDict[uuid.UUID, PushedMetrics] = OrderedDict()

    def _instance(self, instance_id: uuid.UUID, selectors: dict[str, str]) -> ClientInstance:
        version = self.subscriptions.version
        instance = self.clients.get(instance_id)
        if instance is None or instance.version != version:
            metrics, interval = self.subscriptions.for_client(
                {**selectors, "client_instance_id": str(instance_id)})
            digest = zlib.crc32(f"{metrics}{interval}{instance_id}{version}".encode())
            instance = ClientInstance(digest - (1 << 32) if digest >= 1 << 31 else digest,
                                      metrics, interval, version)
            self.clients[instance_id] = instance
        self.clients.move_to_end(instance_id)
        while len(self.clients) > CLIENTS_KEPT:
            self.clients.popitem(last=False)
        return instance

    def get_subscriptions(self, instance_id: uuid.UUID, selectors: dict[str, str], now_ms: int
                          ) -> tuple[uuid.UUID, ClientInstance]:
        """The client's instance id and subscription; raises KafkaError (rule 2)."""
        if instance_id.int == 0:
            instance_id = uuid.uuid4()
        instance = self._instance(instance_id, selectors)
        try:
            if not instance.may_get(now_ms) and instance.last_error not in (
                    ErrorCode.UNKNOWN_SUBSCRIPTION_ID, ErrorCode.UNSUPPORTED_COMPRESSION_TYPE):
                raise KafkaError(ErrorCode.THROTTLING_QUOTA_EXCEEDED,
                                 f"Request from the client [{instance_id}] arrived before the "
                                 "next push interval time")
        finally:
            instance.last_error = ErrorCode.NONE
        return instance_id, instance

    def push(self, instance_id: uuid.UUID, subscription_id: int, terminating: bool,
             compression_type: int, payload: bytes, selectors: dict[str, str], now_ms: int) -> None:
        """Keep a client's pushed metrics; raises KafkaError (rule 3)."""
        if instance_id.int == 0:
            raise _invalid_request(f"Invalid request from the client [{instance_id}], invalid "
                                   "client instance id")
        instance = self._instance(instance_id, selectors)
        try:
            metrics = self._check_push(instance, instance_id, subscription_id, terminating,
                                       compression_type, payload, now_ms)
        except KafkaError as exc:
            instance.last_error = exc.code
            raise
        instance.terminating = instance.terminating or terminating
        instance.last_error = ErrorCode.NONE
        self.latest[instance_id] = PushedMetrics(now_ms, dict(selectors), compression_type,
                                                 metrics, terminating)
        self.latest.move_to_end(instance_id)
        while len(self.latest) > CLIENTS_KEPT:
            self.latest.popitem(last=False)

    def _check_push(self, instance: ClientInstance, instance_id: uuid.UUID, subscription_id: int,
                    terminating: bool, compression_type: int, payload: bytes, now_ms: int) -> bytes:
        if instance.terminating:
            raise _invalid_request(f"Client [{instance_id}] sent the previous request with state "
                                   "terminating to TRUE, can not accept any requests after that")
        if not instance.may_push(now_ms) and not terminating:
            raise KafkaError(ErrorCode.THROTTLING_QUOTA_EXCEEDED, f"Request from the client "
                             f"[{instance_id}] arrived before the next push interval time")
        if subscription_id != instance.subscription_id:
            raise KafkaError(ErrorCode.UNKNOWN_SUBSCRIPTION_ID,
                             f"Unknown client subscription id for the client [{instance_id}]")
        if compression_type != NO_COMPRESSION and compression_type not in ACCEPTED_COMPRESSION:
            raise KafkaError(ErrorCode.UNSUPPORTED_COMPRESSION_TYPE,
                             f"Unknown compression type [{compression_type}] is received in telemetry "
                             f"request from [{instance_id}]")
        if len(payload) > self.max_bytes:
            raise KafkaError(ErrorCode.TELEMETRY_TOO_LARGE, f"Telemetry request from [{instance_id}] "
                             f"is larger than the maximum allowed size [{self.max_bytes}]")
        if not payload:
            return b""
        try:
            return bytes(decompress(compression_type, payload))
        except KafkaError:
            raise KafkaError(ErrorCode.INVALID_RECORD, "Failed to decompress the telemetry "
                             f"metrics of client [{instance_id}]") from None
