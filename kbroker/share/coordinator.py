"""The share coordinator: the trio layer around share groups, share partitions and share sessions.

What it keeps durable is what Kafka's share coordinator keeps in `__share_group_state`: per
(group, topic id, partition) a ShareSnapshot record, then ShareUpdate records, each holding the
share-partition start offset and the state batches of the in-flight window. kbroker's updates
always carry the whole window, so the latest record of a key is the state (a compacted topic
keeps it), and a snapshot is written again every
share.coordinator.snapshot.update.records.per.snapshot updates. State is written before an
acknowledgement is answered and whenever a released lock or a leaving member changes it; an
acquisition is not written (Kafka does not either), so after a restart records that were only
acquired are delivered again. Deleting the state writes tombstones for both keys.

Membership is kept where Kafka keeps it, in __consumer_offsets with the ShareGroup* records
(kbroker/share/records.py): every heartbeat, expiry or deletion that changes a group writes the
difference before it is answered, and the groups are replayed at start with their members'
sessions starting again. Groups known only from share-partition state are listed as Empty.

One task runs the deadlines: acquisition locks, which release records (waking the fetches of the
partition through the storage's wake-ups), and member sessions, which remove members.
"""

from __future__ import annotations

import heapq
import logging
import struct
import uuid
from typing import Callable, Iterable, NamedTuple

from kbroker.clock import DeadlineSleeper
from kbroker.config import Config
from kbroker.group_configs import GroupConfigs
from kbroker.groups.offsets_topic import key_partition
from kbroker.log import PartitionLog
from kbroker.protocol import coordinator_records as crecords
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.exceptions import ProtocolError
from kbroker.protocol.records import Record, iter_records
from kbroker.share import records
from kbroker.share.group import ShareGroup, ShareGroups, ShareGroupSettings
from kbroker.share.partition import AckBatch, SharePartition, StateBatch
from kbroker.share.sessions import ShareSessionCache
from kbroker.storage import InternalTopic, Storage

log = logging.getLogger("kbroker.share")

SHARE_STATE_TOPIC = "__share_group_state"
SHARE_STATE_CONFIGS = {"cleanup.policy": "compact", "segment.bytes": "104857600"}

_SnapshotKey = crecords.record_class("share", "ShareSnapshotKey")
_SnapshotValue = crecords.record_class("share", "ShareSnapshotValue")
_UpdateKey = crecords.record_class("share", "ShareUpdateKey")
_UpdateValue = crecords.record_class("share", "ShareUpdateValue")
_PersistedBatch = _SnapshotValue.StateBatch
_UpdateBatch = _UpdateValue.StateBatch


class PartitionKey(NamedTuple):
    group_id: str
    topic_id: uuid.UUID
    partition: int


class _Written(NamedTuple):
    start_offset: int
    batches: list[StateBatch]
    updates: int  # ShareUpdate records since the last snapshot


def _offset_for_reset(strategy: str, partition_log: PartitionLog, now_ms: int) -> int:
    """Where a share partition without state starts (share.auto.offset.reset)."""
    if strategy == "earliest":
        return partition_log.log_start_offset
    if strategy.startswith("by_duration:"):
        found = partition_log.offset_for_timestamp(now_ms - _duration_ms(strategy.removeprefix("by_duration:")))
        return found[0] if found is not None else partition_log.high_watermark
    return partition_log.high_watermark


def _duration_ms(text: str) -> int:
    """An ISO-8601 duration PnDTnHnMn.nS (checked by the group config) in ms."""
    days, _, clock = text.removeprefix("P").partition("T")
    total = float(days.removesuffix("D") or 0) * 86400
    number = ""
    for char in clock:
        if char in "HMS":
            total += float(number) * {"H": 3600, "M": 60, "S": 1}[char]
            number = ""
        else:
            number += char
    return int(total * 1000)


