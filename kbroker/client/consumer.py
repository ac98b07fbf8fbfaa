"""Fetching records of one topic from given offsets, as a consumer with assigned partitions does.

With isolation read_committed the broker only hands out records below the last stable offset
and lists the aborted transactions among them; their batches are dropped here until the abort
marker of the same producer, as Kafka's consumer does.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime

from kbroker.client.cluster import Cluster, check
from kbroker.protocol import messages
from kbroker.protocol.records import iter_batches, iter_records

READ_UNCOMMITTED, READ_COMMITTED = 0, 1
_CONTROL_KEY = struct.Struct(">hh")  # version, type (0 abort, 1 commit)
ABORT_MARKER = 0
PARTITION_MAX_BYTES = 1024 * 1024
FETCH_MAX_BYTES = 50 * 1024 * 1024


def timestamp_from_iso(text: str) -> int:
    """Milliseconds since the epoch of an ISO 8601 time (local time when it names no zone);
    ValueError if it is not one."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return int(moment.timestamp() * 1000)


@dataclass
class ConsumedRecord:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple


class Consumer:
    """Reads the partitions in `positions` (partition -> next offset) of one topic."""

    def __init__(self, cluster: Cluster, topic: str, positions: dict[int, int], *,
                 isolation_level: int = READ_UNCOMMITTED, max_wait_ms: int = 500):
        self.cluster = cluster
        self.topic = topic
        self.positions = dict(positions)
        self.isolation_level = isolation_level
        self.max_wait_ms = max_wait_ms
        self.high_watermarks: dict[int, int] = {}
        self._leaders: dict[int, int] | None = None  # looked up once: the tools run briefly

    async def fetch(self) -> list[ConsumedRecord]:
        """One fetch from every leader; the records it returned, positions moved past them."""
        if self._leaders is None:
            self._leaders = await self.cluster.leaders(self.topic)
        leaders = self._leaders
        by_leader: dict[int, list[int]] = {}
        for partition in self.positions:
            by_leader.setdefault(leaders[partition], []).append(partition)
        found = []
        for leader, partitions in by_leader.items():
            found += await self._fetch_from(leader, partitions)
        return found

    def caught_up(self) -> bool:
        """Whether every partition has been read up to the high watermark of its last fetch."""
        return all(self.positions[p] >= self.high_watermarks.get(p, 1 << 62) for p in self.positions)

    async def _fetch_from(self, leader: int, partitions: list[int]) -> list[ConsumedRecord]:
        Request = messages.FetchRequest
        connection = await self.cluster.node(leader)
        response = await connection.request("Fetch", Request(
            replica_id=-1, max_wait_ms=self.max_wait_ms, min_bytes=1, max_bytes=FETCH_MAX_BYTES,
            isolation_level=self.isolation_level, session_id=0, session_epoch=-1,
            topics=[Request.FetchTopic(topic=self.topic, partitions=[Request.FetchPartition(
                partition=p, current_leader_epoch=-1, fetch_offset=self.positions[p],
                log_start_offset=-1, partition_max_bytes=PARTITION_MAX_BYTES) for p in partitions])]))
        check(response.error_code, None, f"fetch {self.topic}")
        found = []
        for topic in response.responses:
            for data in topic.partitions:
                index = data.partition_index
                check(data.error_code, None, f"fetch {self.topic}-{index}")
                self.high_watermarks[index] = (data.last_stable_offset
                                               if self.isolation_level == READ_COMMITTED and
                                               data.last_stable_offset >= 0 else data.high_watermark)
                records, self.positions[index] = self._records(
                    index, data.records or b"", self.positions[index], data.aborted_transactions)
                found += records
        return found

    def _records(self, partition: int, data, position: int, aborted) -> tuple[list, int]:
        """The records at or after `position` in fetched batches, and the offset after them."""
        pending_aborts = sorted((a.first_offset, a.producer_id) for a in aborted or ())
        aborting: set[int] = set()
        found = []
        for start, header in iter_batches(data, allow_partial=True):
            while pending_aborts and pending_aborts[0][0] <= header.last_offset:
                aborting.add(pending_aborts.pop(0)[1])
            if header.last_offset < position:
                continue
            batch = memoryview(data)[start:start + header.size]
            if header.is_control:
                if header.producer_id in aborting and any(
                        r.key and _CONTROL_KEY.unpack_from(r.key)[1] == ABORT_MARKER
                        for r in iter_records(batch)):
                    aborting.discard(header.producer_id)
            elif not (header.is_transactional and header.producer_id in aborting):
                found += [ConsumedRecord(self.topic, partition, header.base_offset + r.offset_delta,
                                         r.timestamp, r.key, r.value, r.headers)
                          for r in iter_records(batch)
                          if header.base_offset + r.offset_delta >= position]
            position = header.last_offset + 1
        return found, position


async def read_range(cluster: Cluster, topic: str, starts: dict[int, int], ends: dict[int, int],
                     limit: int | None = None) -> list[ConsumedRecord]:
    """The records of each partition from its start offset up to (not including) its end, at
    most `limit` per partition, in (partition, offset) order."""
    consumer = Consumer(cluster, topic, {p: o for p, o in starts.items() if o < ends[p]},
                        max_wait_ms=0)
    found: dict[int, list[ConsumedRecord]] = {p: [] for p in consumer.positions}
    while consumer.positions:
        before = dict(consumer.positions)
        for consumed in await consumer.fetch():
            kept = found[consumed.partition]
            if consumed.offset < ends[consumed.partition] and (limit is None or len(kept) < limit):
                kept.append(consumed)
        for partition, position in list(consumer.positions.items()):
            full = limit is not None and len(found[partition]) >= limit
            if position >= ends[partition] or full or position == before[partition]:
                del consumer.positions[partition]  # done, or nothing more to read there
    return [r for partition in sorted(found) for r in found[partition]]
