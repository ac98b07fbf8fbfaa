"""LogManager: the topics of one broker on disk.

Layout of the data dir:
  __kbroker_topics/<topic id>.json  name, topic id, partition count, config overrides (files
                                    named <topic>.json by older versions are renamed on load)
  <topic>-<n>/                    one PartitionLog per partition, with Kafka's partition.metadata
  <topic>-<n>.<hex>-delete/       partitions of a deleted topic, removed after file.delete.delay.ms
  recovery-point-offset-checkpoint, .kafka_cleanshutdown   see kbroker.log.checkpoint
Metadata files are replaced atomically (temp file, fsync, rename, fsync of the directory).

Partitions are opened on first use, so a start costs the same with ten partitions or ten
thousand; `open_some` opens the rest in the background (retention and compaction see only
opened ones). A topic's metadata file is written last when it is created: a topic exists
whole or not at all.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from typing import Callable

from kbroker.log import checkpoint
from kbroker.log.clock import wall_clock_ms
from kbroker.log.config import LogConfig
from kbroker.log.files import split_due, write_atomically
from kbroker.log.handles import DEFAULT_OPEN_FILES, LogDir
from kbroker.log.partition import PartitionLog, partition_dir_name
from kbroker.protocol.errors import ErrorCode, KafkaError

log = logging.getLogger("kbroker.log")

TOPICS_DIR = "__kbroker_topics"
PARTITION_METADATA = "partition.metadata"
MAX_TOPIC_NAME_LENGTH = 249
SYNC_EACH_LOG_UP_TO = 64  # at shutdown; beyond, one os.sync()
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
    """The topics of a data dir; partitions open on first use, recovered as the last shutdown
    requires (see kbroker.log.loader)."""

    def __init__(self, data_dir: str | os.PathLike, defaults: LogConfig,
                 clock: Callable[[], int] = wall_clock_ms, open_files_max: int = DEFAULT_OPEN_FILES):
        self._clock = clock  # ms since the epoch
        self.data_dir = os.fspath(data_dir)
        self.defaults = defaults
        self.log_dir = LogDir(self.data_dir, open_files_max)
        self.topics: dict[str, TopicInfo] = {}
        self._by_id: dict[uuid.UUID, TopicInfo] = {}
        self._logs: dict[str, list[PartitionLog | None]] = {}  # None: not opened yet
        self._unopened = 0
        self._pending_deletes: list[tuple[int, PartitionLog]] = []
        self._meta_dir = os.path.join(data_dir, TOPICS_DIR)
        os.makedirs(self._meta_dir, exist_ok=True)
        self._clean_start = checkpoint.take_clean_shutdown_marker(self.data_dir)
        self._recovery_points = checkpoint.read_offsets(self._recovery_point_path)
        damaged = False
        for name in sorted(os.listdir(self._meta_dir)):
            path = os.path.join(self._meta_dir, name)
            if name.endswith(".tmp"):
                os.unlink(path)
            elif name.endswith(".json"):
                info = self._load_topic(path)
                if info is None:
                    damaged = True
                    continue
                if path != self._meta_path(info):  # named <topic>.json: move it to its id name
                    self._save(info)
                    os.unlink(path)
                if info.topic_id in self._by_id:  # loaded already, under its id name
                    continue
                self._register(info)
                self._logs[info.name] = [None] * info.partitions
                self._unopened += info.partitions
        self._remove_strays(damaged)
        if not self._clean_start:
            self.open_some(self._unopened)  # recovery happens now, as Kafka's does at start

    def _load_topic(self, path: str) -> TopicInfo | None:
        """A topic's metadata file, or None (logged at ERROR) when it cannot be read."""
        try:
            with open(path, encoding="utf-8") as f:
                meta = json.load(f)
            return TopicInfo(meta["name"], uuid.UUID(meta["topic_id"]), int(meta["partitions"]),
                             dict(meta["configs"]), self.defaults.with_overrides(meta["configs"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, KafkaError) as exc:
            log.error("skipping topic metadata file %s: it is damaged (%s: %s). The topic is not "
                      "served; its partition directories are left untouched. Restore the file, "
                      "or delete it and the topic's directories to drop the topic.",
                      path, type(exc).__name__, exc)
            return None

    # -- lookups -----------------------------------------------------------------------------

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicInfo | None:
        return self._by_id.get(topic_id)

    def partition(self, topic: str, index: int) -> PartitionLog | None:
        """The partition's log, opened now if this is its first use since the start; raises
        KafkaError(KAFKA_STORAGE_ERROR) when it cannot be opened."""
        logs = self._logs.get(topic)
        if logs is None or not 0 <= index < len(logs):
            return None
        partition_log = logs[index]
        if partition_log is None:
            partition_log = logs[index] = self._open_partition(self.topics[topic], index)
            self._unopened -= 1
        return partition_log

    def logs(self) -> list[PartitionLog]:
        """The opened partitions' logs (the only ones that can have anything to do)."""
        return [log for logs in self._logs.values() for log in logs if log is not None]

    def open_some(self, limit: int) -> int:
        """Open up to `limit` partitions not opened yet; returns how many are left."""
        for name, logs in self._logs.items():
            if self._unopened <= 0 or limit <= 0:
                break
            for index, partition_log in enumerate(logs):
                if partition_log is None and limit > 0:
                    try:
                        self.partition(name, index)
                    except KafkaError:
                        pass  # logged; its users get KAFKA_STORAGE_ERROR
                    limit -= 1
        return self._unopened

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
        self._create_partition_dirs(info, 0, partitions)
        self._save(info)  # the commit point
        self._register(info)
        self._logs[name] = [None] * partitions
        self._unopened += partitions
        return info

    def _create_partition_dirs(self, info: TopicInfo, first: int, end: int) -> None:
        """Directories with partition.metadata for partitions [first, end): all of them or,
        when the disk refuses one, none (KAFKA_STORAGE_ERROR)."""
        created = []
        text = f"version: 0\ntopic_id: {kafka_uuid_string(info.topic_id)}\n".encode()
        try:
            for index in range(first, end):
                directory = os.path.join(self.data_dir, partition_dir_name(info.name, index))
                os.makedirs(directory, exist_ok=True)
                created.append(directory)
                _write_new(os.path.join(directory, PARTITION_METADATA), text)
        except OSError as exc:
            for directory in created:
                shutil.rmtree(directory, ignore_errors=True)
            log.error("creating partitions of %s failed, none were created: %s", info.name, exc)
            raise KafkaError(ErrorCode.KAFKA_STORAGE_ERROR,
                             f"Creating the partitions of {info.name} failed: {exc}") from exc

    def delete_topic(self, name: str) -> TopicInfo:
        """Delete a topic; its files go after file.delete.delay.ms (pending reads may use them).

        Removing the metadata file commits the deletion: a crash after it leaves stray partition
        directories, which the next start removes.
        """
        info = self._get(name)
        os.unlink(self._meta_path(info))
        del self.topics[name], self._by_id[info.topic_id]
        due = self._clock() + info.config.file_delete_delay_ms
        for index, partition_log in enumerate(self._logs.pop(name)):
            if partition_log is None:
                self._unopened -= 1
                # never opened, so nothing reads it: no need to wait file.delete.delay.ms
                shutil.rmtree(os.path.join(self.data_dir, partition_dir_name(name, index)),
                              ignore_errors=True)
                continue
            partition_log.rename_for_delete()
            self._pending_deletes.append((due, partition_log))
        for index in range(info.partitions):
            self._recovery_points.pop((name, index), None)
        return info

    def add_partitions(self, name: str, count: int) -> TopicInfo:
        """CreatePartitions: raise the partition count to `count`."""
        info = self._get(name)
        if count <= info.partitions:
            raise KafkaError(ErrorCode.INVALID_PARTITIONS,
                             f"Topic currently has {info.partitions} partitions, which is higher than or "
                             f"equal to the requested {count}.")
        old = info.partitions
        self._create_partition_dirs(info, old, count)
        info.partitions = count
        self._save(info)
        self._logs[name].extend([None] * (count - old))
        self._unopened += count - old
        return info

    def alter_topic_configs(self, name: str, configs: dict[str, str | None]) -> TopicInfo:
        """Replace a topic's overrides (None values drop a key); logs see the new config at once."""
        info = self._get(name)
        overrides = {k: v for k, v in configs.items() if v is not None}
        config = self.defaults.with_overrides(overrides)
        info.configs, info.config = overrides, config
        self._save(info)
        for partition_log in self.logs():
            if partition_log.topic == name:
                partition_log.config = config
        return info

    def set_defaults(self, defaults: LogConfig) -> None:
        """The broker-level log.* defaults changed (dynamic broker config): every topic's config
        is derived again, and its logs obey it at once."""
        self.defaults = defaults
        for info in self.topics.values():
            info.config = defaults.with_overrides(info.configs)
        for partition_log in self.logs():
            partition_log.config = self.topics[partition_log.topic].config

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
        for partition_log in self.logs():
            partition_log.flush(now)

    def recovery_checkpoint(self) -> bytes:
        """The recovery-point-offset-checkpoint file's contents now (opened partitions' recovery
        points, and the ones read at start for partitions not opened since)."""
        points = dict(self._recovery_points)
        for partition_log in self.logs():
            points[(partition_log.topic, partition_log.partition)] = partition_log.recovery_point
        return checkpoint.format_offsets(points)

    def write_recovery_checkpoint(self, data: bytes) -> None:
        """Blocking (fsyncs): for a worker thread, or shutdown."""
        write_atomically(self._recovery_point_path, data)

    def close(self) -> None:
        """Flush and close every log, then write the recovery points and, last, the
        clean-shutdown marker that lets the next start skip recovery."""
        logs = self.logs()
        # Past a few logs one sync() of everything costs less than an fsync per file (10,000
        # partitions: seconds instead of minutes).
        unsynced = sum(1 for partition_log in logs if partition_log.recovery_point <
                       partition_log.log_end_offset or partition_log.has_unsynced_files())
        sync_each = unsynced <= SYNC_EACH_LOG_UP_TO
        for partition_log in logs:
            try:
                partition_log.close(flush=sync_each)
            except OSError as exc:
                self.log_dir.write_failed(partition_log.name, exc)
                self.log_dir.offline = True  # no clean-shutdown marker: recover at next start
        if not sync_each:
            os.sync()
            for partition_log in logs:
                partition_log.recovery_point = partition_log.log_end_offset
        for _, partition_log in self._pending_deletes:
            partition_log.remove_files()
        self.write_recovery_checkpoint(self.recovery_checkpoint())
        self._logs.clear()
        self._pending_deletes = []
        if not self.log_dir.offline:
            write_atomically(os.path.join(self.data_dir, checkpoint.CLEAN_SHUTDOWN_FILE), b"")

    @property
    def _recovery_point_path(self) -> str:
        return os.path.join(self.data_dir, checkpoint.RECOVERY_POINT_FILE)

    # -- internals ---------------------------------------------------------------------------

    def _get(self, name: str) -> TopicInfo:
        info = self.topics.get(name)
        if info is None:
            raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                             "This server does not host this topic-partition.")
        return info

    def _remove_strays(self, damaged: bool) -> None:
        """Delete directories of deleted topics: renamed `-delete` ones and unknown partitions
        (none of these while a metadata file is damaged: they may be its topic's)."""
        known = {partition_dir_name(info.name, index)
                 for info in self.topics.values() for index in range(info.partitions)}
        for name in os.listdir(self.data_dir):
            path = os.path.join(self.data_dir, name)
            if name.endswith("-delete"):
                shutil.rmtree(path, ignore_errors=True)
            elif name not in known and not damaged and \
                    os.path.isfile(os.path.join(path, PARTITION_METADATA)):
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

    def _open_partition(self, info: TopicInfo, index: int) -> PartitionLog:
        name = partition_dir_name(info.name, index)
        directory = os.path.join(self.data_dir, name)
        recovery_point = None if self._clean_start else self._recovery_points.get((info.name, index), 0)
        try:
            partition_log = PartitionLog.open(directory, info.name, index, info.config, self._clock(),
                                              recovery_point, self.log_dir)
            metadata = os.path.join(directory, PARTITION_METADATA)
            if not os.path.exists(metadata):
                text = f"version: 0\ntopic_id: {kafka_uuid_string(info.topic_id)}\n"
                write_atomically(metadata, text.encode())
        except OSError as exc:
            log.error("cannot open partition %s: %s", name, exc)
            raise KafkaError(ErrorCode.KAFKA_STORAGE_ERROR, f"Cannot open {name}: {exc}") from exc
        return partition_log


def _write_new(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


