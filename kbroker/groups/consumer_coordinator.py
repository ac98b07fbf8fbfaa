"""The trio side of KIP-848 consumer groups, inside the group coordinator.

The state machine (kbroker/groups/consumer.py) decides in records; this layer writes them to
__consumer_offsets through the group coordinator (which replays each written record into the
machine, as it does at start), flushes, and only then answers. Nothing waits here: a
ConsumerGroupHeartbeat is answered at once, the member learns the rest on its next heartbeat.
Expired sessions and revocation deadlines run in the group coordinator's timer task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from kbroker.config import Config
from kbroker.groups.assignors import assignor_names
from kbroker.groups.classic import ClassicGroups
from kbroker.groups.classic_model import JoinRequest, JoinResult
from kbroker.groups.consumer import ConsumerGroups
from kbroker.groups.consumer_model import ConsumerGroup, ConsumerSettings, Heartbeat, HeartbeatResult
from kbroker.groups.consumer_member import offset_commit_error, offset_fetch_error
from kbroker.groups.records import GroupEntry
from kbroker.protocol.errors import ErrorCode

log = logging.getLogger("kbroker.groups")


def consumer_settings(config: Config,
                      group_setting: Callable[[str, str], int] | None = None) -> ConsumerSettings:
    return ConsumerSettings(
        group_setting=group_setting,
        session_timeout_ms=config["group.consumer.session.timeout.ms"],
        heartbeat_interval_ms=config["group.consumer.heartbeat.interval.ms"],
        max_size=config["group.consumer.max.size"],
        assignors=tuple(dict.fromkeys(assignor_names(config["group.consumer.assignors"]))),
        migration_policy=config["group.consumer.migration.policy"],
        classic_max_size=config["group.max.size"],
    )


class Store(Protocol):
    """What this layer needs of the group coordinator."""

    groups: ClassicGroups

    def clock(self) -> int: ...

    async def store(self, entries: Iterable[Any], now_ms: int) -> ErrorCode: ...

    async def rebalance_converted(self, entries: list, now_ms: int) -> None: ...

    def hand_over(self, group_id: str) -> None: ...

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
        result = self.machine.heartbeat(hb, topics, now, store.groups.groups.get(hb.group_id))
        if result.error != ErrorCode.NONE:
            return result
        entries = list(result.records)
        if result.replaces_classic_group:
            store.hand_over(hb.group_id)
            entries.insert(0, GroupEntry(hb.group_id, None))
        error = await self._store_entries(entries, now)
        if error != ErrorCode.NONE:
            return HeartbeatResult(error=error)
        return result

    async def _store_entries(self, entries: list, now_ms: int) -> ErrorCode:
        store = self._store
        error = await store.store(entries, now_ms) if entries else ErrorCode.NONE
        if error == ErrorCode.NONE:
            await store.rebalance_converted(entries, now_ms)
        store.wake_timers()
        return error

    async def classic_join(self, request: JoinRequest, topics: Mapping[str, Any]) -> JoinResult | None:
        """JoinGroup to a consumer group: a member of it if it has members (M2), else None once
        the empty group is deleted, for the classic group to take its place."""
        group = self.machine.groups[request.group_id]
        now = self._store.clock()
        if not group.members:
            error = await self._store_entries(self.machine.deletion_records(group), now)
            return None if error == ErrorCode.NONE else JoinResult(error=error, member_id="")
        result, entries = self.machine.classic_join(request, topics, now)
        if result.error == ErrorCode.NONE:
            error = await self._store_entries(entries, now)
            if error != ErrorCode.NONE:
                return JoinResult(error=error, member_id=request.member_id)
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
        return offset_commit_error(group.members, member_id, member_epoch, api_version)

    def validate_offset_fetch(self, group_id: str, member_id: str | None,
                              member_epoch: int) -> ErrorCode:
        group = self.machine.groups.get(group_id)
        if group is None:
            return ErrorCode.NONE
        return offset_fetch_error(group.members, member_id, member_epoch)

    def subscribes_to(self, group_id: str, topic: str) -> bool:
        group = self.machine.groups.get(group_id)
        return group is not None and topic in group.subscription_metadata
