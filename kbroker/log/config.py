"""Per-topic log settings under Kafka's topic config names, with Kafka 4.0's defaults and bounds."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from kbroker.protocol.errors import ErrorCode, KafkaError

LONG_MAX = (1 << 63) - 1
INT_MAX = (1 << 31) - 1
DAY_MS = 24 * 60 * 60 * 1000

CREATE_TIME = "CreateTime"
LOG_APPEND_TIME = "LogAppendTime"
COMPRESSION_TYPES = ("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer")
CLEANUP_POLICIES = ("compact", "delete")


@dataclass(slots=True, frozen=True)
class LogConfig:
    """Settings one partition log obeys; build with `with_overrides` to get validation."""

    segment_bytes: int = 1024 * 1024 * 1024
    segment_ms: int = 7 * DAY_MS
    segment_jitter_ms: int = 0
    segment_index_bytes: int = 10 * 1024 * 1024
    index_interval_bytes: int = 4096
    flush_interval_messages: int = LONG_MAX
    flush_interval_ms: int = LONG_MAX
    max_message_bytes: int = 1024 * 1024 + 12
    message_timestamp_type: str = CREATE_TIME
    message_timestamp_before_max_ms: int = LONG_MAX
    message_timestamp_after_max_ms: int = 60 * 60 * 1000  # Kafka 4.0 (KIP-1030)
    retention_ms: int = 7 * DAY_MS
    retention_bytes: int = -1
    cleanup_policy: tuple[str, ...] = ("delete",)
    file_delete_delay_ms: int = 60000
    delete_retention_ms: int = DAY_MS
    min_compaction_lag_ms: int = 0
    max_compaction_lag_ms: int = LONG_MAX
    min_cleanable_dirty_ratio: float = 0.5
    compression_type: str = "producer"
    compression_gzip_level: int = -1
    compression_lz4_level: int = 9
    compression_zstd_level: int = 3
    min_insync_replicas: int = 1
    unclean_leader_election_enable: bool = False
    preallocate: bool = False

    @property
    def compact(self) -> bool:
        return "compact" in self.cleanup_policy

    @property
    def delete(self) -> bool:
        return "delete" in self.cleanup_policy

    @property
    def log_append_time(self) -> bool:
        return self.message_timestamp_type == LOG_APPEND_TIME

    def with_overrides(self, overrides: dict[str, str | None]) -> LogConfig:
        """A copy with Kafka-named settings applied; a None value keeps this config's value.

        Raises KafkaError(INVALID_CONFIG) for unknown names and bad values.
        """
        changes = {}
        for name, text in overrides.items():
            spec = TOPIC_CONFIGS.get(name)
            if spec is None:
                raise KafkaError(ErrorCode.INVALID_CONFIG, f"Unknown topic config name: {name}")
            if text is not None:
                changes[spec.field] = spec.parse(name, text)
        return dataclasses.replace(self, **changes)

    def to_kafka(self) -> dict[str, str]:
        """Every topic setting by Kafka name, as Kafka renders it (DescribeConfigs)."""
        return {name: spec.render(getattr(self, spec.field)) for name, spec in TOPIC_CONFIGS.items()}


def _bad(name: str, text: str, why: str) -> KafkaError:
    return KafkaError(ErrorCode.INVALID_CONFIG, f"Invalid value {text} for configuration {name}: {why}")


@dataclass(slots=True, frozen=True)
class ConfigSpec:
    """How one Kafka topic setting maps to a LogConfig field and which values it accepts."""

    field: str
    kind: str  # "int", "long", "double", "bool", "string", "list"
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()

    def parse(self, name: str, text: str) -> Any:
        text = text.strip()
        if self.kind in ("int", "long"):
            try:
                value = int(text)
            except ValueError:
                raise _bad(name, text, "Not a number of type " + self.kind.upper()) from None
            limit = INT_MAX if self.kind == "int" else LONG_MAX
            if not -limit - 1 <= value <= limit:
                raise _bad(name, text, "Not a number of type " + self.kind.upper())
        elif self.kind == "double":
            try:
                value = float(text)
            except ValueError:
                raise _bad(name, text, "Not a number of type DOUBLE") from None
        elif self.kind == "bool":
            if text.lower() not in ("true", "false"):
                raise _bad(name, text, "Expected value to be either true or false")
            return text.lower() == "true"
        elif self.kind == "string":
            if text not in self.choices:
                raise _bad(name, text, "String must be one of: " + ", ".join(self.choices))
            return text
        else:
            items = tuple(item.strip() for item in text.split(",") if item.strip())
            if not items or any(item not in self.choices for item in items):
                raise _bad(name, text, "Valid values are: " + ", ".join(self.choices))
            return items
        if self.low is not None and value < self.low:
            raise _bad(name, text, f"Value must be at least {self.low}")
        if self.high is not None and value > self.high:
            raise _bad(name, text, f"Value must be no more than {self.high}")
        return value

    def render(self, value: Any) -> str:
        if self.kind == "bool":
            return "true" if value else "false"
        if self.kind == "list":
            return ",".join(value)
        return str(value)


def _spec(field: str, kind: str, low=None, high=None, choices=()) -> ConfigSpec:
    return ConfigSpec(field, kind, low, high, tuple(choices))


# Kafka topic config name -> field, type and bounds (TopicConfig / LogConfig.java, Kafka 4.0).
TOPIC_CONFIGS: dict[str, ConfigSpec] = {
    "segment.bytes": _spec("segment_bytes", "int", 1024 * 1024),
    "segment.ms": _spec("segment_ms", "long", 1),
    "segment.jitter.ms": _spec("segment_jitter_ms", "long", 0),
    "segment.index.bytes": _spec("segment_index_bytes", "int", 4),
    "index.interval.bytes": _spec("index_interval_bytes", "int", 0),
    "flush.messages": _spec("flush_interval_messages", "long", 1),
    "flush.ms": _spec("flush_interval_ms", "long", 0),
    "max.message.bytes": _spec("max_message_bytes", "int", 0),
    "message.timestamp.type": _spec("message_timestamp_type", "string",
                                    choices=(CREATE_TIME, LOG_APPEND_TIME)),
    "message.timestamp.before.max.ms": _spec("message_timestamp_before_max_ms", "long", 0),
    "message.timestamp.after.max.ms": _spec("message_timestamp_after_max_ms", "long", 0),
    "retention.ms": _spec("retention_ms", "long", -1),
    "retention.bytes": _spec("retention_bytes", "long"),
    "cleanup.policy": _spec("cleanup_policy", "list", choices=CLEANUP_POLICIES),
    "file.delete.delay.ms": _spec("file_delete_delay_ms", "long", 0),
    "delete.retention.ms": _spec("delete_retention_ms", "long", 0),
    "min.compaction.lag.ms": _spec("min_compaction_lag_ms", "long", 0),
    "max.compaction.lag.ms": _spec("max_compaction_lag_ms", "long", 1),
    "min.cleanable.dirty.ratio": _spec("min_cleanable_dirty_ratio", "double", 0, 1),
    "compression.type": _spec("compression_type", "string", choices=COMPRESSION_TYPES),
    "compression.gzip.level": _spec("compression_gzip_level", "int", -1, 9),
    "compression.lz4.level": _spec("compression_lz4_level", "int", 1, 17),
    "compression.zstd.level": _spec("compression_zstd_level", "int", -131072, 22),
    "min.insync.replicas": _spec("min_insync_replicas", "int", 1),
    "unclean.leader.election.enable": _spec("unclean_leader_election_enable", "bool"),
    "preallocate": _spec("preallocate", "bool"),
}
