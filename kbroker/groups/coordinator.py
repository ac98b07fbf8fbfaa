"""The group coordinator: the trio layer around the group state machines and the offsets.

It answers the group and offset requests: JoinGroup and SyncGroup park their request on a
Waiter until the state machine answers it; one background task runs the machines' timers,
another expires old offsets (offsets.retention.minutes, every
offsets.retention.check.interval.ms). What they decide is written to __consumer_offsets before
anybody is answered (GroupLog in offsets_topic.py: placement, writes, replay at start).

Its dependencies are narrow: the settings, the InternalTopic it keeps its state in, and a clock
(ms); time passes with trio, so trio.testing.MockClock drives the timers in tests.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Iterable, Mapping

import trio

from kbroker.clock import DeadlineSleeper
from kbroker.config import Config
from kbroker.groups import records
from kbroker.groups.classic import ClassicGroups
from kbroker.groups.classic_model import (
    EMPTY, STABLE, ClassicGroup, GroupSettings, JoinRequest, JoinResult, Outcome, SyncResult,
)
from kbroker.groups.consumer_coordinator import ConsumerGroupCoordinator, consumer_settings
from kbroker.groups.offsets import CommittedOffset, OffsetStore, TopicPartition
from kbroker.groups.offsets_topic import GroupLog, write_error
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.storage import InternalTopic

log = logging.getLogger("kbroker.groups")

OFFSET_METADATA_MAX_BYTES = 4096  # Kafka's offset.metadata.max.bytes default


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


class GroupCoordinator(GroupLog):
    """Groups and committed offsets of one broker, persisted in __consumer_offsets."""

    def __init__(self, config: Config, topic: InternalTopic, clock: Callable[[], int],
                 group_setting: Callable[[str, str], Any] | None = None):
        super().__init__(topic, clock)
        self.groups = ClassicGroups(GroupSettings(
            min_session_timeout_ms=config["group.min.session.timeout.ms"],
            max_session_timeout_ms=config["group.max.session.timeout.ms"],
            max_size=config["group.max.size"],
            initial_rebalance_delay_ms=config["group.initial.rebalance.delay.ms"],
        ))
        self.offsets = OffsetStore()
        # group_setting: a group's own settings (GROUP config resource) in effect, by name
        self.consumer = ConsumerGroupCoordinator(self, consumer_settings(config, group_setting))
        self.retention_ms = config["offsets.retention.minutes"] * 60_000
        self.retention_check_interval_s = config["offsets.retention.check.interval.ms"] / 1000
        self._sleeper = DeadlineSleeper(clock, self._next_deadline)
        self._replay()

    # -- applying state machine outcomes --------------------------------------------------------

    async def _settle(self, outcome: Outcome, now_ms: int) -> None:
        """Store what the machine asked to store, then answer the parked requests."""
        outcome = self._merge_due_timers(outcome, now_ms)
        expired = self._write_replayed(self.consumer.expire(now_ms), now_ms)
        outcome.replies.extend(expired.replies)
        outcome.stored.extend(expired.stored)
        if outcome.stored:
            try:
                self._write_applied((records.GroupEntry(s.group_id, s) for s in outcome.stored), now_ms)
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
                self._write_applied(entries, now_ms)
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
                results[group_id] = write_error(exc)
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
                failure = write_error(exc)
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
                return write_error(exc), {}
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


def _deliver(replies) -> None:
    for waiter, result in replies:
        waiter.result = result
        waiter.event.set()
