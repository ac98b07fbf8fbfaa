"""Every setting's one definition, and the per-topic settings the log obeys.

`Setting` is one Kafka config: its name, type, default, bounds and documentation, with the one
parser and the one error format ("Invalid value X for configuration NAME: why", naming what the
user typed) that every setting shares. `TOPIC_SETTINGS` lists each topic config once, under its
Kafka topic name, with the broker setting that gives its default (Kafka's synonym, as in Kafka's
LogConfig: segment.bytes <- log.segment.bytes); kbroker/config.py derives the broker's table of
those defaults from it. `TOPIC_RULES` are the checks that tie settings together.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.primitives import INT32_MAX as INT_MAX

LONG_MAX = (1 << 63) - 1
DAY_MS = 24 * 60 * 60 * 1000

CREATE_TIME = "CreateTime"
LOG_APPEND_TIME = "LogAppendTime"
COMPRESSION_TYPES = ("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer")
CLEANUP_POLICIES = ("compact", "delete")
_INTEGER_LIMITS = {"short": 32767, "int": INT_MAX, "long": LONG_MAX}


def invalid(name: str, text: str | None, why: str) -> KafkaError:
    """Kafka's ConfigException message, for every setting."""
    return KafkaError(ErrorCode.INVALID_CONFIG, f"Invalid value {text} for configuration {name}: {why}")


@dataclass(frozen=True, slots=True)
class Setting:
    """One Kafka config: name, type (Kafka's ConfigDef names), default, bounds, documentation.

    A topic setting has the LogConfig `field` it fills and the `broker_name` of the broker setting
    giving its default; the broker setting derived from it has `topic_name` instead. `dynamic`:
    AlterConfigs may change it on a running broker (every topic default is).
    """

    name: str
    kind: str  # short, int, long, double, boolean, string, list
    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    # Raises ValueError(why), reported in the common format, or a KafkaError of its own.
    validator: Callable[[Any], object] | None = None
    field: str | None = None
    broker_name: str | None = None
    topic_name: str | None = None
    dynamic: bool = False
    sensitive: bool = False  # a secret: DescribeConfigs shows no value
    empty_list_ok: bool = False  # a list with choices that may be empty (cleanup.policy)

    @property
    def log_field(self) -> str:
        """The LogConfig field a topic setting fills."""
        assert self.field is not None, f"{self.name} is not a topic setting"
        return self.field

    def parse(self, text: str) -> Any:
        """The value of `text`, or KafkaError(INVALID_CONFIG) naming this setting."""
        stripped = text.strip()
        value: Any
        if self.kind in _INTEGER_LIMITS:
            limit = _INTEGER_LIMITS[self.kind]
            try:
                value = int(stripped)
            except ValueError:
                value = None
            if value is None or not -limit - 1 <= value <= limit:
                raise invalid(self.name, text, f"Not a number of type {self.kind.upper()}")
        elif self.kind == "double":
            try:
                value = float(stripped)
            except ValueError:
                raise invalid(self.name, text, "Not a number of type DOUBLE") from None
        elif self.kind == "boolean":
            if stripped.lower() not in ("true", "false"):
                raise invalid(self.name, text, "Expected value to be either true or false")
            value = stripped.lower() == "true"
        elif self.kind == "list":
            value = tuple(item.strip() for item in stripped.split(",") if item.strip())
        else:
            value = stripped if self.choices else text
        self.check(value, text)
        return value

    def check(self, value: Any, text: str | None = None) -> None:
        text = self.render(value) if text is None else text
        if self.low is not None and value < self.low:
            raise invalid(self.name, text, f"Value must be at least {self.low}")
        if self.high is not None and value > self.high:
            raise invalid(self.name, text, f"Value must be no more than {self.high}")
        if self.choices is not None:
            items = value if isinstance(value, tuple) else (value,)
            if (not items and not self.empty_list_ok) or any(item not in self.choices for item in items):
                raise invalid(self.name, text, "String must be one of: " + ", ".join(self.choices))
        if self.validator is not None:
            try:
                self.validator(value)
            except ValueError as exc:
                raise invalid(self.name, text, str(exc)) from None

    def render(self, value: Any) -> str | None:
        """The value as Kafka shows it in DescribeConfigs."""
        if value is None:
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, tuple):
            return ",".join(value)
        return str(value)


def _refuse_true(value: bool) -> None:
    if value:
        raise ValueError("kbroker does not preallocate segment files")


