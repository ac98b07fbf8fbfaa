"""The broker's one Config: every setting under its Apache Kafka broker config name.

The broker-only settings are listed here; the defaults of per-topic settings (log.segment.bytes
for segment.bytes, ...) are derived from the topic table in kbroker/log/config.py, so each
setting is defined once, with one parser and one error format. `kbroker serve --override
NAME=VALUE`, the topic defaults handed to the log layer and DescribeConfigs for the broker
resource all come from these tables; `BROKER_RULES` and the topic rules tie settings together.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import re
from typing import Any

from kbroker.listeners import (
    DEFAULT_PROTOCOL_MAP, ListenerConfig, listener_configs, parse_endpoints, parse_protocol_map,
)
from kbroker.log.config import INT_MAX, TOPIC_SETTINGS, AtMost, LogConfig, Setting
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.versions import Release


@functools.lru_cache(maxsize=8)  # read at every accept
def parse_ip_overrides(text: str) -> dict[str, int]:
    """`max.connections.per.ip.overrides`: "address:count" pairs separated by commas."""
    overrides = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        host, _, count = item.rpartition(":")
        try:
            value = int(count)
        except ValueError:
            value = -1
        if not host or value < 0:
            raise ValueError(f"{item!r} is not host:count with a count of 0 or more")
        overrides[host.strip("[]")] = value
    return overrides


_DAY_MS = 24 * 3600 * 1000
SASL_JAAS_SETTING = "sasl.jaas.config"
SIMULATED_BROKERS = "simulated.brokers"
# The defaults that follow the simulated cluster's size N when it is over 1 (kbroker/cluster.py).
_CLUSTER_DEFAULTS = {
    "default.replication.factor": lambda n: min(3, n),
    "offsets.topic.num.partitions": lambda n: n,
    "transaction.state.log.num.partitions": lambda n: n,
    "share.coordinator.state.topic.num.partitions": lambda n: n,
    "offsets.topic.replication.factor": lambda n: min(3, n),
    "transaction.state.log.replication.factor": lambda n: min(3, n),
    "transaction.state.log.min.isr": lambda n: min(2, n),
    "share.coordinator.state.topic.replication.factor": lambda n: min(3, n),
    "share.coordinator.state.topic.min.isr": lambda n: min(2, n),
}
# An internal topic's replication factor over the brokers there are: kbroker places it on every
# broker (Kafka would not create the topic, leaving its coordinator unavailable).
_INTERNAL_FACTOR_NOTE = " (Kafka: 3; over the number of brokers, every broker)."
_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_ALL_MECHANISMS = (*_MECHANISMS, "OAUTHBEARER")
AUTHORIZER_CLASSES = ("", "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                      "kafka.security.authorizer.AclAuthorizer")
CONSUMER_ASSIGNORS = ("org.apache.kafka.coordinator.group.assignor.UniformAssignor",
                      "org.apache.kafka.coordinator.group.assignor.RangeAssignor")

# Settings of the broker alone (Kafka's KafkaConfig), grouped as `kbroker configs` lists them.
_BROKER_SETTINGS: tuple[Setting, ...] = (
    # Identity and listeners.
    Setting("node.id", "int", 1, "The id of this broker in the cluster.", low=0),
    Setting(SIMULATED_BROKERS, "int", 1, "kbroker's own (`kbroker serve --brokers N`): brokers "
            "this process simulates, node ids node.id.. and every listener's port + 0..N-1; "
            "replicas, ISRs and leaders are modelled (kbroker/cluster.py), the data is stored "
            "once. Over 1, default.replication.factor defaults to min(3, N) and the internal "
            "topics' partition counts to N.", low=1, high=64),
    Setting("auto.leader.rebalance.enable", "boolean", True, "With several brokers: give "
            "partitions back to their preferred leader (the first replica) once it is an in-sync "
            "replica again, checked every leader.imbalance.check.interval.seconds."),
    Setting("leader.imbalance.check.interval.seconds", "long", 300, "How often preferred leaders "
            "are restored (auto.leader.rebalance.enable).", low=1),
    Setting("log.dirs", "string", "./kbroker-data", "Directory holding topic data and broker state."),
    Setting("listeners", "string", "PLAINTEXT://127.0.0.1:9092", "The listeners, as "
            "NAME://HOST:PORT entries separated by commas; NAME is a security protocol "
            "(PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) or a name mapped to one by "
            "listener.security.protocol.map.", validator=parse_endpoints),
    Setting("advertised.listeners", "string", None, "Per listener name, the address given to "
            "clients in metadata; defaults to the listener's own.", validator=parse_endpoints),
    Setting("listener.security.protocol.map", "string", DEFAULT_PROTOCOL_MAP, "Security "
            "protocol of each listener name, as NAME:PROTOCOL pairs.", validator=parse_protocol_map),
    Setting("inter.broker.listener.name", "string", None, "The listener brokers use between "
            "them; one node only checks that it exists."),
    Setting("controller.listener.names", "list", (), "Listeners of the KRaft controller quorum; "
            "a single node does not open them."),
    # TLS, on SSL and SASL_SSL listeners; each may be given per listener with Kafka's prefix
    # listener.name.NAME. (listener.name.ssl.ssl.keystore.location).
    Setting("ssl.keystore.type", "string", "JKS", "Format of the key store; kbroker reads PEM.",
            choices=("JKS", "PKCS12", "PEM")),
    Setting("ssl.keystore.location", "string", None, "PEM file with the private key and the "
            "certificate chain."),
    Setting("ssl.keystore.password", "string", None, "Password of a JKS/PKCS12 key store (not "
            "used with PEM).", sensitive=True),
    Setting("ssl.keystore.certificate.chain", "string", None, "The certificate chain in PEM, "
            "instead of a file.", sensitive=True),
    Setting("ssl.keystore.key", "string", None, "The private key in PEM, instead of a file.",
            sensitive=True),
    Setting("ssl.key.password", "string", None, "Password of an encrypted private key.",
            sensitive=True),
    Setting("ssl.truststore.type", "string", "JKS", "Format of the trust store; kbroker reads PEM.",
            choices=("JKS", "PKCS12", "PEM")),
    Setting("ssl.truststore.location", "string", None, "PEM file with the certificates trusted "
            "to sign client certificates."),
    Setting("ssl.truststore.password", "string", None, "Password of a JKS/PKCS12 trust store.",
            sensitive=True),
    Setting("ssl.truststore.certificates", "string", None, "Trusted certificates in PEM, instead "
            "of a file."),
    Setting("ssl.client.auth", "string", "none", "Whether clients must present a certificate: "
            "none, requested or required.", choices=("none", "requested", "required")),
    Setting("ssl.enabled.protocols", "list", ("TLSv1.2", "TLSv1.3"), "TLS versions accepted.",
            choices=("TLSv1.2", "TLSv1.3")),
    Setting("ssl.protocol", "string", "TLSv1.3", "Kafka's SSLContext protocol; the versions "
            "accepted are ssl.enabled.protocols."),
    Setting("ssl.cipher.suites", "list", (), "TLS 1.2 cipher suites accepted, by IANA name "
            "(TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256); empty: OpenSSL's defaults."),
    Setting("ssl.principal.mapping.rules", "string", "DEFAULT", "How a client certificate's "
            "distinguished name becomes a principal name: RULE:pattern/replacement/[LU] entries "
            "and DEFAULT (the name as is), the first that matches applies."),
    Setting("ssl.endpoint.identification.algorithm", "string", "https", "Accepted for "
            "compatibility; a broker does not check its clients' host names."),
    # Authentication on SASL_PLAINTEXT and SASL_SSL listeners.
    Setting("sasl.enabled.mechanisms", "list", _MECHANISMS,
            "SASL mechanisms offered on SASL listeners.", choices=_ALL_MECHANISMS),
    Setting(SASL_JAAS_SETTING, "string", None, "Login module configuration, given per listener "
            "and mechanism as Kafka does (listener.name.sasl_ssl.plain.sasl.jaas.config); "
            "PlainLoginModule's user_NAME=\"PASSWORD\" entries are the users of PLAIN and SCRAM. "
            "Unprefixed, it applies to every SASL listener without its own.", sensitive=True),
    Setting("sasl.oauthbearer.sub.claim.name", "string", "sub", "Claim of an OAUTHBEARER token "
            "holding the principal name (unsecuredValidatorPrincipalClaimName in the JAAS options "
            "wins)."),
    Setting("sasl.oauthbearer.scope.claim.name", "string", "scope", "Claim of an OAUTHBEARER "
            "token holding its scope."),
    Setting("connections.max.reauth.ms", "long", 0, "Longest session of a SASL client before it "
            "must re-authenticate (KIP-368); a connection whose session expired is closed on its "
            "next request. 0: sessions never expire.", low=0),
    Setting("sasl.server.max.receive.size", "int", 524288, "Largest request frame accepted on a "
            "SASL listener before the client has authenticated.", low=1),
    Setting("connection.failed.authentication.delay.ms", "int", 100, "Delay before the answer to "
            "a failed SASL authentication (and the close that follows), to slow password "
            "guessing.", low=0),
    # Authorization (ACLs).
    Setting("authorizer.class.name", "string", "", "The ACL authorizer: Kafka's "
            "org.apache.kafka.metadata.authorizer.StandardAuthorizer (or the older "
            "kafka.security.authorizer.AclAuthorizer) enables ACLs; empty: every operation is "
            "allowed and the ACL APIs answer SECURITY_DISABLED.", choices=AUTHORIZER_CLASSES),
    Setting("super.users", "string", "", "Principals allowed every operation whatever the "
            "ACLs, separated by semicolons (User:admin;User:ops)."),
    Setting("allow.everyone.if.no.acl.found", "boolean", False, "Whether an operation on a "
            "resource no ACL names is allowed (by default it is denied)."),
    # Client quotas (set with AlterClientQuotas), measured as Kafka measures them.
    Setting("quota.window.num", "int", 11, "Samples a client's rate is measured over.", low=1),
    Setting("quota.window.size.seconds", "int", 1, "Time span of each sample of a client's rate.",
            low=1),
    Setting("controller.quota.window.num", "int", 11, "Samples of a client's controller mutation "
            "rate (KIP-599): with the window size, how many seconds of its quota it may use at once.",
            low=1),
    Setting("controller.quota.window.size.seconds", "int", 1, "Time span of each sample of a "
            "client's controller mutation rate.", low=1),
    # Limits on connections and requests.
    Setting("socket.request.max.bytes", "int", 104857600, "Largest request frame accepted; a larger "
            "size closes the connection before anything is allocated.", low=1),
    Setting("queued.max.request.bytes", "long", 104857600, "Bytes that requests larger than one "
            "receive (256 KiB) may hold while they are read and handled, across all connections; "
            "beyond it such requests wait before being read (KIP-72); 0 or less: unbounded. "
            "Kafka's default -1 lets a few clients announcing huge requests exhaust memory; "
            "100 MiB still admits a request of socket.request.max.bytes."),
    Setting("max.connections", "int", INT_MAX, "Most client connections open at once; further "
            "connections are closed on accept.", low=0, dynamic=True),
    Setting("max.connections.per.ip", "int", INT_MAX, "Most connections open at once from one "
            "client address; further ones are closed on accept.", low=0, dynamic=True),
    Setting("max.connections.per.ip.overrides", "string", "", "Per-address exceptions to "
            "max.connections.per.ip, as host:count pairs separated by commas "
            "(127.0.0.1:200,10.0.0.7:5).", dynamic=True, validator=parse_ip_overrides),
    Setting("max.connection.creation.rate", "int", INT_MAX, "Most new connections per second, "
            "measured over the quota windows; beyond it the broker waits before accepting more "
            "(up to quota.window.size.seconds at a time), as Kafka's acceptor does.", low=0,
            dynamic=True),
    Setting("connections.max.idle.ms", "long", 600000, "Idle connections are closed after this long.",
            low=1),
    Setting("telemetry.max.bytes", "int", 1024 * 1024, "Largest metrics payload a client may push "
            "(KIP-714).", low=1),
    # Topics.
    Setting("auto.create.topics.enable", "boolean", True, "Create unknown topics on metadata requests."),
    Setting("num.partitions", "int", 1, "Partition count of auto-created topics.", low=1),
    Setting("default.replication.factor", "int", 1, "Replication factor of auto-created topics.",
            low=1),
    Setting("delete.topic.enable", "boolean", True, "Whether DeleteTopics may delete topics."),
    # The log, beyond the topic defaults.
    Setting("log.flush.scheduler.interval.ms", "long", 1000, "How often the flusher looks for logs "
            "due a flush.", low=1),
    Setting("log.flush.offset.checkpoint.interval.ms", "int", 60000, "How often each partition's "
            "recovery point (the offset up to which its data is fsynced) is written to "
            "recovery-point-offset-checkpoint; after a crash, recovery scans from there.", low=0),
    Setting("log.open.files.max", "int", 512, "kbroker's own: most segment and index files kept "
            "open at once; others are opened again when used, so any number of partitions fits "
            "in the open-file limit (ulimit -n).", low=16),
    Setting("log.retention.check.interval.ms", "long", 300000, "How often retention is applied.",
            low=1),
    Setting("log.cleaner.enable", "boolean", True, "Run the log cleaner, which compacts topics "
            "with cleanup.policy=compact."),
    Setting("log.cleaner.backoff.ms", "long", 15000, "Pause of the cleaner when nothing is to clean.",
            low=0, dynamic=True),
    Setting("log.cleaner.dedupe.buffer.size", "long", 32 * 1024 * 1024, "Memory for the cleaner's "
            "key map; a log with more distinct keys is compacted in several passes (Kafka: 128 MiB).",
            low=1024 * 1024),
    Setting("log.cleaner.io.buffer.load.factor", "double", 0.9, "Share of "
            "log.cleaner.dedupe.buffer.size the key map may fill.", low=0.01),
    # Fetch sessions.
    Setting("max.incremental.fetch.session.cache.slots", "int", 1000, "Most incremental fetch "
            "sessions kept at once.", low=0),
    # Groups.
    Setting("group.initial.rebalance.delay.ms", "int", 100, "Wait before the first rebalance of an "
            "empty group (Kafka: 3000). 100 ms keeps groups quick to form and gives a client time "
            "to learn its topics' partitions first (kafka-python 3.0.12 can lose its first "
            "assignment otherwise).", low=0),
    Setting("group.min.session.timeout.ms", "int", 6000, "Smallest session timeout a member may ask "
            "for.", low=0),
    Setting("group.max.session.timeout.ms", "int", 1800000, "Largest session timeout a member may "
            "ask for.", low=0),
    Setting("group.max.size", "int", INT_MAX, "Most members in one group.", low=1),
    # Consumer groups of the KIP-848 protocol (ConsumerGroupHeartbeat).
    Setting("group.consumer.session.timeout.ms", "int", 45000, "Time without a heartbeat after "
            "which a consumer group member is removed.", low=1),
    Setting("group.consumer.min.session.timeout.ms", "int", 45000, "Lower bound of "
            "group.consumer.session.timeout.ms.", low=1),
    Setting("group.consumer.max.session.timeout.ms", "int", 60000, "Upper bound of "
            "group.consumer.session.timeout.ms.", low=1),
    Setting("group.consumer.heartbeat.interval.ms", "int", 5000, "Heartbeat interval given to "
            "consumer group members.", low=1),
    Setting("group.consumer.min.heartbeat.interval.ms", "int", 5000, "Lower bound of "
            "group.consumer.heartbeat.interval.ms.", low=1),
    Setting("group.consumer.max.heartbeat.interval.ms", "int", 15000, "Upper bound of "
            "group.consumer.heartbeat.interval.ms.", low=1),
    Setting("group.consumer.max.size", "int", INT_MAX, "Most members in one consumer group.", low=1),
    Setting("group.consumer.assignors", "list", CONSUMER_ASSIGNORS, "Server-side assignors, by "
            "name (uniform, range) or Kafka class name; the first is used when members name none.",
            choices=(*CONSUMER_ASSIGNORS, "uniform", "range")),
    Setting("group.consumer.migration.policy", "string", "bidirectional", "Online conversion "
            "between classic and consumer groups with members: upgrade (classic to consumer when a "
            "ConsumerGroupHeartbeat member joins), downgrade (back when the last such member "
            "leaves), bidirectional, or disabled.",
            choices=("disabled", "upgrade", "downgrade", "bidirectional")),
    Setting("offsets.retention.minutes", "int", 10080, "How long committed offsets of an empty "
            "group are kept.", low=1),
    Setting("offsets.retention.check.interval.ms", "long", 600000, "How often expired offsets are "
            "removed.", low=1),
    Setting("offsets.topic.num.partitions", "int", 1, "Partitions of __consumer_offsets (Kafka: "
            "50; one broker needs only one).", low=1),
    Setting("offsets.topic.replication.factor", "short", 1, "Replicas of __consumer_offsets"
            + _INTERNAL_FACTOR_NOTE, low=1),
    # Transactions.
    # Share groups (KIP-932).
    Setting("group.share.record.lock.duration.ms", "int", 30000, "How long a share consumer holds "
            "the records it acquired before they go back to the group.", low=1000, high=3600000),
    Setting("group.share.min.record.lock.duration.ms", "int", 15000, "Smallest record lock "
            "duration a share group may set (share.record.lock.duration.ms).", low=1000, high=30000),
    Setting("group.share.max.record.lock.duration.ms", "int", 60000, "Largest record lock "
            "duration a share group may set.", low=30000, high=3600000),
    Setting("group.share.delivery.count.limit", "int", 5, "Deliveries of a record to a share "
            "group after which it is archived rather than delivered again.", low=2, high=10),
    Setting("group.share.partition.max.record.locks", "int", 2000, "Most in-flight records of "
            "one share partition.", low=100, high=10000),
    Setting("group.share.max.share.sessions", "int", 2000, "Most share sessions of the broker.",
            low=1),
    Setting("group.share.max.size", "int", 200, "Most members in one share group.", low=1,
            high=1000),
    Setting("group.share.session.timeout.ms", "int", 45000, "A share group member that does not "
            "heartbeat within this time is removed.", low=1),
    Setting("group.share.min.session.timeout.ms", "int", 45000, "Smallest share.session.timeout.ms "
            "of a group.", low=1),
    Setting("group.share.max.session.timeout.ms", "int", 60000, "Largest share.session.timeout.ms "
            "of a group.", low=1),
    Setting("group.share.heartbeat.interval.ms", "int", 5000, "How often share group members "
            "heartbeat.", low=1),
    Setting("group.share.min.heartbeat.interval.ms", "int", 5000, "Smallest "
            "share.heartbeat.interval.ms of a group.", low=1),
    Setting("group.share.max.heartbeat.interval.ms", "int", 15000, "Largest "
            "share.heartbeat.interval.ms of a group.", low=1),
    Setting("share.coordinator.state.topic.num.partitions", "int", 1, "Partitions of "
            "__share_group_state (Kafka: 50; one broker needs only one).", low=1),
    Setting("share.coordinator.state.topic.replication.factor", "short", 1, "Replicas of "
            "__share_group_state" + _INTERNAL_FACTOR_NOTE, low=1),
    Setting("share.coordinator.state.topic.min.isr", "short", 1, "min.insync.replicas of "
            "__share_group_state (Kafka: 2).", low=1),
    Setting("share.coordinator.snapshot.update.records.per.snapshot", "int", 500, "ShareUpdate "
            "records written for a share partition between two ShareSnapshot records.", low=0,
            high=500),
    Setting("transaction.max.timeout.ms", "int", 900000, "Largest transaction timeout a producer "
            "may ask for.", low=1),
    Setting("transactional.id.expiration.ms", "int", 604800000, "Idle time after which a "
            "transactional id is forgotten.", low=1),
    Setting("transaction.abort.timed.out.transaction.cleanup.interval.ms", "int", 10000,
            "How often timed-out transactions are looked for.", low=1),
    Setting("transaction.state.log.num.partitions", "int", 1, "Partitions of "
            "__transaction_state (Kafka: 50; one broker needs only one).", low=1),
    Setting("transaction.state.log.replication.factor", "short", 1, "Replicas of "
            "__transaction_state" + _INTERNAL_FACTOR_NOTE, low=1),
    Setting("transaction.state.log.min.isr", "int", 1, "min.insync.replicas of "
            "__transaction_state (Kafka: 2).", low=1),
    Setting("producer.id.expiration.ms", "int", 86400000, "Idle time after which a producer's "
            "idempotence state is forgotten (one with an open transaction is kept).", low=1),
    Setting("producer.id.expiration.check.interval.ms", "int", 600000, "How often idle producers' "
            "state is looked for.", low=1),
)


def _topic_default(topic: Setting) -> Setting:
    """The broker setting giving a topic setting its default: same type, bounds and docs; always
    dynamic, as Kafka's DynamicLogConfig makes them."""
    assert topic.broker_name is not None, topic.name
    return dataclasses.replace(topic, name=topic.broker_name, broker_name=None, topic_name=topic.name,
                               dynamic=True)


