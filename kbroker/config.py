"""The broker's one Config: every setting under its Apache Kafka broker config name.

The table below is the single source for defaults, types, validation and documentation;
`kbroker serve --override NAME=VALUE`, the topic defaults handed to the log layer and
DescribeConfigs for the broker resource are all derived from it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable

from kbroker.protocol.errors import ErrorCode, KafkaError

LONG_MAX = 2**63 - 1
INT_MAX = 2**31 - 1


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    raise ValueError(f"expected true or false, got {text!r}")


def _parse_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


_PARSERS: dict[str, Callable[[str], Any]] = {
    "int": int,
    "long": int,
    "double": float,
    "boolean": _parse_bool,
    "string": str,
    "list": _parse_list,
}


@dataclass(frozen=True, slots=True)
class Setting:
    """One broker setting: its Kafka name, type, default, allowed range and documentation.

    `topic_name` is the per-topic config this broker setting provides the default for
    (Kafka calls the pair synonyms: log.segment.bytes is the default of segment.bytes).
    `dynamic`: Kafka lets AlterConfigs change it on a running broker (DynamicBrokerConfig);
    the topic defaults always are, every other setting is reported read-only.
    """

    name: str
    kind: str
    default: Any
    doc: str
    minimum: float | None = None
    choices: tuple[str, ...] | None = None
    topic_name: str | None = None
    dynamic: bool = False
    sensitive: bool = False  # a secret: DescribeConfigs shows no value
    validator: Callable[[Any], object] | None = None  # raises KafkaError for a bad value

    @property
    def is_dynamic(self) -> bool:
        return self.dynamic or self.topic_name is not None

    def parse(self, text: str) -> Any:
        try:
            value = _PARSERS[self.kind](text)
        except ValueError as exc:
            raise KafkaError(ErrorCode.INVALID_CONFIG, f"{self.name}: {exc}") from None
        self.check(value)
        return value

    def check(self, value: Any) -> None:
        if self.validator is not None:
            self.validator(value)
        if self.minimum is not None and value < self.minimum:
            raise KafkaError(ErrorCode.INVALID_CONFIG, f"{self.name} must be at least {self.minimum}")
        if self.choices is not None:
            items = value if isinstance(value, list) else [value]
            for item in items:
                if item not in self.choices:
                    raise KafkaError(
                        ErrorCode.INVALID_CONFIG,
                        f"{self.name}: {item!r} is not one of {', '.join(self.choices)}",
                    )

    def render(self, value: Any) -> str | None:
        """The value as Kafka shows it in DescribeConfigs."""
        if value is None:
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, list):
            return ",".join(value)
        return str(value)


def parse_ip_overrides(text: str) -> dict[str, int]:
    """`max.connections.per.ip.overrides`: "host:count" pairs separated by commas."""
    overrides = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        host, _, count = item.rpartition(":")
        try:
            value = int(count)
        except ValueError:
            value = -1
        if not host or value < 0:
            raise KafkaError(ErrorCode.INVALID_CONFIG,
                             f"max.connections.per.ip.overrides: {item!r} is not host:count with a "
                             f"count of 0 or more")
        overrides[host.strip("[]")] = value
    return overrides


_DAY_MS = 24 * 3600 * 1000
SASL_JAAS_SETTING = "listener.name.sasl_plaintext.plain.sasl.jaas.config"

SETTINGS: tuple[Setting, ...] = (
    # Identity and listeners.
    Setting("node.id", "int", 1, "The id of this broker in the cluster.", minimum=0),
    Setting("log.dirs", "string", "./kbroker-data", "Directory holding topic data and broker state."),
    Setting("listeners", "string", "PLAINTEXT://127.0.0.1:9092", "Address the broker listens on."),
    Setting("advertised.listeners", "string", None, "Address given to clients in metadata; defaults "
            "to the listener."),
    # Authentication, on a SASL_PLAINTEXT listener.
    Setting("sasl.enabled.mechanisms", "list", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"],
            "SASL mechanisms offered on a SASL_PLAINTEXT listener.",
            choices=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")),
    Setting(SASL_JAAS_SETTING, "string", None, "The users a SASL_PLAINTEXT listener accepts, as "
            "Kafka's PlainLoginModule line: user_NAME=\"PASSWORD\" entries.", sensitive=True),
    # Limits on connections and requests.
    Setting("socket.request.max.bytes", "int", 104857600, "Largest request frame accepted; a larger "
            "size closes the connection before anything is allocated.", minimum=1),
    Setting("max.connections", "int", INT_MAX, "Most client connections open at once; further "
            "connections are closed on accept.", minimum=0, dynamic=True),
    Setting("max.connections.per.ip", "int", INT_MAX, "Most connections open at once from one "
            "client address; further ones are closed on accept.", minimum=0, dynamic=True),
    Setting("max.connections.per.ip.overrides", "string", "", "Per-address exceptions to "
            "max.connections.per.ip, as host:count pairs separated by commas "
            "(127.0.0.1:200,10.0.0.7:5).", dynamic=True, validator=parse_ip_overrides),
    Setting("queued.max.request.bytes", "long", 104857600, "Bytes that requests larger than one "
            "receive (256 KiB) may hold while they are read and handled, across all connections; "
            "beyond it such requests wait before being read (KIP-72); 0 or less: unbounded. "
            "Kafka's default -1 lets a few clients announcing huge requests exhaust memory; 100 MiB still "
            "admits a request of socket.request.max.bytes.", minimum=-1),
    Setting("connection.failed.authentication.delay.ms", "int", 100, "Delay before the answer to "
            "a failed SASL authentication (and the close that follows), to slow password "
            "guessing.", minimum=0),
    Setting("connections.max.idle.ms", "long", 600000, "Idle connections are closed after this long.",
            minimum=1),
    Setting("message.max.bytes", "int", 1048588, "Largest record batch accepted.", minimum=0,
            topic_name="max.message.bytes"),
    # Topics.
    Setting("auto.create.topics.enable", "boolean", True, "Create unknown topics on metadata requests."),
    Setting("num.partitions", "int", 1, "Partition count of auto-created topics.", minimum=1),
    Setting("default.replication.factor", "int", 1, "Replication factor of auto-created topics.",
            minimum=1),
    Setting("delete.topic.enable", "boolean", True, "Whether DeleteTopics may delete topics."),
    # The log.
    Setting("log.segment.bytes", "int", 1073741824, "Size at which a segment file is rolled.",
            minimum=1048576, topic_name="segment.bytes"),
    Setting("log.roll.ms", "long", 7 * _DAY_MS, "Age at which a segment is rolled.", minimum=1,
            topic_name="segment.ms"),
    Setting("log.roll.jitter.ms", "long", 0, "Random amount taken off the roll age, so that "
            "segments of many partitions do not roll at once.", minimum=0,
            topic_name="segment.jitter.ms"),
    Setting("log.preallocate", "boolean", False, "Preallocate segment files (accepted, has no "
            "effect here).", topic_name="preallocate"),
    Setting("log.index.interval.bytes", "int", 4096, "Bytes between offset index entries.",
            minimum=0, topic_name="index.interval.bytes"),
    Setting("log.index.size.max.bytes", "int", 10485760, "Largest offset index of one segment.",
            minimum=4, topic_name="segment.index.bytes"),
    Setting("log.flush.interval.messages", "long", LONG_MAX, "Records appended between fsyncs "
            "(default: leave flushing to the OS).", minimum=1, topic_name="flush.messages"),
    Setting("log.flush.interval.ms", "long", LONG_MAX, "Time between fsyncs (default: leave "
            "flushing to the OS).", minimum=0, topic_name="flush.ms"),
    Setting("log.flush.scheduler.interval.ms", "long", 1000, "How often the flusher looks for logs "
            "due a flush.", minimum=1),
    Setting("log.retention.ms", "long", 7 * _DAY_MS, "Age after which closed segments are deleted "
            "(-1: no limit).", minimum=-1, topic_name="retention.ms"),
    Setting("log.retention.bytes", "long", -1, "Partition size above which the oldest segments are "
            "deleted (-1: no limit).", minimum=-1, topic_name="retention.bytes"),
    Setting("log.retention.check.interval.ms", "long", 300000, "How often retention is applied.",
            minimum=1),
    Setting("log.cleanup.policy", "list", ["delete"], "delete, compact, or both.",
            choices=("delete", "compact"), topic_name="cleanup.policy"),
    Setting("log.segment.delete.delay.ms", "long", 60000, "Delay before a deleted segment's file "
            "is removed, so reads in progress finish.", minimum=0, topic_name="file.delete.delay.ms"),
    Setting("log.message.timestamp.type", "string", "CreateTime", "CreateTime keeps the producer's "
            "timestamps; LogAppendTime stamps batches with broker time.",
            choices=("CreateTime", "LogAppendTime"), topic_name="message.timestamp.type"),
    Setting("log.message.timestamp.before.max.ms", "long", LONG_MAX, "How far in the past a "
            "CreateTime timestamp may be.", minimum=0, topic_name="message.timestamp.before.max.ms"),
    Setting("log.message.timestamp.after.max.ms", "long", 3600000, "How far in the future a "
            "CreateTime timestamp may be.", minimum=0, topic_name="message.timestamp.after.max.ms"),
    Setting("compression.type", "string", "producer", "Codec of stored batches; producer keeps the "
            "producer's.", choices=("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"),
            topic_name="compression.type"),
    Setting("compression.gzip.level", "int", -1, "gzip level used when the broker compresses.",
            minimum=-1, topic_name="compression.gzip.level"),
    Setting("compression.lz4.level", "int", 9, "lz4 level used when the broker compresses.",
            minimum=1, topic_name="compression.lz4.level"),
    Setting("compression.zstd.level", "int", 3, "zstd level used when the broker compresses.",
            minimum=-131072, topic_name="compression.zstd.level"),
    Setting("log.cleaner.enable", "boolean", True, "Run the log cleaner, which compacts topics "
            "with cleanup.policy=compact."),
    Setting("log.cleaner.min.compaction.lag.ms", "long", 0, "Minimum age of a record before it may "
            "be compacted.", minimum=0, topic_name="min.compaction.lag.ms"),
    Setting("log.cleaner.max.compaction.lag.ms", "long", LONG_MAX, "Maximum time a record stays "
            "uncompacted.", minimum=1, topic_name="max.compaction.lag.ms"),
    Setting("log.cleaner.delete.retention.ms", "long", _DAY_MS, "How long tombstones are kept on "
            "compacted topics.", minimum=0, topic_name="delete.retention.ms"),
    Setting("log.cleaner.min.cleanable.ratio", "double", 0.5, "Dirty share of a log that triggers "
            "compaction.", minimum=0, topic_name="min.cleanable.dirty.ratio"),
    Setting("log.cleaner.backoff.ms", "long", 15000, "Pause of the cleaner when nothing is to clean.",
            minimum=0, dynamic=True),
    Setting("log.cleaner.dedupe.buffer.size", "long", 32 * 1024 * 1024, "Memory for the cleaner's "
            "key map; a log with more distinct keys is compacted in several passes (Kafka: 128 MiB).",
            minimum=1024 * 1024),
    Setting("log.cleaner.io.buffer.load.factor", "double", 0.9, "Share of "
            "log.cleaner.dedupe.buffer.size the key map may fill.", minimum=0.01),
    Setting("min.insync.replicas", "int", 1, "Replicas that must acknowledge acks=all writes.",
            minimum=1, topic_name="min.insync.replicas"),
    Setting("unclean.leader.election.enable", "boolean", False, "Whether a replica outside the "
            "ISR may become leader (one broker: no effect).",
            topic_name="unclean.leader.election.enable"),
    # Fetch sessions.
    Setting("max.incremental.fetch.session.cache.slots", "int", 1000, "Most incremental fetch "
            "sessions kept at once.", minimum=0),
    # Groups.
    Setting("group.initial.rebalance.delay.ms", "int", 100, "Wait before the first rebalance of an "
            "empty group (Kafka: 3000). 100 ms keeps groups quick to form and gives a client time "
            "to learn its topics' partitions first (kafka-python 3.0.12 can lose its first "
            "assignment otherwise).", minimum=0),
    Setting("group.min.session.timeout.ms", "int", 6000, "Smallest session timeout a member may ask "
            "for.", minimum=0),
    Setting("group.max.session.timeout.ms", "int", 1800000, "Largest session timeout a member may "
            "ask for.", minimum=0),
    Setting("group.max.size", "int", INT_MAX, "Most members in one group.", minimum=1),
    Setting("offsets.retention.minutes", "int", 10080, "How long committed offsets of an empty "
            "group are kept.", minimum=1),
    Setting("offsets.retention.check.interval.ms", "long", 600000, "How often expired offsets are "
            "removed.", minimum=1),
    Setting("offsets.topic.num.partitions", "int", 1, "Partitions of __consumer_offsets (Kafka: "
            "50; one broker needs only one).", minimum=1),
    # Transactions.
    Setting("transaction.max.timeout.ms", "int", 900000, "Largest transaction timeout a producer "
            "may ask for.", minimum=1),
    Setting("transactional.id.expiration.ms", "int", 604800000, "Idle time after which a "
            "transactional id is forgotten.", minimum=1),
    Setting("transaction.abort.timed.out.transaction.cleanup.interval.ms", "int", 10000,
            "How often timed-out transactions are looked for.", minimum=1),
    Setting("transaction.state.log.num.partitions", "int", 1, "Partitions of "
            "__transaction_state (Kafka: 50; one broker needs only one).", minimum=1),
    Setting("producer.id.expiration.ms", "int", 86400000, "Idle time after which a producer's "
            "idempotence state is forgotten (one with an open transaction is kept).", minimum=1),
    Setting("producer.id.expiration.check.interval.ms", "int", 600000, "How often idle producers' "
            "state is looked for.", minimum=1),
)

SETTINGS_BY_NAME: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}
TOPIC_DEFAULT_SETTINGS: dict[str, Setting] = {s.topic_name: s for s in SETTINGS if s.topic_name}


class ConfigSource(enum.IntEnum):
    """Where a config value comes from, numbered as Kafka's DescribeConfigs reports it."""

    TOPIC_CONFIG = 1
    DYNAMIC_BROKER_CONFIG = 2  # AlterConfigs on this broker's resource ("1")
    DYNAMIC_DEFAULT_BROKER_CONFIG = 3  # AlterConfigs on the cluster default resource ("")
    STATIC_BROKER_CONFIG = 4  # the command line (Kafka: server.properties)
    DEFAULT_CONFIG = 5


