"""The group coordinator: the trio layer around the classic group state machine and the offsets.

Everything the state machine and the offset store decide is written to __consumer_offsets
before anybody is answered, and replayed from it when the broker starts, which is how Kafka
keeps groups and committed offsets across restarts (a write reaches the page cache before the
answer, so a kill -9 loses nothing; fsync follows the topic's flush settings). The topic is
created on the first write.

JoinGroup and SyncGroup park their request on a Waiter until the state machine answers it;
one background task runs the machine's timers, another expires old offsets
(offsets.retention.minutes, every offsets.retention.check.interval.ms).

Its dependencies are narrow: the settings, the InternalTopic it keeps its state in, and a clock
(ms); time passes with trio, so trio.testing.MockClock drives the timers in tests.
"""

from __future__ import annotations

import dataclasses
import logging
import struct
from typing import Any, Callable, Iterable, Iterator, Mapping

import trio

from kbroker.clock import DeadlineSleeper
from kbroker.config import Config
from kbroker.groups import records
from kbroker.groups.classic import ClassicGroups
from kbroker.groups.classic_model import (
    EMPTY, STABLE, ClassicGroup, GroupSettings, JoinRequest, JoinResult, Outcome, SyncResult,
)
from kbroker.groups.consumer_coordinator import ConsumerGroupCoordinator, consumer_settings
from kbroker.groups.consumer_records import CONSUMER_RECORD_TYPES
from kbroker.groups.consumer_records import decode as decode_consumer_record
from kbroker.groups.consumer_records import encode as encode_consumer_record
from kbroker.groups.offsets import CommittedOffset, OffsetStore, TopicPartition
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.records import Record, iter_records
from kbroker.storage import InternalTopic

log = logging.getLogger("kbroker.groups")

OFFSETS_TOPIC = "__consumer_offsets"
# Kafka's offsets.topic.segment.bytes and offset.metadata.max.bytes defaults.
OFFSETS_TOPIC_CONFIGS = {"cleanup.policy": "compact", "segment.bytes": "104857600"}
OFFSET_METADATA_MAX_BYTES = 4096
WRITE_BATCH_BYTES = 256 * 1024  # well below the topic's max.message.bytes

# How Kafka's coordinator reports a failed write of its log (CoordinatorOperationExceptionHelper).
_WRITE_ERRORS = {
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION: ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.NOT_ENOUGH_REPLICAS: ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.REQUEST_TIMED_OUT: ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.NOT_LEADER_OR_FOLLOWER: ErrorCode.NOT_COORDINATOR,
    ErrorCode.KAFKA_STORAGE_ERROR: ErrorCode.NOT_COORDINATOR,
    ErrorCode.MESSAGE_TOO_LARGE: ErrorCode.UNKNOWN_SERVER_ERROR,
    ErrorCode.RECORD_LIST_TOO_LARGE: ErrorCode.UNKNOWN_SERVER_ERROR,
}