TOPIC_DEFAULT_SETTINGS: dict[str, Setting] = {s.name: _topic_default(s) for s in TOPIC_SETTINGS
                                               if s.broker_name is not None}
SETTINGS: tuple[Setting, ...] = _BROKER_SETTINGS + tuple(TOPIC_DEFAULT_SETTINGS.values())
SETTINGS_BY_NAME: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}
BROKER_RULES = (
    AtMost("group.min.session.timeout.ms", "group.max.session.timeout.ms", "broker"),
    *(AtMost(low, high, "broker")
      for group_type, prefixes in (("consumer", ("session.timeout", "heartbeat.interval")),
                                   ("share", ("session.timeout", "heartbeat.interval", "record.lock.duration")))
      for prefix in prefixes
      for low, high in ((f"group.{group_type}.min.{prefix}.ms", f"group.{group_type}.{prefix}.ms"),
                        (f"group.{group_type}.{prefix}.ms", f"group.{group_type}.max.{prefix}.ms"))),
)


_LISTENER_SETTING = re.compile(
    r"listener\.name\.[^.]+\.(?:(?:plain|scram-sha-256|scram-sha-512|oauthbearer|gssapi)\.)?"
    r"((?:ssl|sasl)\..+|connections\.max\.reauth\.ms)")


