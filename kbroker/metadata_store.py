"""What Kafka keeps in meta.properties and its metadata log, kept as small files in the data dir:
the broker's identity, producer-id blocks, dynamic broker configs, SCRAM credentials, ACLs, the
simulated cluster's partition assignments and the offset of the last metadata change.

Every file is replaced atomically (temp file, fsync, rename, directory fsync), so a crash
leaves the old or the new content, never a torn one.
"""

from __future__ import annotations

import errno
import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kbroker.cluster import Cluster
from kbroker.config import Config, ConfigSource
from kbroker.log import LogConfig
from kbroker.log.files import read_if_exists, write_atomically
from kbroker.log.manager import kafka_uuid_string
from kbroker.protocol.errors import KafkaError
from kbroker.sasl import ScramStore
from kbroker.security.authorizer import AclBinding, AclFilter, Authorizer

log = logging.getLogger("kbroker")

DYNAMIC_CONFIGS_FILE = "dynamic-broker-configs.json"
SCRAM_CREDENTIALS_FILE = "scram-credentials.json"  # AlterUserScramCredentials' store
ACLS_FILE = "acls.json"  # CreateAcls' and DeleteAcls' store
MIN_INSYNC_REPLICAS = "min.insync.replicas"
CLUSTER_FILE = "cluster.json"  # the simulated cluster's replicas, leaders and epochs (--brokers N)
# Keys of the two dynamic layers in DYNAMIC_CONFIGS_FILE (Kafka keeps them in its metadata log).
_DYNAMIC_LAYERS = {ConfigSource.DYNAMIC_BROKER_CONFIG: "broker",
                   ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG: "cluster-default"}


def _write_text(path: Path, text: str) -> None:
    write_atomically(str(path), text.encode())


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
        cluster_id = kafka_uuid_string(uuid.uuid4())
        _write_text(path, f"version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n")
        return cls(cluster_id, node_id)


class ProducerIdAllocator:
    """Hands out producer ids that are never reused, even across restarts.

    Ids are reserved in blocks recorded in the data dir before any id of the block is given
    out, so a crash can only skip ids, never repeat them (as Kafka's controller does).
    """

    BLOCK_SIZE = 1000

    def __init__(self, data_dir: Path):
        self._path = data_dir / "producer-id-block"
        self._next = self._read_next() if self._path.exists() else 0
        self._block_end = self._next

    def _read_next(self) -> int:
        text = self._path.read_text(encoding="ascii", errors="replace").strip()
        if not text.isdigit():  # a one-line startup error (cli), never a traceback
            raise OSError(errno.EINVAL, f"the file is damaged ({text[:20]!r}, not a number). It holds "
                          "the next free producer id: write a number above every producer id in use "
                          "into it, or delete it if no idempotent or transactional producer has used "
                          "this broker", str(self._path))
        return int(text)

    def allocate(self) -> int:
        if self._next >= self._block_end:
            self._block_end = self._next + self.BLOCK_SIZE
            _write_text(self._path, str(self._block_end))
        producer_id = self._next
        self._next += 1
        return producer_id


class MetadataOffset:
    """Stands for the end of Kafka's metadata log: one more for every change to the cluster's
    metadata (topics, configs, quotas, features), kept across restarts. DescribeQuorum answers it
    as the quorum's high watermark and ApiVersions as the finalized features' epoch. The leader
    epoch grows at every start, as a single-node KRaft quorum elects itself anew."""

    def __init__(self, data_dir: Path):
        self._path = data_dir / "metadata-offset.json"
        stored = read_if_exists(str(self._path))
        state = json.loads(stored) if stored else {"offset": 0, "leader_epoch": 0}
        self.value: int = state["offset"]
        self.leader_epoch: int = state["leader_epoch"] + 1
        self._save()

    def advance(self, changes: int = 1) -> None:
        self.value += changes
        self._save()

    def _save(self) -> None:
        _write_text(self._path, json.dumps({"offset": self.value, "leader_epoch": self.leader_epoch}))