def java_string_hash(text: str) -> int:
    """Java's String.hashCode (over UTF-16 code units), as Kafka uses to place groups."""
    value = 0
    data = text.encode("utf-16-be")
    for i in range(0, len(data), 2):
        value = (31 * value + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def key_partition(key: str, partitions: int) -> int:
    """The internal-topic partition of a group id or transactional id, as Kafka places them:
    Utils.abs(key.hashCode()) % partitions (Utils.abs takes Integer.MIN_VALUE to 0)."""
    code = java_string_hash(key)
    return (0 if code == -(1 << 31) else abs(code)) % partitions


class Waiter:
    """A parked JoinGroup or SyncGroup request."""

    __slots__ = ("event", "result")

    def __init__(self):
        self.event = trio.Event()
        self.result: JoinResult | SyncResult | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class OffsetToCommit:
    topic: str
    partition: int
    offset: int
    leader_epoch: int
    metadata: str | None
    commit_timestamp_ms: int = -1  # OffsetCommit v1 may give one; -1: the time of the commit


class GroupCoordinator:
    """Groups and committed offsets of one broker, persisted in __consumer_offsets."""

    def __init__(self, config: Config, topic: InternalTopic, clock: Callable[[], int],
                 group_setting: Callable[[str, str], Any] | None = None):
        self.topic = topic
        self.clock = clock
        self.groups = ClassicGroups(GroupSettings(
            min_session_timeout_ms=config["group.min.session.timeout.ms"],
            max_session_timeout_ms=config["group.max.session.timeout.ms"],
            max_size=config["group.max.size"],
            initial_rebalance_delay_ms=config["group.initial.rebalance.delay.ms"],
        ))
        self.offsets = OffsetStore()
        # group_setting: a group's own settings (GROUP config resource) in effect, by name
        self.consumer = ConsumerGroupCoordinator(self, consumer_settings(config, group_setting))
        self.num_partitions = topic.partitions
        self.retention_ms = config["offsets.retention.minutes"] * 60_000
        self.retention_check_interval_s = config["offsets.retention.check.interval.ms"] / 1000
        self._sleeper = DeadlineSleeper(clock, self._next_deadline)
        self._replay()

    # -- the log ---------------------------------------------------------------------------------

    def partition_for(self, group_id: str) -> int:
        return key_partition(group_id, self.num_partitions)

    def _write(self, routed: list[tuple[int, Record]], now_ms: int) -> dict[int, int]:
        """Append (partition, record) pairs; returns each partition's first record offset.

        A partition's records go in one batch, so one request's writes land all or nothing,
        unless they exceed WRITE_BATCH_BYTES (expiring or deleting thousands of offsets); the
        batches of a partition are then consecutive. Raises KafkaError (or OSError) with
        nothing of the failing batch written.
        """
        by_partition: dict[int, list[Record]] = {}
        for index, record in routed:
            by_partition.setdefault(index, []).append(record._replace(timestamp=now_ms))
        bases: dict[int, int] = {}
        for index, partition_records in by_partition.items():
            for chunk in _chunks(partition_records):
                bases.setdefault(index, self.topic.append(index, chunk, now_ms))
        return bases

    def _replay(self) -> None:
        """Rebuild groups and offsets from __consumer_offsets, then start loaded sessions."""
        now = self.clock()
        for index, base_offset, batch in self.topic.replay():
            self._replay_batch(base_offset, batch, index, now)
        self.groups.start_sessions(now)
        self.consumer.machine.start_sessions(now)

    def _replay_batch(self, base_offset: int, batch: bytes, index: int, now_ms: int) -> None:
        """Apply one stored batch; what cannot be read is skipped, so the broker still starts."""
        try:
            entries = [records.decode(record.key, record.value, base_offset + record.offset_delta)
                       or decode_consumer_record(record.key, record.value)
                       for record in iter_records(batch)]
        except (KafkaError, ValueError, struct.error, UnicodeDecodeError) as exc:
            log.warning("skipping unreadable batch at %s-%d offset %d: %s",
                        OFFSETS_TOPIC, index, base_offset, exc)
            return
        for entry in entries:
            if entry is not None:
                self._apply(entry, index, now_ms)

    def _apply(self, entry: records.Entry, index: int, now_ms: int) -> None:
        """Make the in-memory state what a record written to (or replayed from) partition
        `index` says."""
        match entry:
            case records.OffsetCommitEntry(group_id, partition, None):
                self.offsets.remove(group_id, partition)
            case records.OffsetCommitEntry(group_id, partition, value) if value is not None:
                self._ensure_group(group_id, now_ms)
                self.offsets.put(group_id, partition, value)
            case records.GroupEntry(group_id, None):
                self.groups.drop(group_id)
            case records.GroupEntry(_, snapshot) if snapshot is not None:
                self.groups.load(snapshot)
            case records.PendingOffsetEntry(producer_id, group_id, partition, value):
                self._ensure_group(group_id, now_ms)
                self.offsets.stage(producer_id, group_id, partition, value)
            case records.TransactionEndEntry(producer_id, commit):
                self.offsets.end_transaction(producer_id, commit,
                                             lambda group_id: self.partition_for(group_id) == index)
            case _ if isinstance(entry, CONSUMER_RECORD_TYPES):
                self.consumer.machine.replay(entry)

    def _ensure_group(self, group_id: str, now_ms: int) -> None:
        """Offsets of a group nobody joined make it a (classic) simple group, as in Kafka."""
        if self.consumer.group(group_id) is None:
            self.groups.ensure(group_id, now_ms)

    async def store(self, entries: Iterable[records.Entry], now_ms: int) -> ErrorCode:
        """Write entries (each to its group's partition), apply them, flush; NONE or the error
        Kafka reports for a failed write, with nothing applied."""
        try:
            self._write_entries(self._route(entries), now_ms)
        except (KafkaError, OSError) as exc:
            return _write_error(exc)
        await self.topic.flush()
        return ErrorCode.NONE

    def _route(self, entries: Iterable[records.Entry]) -> list[tuple[int, records.Entry]]:
        # (the ignore: transaction ends are routed by their producer's groups, never through here)
        return [(self.partition_for(entry.group_id), entry) for entry in entries]  # type: ignore[union-attr]

    def _write_entries(self, routed: list[tuple[int, records.Entry]], now_ms: int) -> None:
        """Write (partition, entry) pairs, then apply them with their record offsets.

        Raises like _write, with nothing applied.
        """
        bases = self._write([(index, _encode(entry)) for index, entry in routed], now_ms)
        positions = dict.fromkeys(bases, 0)
        for index, entry in routed:
            record_offset = bases[index] + positions[index]
            positions[index] += 1
            self._apply(_with_record_offset(entry, record_offset), index, now_ms)

    # -- applying state machine outcomes --------------------------------------------------------

    async def _settle(self, outcome: Outcome, now_ms: int) -> None:
        """Store what the machine asked to store, then answer the parked requests."""
        outcome = self._merge_due_timers(outcome, now_ms)
        expired = self._write_replayed(self.consumer.expire(now_ms), now_ms)
        outcome.replies.extend(expired.replies)
        outcome.stored.extend(expired.stored)
        if outcome.stored:
            routed = self._route(records.GroupEntry(s.group_id, s) for s in outcome.stored)
            try:
                self._write([(index, _encode(entry)) for index, entry in routed], now_ms)
            except (KafkaError, OSError):
                # The answers still go out: members can work on, only a restart would forget.
                log.exception("could not store the metadata of groups %s",
                              sorted({s.group_id for s in outcome.stored}))
            await self.topic.flush()
        _deliver(outcome.replies)
        self.wake_timers()

    def _merge_due_timers(self, outcome: Outcome, now_ms: int) -> Outcome:
        """Timers already due (an initial rebalance delay of 0) run before anyone is answered."""
        due = self.groups.expire(now_ms)
        outcome.replies.extend(due.replies)
        outcome.stored.extend(due.stored)
        return outcome

    async def run(self) -> None:
        """Timers and offset expiration, until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._run_timers)
            nursery.start_soon(self._run_retention)

    def _write_replayed(self, entries: list, now_ms: int) -> Outcome:
        """Write consumer group records the machine already applied (expired members, classic
        LeaveGroup); a group they turn classic is loaded and starts its rebalance, whose outcome
        is returned."""
        if entries:
            try:
                self._write([(index, _encode(entry)) for index, entry in self._route(entries)], now_ms)
            except (KafkaError, OSError):
                log.exception("could not store the removal of consumer group members")
        outcome = Outcome()
        for entry in entries:
            if isinstance(entry, records.GroupEntry) and entry.snapshot is not None:
                self.groups.load(entry.snapshot)
                converted = self.groups.rebalance(entry.group_id, now_ms)
                outcome.replies.extend(converted.replies)
                outcome.stored.extend(converted.stored)
        return outcome

    async def rebalance_converted(self, entries: list, now_ms: int) -> None:
        """Groups that written entries turned classic (already loaded) start their rebalance."""
        for entry in entries:
            if isinstance(entry, records.GroupEntry) and entry.snapshot is not None:
                await self._settle(self.groups.rebalance(entry.group_id, now_ms), now_ms)

    def hand_over(self, group_id: str) -> None:
        """A classic group becomes a consumer group: its parked requests are answered."""
        _deliver(self.groups.hand_over(group_id).replies)

    def _next_deadline(self) -> int | None:
        deadlines = [d for d in (self.groups.next_deadline(), self.consumer.machine.next_deadline())
                     if d is not None]
        return min(deadlines, default=None)

    def wake_timers(self) -> None:
        """Wake the timer task if some deadline now comes before the one it waits for."""
        self._sleeper.wake()

    async def _run_timers(self) -> None:
        while True:
            await self._sleeper.sleep()
            now = self.clock()
            await self._settle(self.groups.expire(now), now)

    async def _run_retention(self) -> None:
        while True:
            await trio.sleep(self.retention_check_interval_s)
            now = self.clock()
            self.expire_offsets(now)
            await self.topic.flush()

    # -- group membership ------------------------------------------------------------------------

    async def join(self, request: JoinRequest, topics: Mapping[str, Any] | None = None) -> JoinResult:
        """JoinGroup; `topics` (the broker's, by name) serve classic members of consumer groups."""
        waiter = Waiter()
        if self.consumer.group(request.group_id) is not None:
            result = await self.consumer.classic_join(request, topics or {})
            if result is not None:
                return result
        now = self.clock()
        await self._settle(self.groups.join(waiter, request, now), now)
        await waiter.event.wait()
        assert isinstance(waiter.result, JoinResult)  # the classic group answered a join
        return waiter.result

    async def sync(self, group_id: str, member_id: str, instance_id: str | None, generation_id: int,
                   protocol_type: str | None, protocol_name: str | None,
                   assignments: dict[str, bytes]) -> SyncResult:
        if self.consumer.group(group_id) is not None:
            return self.consumer.machine.classic_sync(group_id, member_id, instance_id, generation_id,
                                                      protocol_type, protocol_name, self.clock())
        waiter = Waiter()
        now = self.clock()
        outcome = self.groups.sync(waiter, group_id, member_id, instance_id, generation_id,
                                   protocol_type, protocol_name, assignments, now)
        await self._settle(outcome, now)
        await waiter.event.wait()
        assert isinstance(waiter.result, SyncResult)  # the classic group answered a sync
        return waiter.result

    async def heartbeat(self, group_id: str, member_id: str, instance_id: str | None,
                        generation_id: int) -> ErrorCode:
        if self.consumer.group(group_id) is not None:
            return self.consumer.machine.classic_heartbeat(group_id, member_id, instance_id,
                                                           generation_id, self.clock())
        return self.groups.heartbeat(group_id, member_id, instance_id, generation_id, self.clock())

    async def leave(self, group_id: str,
                    leaving: list[tuple[str, str | None]]) -> tuple[ErrorCode, list[ErrorCode]]:
        now = self.clock()
        if self.consumer.group(group_id) is not None:
            errors, written = self.consumer.machine.classic_leave(group_id, leaving, now)
            await self._settle(self._write_replayed(written, now), now)
            return ErrorCode.NONE, errors
        error, errors, outcome = self.groups.leave(group_id, leaving, now)
        await self._settle(outcome, now)
        return error, errors

    def list_groups(self) -> list[ClassicGroup]:
        return list(self.groups.groups.values())

    def group(self, group_id: str) -> ClassicGroup | None:
        return self.groups.groups.get(group_id)

    async def delete_groups(self, group_ids: Iterable[str]) -> dict[str, ErrorCode]:
        """DeleteGroups: Empty groups go with their offsets (tombstones written first)."""
        now = self.clock()
        results = {}
        for group_id in dict.fromkeys(group_ids):
            if self.consumer.group(group_id) is not None:
                results[group_id], group_tombstones = self.consumer.deletion(group_id)
            else:
                results[group_id] = self.groups.deletable(group_id)
                group_tombstones = [records.GroupEntry(group_id, None)]
            if results[group_id] != ErrorCode.NONE:
                continue
            tombstones = [records.OffsetCommitEntry(group_id, p, None)
                          for p in self.offsets.partitions_with_offsets(group_id)]
            try:
                self._write_entries(self._route([*tombstones, *group_tombstones]), now)
            except (KafkaError, OSError) as exc:
                results[group_id] = _write_error(exc)
        await self.topic.flush()
        return results

    # -- offsets ---------------------------------------------------------------------------------

    async def commit_offsets(self, group_id: str, member_id: str, instance_id: str | None,
                             generation_id: int, retention_ms: int,
                             offsets: list[OffsetToCommit], api_version: int
                             ) -> list[ErrorCode]:
        """OffsetCommit for partitions known to exist: one error per entry of `offsets`."""
        now = self.clock()
        error = self.consumer.validate_offset_commit(group_id, member_id, generation_id, api_version)
        if error is None:
            error = self.groups.validate_offset_commit(
                group_id, member_id, instance_id, generation_id, now,
                unknown_group_error=ErrorCode.GROUP_ID_NOT_FOUND if api_version >= 9
                else ErrorCode.ILLEGAL_GENERATION)
        if error != ErrorCode.NONE:
            return [error] * len(offsets)
        expire_ms = None if retention_ms == -1 else now + retention_ms
        return await self._store_offsets(group_id, offsets, now, lambda p, value: records.OffsetCommitEntry(
            group_id, p, dataclasses.replace(value, expire_timestamp_ms=expire_ms)))

    async def _store_offsets(self, group_id: str, offsets: list[OffsetToCommit], now_ms: int,
                             make_entry) -> list[ErrorCode]:
        errors = []
        entries = []
        for item in offsets:
            if item.metadata is not None and len(item.metadata) > OFFSET_METADATA_MAX_BYTES:
                errors.append(ErrorCode.OFFSET_METADATA_TOO_LARGE)
                continue
            errors.append(ErrorCode.NONE)
            value = CommittedOffset(item.offset, item.leader_epoch, item.metadata or "",
                                    now_ms if item.commit_timestamp_ms == -1 else item.commit_timestamp_ms)
            entries.append(make_entry((item.topic, item.partition), value))
        if entries:
            try:
                self._write_entries(self._route(entries), now_ms)
            except (KafkaError, OSError) as exc:
                failure = _write_error(exc)
                return [failure if e == ErrorCode.NONE else e for e in errors]
            await self.topic.flush()
        return errors

    def fetch_offsets(self, group_id: str, wanted: list[tuple[str, list[int]]] | None,
                      require_stable: bool
                      ) -> list[tuple[str, list[tuple[int, CommittedOffset | None, ErrorCode]]]]:
        """OffsetFetch for one group: per topic, (partition, committed or None, error).

        `wanted` None means every partition with a committed offset. Unknown groups have no
        offsets (no error), as in Kafka.
        """
        known = group_id in self.groups.groups or self.consumer.group(group_id) is not None
        stored = self.offsets.group_offsets(group_id) if known else {}
        if wanted is None:
            by_topic: dict[str, list[int]] = {}
            for topic, partition in stored:
                by_topic.setdefault(topic, []).append(partition)
            wanted = list(by_topic.items())
        answer = []
        for topic, partitions in wanted:
            entries: list[tuple[int, CommittedOffset | None, ErrorCode]] = []
            for partition in partitions:
                if require_stable and self.offsets.has_pending(group_id, (topic, partition)):
                    entries.append((partition, None, ErrorCode.UNSTABLE_OFFSET_COMMIT))
                else:
                    entries.append((partition, stored.get((topic, partition)), ErrorCode.NONE))
            answer.append((topic, entries))
        return answer

    async def delete_offsets(self, group_id: str, partitions: list[TopicPartition]
                             ) -> tuple[ErrorCode, dict[TopicPartition, ErrorCode]]:
        """OffsetDelete: not while the group is active, nor for topics it subscribes to."""
        group = self.groups.groups.get(group_id)
        if self.consumer.group(group_id) is not None:
            def subscribed(topic):
                return self.consumer.subscribes_to(group_id, topic)
        elif group is None:
            return ErrorCode.GROUP_ID_NOT_FOUND, {}
        elif group.state != EMPTY and not group.uses_consumer_protocol():
            return ErrorCode.NON_EMPTY_GROUP, {}
        else:
            subscribed = group.is_subscribed_to
        results: dict[TopicPartition, ErrorCode] = {}
        tombstones = []
        for partition in partitions:
            if subscribed(partition[0]):
                results[partition] = ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC
                continue
            results[partition] = ErrorCode.NONE
            if self.offsets.get(group_id, partition) is not None or \
                    self.offsets.has_pending(group_id, partition):
                tombstones.append(records.OffsetCommitEntry(group_id, partition, None))
        if tombstones:
            now = self.clock()
            try:
                self._write_entries(self._route(tombstones), now)
            except (KafkaError, OSError) as exc:
                return _write_error(exc), {}
            await self.topic.flush()
        return ErrorCode.NONE, results

    def on_topics_deleted(self, names: Iterable[str]) -> None:
        """Forget the offsets of deleted topics (called when topics are deleted)."""
        topics = set(names)
        doomed = self.offsets.partitions_of_topics(topics)
        if doomed:
            try:
                self._write_entries(
                    self._route(records.OffsetCommitEntry(g, p, None) for g, p in doomed), self.clock())
            except (KafkaError, OSError):
                log.exception("could not forget the offsets of deleted topics %s", sorted(topics))

    def expire_offsets(self, now_ms: int) -> None:
        """offsets.retention.minutes: expire old offsets, then groups left Empty with none."""
        entries: list[records.Entry] = []
        for group_id in sorted(set(self.groups.groups) | self.offsets.group_ids()):
            if (consumer_group := self.consumer.group(group_id)) is not None:
                entries += self._expire_consumer_group_offsets(consumer_group, now_ms)
                continue
            group = self.groups.ensure(group_id, now_ms)
            base = _expiration_base(group)
            if base is None:
                continue
            expired, all_expired = self.offsets.expired(
                group_id, now_ms, self.retention_ms, base, group.is_subscribed_to)
            entries.extend(records.OffsetCommitEntry(group_id, p, None) for p in expired)
            if all_expired and group.state == EMPTY:
                entries.append(records.GroupEntry(group_id, None))
        if entries:
            try:
                self._write_entries(self._route(entries), now_ms)
            except (KafkaError, OSError):
                log.exception("could not write expired offsets")

    def _expire_consumer_group_offsets(self, group, now_ms: int) -> list:
        """Kafka's rule for consumer groups: offsets of topics the group does not subscribe to
        expire from their commit time; an empty group whose offsets all expired is deleted."""
        expired, all_expired = self.offsets.expired(
            group.group_id, now_ms, self.retention_ms, lambda value: value.commit_timestamp_ms,
            lambda topic: topic in group.subscription_metadata)
        entries: list = [records.OffsetCommitEntry(group.group_id, p, None) for p in expired]
        if all_expired and not group.members:
            entries += self.consumer.machine.deletion_records(group)
        return entries

    # -- transactional offsets (TxnOffsetCommit, EndTxn) -----------------------------------------

    async def stage_transactional_offsets(
        self, group_id: str, producer_id: int, member_id: str, instance_id: str | None,
        generation_id: int, offsets: list[OffsetToCommit],
    ) -> list[ErrorCode]:
        """TxnOffsetCommit: offsets that count only once the producer's transaction commits.

        The caller (the transaction coordinator's handler) has checked the producer and the
        topics; member and generation are checked here as Kafka does for TxnOffsetCommit v3+.
        """
        now = self.clock()
        error = self.consumer.validate_offset_commit(group_id, member_id, generation_id, None)
        if error is None:
            error = self.groups.validate_offset_commit(group_id, member_id, instance_id,
                                                       generation_id, now, transactional=True)
        if error != ErrorCode.NONE:
            return [error] * len(offsets)
        return await self._store_offsets(group_id, offsets, now, lambda p, value: records.PendingOffsetEntry(
            producer_id, group_id, p, value))

    async def end_transaction(self, producer_id: int, commit: bool) -> None:
        """Commit or abort what the producer staged (its EndTxn, or a timed-out transaction).

        Each __consumer_offsets partition holding staged offsets of the producer gets an end
        marker; a commit also rewrites the winning offsets as plain commits, so that compaction
        (which keeps one marker per producer) can never lose them. Raises KafkaError or OSError
        if nothing could be written.
        """
        staged = self.offsets.staged(producer_id)
        if not staged:
            return
        now = self.clock()
        routed: list[tuple[int, records.Entry]] = [
            (index, records.TransactionEndEntry(producer_id, commit))
            for index in sorted({self.partition_for(group_id) for group_id, _, _ in staged})]
        if commit:
            routed += self._route(
                records.OffsetCommitEntry(group_id, partition, value)
                for group_id, partition, value in staged
                if (current := self.offsets.get(group_id, partition)) is None
                or value.record_offset > current.record_offset)
        self._write_entries(routed, now)
        await self.topic.flush()


def _expiration_base(group: ClassicGroup) -> Callable[[CommittedOffset], int] | None:
    """Kafka's offsetExpirationCondition: from when an offset's retention counts, if at all."""
    if group.protocol_type is None:
        return lambda value: value.commit_timestamp_ms  # a simple group
    if group.state == EMPTY:
        return lambda value: group.state_timestamp_ms
    if group.uses_consumer_protocol() and group.state == STABLE and \
            group.subscribed_topics() is not None:
        return lambda value: value.commit_timestamp_ms
    return None


def _encode(entry: records.Entry) -> Record:
    match entry:
        case records.OffsetCommitEntry(group_id, partition, value):
            return records.offset_commit(group_id, partition, value)
        case records.GroupEntry(group_id, snapshot):
            return records.group_metadata(group_id, snapshot)
        case records.PendingOffsetEntry(producer_id, group_id, partition, value):
            return records.pending_offset(producer_id, group_id, partition, value)
        case records.TransactionEndEntry(producer_id, commit):
            return records.transaction_end(producer_id, commit)
    return encode_consumer_record(entry)


def _with_record_offset(entry: records.Entry, record_offset: int) -> records.Entry:
    if isinstance(entry, (records.OffsetCommitEntry, records.PendingOffsetEntry)) and entry.value is not None:
        return dataclasses.replace(entry, value=dataclasses.replace(entry.value, record_offset=record_offset))
    return entry


def _chunks(batch_records: list[Record]) -> Iterator[list[Record]]:
    chunk: list[Record] = []
    size = 0
    for record in batch_records:
        record_size = len(record.key or b"") + len(record.value or b"") + 32
        if chunk and size + record_size > WRITE_BATCH_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(record)
        size += record_size
    yield chunk


def _write_error(exc: Exception) -> ErrorCode:
    if isinstance(exc, KafkaError):
        return _WRITE_ERRORS.get(exc.code, exc.code)
    return ErrorCode.NOT_COORDINATOR  # a storage error


def _deliver(replies) -> None:
    for waiter, result in replies:
        waiter.result = result
        waiter.event.set()
