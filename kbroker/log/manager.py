"""LogManager: the topics of one broker on disk.

Layout of the data dir:
  __kbroker_topics/<topic id>.json  name, topic id, partition count, config overrides (files
                                    named <topic>.json by older versions are renamed on load)
  <topic>-<n>/                    one PartitionLog per partition, with Kafka's partition.metadata
  <topic>-<n>.<hex>-delete/       partitions of a deleted topic, removed after file.delete.delay.ms
Metadata files are replaced atomically (temp file, fsync, rename, fsync of the directory).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from typing import Callable

from kbroker.log.clock import wall_clock_ms
from kbroker.log.config import LogConfig
from kbroker.log.files import split_due, write_atomically
from kbroker.log.partition import PartitionLog, partition_dir_name
from kbroker.protocol.errors import ErrorCode, KafkaError

TOPICS_DIR = "__kbroker_topics"
PARTITION_METADATA = "partition.metadata"
MAX_TOPIC_NAME_LENGTH = 249
_LEGAL_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]+")


def validate_topic_name(name: str) -> None:
    """Kafka's Topic.validate: raise INVALID_TOPIC_EXCEPTION for an illegal name."""
    if not name:
        why = "it can't be empty"
    elif name in (".", ".."):
        why = "it can't be '.' or '..'"
    elif len(name) > MAX_TOPIC_NAME_LENGTH:
        why = f"it can't be longer than {MAX_TOPIC_NAME_LENGTH} characters"
    elif not _LEGAL_TOPIC_NAME.fullmatch(name):
        why = "it contains a character other than ASCII alphanumerics, '.', '_' and '-'"
    else:
        return
    raise KafkaError(ErrorCode.INVALID_TOPIC_EXCEPTION, f"Topic name \"{name}\" is illegal, {why}")


def kafka_uuid_string(topic_id: uuid.UUID) -> str:
    """Kafka prints Uuids as unpadded URL-safe base64."""
    return base64.urlsafe_b64encode(topic_id.bytes).rstrip(b"=").decode()


@dataclass(slots=True)
class TopicInfo:
    name: str
    topic_id: uuid.UUID
    partitions: int
    configs: dict[str, str]  # overrides, by Kafka topic config name
    config: LogConfig = field(repr=False)  # broker defaults + overrides