def _throttled_replicas(name: str) -> Callable[[tuple[str, ...]], None]:
    """Kafka's ThrottledReplicaListValidator: '*' or partition:broker pairs."""
    def check(replicas: tuple[str, ...]) -> None:
        if replicas[:1] != ("*",) and not all(_REPLICA_PAIR.fullmatch(item) for item in replicas):
            raise ValueError(f"{name} must be the literal '*' or a list of replicas in the "
                             "following format: [partitionId]:[brokerId],[partitionId]:[brokerId],...")
    return check


def _refuse_remote_storage(value: bool) -> None:
    if value:
        raise KafkaError(ErrorCode.INVALID_CONFIG, "Tiered Storage functionality is disabled in the "
                         "broker. Topic cannot be configured with remote log storage.")


_REPLICA_PAIR = re.compile(r"[0-9]+:[0-9]+")


def _topic(name: str, broker_name: str | None, kind: str, default: Any, doc: str,
           field: str | None = None, **bounds) -> Setting:
    return Setting(name, kind, default, doc, field=field or name.replace(".", "_"),
                   broker_name=broker_name, **bounds)


# Kafka topic configs (TopicConfig / LogConfig.java, Kafka 4.2): defaults, bounds, synonyms. Those
# without a broker synonym (broker_name None) default to the table's value, as in Kafka.
TOPIC_SETTINGS: tuple[Setting, ...] = (
    _topic("segment.bytes", "log.segment.bytes", "int", 1024 * 1024 * 1024,
           "Size at which a segment file is rolled.", low=1024 * 1024),
    _topic("segment.ms", "log.roll.ms", "long", 7 * DAY_MS, "Age at which a segment is rolled.", low=1),
    _topic("segment.jitter.ms", "log.roll.jitter.ms", "long", 0, "Random amount taken off the roll "
           "age, so that segments of many partitions do not roll at once.", low=0),
    _topic("segment.index.bytes", "log.index.size.max.bytes", "int", 10 * 1024 * 1024,
           "Largest offset index of one segment.", low=4),
    _topic("index.interval.bytes", "log.index.interval.bytes", "int", 4096,
           "Bytes between offset index entries.", low=0),
    _topic("flush.messages", "log.flush.interval.messages", "long", LONG_MAX, "Records appended "
           "between fsyncs (default: leave flushing to the OS).", low=1,
           field="flush_interval_messages"),
    _topic("flush.ms", "log.flush.interval.ms", "long", LONG_MAX, "Time between fsyncs (default: "
           "leave flushing to the OS).", low=0, field="flush_interval_ms"),
    _topic("max.message.bytes", "message.max.bytes", "int", 1024 * 1024 + 12,
           "Largest record batch accepted.", low=0),
    _topic("message.timestamp.type", "log.message.timestamp.type", "string", CREATE_TIME,
           "CreateTime keeps the producer's timestamps; LogAppendTime stamps batches with broker "
           "time.", choices=(CREATE_TIME, LOG_APPEND_TIME)),
    _topic("message.timestamp.before.max.ms", "log.message.timestamp.before.max.ms", "long",
           LONG_MAX, "How far in the past a CreateTime timestamp may be.", low=0),
    _topic("message.timestamp.after.max.ms", "log.message.timestamp.after.max.ms", "long",
           60 * 60 * 1000, "How far in the future a CreateTime timestamp may be (KIP-1030).", low=0),
    _topic("retention.ms", "log.retention.ms", "long", 7 * DAY_MS, "Age after which closed "
           "segments are deleted (-1: no limit).", low=-1),
    _topic("retention.bytes", "log.retention.bytes", "long", -1, "Partition size above which the "
           "oldest segments are deleted (-1: no limit)."),
    _topic("cleanup.policy", "log.cleanup.policy", "list", ("delete",), "delete, compact, both, or "
           "none (an empty list: segments are kept forever, neither deleted nor compacted).",
           choices=CLEANUP_POLICIES, empty_list_ok=True),
    _topic("file.delete.delay.ms", "log.segment.delete.delay.ms", "long", 60000, "Delay before a "
           "deleted segment's file is removed, so reads in progress finish.", low=0),
    _topic("delete.retention.ms", "log.cleaner.delete.retention.ms", "long", DAY_MS,
           "How long tombstones are kept on compacted topics.", low=0),
    _topic("min.compaction.lag.ms", "log.cleaner.min.compaction.lag.ms", "long", 0,
           "Minimum age of a record before it may be compacted.", low=0),
    _topic("max.compaction.lag.ms", "log.cleaner.max.compaction.lag.ms", "long", LONG_MAX,
           "Maximum time a record stays uncompacted.", low=1),
    _topic("min.cleanable.dirty.ratio", "log.cleaner.min.cleanable.ratio", "double", 0.5,
           "Dirty share of a log that triggers compaction.", low=0, high=1),
    _topic("compression.type", "compression.type", "string", "producer", "Codec of stored "
           "batches; producer keeps the producer's, any other recompresses batches in another "
           "codec.", choices=COMPRESSION_TYPES),
    _topic("compression.gzip.level", "compression.gzip.level", "int", -1, "gzip level the broker "
           "recompresses with (-1: zlib's default).", low=-1, high=9),
    _topic("compression.lz4.level", "compression.lz4.level", "int", 9, "lz4 level the broker "
           "recompresses with.", low=1, high=17),
    _topic("compression.zstd.level", "compression.zstd.level", "int", 3, "zstd level the broker "
           "recompresses with.", low=-131072, high=22),
    _topic("min.insync.replicas", "min.insync.replicas", "int", 1, "Replicas that must "
           "acknowledge acks=all writes: one broker answers those NOT_ENOUGH_REPLICAS when it is over "
           "1, as a one-broker Kafka does.", low=1),
    _topic("unclean.leader.election.enable", "unclean.leader.election.enable", "boolean", False,
           "Whether a replica outside the ISR may become leader (one broker: no effect)."),
    _topic("preallocate", "log.preallocate", "boolean", False, "Preallocate segment files: "
           "not supported, only false is accepted.", validator=_refuse_true),
    _topic("leader.replication.throttled.replicas", None, "list", (), "Replicas whose leader-side "
           "replication is throttled ('*' or partition:broker pairs; one broker: no effect).",
           validator=_throttled_replicas("leader.replication.throttled.replicas")),
    _topic("follower.replication.throttled.replicas", None, "list", (), "Replicas whose "
           "follower-side replication is throttled ('*' or partition:broker pairs; one broker: no "
           "effect).", validator=_throttled_replicas("follower.replication.throttled.replicas")),
    _topic("remote.storage.enable", None, "boolean", False, "Tiered storage for this topic: not "
           "available, only false is accepted.", validator=_refuse_remote_storage),
    _topic("local.retention.ms", "log.local.retention.ms", "long", -2, "Age after which local "
           "segments are deleted once in remote storage (-2: retention.ms; no tiered storage here).",
           low=-2),
    _topic("local.retention.bytes", "log.local.retention.bytes", "long", -2, "Local size above "
           "which segments in remote storage are deleted locally (-2: retention.bytes; no tiered "
           "storage here).", low=-2),
    _topic("remote.log.copy.disable", None, "boolean", False, "Stop copying segments to remote "
           "storage (no tiered storage here)."),
    _topic("remote.log.delete.on.disable", None, "boolean", False, "Delete remote segments when "
           "tiered storage is turned off (no tiered storage here)."),
)
TOPIC_SETTINGS_BY_NAME: dict[str, Setting] = {setting.name: setting for setting in TOPIC_SETTINGS}
_DEFAULTS = {setting.log_field: setting.default for setting in TOPIC_SETTINGS}