def per_listener_setting(name: str) -> Setting | None:
    """The setting a listener.name.NAME.[MECHANISM.]SETTING override stands for (Kafka's
    per-listener ssl.*, sasl.* and connections.max.reauth.ms settings), else None."""
    match = _LISTENER_SETTING.fullmatch(name)
    base = SETTINGS_BY_NAME.get(match.group(1)) if match else None
    return None if base is None else dataclasses.replace(base, name=name, dynamic=False)


def _broker_name(topic_name: str) -> str:
    return TOPIC_DEFAULT_SETTINGS[topic_name].name




class ConfigSource(enum.IntEnum):
    """Where a config value comes from, numbered as Kafka's DescribeConfigs reports it."""

    TOPIC_CONFIG = 1
    DYNAMIC_BROKER_CONFIG = 2  # AlterConfigs on this broker's resource ("1")
    DYNAMIC_DEFAULT_BROKER_CONFIG = 3  # AlterConfigs on the cluster default resource ("")
    STATIC_BROKER_CONFIG = 4  # the command line (Kafka: server.properties)
    DEFAULT_CONFIG = 5
    CLIENT_METRICS_CONFIG = 7  # a client metrics subscription's (kbroker/telemetry.py)
    GROUP_CONFIG = 8  # a group's override (the GROUP resource, kbroker/group_configs.py)