# Layers of broker settings, the one that wins first (Kafka's DynamicBrokerConfig order).
_LAYERS = (ConfigSource.DYNAMIC_BROKER_CONFIG, ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG,
           ConfigSource.STATIC_BROKER_CONFIG)


class Config:
    """Broker settings by Kafka name: dynamic, then static values, then the defaults."""

    def __init__(self, overrides: dict[str, str] | None = None):
        self._layers: dict[ConfigSource, dict[str, tuple[str, Any]]] = {layer: {} for layer in _LAYERS}
        self._values: dict[str, Any] = {}
        for name, text in (overrides or {}).items():
            self.set(name, text)

    def set(self, name: str, text: str) -> None:
        """Set a static value (the command line)."""
        setting = SETTINGS_BY_NAME.get(name)
        if setting is None:
            raise KafkaError(ErrorCode.INVALID_CONFIG, f"unknown broker setting {name!r}")
        self._layers[ConfigSource.STATIC_BROKER_CONFIG][name] = (text, setting.parse(text))
        self._merge()

    def set_dynamic(self, layer: ConfigSource, texts: dict[str, str]) -> None:
        """Replace one dynamic layer, validated as Kafka's DynamicBrokerConfig.validate does.

        Only dynamic settings may be given (else INVALID_REQUEST, as Kafka answers); names this
        broker does not know are kept as given, since Kafka stores unknown broker configs too.
        """
        frozen = sorted(n for n in texts if n in SETTINGS_BY_NAME and not SETTINGS_BY_NAME[n].is_dynamic)
        if frozen:
            raise KafkaError(ErrorCode.INVALID_REQUEST,
                             f"Cannot update these configs dynamically: {', '.join(frozen)}")
        values = {}
        for name, text in texts.items():
            setting = SETTINGS_BY_NAME.get(name)
            try:
                values[name] = (text, setting.parse(text) if setting else text)
            except KafkaError as exc:
                raise KafkaError(ErrorCode.INVALID_REQUEST, exc.message) from None
        self._layers[layer] = values
        self._merge()

    def dynamic_texts(self, layer: ConfigSource) -> dict[str, str]:
        """The values of one dynamic layer as they were given."""
        return {name: text for name, (text, _) in self._layers[layer].items()}

    def sources(self, name: str) -> list[tuple[ConfigSource, str | None]]:
        """(source, text) of every layer that gives `name` a value, the one in effect first."""
        found = [(layer, values[name][0]) for layer, values in self._layers.items() if name in values]
        setting = SETTINGS_BY_NAME.get(name)
        if setting is not None and setting.default is not None:
            found.append((ConfigSource.DEFAULT_CONFIG, setting.render(setting.default)))
        return found

    def _merge(self) -> None:
        self._values = {
            name: value
            for layer in reversed(_LAYERS) for name, (_, value) in self._layers[layer].items()
            if name in SETTINGS_BY_NAME
        }

    def __getitem__(self, name: str) -> Any:
        if name in self._values:
            return self._values[name]
        return SETTINGS_BY_NAME[name].default

    def is_default(self, name: str) -> bool:
        return name not in self._values

    def topic_defaults(self) -> dict[str, str]:
        """Per-topic config defaults (topic config name -> text) implied by the broker settings."""
        return {
            topic_name: setting.render(self[setting.name])
            for topic_name, setting in TOPIC_DEFAULT_SETTINGS.items()
        }

    def listener(self) -> tuple[str, int]:
        """(host, port) this broker listens on, from `listeners`."""
        return _split_listener(self["listeners"])

    def security_protocol(self) -> str:
        """PLAINTEXT or SASL_PLAINTEXT, from `listeners`."""
        protocol, _, _ = self["listeners"].split(",")[0].partition("://")
        return protocol.upper()

    def advertised_listener(self) -> tuple[str, int]:
        """(host, port) clients are told to connect to; the listener unless set."""
        host, port = self.listener()
        advertised = self["advertised.listeners"]
        if not advertised:
            return host, port
        advertised_host, advertised_port = _split_listener(advertised)
        return advertised_host, advertised_port or port


def _split_listener(text: str) -> tuple[str, int]:
    address = text.split(",")[0].split("://", 1)[-1]
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)
