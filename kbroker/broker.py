"""The broker's shared state as the API handlers see it.

A Broker owns the config, the logs, the coordinators and the wake-ups that long-polling
fetches wait on. Handlers get it through their RequestContext; nothing here touches sockets.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import trio

from kbroker.config import SASL_JAAS_SETTING, Config, ConfigSource
from kbroker.fetch_sessions import FetchSessionCache
from kbroker.groups.coordinator import GroupCoordinator
from kbroker.log import LogManager
from kbroker.log.cleaner import LogCleaner, key_map_capacity
from kbroker.log.files import read_if_exists
from kbroker.log.files import write_atomically as write_file_atomically
from kbroker.protocol.errors import KafkaError
from kbroker.sasl import SaslUsers, ScramStore, users_from_jaas
from kbroker.txn.coordinator import TransactionCoordinator

log = logging.getLogger("kbroker")

INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})
DYNAMIC_CONFIGS_FILE = "dynamic-broker-configs.json"
SCRAM_CREDENTIALS_FILE = "scram-credentials.json"  # AlterUserScramCredentials' store
# Keys of the two dynamic layers in DYNAMIC_CONFIGS_FILE (Kafka keeps them in its metadata log).
_DYNAMIC_LAYERS = {ConfigSource.DYNAMIC_BROKER_CONFIG: "broker",
                   ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG: "cluster-default"}
PURGE_INTERVAL_MS = 1000  # how often files of deleted segments and topics are looked at


def _flush_all(partition_logs, now: int) -> None:
    for partition_log in partition_logs:
        partition_log.flush(now)


def _sasl_users(config: Config, scram_store: ScramStore) -> SaslUsers | None:
    """The users of a SASL_PLAINTEXT listener; None when connections need no authentication."""
    if config.security_protocol() != "SASL_PLAINTEXT":
        return None
    return SaslUsers(users_from_jaas(config[SASL_JAAS_SETTING] or ""),
                     list(config["sasl.enabled.mechanisms"]), scram_store)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` so a crash leaves either the old or the new content."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


@dataclass(slots=True)
class BrokerIdentity:
    """What makes this broker the same broker across restarts (Kafka's meta.properties)."""

    cluster_id: str
    node_id: int

    @classmethod
    def load_or_create(cls, data_dir: Path, node_id: int) -> "BrokerIdentity":
        path = data_dir / "meta.properties"
        if path.exists():
            values = dict(
                line.split("=", 1) for line in path.read_text().splitlines() if "=" in line
            )
            return cls(values["cluster.id"], node_id)
        cluster_id = _kafka_style_id(uuid.uuid4())
        write_atomically(path, f"version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n")
        return cls(cluster_id, node_id)


def _kafka_style_id(value: uuid.UUID) -> str:
    """A UUID as the 22-character URL-safe base64 text Kafka uses for cluster ids."""
    import base64

    return base64.urlsafe_b64encode(value.bytes).decode().rstrip("=")


class ProducerIdAllocator:
    """Hands out producer ids that are never reused, even across restarts.

    Ids are reserved in blocks recorded in the data dir before any id of the block is given
    out, so a crash can only skip ids, never repeat them (as Kafka's controller does).
    """

    BLOCK_SIZE = 1000

    def __init__(self, data_dir: Path):
        self._path = data_dir / "producer-id-block"
        self._next = int(self._path.read_text()) if self._path.exists() else 0
        self._block_end = self._next

    def allocate(self) -> int:
        if self._next >= self._block_end:
            self._block_end = self._next + self.BLOCK_SIZE
            write_atomically(self._path, str(self._block_end))
        producer_id = self._next
        self._next += 1
        return producer_id


@dataclass
class ApiUsage:
    """Which API versions each client software used (for the compatibility report)."""

    path: Path | None
    seen: dict[str, dict[str, set[int]]] = field(default_factory=dict)
    dirty: bool = False

    def record(self, client: str, api_name: str, version: int) -> None:
        versions = self.seen.setdefault(client, {}).setdefault(api_name, set())
        if version not in versions:
            versions.add(version)
            self.dirty = True

    def record_unsupported(self, client: str, api_name: str, version: int) -> None:
        """A request refused because this broker does not serve its version: recorded as
        "<API> (unsupported)", so that the report shows which clients still send it."""
        self.record(client, f"{api_name} (unsupported)", version)

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        self.dirty = False
        report = {
            client: {api: sorted(versions) for api, versions in sorted(apis.items())}
            for client, apis in sorted(self.seen.items())
        }
        write_atomically(self.path, json.dumps(report, indent=1))


class PartitionWakeups:
    """Lets long-polling fetches sleep until data arrives on any partition they read.

    A waiter registers one trio.Event under every partition it reads; an append sets the
    events of that partition only, so no fetch is woken by partitions it does not read.
    """

    def __init__(self):
        self._waiters: dict[tuple[str, int], set[trio.Event]] = {}

    def notify(self, topic: str, partition: int) -> None:
        for event in self._waiters.pop((topic, partition), ()):
            event.set()

    async def wait_for_data(self, partitions: list[tuple[str, int]], timeout_s: float) -> None:
        event = trio.Event()
        for key in partitions:
            self._waiters.setdefault(key, set()).add(event)
        try:
            with trio.move_on_after(timeout_s):
                await event.wait()
        finally:
            for key in partitions:
                waiting = self._waiters.get(key)
                if waiting is not None:
                    waiting.discard(event)
                    if not waiting:
                        del self._waiters[key]


class Broker:
    """Everything a request handler may use, opened from a Config."""

    def __init__(self, config: Config, api_usage_path: Path | None = None):
        self.config = config
        self.data_dir = Path(config["log.dirs"])
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.identity = BrokerIdentity.load_or_create(self.data_dir, config["node.id"])
        self._load_dynamic_configs()
        self.log_defaults = config.log_defaults()
        self.logs = LogManager(str(self.data_dir), self.log_defaults)
        self.cleaner = LogCleaner(self.logs, key_map_capacity(
            self.config["log.cleaner.dedupe.buffer.size"],
            self.config["log.cleaner.io.buffer.load.factor"]))
        self.producer_ids = ProducerIdAllocator(self.data_dir)
        self.wakeups = PartitionWakeups()
        self.api_usage = ApiUsage(api_usage_path)
        self.advertised = config.advertised_listener()
        self.fetch_sessions = FetchSessionCache(config["max.incremental.fetch.session.cache.slots"])
        # SCRAM credentials made at runtime; kept (and alterable) even without a SASL listener,
        # as Kafka's controller keeps them whatever the listeners.
        stored_scram = read_if_exists(str(self.data_dir / SCRAM_CREDENTIALS_FILE))
        self.scram_store = ScramStore.loads(stored_scram.decode()) if stored_scram else ScramStore()
        self.sasl_users = _sasl_users(config, self.scram_store)
        self.groups = GroupCoordinator(self)  # replays __consumer_offsets
        self.transactions = TransactionCoordinator(self)  # replays __transaction_state

    def create_topic(self, name: str, partitions: int | None = None,
                     configs: dict[str, str] | None = None):
        """Create a topic (auto-created ones get num.partitions and no overrides)."""
        count = partitions if partitions is not None else self.config["num.partitions"]
        info = self.logs.create_topic(name, count, configs or {})
        log.info("created topic %s with %d partitions", name, count)
        return info

    def delete_topics(self, names: list[str]) -> None:
        """Delete topics: fetches waiting on them wake up, groups forget their offsets."""
        for name in names:
            info = self.logs.delete_topic(name)
            for index in range(info.partitions):
                self.wakeups.notify(name, index)
            log.info("deleted topic %s", name)
        if names:
            self.groups.on_topics_deleted(names)

    def _load_dynamic_configs(self) -> None:
        path = self.data_dir / DYNAMIC_CONFIGS_FILE
        stored = json.loads(path.read_text()) if path.exists() else {}
        for layer, key in _DYNAMIC_LAYERS.items():
            try:
                self.config.set_dynamic(layer, stored.get(key, {}))
            except KafkaError as exc:
                log.warning("ignoring stored dynamic %s configs: %s", key, exc.message)

    def alter_broker_configs(self, layer: ConfigSource, texts: dict[str, str],
                             validate_only: bool = False) -> None:
        """Replace one dynamic layer of broker settings: validated, persisted, in effect at once.

        Raises KafkaError(INVALID_REQUEST) as Kafka's broker-side validation does.
        """
        config = self.config
        previous = config.dynamic_texts(layer)
        config.set_dynamic(layer, texts)
        defaults = config.log_defaults()
        if validate_only:
            config.set_dynamic(layer, previous)
            return
        stored = {key: config.dynamic_texts(level) for level, key in _DYNAMIC_LAYERS.items()}
        write_atomically(self.data_dir / DYNAMIC_CONFIGS_FILE, json.dumps(stored, indent=1, sort_keys=True))
        self.log_defaults = defaults
        self.logs.set_defaults(defaults)

    def alter_scram_credentials(self, deletions: list[tuple[str, int]],
                                upsertions: list[tuple[str, int, int, bytes, bytes]],
                                ) -> list[tuple[str, int, str | None]]:
        """Validate and make one AlterUserScramCredentials request's changes: written to the data
        dir first, then in effect for the next SCRAM exchange. Returns (user, error, message)."""
        results, changes = self.scram_store.plan_alter(deletions, upsertions)
        if changes:
            write_file_atomically(str(self.data_dir / SCRAM_CREDENTIALS_FILE),
                                  self.scram_store.dumps(changes).encode())
            self.scram_store.apply(changes)
            for change in changes:
                log.info("%s SCRAM credential %s for user %s",
                         "deleted" if change.credential is None else "stored", change.mechanism,
                         change.user)
        return results

    async def flush_if_due(self, partition_logs: list | None = None) -> None:
        """fsync the logs whose flush.messages / flush.ms say so, off the event loop.

        A produce request checks only the logs it appended to (as Kafka checks flush.messages
        on append); the flusher task checks all of them every log.flush.scheduler.interval.ms.
        """
        now = now_ms()
        if partition_logs is None:
            partition_logs = self.logs.logs()
        due = [partition_log for partition_log in partition_logs if partition_log.needs_flush(now)]
        if due:
            await trio.to_thread.run_sync(_flush_all, due, now)

    async def run_background_tasks(self) -> None:
        """Start every timer-driven part of the broker in one nursery that owns them."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._run_flusher)
            nursery.start_soon(self.groups.run)
            nursery.start_soon(self.transactions.run)
            nursery.start_soon(self._run_api_usage_saver)
            nursery.start_soon(self._run_log_retention)
            nursery.start_soon(self._run_cleaner)

    async def _run_flusher(self) -> None:
        interval_s = self.config["log.flush.scheduler.interval.ms"] / 1000
        while True:
            await trio.sleep(interval_s)
            await self.flush_if_due()

    async def _run_log_retention(self) -> None:
        """Kafka's retention task: every log.retention.check.interval.ms, whole segments past
        retention.ms / retention.bytes (or below the log start offset) go; files of deleted
        segments and topics are removed once their file.delete.delay.ms has passed."""
        next_check = 0
        while True:
            now = now_ms()
            if now >= next_check:
                self.logs.apply_retention(now)
                next_check = now + self.config["log.retention.check.interval.ms"]
            self.logs.purge_deleted(now)
            await trio.sleep(min(next_check - now, PURGE_INTERVAL_MS) / 1000)

    async def _run_cleaner(self) -> None:
        """Kafka's log cleaner thread: compacts the filthiest compacted log, one at a time.

        The reading and writing runs in a worker thread; choosing and swapping run here, so a
        cleaning never sees a half-done append and readers never see a half-done swap.
        """
        if not self.config["log.cleaner.enable"]:
            return
        while True:
            job = self.cleaner.next_job(now_ms())
            if job is None:
                await trio.sleep(self.config["log.cleaner.backoff.ms"] / 1000)
                continue
            try:
                await trio.to_thread.run_sync(job.clean, self.cleaner.key_capacity,
                                               abandon_on_cancel=True)
                self.cleaner.finish(job, now_ms())
            except Exception:
                log.exception("cleaning %s-%d failed; the partition is left uncompacted",
                              job.log.topic, job.log.partition)
                self.cleaner.give_up(job)
            except BaseException:
                job.stop = True  # shutting down: the thread stops at its next batch
                raise

    async def _run_api_usage_saver(self) -> None:
        while True:
            await trio.sleep(2.0)
            self.api_usage.save()

    @property
    def node_id(self) -> int:
        return self.identity.node_id

    def close(self) -> None:
        self.api_usage.save()
        self.logs.close()