class ShareCoordinator:
    """Share groups, their share partitions and share sessions, with their state in
    __share_group_state."""

    def __init__(self, config: Config, topic: InternalTopic, clock: Callable[[], int], storage: Storage,
                 group_configs: GroupConfigs, other_group_type: Callable[[str], bool],
                 offsets_topic: InternalTopic, offsets_partition: Callable[[str], int]):
        self.config = config
        self.topic = topic
        self.offsets_topic = offsets_topic  # __consumer_offsets, where membership is kept
        self.offsets_partition = offsets_partition  # a group's partition of it
        self.clock = clock
        self.storage = storage
        self.group_configs = group_configs
        self.groups = ShareGroups(ShareGroupSettings(
            max_size=config["group.share.max.size"],
            session_timeout_ms=lambda group: group_configs.get(group, "share.session.timeout.ms"),
            heartbeat_interval_ms=lambda group: group_configs.get(group, "share.heartbeat.interval.ms"),
        ), other_group_type)
        self.sessions = ShareSessionCache(config["group.share.max.share.sessions"])
        self.partitions: dict[PartitionKey, SharePartition] = {}
        self._by_group: dict[str, set[PartitionKey]] = {}
        self._written: dict[PartitionKey, _Written] = {}
        self._lock_deadlines: list[tuple[int, PartitionKey]] = []
        self._sleeper = DeadlineSleeper(clock, self._next_deadline)
        self._group_images: dict[str, records.GroupImage] = {}
        self._replay()
        self._replay_groups()

    # -- settings --------------------------------------------------------------------------------

    def lock_duration_ms(self, group_id: str) -> int:
        return self.group_configs.get(group_id, "share.record.lock.duration.ms")

    def read_committed(self, group_id: str) -> bool:
        return self.group_configs.get(group_id, "share.isolation.level") == "read_committed"

    def topic_metadata(self, name: str) -> tuple[uuid.UUID, int] | None:
        info = self.storage.logs.topics.get(name)
        return None if info is None else (info.topic_id, info.partitions)

    # -- groups ----------------------------------------------------------------------------------

    def is_share_group(self, group_id: str) -> bool:
        return group_id in self.groups.groups

    async def heartbeat(self, group_id: str, member_id: str, member_epoch: int, rack_id: str | None,
                        subscribed: list[str] | None, client_id: str, client_host: str):
        """ShareGroupHeartbeat; raises KafkaError as the group's rules say."""
        result = self.groups.heartbeat(group_id, member_id, member_epoch, rack_id, subscribed,
                                       client_id, client_host, self.clock(), self.topic_metadata)
        self._sleeper.wake(self.groups.next_deadline())
        await self._store_groups([group_id])
        return result

    async def _store_groups(self, group_ids: Iterable[str]) -> None:
        """Write what changed in these groups since their last write (or their tombstones)."""
        routed: dict[int, list[Record]] = {}
        images = {}
        for group_id in dict.fromkeys(group_ids):
            group = self.groups.get(group_id)
            image = records.image_of(group) if group is not None else None
            changed = records.changes(group_id, self._group_images.get(group_id), image)
            if changed:
                routed.setdefault(self.offsets_partition(group_id), []).extend(changed)
                images[group_id] = image
        if not routed:
            return
        now = self.clock()
        for index, group_records in routed.items():
            try:
                self.offsets_topic.append(index, [r._replace(timestamp=now) for r in group_records], now)
            except (KafkaError, OSError) as exc:
                log.error("cannot write share group records to %s-%d: %s", self.offsets_topic.name, index, exc)
                raise KafkaError(ErrorCode.COORDINATOR_NOT_AVAILABLE, "The group could not be written.") from exc
        for group_id, image in images.items():
            if image is None:
                self._group_images.pop(group_id, None)
            else:
                self._group_images[group_id] = image
        await self.offsets_topic.flush()

    def _replay_groups(self) -> None:
        """Rebuild share groups from their ShareGroup* records in __consumer_offsets."""
        def stored():
            for index, base_offset, batch in self.offsets_topic.replay():
                try:
                    yield from [(record.key, record.value) for record in iter_records(batch)]
                except (KafkaError, ValueError, struct.error) as exc:
                    log.warning("skipping unreadable batch at %s-%d offset %d: %s",
                                self.offsets_topic.name, index, base_offset, exc)
        try:
            groups = records.replay(stored())
        except (KafkaError, ValueError, struct.error, UnicodeDecodeError) as exc:
            log.error("share groups in %s cannot be read (%s); they start empty", self.offsets_topic.name, exc)
            return
        now = self.clock()
        for group_id, group in groups.items():
            self.groups.load(group, now)
            self._group_images[group_id] = records.image_of(group)

    async def member_gone(self, group_id: str, member_id: str) -> None:
        """A member expired: its session ends and its records are released."""
        self.sessions.close(group_id, member_id)
        await self.release(group_id, member_id)

    async def release(self, group_id: str, member_id: str) -> None:
        """Release what a member holds; a failed write is logged (the locks would expire anyway)."""
        changed = [key for key in self._by_group.get(group_id, ())
                   if self.partitions[key].release_member(member_id)]
        self._notify(changed)
        try:
            await self.persist(changed)
        except KafkaError as exc:
            log.error("share group %s: releasing %s's records: %s", group_id, member_id, exc)

    async def delete_group(self, group_id: str) -> ErrorCode:
        """DeleteGroups of a share group: only an empty one; its state and configs go too."""
        group = self.groups.get(group_id)
        if group is not None and group.members:
            return ErrorCode.NON_EMPTY_GROUP
        try:
            self.forget_partitions(list(self._by_group.get(group_id, ())))
            self.groups.delete(group_id)
            self.group_configs.delete(group_id)
            await self._store_groups([group_id])
        except KafkaError as exc:
            return exc.code
        await self.topic.flush()
        return ErrorCode.NONE

    # -- share partitions ------------------------------------------------------------------------

    def share_partition(self, key: PartitionKey, partition_log: PartitionLog) -> SharePartition:
        """The share partition of a group, initialised as share.auto.offset.reset says when the
        group has no state for it yet (the start is written at once)."""
        sp = self.partitions.get(key)
        if sp is None:
            strategy = self.group_configs.get(key.group_id, "share.auto.offset.reset")
            sp = self._add(key, _offset_for_reset(strategy, partition_log, self.clock()), ())
            self._write([key], force_snapshot=True)
        sp.archive_before(partition_log.log_start_offset)
        return sp

    def acquired(self, key: PartitionKey, sp: SharePartition) -> None:
        """Records were acquired: the lock timer must know their deadline."""
        deadline = sp.next_deadline()
        if deadline is not None:
            heapq.heappush(self._lock_deadlines, (deadline, key))
            self._sleeper.wake(deadline)

    def acknowledge(self, key: PartitionKey, member_id: str, batches: list[AckBatch]) -> ErrorCode:
        """Apply an acknowledgement in memory; the caller persists the keys it acknowledged."""
        sp = self.partitions.get(key)
        if sp is None:
            return ErrorCode.INVALID_RECORD_STATE
        try:
            sp.acknowledge(member_id, batches, self.clock(), self.lock_duration_ms(key.group_id))
        except KafkaError as exc:
            return exc.code
        self._notify([key])  # released records, or room in a full window, for waiting fetches
        return ErrorCode.NONE

    def reset_partitions(self, group_id: str, offsets: dict[tuple[uuid.UUID, int], int]) -> None:
        """AlterShareGroupOffsets: new start offsets, nothing in flight (written at once)."""
        keys = []
        for (topic_id, partition), offset in offsets.items():
            key = PartitionKey(group_id, topic_id, partition)
            sp = self.partitions.get(key) or self._add(key, offset, ())
            sp.reset(offset)
            keys.append(key)
        self._write(keys, force_snapshot=True)

    def forget_partitions(self, keys: list[PartitionKey]) -> None:
        """Delete the state of share partitions (tombstones for both record keys)."""
        tombstones = []
        for key in keys:
            self.partitions.pop(key, None)
            self._written.pop(key, None)
            self._by_group.get(key.group_id, set()).discard(key)
            fields = dict(group_id=key.group_id, topic_id=key.topic_id, partition=key.partition)
            tombstones.append((self._state_partition(key), Record(key=crecords.encode_key(_SnapshotKey(**fields)))))
            tombstones.append((self._state_partition(key), Record(key=crecords.encode_key(_UpdateKey(**fields)))))
        self._append(tombstones)

    def on_topics_deleted(self, names: list[str]) -> None:
        """A deleted topic's share partitions go with it, in every group (tombstones)."""
        try:
            self.forget_partitions([key for key in self.partitions
                                    if self.storage.logs.topic_by_id(key.topic_id) is None])
        except KafkaError as exc:
            log.error("share state of deleted topics %s: %s", names, exc)

    def group_partitions(self, group_id: str) -> dict[PartitionKey, SharePartition]:
        return {key: self.partitions[key] for key in self._by_group.get(group_id, ())}

    def _add(self, key: PartitionKey, start_offset: int, batches: Iterable[StateBatch]) -> SharePartition:
        sp = self.partitions[key] = SharePartition(
            start_offset, self.config["group.share.delivery.count.limit"],
            self.config["group.share.partition.max.record.locks"], batches)
        self._by_group.setdefault(key.group_id, set()).add(key)
        return sp

    def _notify(self, keys: Iterable[PartitionKey]) -> None:
        """Records became available again: wake the fetches waiting on those partitions."""
        for key in keys:
            info = self.storage.logs.topic_by_id(key.topic_id)
            if info is not None:
                self.storage.wakeups.notify(info.name, key.partition)

    # -- persistence -----------------------------------------------------------------------------

    async def persist(self, keys: Iterable[PartitionKey]) -> None:
        """Write the state of these share partitions where it changed, then flush as due."""
        if self._write(keys):
            await self.topic.flush()

    def _state_partition(self, key: PartitionKey) -> int:
        text = f"{key.group_id}:{key.topic_id}:{key.partition}"
        return key_partition(text, self.topic.partitions)

    def _write(self, keys: Iterable[PartitionKey], force_snapshot: bool = False) -> bool:
        now = self.clock()
        per_snapshot = self.config["share.coordinator.snapshot.update.records.per.snapshot"]
        records = []
        for key in keys:
            sp = self.partitions.get(key)
            if sp is None:
                continue
            batches = sp.state_batches()
            written = self._written.get(key)
            if written is not None and not force_snapshot and \
                    (written.start_offset, written.batches) == (sp.start_offset, batches):
                continue
            if force_snapshot or written is None or written.updates >= per_snapshot:
                snapshot, updates = True, 0
            else:
                snapshot, updates = False, written.updates + 1
            records.append((self._state_partition(key), self._state_record(key, sp.start_offset, batches,
                                                                            snapshot, now)))
            self._written[key] = _Written(sp.start_offset, batches, updates)
        self._append(records)
        return bool(records)

    def _state_record(self, key: PartitionKey, start: int, batches: list[StateBatch], snapshot: bool,
                      now_ms: int) -> Record:
        fields = dict(group_id=key.group_id, topic_id=key.topic_id, partition=key.partition)
        if snapshot:
            value = _SnapshotValue(snapshot_epoch=0, state_epoch=0, leader_epoch=0, start_offset=start,
                                   create_timestamp=now_ms, write_timestamp=now_ms, state_batches=[
                                       _PersistedBatch(first_offset=b.first, last_offset=b.last,
                                                       delivery_state=b.state, delivery_count=b.delivery_count)
                                       for b in batches])
            return Record(key=crecords.encode_key(_SnapshotKey(**fields)), value=crecords.encode_value(value, 0))
        value = _UpdateValue(snapshot_epoch=0, leader_epoch=0, start_offset=start, state_batches=[
            _UpdateBatch(first_offset=b.first, last_offset=b.last, delivery_state=b.state,
                         delivery_count=b.delivery_count) for b in batches])
        return Record(key=crecords.encode_key(_UpdateKey(**fields)), value=crecords.encode_value(value, 0))

    def _append(self, routed: list[tuple[int, Record]]) -> None:
        now = self.clock()
        by_partition: dict[int, list[Record]] = {}
        for index, record in routed:
            by_partition.setdefault(index, []).append(record._replace(timestamp=now))
        for index, partition_records in by_partition.items():
            try:
                self.topic.append(index, partition_records, now)
            except (KafkaError, OSError) as exc:
                log.error("cannot write share-partition state to %s-%d: %s", self.topic.name, index, exc)
                raise KafkaError(ErrorCode.COORDINATOR_NOT_AVAILABLE, "The share state could not be "
                                 "written.") from exc

    def _replay(self) -> None:
        """Rebuild the share partitions from __share_group_state."""
        state: dict[PartitionKey, tuple[int, list[StateBatch]]] = {}
        for index, base_offset, batch in self.topic.replay():
            try:
                for record in iter_records(batch):
                    if record.key is None:
                        raise ValueError("record without a key")
                    key = crecords.decode_key("share", record.key)
                    pkey = PartitionKey(key.group_id, key.topic_id, key.partition)
                    if record.value is None:
                        state.pop(pkey, None)
                        continue
                    _, value = crecords.decode_value(key, record.value)
                    state[pkey] = (value.start_offset, [
                        StateBatch(b.first_offset, b.last_offset, b.delivery_state, b.delivery_count)
                        for b in value.state_batches])
            except (KafkaError, ProtocolError, ValueError, struct.error, UnicodeDecodeError) as exc:
                log.warning("skipping unreadable batch at %s-%d offset %d: %s",
                            self.topic.name, index, base_offset, exc)
        for key, (start, batches) in state.items():
            sp = self._add(key, start, batches)
            self._written[key] = _Written(sp.start_offset, sp.state_batches(), 0)
            self.groups.groups.setdefault(key.group_id, ShareGroup(key.group_id))

    # -- timers ----------------------------------------------------------------------------------

    def _next_deadline(self) -> int | None:
        deadlines = [d for d in (self.groups.next_deadline(),
                                 self._lock_deadlines[0][0] if self._lock_deadlines else None) if d is not None]
        return min(deadlines) if deadlines else None

    async def run(self) -> None:
        """Lock and session deadlines, until cancelled."""
        while True:
            await self._sleeper.sleep()
            await self._expire(self.clock())

    async def _expire(self, now_ms: int) -> None:
        expired = set()
        while self._lock_deadlines and self._lock_deadlines[0][0] <= now_ms:
            _, key = heapq.heappop(self._lock_deadlines)
            sp = self.partitions.get(key)
            if sp is not None and sp.expire_locks(now_ms):
                expired.add(key)
        for key in expired:  # records still acquired keep a deadline in the heap
            deadline = self.partitions[key].next_deadline()
            if deadline is not None:
                heapq.heappush(self._lock_deadlines, (deadline, key))
        self._notify(expired)
        try:
            await self.persist(expired)
            expired_members = self.groups.expire(now_ms, self.topic_metadata)
            for group_id, member_id in expired_members:
                log.info("share group %s: member %s expired", group_id, member_id)
                await self.member_gone(group_id, member_id)
            await self._store_groups(group_id for group_id, _ in expired_members)
        except KafkaError as exc:
            log.error("share coordinator timers: %s", exc)

