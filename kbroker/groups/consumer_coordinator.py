"""The trio side of KIP-848 consumer groups, inside the group coordinator.

The state machine (kbroker/groups/consumer.py) decides in records; this layer writes them to
__consumer_offsets through the group coordinator (which replays each written record into the
machine, as it does at start), flushes, and only then answers. Nothing waits here: a
ConsumerGroupHeartbeat is answered at once, the member learns the rest on its next heartbeat.
Expired sessions and revocation deadlines run in the group coordinator's timer task.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from kbroker.config import Config
from kbroker.groups.assignors import assignor_names
from kbroker.groups.classic import EMPTY, ClassicGroups
from kbroker.groups.consumer import (
    ConsumerGroup, ConsumerGroups, ConsumerSettings, Heartbeat, HeartbeatResult,
)
from kbroker.groups.records import GroupEntry
from kbroker.protocol.errors import ErrorCode

log = logging.getLogger("kbroker.groups")


def consumer_settings(config: Config) -> ConsumerSettings:
    return ConsumerSettings(
        session_timeout_ms=config["group.consumer.session.timeout.ms"],
        heartbeat_interval_ms=config["group.consumer.heartbeat.interval.ms"],
        max_size=config["group.consumer.max.size"],
        assignors=tuple(dict.fromkeys(assignor_names(config["group.consumer.assignors"]))),
    )


class Store(Protocol):
    """What this layer needs of the group coordinator."""

    groups: ClassicGroups

    def clock(self) -> int: ...

    async def store(self, entries: Iterable[Any], now_ms: int) -> ErrorCode: ...

    def wake_timers(self) -> None: ...


class ConsumerGroupCoordinator:
    def __init__(self, store: Store, settings: ConsumerSettings):
        self.machine = ConsumerGroups(settings)
        self._store = store

    def group(self, group_id: str) -> ConsumerGroup | None:
        return self.machine.groups.get(group_id)

    def list_groups(self) -> list[ConsumerGroup]:
        return list(self.machine.groups.values())

    async def heartbeat(self, hb: Heartbeat, topics: Mapping[str, Any]) -> HeartbeatResult:
        """ConsumerGroupHeartbeat; `topics`: the broker's topics by name (topic_id, partitions)."""
        store = self._store
        now = store.clock()
        classic = store.groups.groups.get(hb.group_id)
        classic_empty = None if classic is None else classic.state == EMPTY
        result = self.machine.heartbeat(hb, topics, now, classic_empty)
        if result.error != ErrorCode.NONE:
            return result
        entries = list(result.records)
        if result.replaces_classic_group:
            entries.insert(0, GroupEntry(hb.group_id, None))
        error = await store.store(entries, now) if entries else ErrorCode.NONE
        store.wake_timers()
        if error != ErrorCode.NONE:
            return HeartbeatResult(error=error)
        return result

    def expire(self, now_ms: int) -> list:
        return self.machine.expire(now_ms)

    def deletion(self, group_id: str) -> tuple[ErrorCode, list]:
        """DeleteGroups of a consumer group: NON_EMPTY_GROUP while it has members."""
        group = self.machine.groups[group_id]
        if group.members:
            return ErrorCode.NON_EMPTY_GROUP, []
        return ErrorCode.NONE, self.machine.deletion_records(group)

    def validate_offset_commit(self, group_id: str, member_id: str, member_epoch: int,
                               api_version: int | None) -> ErrorCode | None:
        """None when the group is no consumer group (the classic rules apply)."""
        group = self.machine.groups.get(group_id)
        if group is None:
            return None
        return self.machine.validate_offset_commit(group, member_id, member_epoch, api_version)

    def validate_offset_fetch(self, group_id: str, member_id: str | None,
                              member_epoch: int) -> ErrorCode:
        group = self.machine.groups.get(group_id)
        if group is None:
            return ErrorCode.NONE
        return self.machine.validate_offset_fetch(group, member_id, member_epoch)

    def subscribes_to(self, group_id: str, topic: str) -> bool:
        group = self.machine.groups.get(group_id)
        return group is not None and topic in group.subscription_metadata