class SettingValues(Protocol):
    """Values by setting name: a dict, or the broker's Config."""

    def __getitem__(self, name: str, /) -> Any: ...


@dataclass(frozen=True, slots=True)
class AtMost:
    """A rule between two settings: `lower` may not exceed `upper`."""

    lower: str
    upper: str
    scope: str = "topic"  # as Kafka's message says: "conflict topic config setting ..."

    def check(self, values: SettingValues, named: Callable[[str], str] = str) -> None:
        low, high = values[self.lower], values[self.upper]
        if low > high:
            raise KafkaError(ErrorCode.INVALID_CONFIG, f"conflict {self.scope} config setting "
                             f"{named(self.lower)} ({low}) > {named(self.upper)} ({high})")


TOPIC_RULES = (AtMost("min.compaction.lag.ms", "max.compaction.lag.ms"),)


@dataclass(slots=True, frozen=True)
class LogConfig:
    """Settings one partition log obeys (defaults from TOPIC_SETTINGS); build with
    `with_overrides` to get validation."""

    segment_bytes: int = _DEFAULTS["segment_bytes"]
    segment_ms: int = _DEFAULTS["segment_ms"]
    segment_jitter_ms: int = _DEFAULTS["segment_jitter_ms"]
    segment_index_bytes: int = _DEFAULTS["segment_index_bytes"]
    index_interval_bytes: int = _DEFAULTS["index_interval_bytes"]
    flush_interval_messages: int = _DEFAULTS["flush_interval_messages"]
    flush_interval_ms: int = _DEFAULTS["flush_interval_ms"]
    max_message_bytes: int = _DEFAULTS["max_message_bytes"]
    message_timestamp_type: str = _DEFAULTS["message_timestamp_type"]
    message_timestamp_before_max_ms: int = _DEFAULTS["message_timestamp_before_max_ms"]
    message_timestamp_after_max_ms: int = _DEFAULTS["message_timestamp_after_max_ms"]
    retention_ms: int = _DEFAULTS["retention_ms"]
    retention_bytes: int = _DEFAULTS["retention_bytes"]
    cleanup_policy: tuple[str, ...] = _DEFAULTS["cleanup_policy"]
    file_delete_delay_ms: int = _DEFAULTS["file_delete_delay_ms"]
    delete_retention_ms: int = _DEFAULTS["delete_retention_ms"]
    min_compaction_lag_ms: int = _DEFAULTS["min_compaction_lag_ms"]
    max_compaction_lag_ms: int = _DEFAULTS["max_compaction_lag_ms"]
    min_cleanable_dirty_ratio: float = _DEFAULTS["min_cleanable_dirty_ratio"]
    compression_type: str = _DEFAULTS["compression_type"]
    compression_gzip_level: int = _DEFAULTS["compression_gzip_level"]
    compression_lz4_level: int = _DEFAULTS["compression_lz4_level"]
    compression_zstd_level: int = _DEFAULTS["compression_zstd_level"]
    min_insync_replicas: int = _DEFAULTS["min_insync_replicas"]
    unclean_leader_election_enable: bool = _DEFAULTS["unclean_leader_election_enable"]
    preallocate: bool = _DEFAULTS["preallocate"]
    leader_replication_throttled_replicas: tuple[str, ...] = (
        _DEFAULTS["leader_replication_throttled_replicas"])
    follower_replication_throttled_replicas: tuple[str, ...] = (
        _DEFAULTS["follower_replication_throttled_replicas"])
    remote_storage_enable: bool = _DEFAULTS["remote_storage_enable"]
    local_retention_ms: int = _DEFAULTS["local_retention_ms"]
    local_retention_bytes: int = _DEFAULTS["local_retention_bytes"]
    remote_log_copy_disable: bool = _DEFAULTS["remote_log_copy_disable"]
    remote_log_delete_on_disable: bool = _DEFAULTS["remote_log_delete_on_disable"]

    @property
    def compact(self) -> bool:
        return "compact" in self.cleanup_policy

    @property
    def delete(self) -> bool:
        return "delete" in self.cleanup_policy

    @property
    def log_append_time(self) -> bool:
        return self.message_timestamp_type == LOG_APPEND_TIME

    def with_overrides(self, overrides: Mapping[str, str | None]) -> LogConfig:
        """A copy with Kafka-named settings applied; a None value keeps this config's value.

        Raises KafkaError(INVALID_CONFIG) for unknown names and bad values.
        """
        changes: dict[str, Any] = {}
        for name, text in overrides.items():
            setting = TOPIC_SETTINGS_BY_NAME.get(name)
            if setting is None:
                raise KafkaError(ErrorCode.INVALID_CONFIG, f"Unknown topic config name: {name}")
            if text is not None:
                changes[setting.log_field] = setting.parse(text)
        return dataclasses.replace(self, **changes)

    def check_rules(self, named: Callable[[str], str] = str) -> LogConfig:
        """This config, if it keeps TOPIC_RULES; else KafkaError(INVALID_CONFIG) with the
        settings' names as `named` gives them (topic names, or the broker synonyms)."""
        values = self.values()
        for rule in TOPIC_RULES:
            rule.check(values, named)
        return self

    def values(self) -> dict[str, Any]:
        """Every topic setting's value by Kafka name."""
        return {setting.name: getattr(self, setting.log_field) for setting in TOPIC_SETTINGS}

    def to_kafka(self) -> dict[str, str | None]:
        """Every topic setting by Kafka name, as Kafka renders it (DescribeConfigs)."""
        return {name: TOPIC_SETTINGS_BY_NAME[name].render(value) for name, value in self.values().items()}
