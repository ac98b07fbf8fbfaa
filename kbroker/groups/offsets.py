"""Committed offsets per group, and offsets staged by open transactions (Kafka's OffsetMetadataManager).

Plain data, no I/O: the coordinator applies here exactly what it writes to (or replays from)
__consumer_offsets, so the log and this store never disagree.

Transactional offsets (TxnOffsetCommit) are staged per producer id and only become committed
when the transaction commits; an abort drops them. Where a regular commit and a transactional
one race, the one written later to the log wins (each value remembers its record offset).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    offset: int
    leader_epoch: int  # -1: unknown
    metadata: str
    commit_timestamp_ms: int
    expire_timestamp_ms: int | None = None  # from OffsetCommit v2-4 retention_time_ms
    record_offset: int = -1  # where it lies in __consumer_offsets


class OffsetStore:
    def __init__(self):
        self._committed: dict[str, dict[TopicPartition, CommittedOffset]] = {}
        # producer id -> group -> partition -> staged offset
        self._pending: dict[int, dict[str, dict[TopicPartition, CommittedOffset]]] = {}

    # -- committed ------------------------------------------------------------------------------

    def get(self, group_id: str, partition: TopicPartition) -> CommittedOffset | None:
        return self._committed.get(group_id, {}).get(partition)

    def group_offsets(self, group_id: str) -> dict[TopicPartition, CommittedOffset]:
        return self._committed.get(group_id, {})

    def group_ids(self) -> set[str]:
        return set(self._committed) | {g for staged in self._pending.values() for g in staged}

    def put(self, group_id: str, partition: TopicPartition, value: CommittedOffset) -> None:
        self._committed.setdefault(group_id, {})[partition] = value

    def remove(self, group_id: str, partition: TopicPartition) -> None:
        """A tombstone: the committed offset and any staged ones of the partition go."""
        offsets = self._committed.get(group_id)
        if offsets is not None:
            offsets.pop(partition, None)
            if not offsets:
                del self._committed[group_id]
        for producer_id in list(self._pending):
            staged = self._pending[producer_id].get(group_id)
            if staged is not None:
                staged.pop(partition, None)
                if not staged:
                    del self._pending[producer_id][group_id]
                    if not self._pending[producer_id]:
                        del self._pending[producer_id]

    def partitions_with_offsets(self, group_id: str) -> list[TopicPartition]:
        """Every partition with a committed or staged offset (what DeleteGroups tombstones)."""
        found = dict.fromkeys(self._committed.get(group_id, {}))
        for staged in self._pending.values():
            found.update(dict.fromkeys(staged.get(group_id, {})))
        return list(found)

    def partitions_of_topics(self, topics: set[str]) -> list[tuple[str, TopicPartition]]:
        """(group, partition) of every committed or staged offset of these topics."""
        found: dict[tuple[str, TopicPartition], None] = {}
        stores = [self._committed, *self._pending.values()]
        for store in stores:
            for group_id, offsets in store.items():
                for partition in offsets:
                    if partition[0] in topics:
                        found[(group_id, partition)] = None
        return list(found)

    def expired(self, group_id: str, now_ms: int, retention_ms: int,
                base_timestamp: Callable[[CommittedOffset], int],
                is_subscribed: Callable[[str], bool]) -> tuple[list[TopicPartition], bool]:
        """Offsets past retention (Kafka's cleanupExpiredOffsets) and whether none would remain.

        Offsets of topics the group still subscribes to never expire, nor do partitions with
        staged transactional offsets.
        """
        expired = []
        all_expired = True
        for partition, value in self.group_offsets(group_id).items():
            if is_subscribed(partition[0]):
                all_expired = False
                continue
            if value.expire_timestamp_ms is not None:
                due = now_ms >= value.expire_timestamp_ms
            else:
                due = now_ms - base_timestamp(value) >= retention_ms
            if due and not self.has_pending(group_id, partition):
                expired.append(partition)
            else:
                all_expired = False
        return expired, all_expired and not self.has_open_transactions(group_id)

    # -- transactional ----------------------------------------------------------------------------

    def stage(self, producer_id: int, group_id: str, partition: TopicPartition,
              value: CommittedOffset) -> None:
        self._pending.setdefault(producer_id, {}).setdefault(group_id, {})[partition] = value

    def end_transaction(self, producer_id: int, commit: bool, in_scope: Callable[[str], bool]) -> None:
        """Commit (the later record wins) or drop what the producer staged for groups in scope.

        The scope is the groups of one __consumer_offsets partition: each partition gets its
        own end marker, as in Kafka.
        """
        staged = self._pending.get(producer_id, {})
        for group_id in [g for g in staged if in_scope(g)]:
            offsets = staged.pop(group_id)
            for partition, value in offsets.items() if commit else ():
                current = self.get(group_id, partition)
                if current is None or value.record_offset > current.record_offset:
                    self.put(group_id, partition, value)
        if not staged:
            self._pending.pop(producer_id, None)

    def has_pending(self, group_id: str, partition: TopicPartition) -> bool:
        return any(partition in staged.get(group_id, {}) for staged in self._pending.values())

    def has_open_transactions(self, group_id: str) -> bool:
        return any(group_id in staged for staged in self._pending.values())

    def staged(self, producer_id: int) -> list[tuple[str, TopicPartition, CommittedOffset]]:
        """(group, partition, offset) of everything the producer has staged."""
        return [(group_id, partition, value)
                for group_id, offsets in self._pending.get(producer_id, {}).items()
                for partition, value in offsets.items()]