class LogManager:
    """Opens every known topic's partitions at start (with recovery) and manages their lifecycle."""

    def __init__(self, data_dir: str | os.PathLike, defaults: LogConfig,
                 clock: Callable[[], int] = wall_clock_ms):
        self._clock = clock  # ms since the epoch
        self.data_dir = os.fspath(data_dir)
        self.defaults = defaults
        self.topics: dict[str, TopicInfo] = {}
        self._by_id: dict[uuid.UUID, TopicInfo] = {}
        self._logs: dict[str, list[PartitionLog]] = {}
        self._pending_deletes: list[tuple[int, PartitionLog]] = []
        self._meta_dir = os.path.join(data_dir, TOPICS_DIR)
        os.makedirs(self._meta_dir, exist_ok=True)
        now = self._clock()
        for name in sorted(os.listdir(self._meta_dir)):
            path = os.path.join(self._meta_dir, name)
            if name.endswith(".tmp"):
                os.unlink(path)
            elif name.endswith(".json"):
                with open(path, encoding="utf-8") as f:
                    meta = json.load(f)
                info = TopicInfo(meta["name"], uuid.UUID(meta["topic_id"]), meta["partitions"],
                                 meta["configs"], defaults.with_overrides(meta["configs"]))
                if path != self._meta_path(info):  # named <topic>.json: move it to its id name
                    self._save(info)
                    os.unlink(path)
                if info.topic_id in self._by_id:  # loaded already, under its id name
                    continue
                self._register(info)
                self._logs[info.name] = [self._open_partition(info, i, now) for i in range(info.partitions)]
        self._remove_strays()

    # -- lookups -----------------------------------------------------------------------------

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicInfo | None:
        return self._by_id.get(topic_id)

    def partition(self, topic: str, index: int) -> PartitionLog | None:
        logs = self._logs.get(topic)
        if logs is None or not 0 <= index < len(logs):
            return None
        return logs[index]

    def logs(self) -> list[PartitionLog]:
        return [log for logs in self._logs.values() for log in logs]

    # -- topic lifecycle ---------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int, configs: dict[str, str] | None = None,
                     topic_id: uuid.UUID | None = None, validate_only: bool = False) -> TopicInfo:
        """CreateTopics for one topic; raises KafkaError as Kafka answers invalid requests."""
        validate_topic_name(name)
        if name in self.topics:
            raise KafkaError(ErrorCode.TOPIC_ALREADY_EXISTS, f"Topic '{name}' already exists.")
        collision = name.replace(".", "_")
        for other in self.topics:
            if other.replace(".", "_") == collision:
                raise KafkaError(ErrorCode.INVALID_TOPIC_EXCEPTION,
                                 f"Topic '{name}' collides with existing topic: {other}")
        if partitions < 1:
            raise KafkaError(ErrorCode.INVALID_PARTITIONS, "Number of partitions must be larger than 0.")
        overrides = {k: v for k, v in (configs or {}).items() if v is not None}
        info = TopicInfo(name, topic_id or uuid.uuid4(), partitions, overrides,
                         self.defaults.with_overrides(overrides))
        if validate_only:
            return info
        self._save(info)
        self._register(info)
        now = self._clock()
        self._logs[name] = [self._open_partition(info, i, now) for i in range(partitions)]
        return info

    def delete_topic(self, name: str) -> TopicInfo:
        """Delete a topic; its files go after file.delete.delay.ms (pending reads may use them).

        Removing the metadata file commits the deletion: a crash after it leaves stray partition
        directories, which the next start removes.
        """
        info = self._get(name)
        os.unlink(self._meta_path(info))
        del self.topics[name], self._by_id[info.topic_id]
        due = self._clock() + info.config.file_delete_delay_ms
        for log in self._logs.pop(name):
            log.rename_for_delete()
            self._pending_deletes.append((due, log))
        return info

    def add_partitions(self, name: str, count: int) -> TopicInfo:
        """CreatePartitions: raise the partition count to `count`."""
        info = self._get(name)
        if count <= info.partitions:
            raise KafkaError(ErrorCode.INVALID_PARTITIONS,
                             f"Topic currently has {info.partitions} partitions, which is higher than or "
                             f"equal to the requested {count}.")
        now = self._clock()
        old = info.partitions
        info.partitions = count
        self._save(info)
        self._logs[name].extend(self._open_partition(info, i, now) for i in range(old, count))
        return info

    def alter_topic_configs(self, name: str, configs: dict[str, str | None]) -> TopicInfo:
        """Replace a topic's overrides (None values drop a key); logs see the new config at once."""
        info = self._get(name)
        overrides = {k: v for k, v in configs.items() if v is not None}
        config = self.defaults.with_overrides(overrides)
        info.configs, info.config = overrides, config
        self._save(info)
        for log in self._logs[name]:
            log.config = config
        return info

    def set_defaults(self, defaults: LogConfig) -> None:
        """The broker-level log.* defaults changed (dynamic broker config): every topic's config
        is derived again, and its logs obey it at once."""
        self.defaults = defaults
        for info in self.topics.values():
            info.config = defaults.with_overrides(info.configs)
            for log in self._logs[info.name]:
                log.config = info.config

    # -- maintenance -------------------------------------------------------------------------

    def apply_retention(self, now_ms: int) -> int:
        return sum(log.apply_retention(now_ms) for log in self.logs())

    def remove_expired_producers(self, now_ms: int, expiration_ms: int) -> int:
        """Apply producer.id.expiration.ms to every partition's producer state."""
        return sum(log.producer_state.remove_expired(now_ms, expiration_ms) for log in self.logs())

    def purge_deleted(self, now_ms: int) -> None:
        """Remove files of deleted segments and topics once their delay has passed."""
        for log in self.logs():
            log.purge_deleted(now_ms)
        self._pending_deletes, due = split_due(self._pending_deletes, now_ms)
        for log in due:
            log.remove_files()

    def flush(self) -> None:
        now = self._clock()
        for log in self.logs():
            log.flush(now)

    def close(self) -> None:
        for log in self.logs():
            log.flush()
            log.close()
        for _, log in self._pending_deletes:
            log.remove_files()
        self._logs.clear()
        self._pending_deletes = []

    # -- internals ---------------------------------------------------------------------------

    def _get(self, name: str) -> TopicInfo:
        info = self.topics.get(name)
        if info is None:
            raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                             "This server does not host this topic-partition.")
        return info

    def _remove_strays(self) -> None:
        """Delete directories of deleted topics: renamed `-delete` ones and unknown partitions."""
        known = {os.path.basename(log.directory) for log in self.logs()}
        for name in os.listdir(self.data_dir):
            path = os.path.join(self.data_dir, name)
            stray = name not in known and os.path.isfile(os.path.join(path, PARTITION_METADATA))
            if name.endswith("-delete") or stray:
                shutil.rmtree(path, ignore_errors=True)

    def _register(self, info: TopicInfo) -> None:
        self.topics[info.name] = info
        self._by_id[info.topic_id] = info

    def _meta_path(self, info: TopicInfo) -> str:
        """Named by topic id: a legal topic name (249 characters) would make `<name>.json.tmp`
        longer than a file name may be."""
        return os.path.join(self._meta_dir, f"{info.topic_id}.json")

    def _save(self, info: TopicInfo) -> None:
        meta = {"name": info.name, "topic_id": str(info.topic_id), "partitions": info.partitions,
                "configs": info.configs}
        write_atomically(self._meta_path(info), json.dumps(meta, sort_keys=True).encode())

    def _open_partition(self, info: TopicInfo, index: int, now_ms: int) -> PartitionLog:
        directory = os.path.join(self.data_dir, partition_dir_name(info.name, index))
        log = PartitionLog.open(directory, info.name, index, info.config, now_ms)
        metadata = os.path.join(directory, PARTITION_METADATA)
        if not os.path.exists(metadata):
            text = f"version: 0\ntopic_id: {kafka_uuid_string(info.topic_id)}\n"
            write_atomically(metadata, text.encode())
        return log
