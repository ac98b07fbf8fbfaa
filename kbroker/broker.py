"""The broker's wiring: builds every part from a Config and hands each only what it needs.

Nothing here decides anything. The parts are: the logs and the one place that writes them
(`Storage`), their housekeeping tasks, the coordinators (each given its InternalTopic, the
clock and narrow callbacks), and the small stores of broker metadata. Handlers reach the parts
through `RequestContext.broker`; nothing here touches sockets.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import trio

from kbroker.api_usage import ApiUsage
from kbroker.clock import Clock
from kbroker.cluster import NodeSwitch
from kbroker.config import SASL_JAAS_SETTING, SIMULATED_BROKERS, Config
from kbroker.faults import FaultInjector
from kbroker.features import ELIGIBLE_LEADER_REPLICAS_VERSION, FinalizedFeatures
from kbroker.fetch_sessions import FetchSessionCache
from kbroker.group_configs import GroupConfigs
from kbroker.groups.coordinator import GroupCoordinator
from kbroker.groups.offsets_topic import OFFSETS_TOPIC, OFFSETS_TOPIC_CONFIGS
from kbroker.housekeeping import LogHousekeeping
from kbroker.log import LogManager
from kbroker.log.cleaner import LogCleaner, key_map_capacity
from kbroker.metadata_store import (
    AclStore, BrokerIdentity, DynamicBrokerConfigs, MetadataOffset, ProducerIdAllocator,
    ScramCredentials, open_cluster,
)
from kbroker.metrics import Metrics
from kbroker.oauthbearer import OAuthBearer, jaas_options
from kbroker.quotas import ClientQuotas
from kbroker.sasl import SaslUsers, users_from_jaas
from kbroker.share.coordinator import SHARE_STATE_CONFIGS, SHARE_STATE_TOPIC, ShareCoordinator
from kbroker.storage import LogTopic, Storage
from kbroker.telemetry import Subscriptions, Telemetry
from kbroker.throttling import Throttles
from kbroker.txn.coordinator import TRANSACTION_STATE_CONFIGS, TRANSACTION_STATE_TOPIC, TransactionCoordinator

# Each internal topic's replication factor setting (Kafka's names).
INTERNAL_TOPIC_FACTORS = {OFFSETS_TOPIC: "offsets.topic.replication.factor",
                          TRANSACTION_STATE_TOPIC: "transaction.state.log.replication.factor",
                          SHARE_STATE_TOPIC: "share.coordinator.state.topic.replication.factor"}
INTERNAL_TOPICS = frozenset(INTERNAL_TOPIC_FACTORS)


def _sasl_users(config: Config, scram: ScramCredentials, clock_ms) -> dict[str, SaslUsers]:
    """The users of each SASL_PLAINTEXT or SASL_SSL listener, by listener name, from its
    mechanisms and JAAS settings (listener.name.NAME.MECHANISM.sasl.jaas.config)."""
    found = {}
    for listener in config.listeners():
        if not listener.uses_sasl:
            continue
        options = jaas_options(config.for_listener(listener, SASL_JAAS_SETTING, "OAUTHBEARER"))
        found[listener.name] = SaslUsers(
            users_from_jaas(config.for_listener(listener, SASL_JAAS_SETTING, "PLAIN") or ""),
            list(config.for_listener(listener, "sasl.enabled.mechanisms")), scram.store,
            partial(OAuthBearer, options, clock_ms, config["sasl.oauthbearer.sub.claim.name"],
                    config["sasl.oauthbearer.scope.claim.name"]))
    return found


class Broker:
    """Every part of one broker, opened from a Config and wired together."""

    def __init__(self, config: Config, api_usage_path: Path | str | None = None):
        self.config = config
        self.release = config.release  # the older Kafka release it acts as (--as-version), or None
        self.clock = Clock()
        self.data_dir = Path(config["log.dirs"])
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.identity = BrokerIdentity.load_or_create(self.data_dir, config["node.id"])
        # Stored dynamic configs are loaded first: they change the topic defaults the logs open with.
        self.dynamic_configs = DynamicBrokerConfigs(
            config, self.data_dir, lambda defaults: self.logs.set_defaults(defaults))
        self.logs = LogManager(str(self.data_dir), config.log_defaults(), clock=self.clock.now_ms,
                               open_files_max=config["log.open.files.max"])
        self.storage = Storage(self.logs, self.clock.now_ms, config["num.partitions"])
        self.metadata_offset = MetadataOffset(self.data_dir)
        # The simulated brokers (`--brokers N`): which node leads and replicates each partition.
        # With one broker (several_brokers False) handlers skip every routing check.
        self.node_ids = list(range(self.node_id, self.node_id + config[SIMULATED_BROKERS]))
        self.several_brokers = len(self.node_ids) > 1
        self.cluster = open_cluster(self.data_dir, self.node_ids)
        self.cluster.remove_topics([name for name in self.cluster.topics  # deleted meanwhile
                                    if name not in self.logs.topics and name not in INTERNAL_TOPICS])
        self.node_switch: NodeSwitch | None = None  # set by the server: stop and start a node
        for info in self.logs.topics.values():
            self.place_topic(info.name)
        self.storage.creation_listeners.append(self.place_topic)
        self.storage.deletion_listeners.append(self.cluster.remove_topics)
        self.storage.creation_listeners.append(lambda name: self.metadata_offset.advance())
        self.storage.deletion_listeners.append(lambda names: self.metadata_offset.advance(len(names)))
        self.features = FinalizedFeatures(self.data_dir, self.node_id)
        self.on_features_finalized()
        self.quotas = ClientQuotas(self.data_dir)
        self.throttles = Throttles(self.quotas, config["quota.window.num"],
                                   config["quota.window.size.seconds"] * 1000,
                                   config["controller.quota.window.num"],
                                   config["controller.quota.window.size.seconds"] * 1000)
        self.telemetry = Telemetry(Subscriptions(self.data_dir), config["telemetry.max.bytes"])
        self.housekeeping = LogHousekeeping(config, self.storage, LogCleaner(self.logs, key_map_capacity(
            config["log.cleaner.dedupe.buffer.size"], config["log.cleaner.io.buffer.load.factor"])))
        self.producer_ids = ProducerIdAllocator(self.data_dir)
        self.api_usage = ApiUsage(None if api_usage_path is None else Path(api_usage_path))
        self.metrics = Metrics()  # counters for the HTTP /metrics page
        self.faults = FaultInjector()  # requests to answer with an error, late or not at all
        # Set by the server once its listeners are bound: every listener's (name, host, port),
        # and the first one's advertised (host, port). Handlers answer with their client's own.
        self.listening: list[tuple[str, str, int]] = []
        self.advertised: tuple[str, int] | None = None
        self.fetch_sessions = FetchSessionCache(config["max.incremental.fetch.session.cache.slots"])
        self.scram = ScramCredentials(self.data_dir)
        # None without authorizer.class.name: every operation is allowed, at no cost per request.
        self.acls = AclStore(config, self.data_dir) if config["authorizer.class.name"] else None
        self.sasl_users = _sasl_users(config, self.scram, self.clock.now_ms)
        self.group_configs = GroupConfigs(config, self.data_dir)
        self.groups = GroupCoordinator(  # replays __consumer_offsets
            config, LogTopic(self.storage, OFFSETS_TOPIC, config["offsets.topic.num.partitions"],
                             OFFSETS_TOPIC_CONFIGS), self.clock.now_ms, self.group_configs.get)
        self.storage.deletion_listeners.append(self.groups.on_topics_deleted)
        self.transactions = TransactionCoordinator(  # replays __transaction_state
            config, LogTopic(self.storage, TRANSACTION_STATE_TOPIC,
                             config["transaction.state.log.num.partitions"],
                             {**TRANSACTION_STATE_CONFIGS,
                              "min.insync.replicas": str(config["transaction.state.log.min.isr"])}),
            self.clock.now_ms, self.producer_ids.allocate, self.storage, self.groups)
        self.share = ShareCoordinator(  # replays __share_group_state
            config, LogTopic(self.storage, SHARE_STATE_TOPIC,
                             config["share.coordinator.state.topic.num.partitions"],
                             {**SHARE_STATE_CONFIGS,
                              "min.insync.replicas": str(config["share.coordinator.state.topic.min.isr"])}),
            self.clock.now_ms, self.storage, self.group_configs,
            other_group_type=lambda group_id: self.groups.group(group_id) is not None
            or self.groups.consumer.group(group_id) is not None,
            offsets_topic=LogTopic(self.storage, OFFSETS_TOPIC, config["offsets.topic.num.partitions"],
                                   OFFSETS_TOPIC_CONFIGS),
            offsets_partition=self.groups.partition_for)
        self.storage.deletion_listeners.append(self.share.on_topics_deleted)
        # Coordinators are placed before their topics are first written (FindCoordinator, C1).
        for coordinator in (self.groups, self.transactions, self.share):
            self.place_topic(coordinator.topic.name, coordinator.topic.partitions)

    def on_features_finalized(self) -> None:
        """What a finalized feature level brings with it (Kafka's controller on activation and on
        UpdateFeatures): eligible leader replicas pin the cluster-level min.insync.replicas
        (Kafka 4.1 on; --as-version of an older release does not)."""
        if (self.release is None or self.release.number >= (4, 1)) \
                and self.features.level(ELIGIBLE_LEADER_REPLICAS_VERSION) >= 1:
            self.dynamic_configs.pin_cluster_min_insync_replicas()

    async def run_background_tasks(self) -> None:
        """Start every timer-driven part of the broker in one nursery that owns them."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.clock.keep_in_step)
            nursery.start_soon(self.housekeeping.run)
            nursery.start_soon(self.groups.run)
            nursery.start_soon(self.transactions.run)
            nursery.start_soon(self.share.run)
            nursery.start_soon(self.api_usage.run)
            if self.several_brokers and self.config["auto.leader.rebalance.enable"]:
                nursery.start_soon(self._rebalance_leaders)

    def place_topic(self, topic: str, partitions: int | None = None) -> None:
        """Give a topic's partitions (those the logs hold, by default) replicas and leaders in the
        cluster model; an internal topic's factor is capped at the number of brokers."""
        if topic in INTERNAL_TOPIC_FACTORS:
            factor = min(self.config[INTERNAL_TOPIC_FACTORS[topic]], len(self.cluster.brokers))
        else:
            factor = self.config["default.replication.factor"]
        self.cluster.sync_topic(topic, self.logs.topics[topic].partitions if partitions is None else partitions,
                                factor)

    async def _rebalance_leaders(self) -> None:
        """auto.leader.rebalance.enable: preferred leaders back, every check interval."""
        while True:
            await trio.sleep(self.config["leader.imbalance.check.interval.seconds"])
            self.cluster.rebalance_leaders()

    @property
    def node_id(self) -> int:
        return self.identity.node_id

    def close(self) -> None:
        self.api_usage.save()
        self.logs.close()