# Layers of broker settings, the one that wins first (Kafka's DynamicBrokerConfig order).
_LAYERS = (ConfigSource.DYNAMIC_BROKER_CONFIG, ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG,
           ConfigSource.STATIC_BROKER_CONFIG)


class Config:
    """Broker settings by Kafka name: dynamic, then static values, then the defaults."""

    def __init__(self, overrides: dict[str, str] | None = None, release: Release | None = None):
        """The static settings (the command line); KafkaError(INVALID_CONFIG) naming the
        setting as given when one is unknown, bad, or conflicts with another. An older
        `release` (--as-version) brings the defaults it had."""
        self.release = release
        self._defaults = {name: SETTINGS_BY_NAME[name].parse(text)
                          for name, text in (release.config_defaults() if release else {}).items()}
        self._layers: dict[ConfigSource, dict[str, tuple[str, Any]]] = {layer: {} for layer in _LAYERS}
        self._values: dict[str, Any] = {}
        static = self._layers[ConfigSource.STATIC_BROKER_CONFIG]
        for name, text in (overrides or {}).items():
            setting = SETTINGS_BY_NAME.get(name) or per_listener_setting(name)
            if setting is None:
                raise KafkaError(ErrorCode.INVALID_CONFIG, f"Unknown broker config name: {name}")
            static[name] = (text, setting.parse(text))
        brokers = static.get(SIMULATED_BROKERS, (None, 1))[1]
        if brokers > 1:
            for name, default in _CLUSTER_DEFAULTS.items():
                static.setdefault(name, (str(default(brokers)), default(brokers)))
        self._merge()
        self._check_rules()
        self.listeners()

    def set_dynamic(self, layer: ConfigSource, texts: dict[str, str]) -> None:
        """Replace one dynamic layer, validated as Kafka's DynamicBrokerConfig.validate does.

        Only dynamic settings may be given (else INVALID_REQUEST, as Kafka answers); names this
        broker does not know are kept as given, since Kafka stores unknown broker configs too.
        """
        frozen = sorted(n for n in texts if n in SETTINGS_BY_NAME and not SETTINGS_BY_NAME[n].dynamic)
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
        previous, self._layers[layer] = self._layers[layer], values
        self._merge()
        try:
            self._check_rules()
        except KafkaError as exc:
            self._layers[layer] = previous
            self._merge()
            raise KafkaError(ErrorCode.INVALID_REQUEST, exc.message) from None

    def dynamic_texts(self, layer: ConfigSource) -> dict[str, str]:
        """The values of one dynamic layer as they were given."""
        return {name: text for name, (text, _) in self._layers[layer].items()}

    def sources(self, name: str) -> list[tuple[ConfigSource, str | None]]:
        """(source, text) of every layer that gives `name` a value, the one in effect first."""
        found: list[tuple[ConfigSource, str | None]] = [
            (layer, values[name][0]) for layer, values in self._layers.items() if name in values]
        setting = SETTINGS_BY_NAME.get(name)
        if setting is not None and (default := self.default(name)) is not None:
            found.append((ConfigSource.DEFAULT_CONFIG, setting.render(default)))
        return found

    def _merge(self) -> None:
        self._values = {
            name: value
            for layer in reversed(_LAYERS) for name, (_, value) in self._layers[layer].items()
            if name in SETTINGS_BY_NAME or per_listener_setting(name)
        }

    def __getitem__(self, name: str) -> Any:
        if name in self._values:
            return self._values[name]
        return self.default(name)

    def default(self, name: str) -> Any:
        """A setting's default: Kafka's, or the --as-version release's where it differed."""
        return self._defaults[name] if name in self._defaults else SETTINGS_BY_NAME[name].default

    def is_default(self, name: str) -> bool:
        return name not in self._values

    def log_defaults(self) -> LogConfig:
        """The per-topic settings every topic starts from (log.segment.bytes -> segment.bytes...)."""
        return LogConfig(**{setting.log_field: self[setting.name] for setting in TOPIC_DEFAULT_SETTINGS.values()})

    def _check_rules(self) -> None:
        for rule in BROKER_RULES:
            rule.check(self)
        self.log_defaults().check_rules(named=_broker_name)

    def listeners(self) -> list[ListenerConfig]:
        """The listeners to open (kbroker/listeners.py)."""
        return listener_configs(self)

    def for_listener(self, listener: ListenerConfig, name: str, mechanism: str | None = None) -> Any:
        """A setting as one listener sees it: Kafka's listener.name.NAME.[MECHANISM.]SETTING
        if given, else the broker-wide value."""
        prefix = listener.config_prefix
        keys = ([f"{prefix}{mechanism.lower()}.{name}"] if mechanism else []) + [prefix + name]
        for key in keys:
            if key in self._values:
                return self._values[key]
        return self[name]