class DynamicBrokerConfigs:
    """The broker settings altered at runtime (IncrementalAlterConfigs on a broker resource),
    kept across restarts; `on_log_defaults` hears of new topic defaults."""

    def __init__(self, config: Config, data_dir: Path, on_log_defaults: Callable[[LogConfig], None]):
        self.config = config
        self._path = data_dir / DYNAMIC_CONFIGS_FILE
        self._on_log_defaults = on_log_defaults
        stored = json.loads(self._path.read_text()) if self._path.exists() else {}
        for layer, key in _DYNAMIC_LAYERS.items():
            try:
                config.set_dynamic(layer, stored.get(key, {}))
            except KafkaError as exc:
                log.warning("ignoring stored dynamic %s configs: %s", key, exc.message)

    def pin_cluster_min_insync_replicas(self) -> None:
        """With eligible leader replicas enabled (KIP-966), Kafka's controller writes a
        cluster-level min.insync.replicas at its static value when none is set, so every topic's
        DescribeConfigs reports it as a dynamic cluster default rather than a default."""
        layer = ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG
        texts = self.config.dynamic_texts(layer)
        if MIN_INSYNC_REPLICAS in texts:
            return
        static = next(text for source, text in self.config.sources(MIN_INSYNC_REPLICAS)
                      if source in (ConfigSource.STATIC_BROKER_CONFIG, ConfigSource.DEFAULT_CONFIG))
        assert static is not None
        self.alter(layer, {**texts, MIN_INSYNC_REPLICAS: static})

    def alter(self, layer: ConfigSource, texts: dict[str, str], validate_only: bool = False) -> None:
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
        _write_text(self._path, json.dumps(stored, indent=1, sort_keys=True))
        self._on_log_defaults(defaults)


class ScramCredentials:
    """SCRAM credentials made at runtime; kept (and alterable) even without a SASL listener, as
    Kafka's controller keeps them whatever the listeners."""

    def __init__(self, data_dir: Path):
        self._path = data_dir / SCRAM_CREDENTIALS_FILE
        stored = read_if_exists(str(self._path))
        self.store = ScramStore.loads(stored.decode()) if stored else ScramStore()

    def alter(self, deletions: list[tuple[str, int]],
              upsertions: list[tuple[str, int, int, bytes, bytes]],
              ) -> list[tuple[str, int, str | None]]:
        """Validate and make one AlterUserScramCredentials request's changes: written to the data
        dir first, then in effect for the next SCRAM exchange. Returns (user, error, message)."""
        results, changes = self.store.plan_alter(deletions, upsertions)
        if changes:
            write_atomically(str(self._path), self.store.dumps(changes).encode())
            self.store.apply(changes)
            for change in changes:
                log.info("%s SCRAM credential %s for user %s",
                         "deleted" if change.credential is None else "stored", change.mechanism,
                         change.user)
        return results


class AclStore:
    """The ACL bindings of a broker with an authorizer (`authorizer.class.name`), kept in the data
    dir: each change is written before it is answered and applies to the next request."""

    def __init__(self, config: Config, data_dir: Path):
        self._path = data_dir / ACLS_FILE
        stored = read_if_exists(str(self._path))
        super_users = [name.strip() for name in config["super.users"].split(";") if name.strip()]
        self.authorizer = Authorizer(super_users, config["allow.everyone.if.no.acl.found"],
                                     Authorizer.loads(stored.decode()) if stored else None)

    def create(self, acls: list[AclBinding]) -> list[KafkaError | None]:
        """Add the bindings; per binding, None or the KafkaError that refused it."""
        results: list[KafkaError | None] = []
        for acl in acls:
            try:
                self.authorizer.create(acl)
                results.append(None)
            except KafkaError as exc:
                results.append(exc)
        if any(result is None for result in results):
            self._save()
        return results

    def delete(self, filters: list[AclFilter]) -> list[list[AclBinding]]:
        """Remove what each filter matches; per filter, the bindings it removed."""
        removed = [self.authorizer.delete(acl_filter) for acl_filter in filters]
        if any(removed):
            self._save()
        return removed

    def _save(self) -> None:
        _write_text(self._path, self.authorizer.dumps())


def open_cluster(data_dir: Path, node_ids: list[int]) -> Cluster:
    """The simulated cluster (kbroker/cluster.py) as stored, saved at every change, so a restart
    keeps replicas, leaders and epochs. One broker keeps no file: its model is derived anew."""
    if len(node_ids) == 1:
        return Cluster(node_ids)
    path = data_dir / CLUSTER_FILE
    stored = read_if_exists(str(path))
    try:
        data = json.loads(stored) if stored else {}
    except ValueError:
        log.warning("%s is damaged; partitions are placed anew", path)
        data = {}
    cluster = Cluster.restore(data, node_ids)
    cluster.on_change = lambda: _write_text(path, json.dumps(cluster.snapshot()))
    return cluster
