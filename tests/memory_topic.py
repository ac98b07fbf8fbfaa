"""An InternalTopic kept in memory, so that coordinators are unit-tested without a broker or a disk."""

from __future__ import annotations

from typing import Iterator

from kbroker.protocol.records import Record, build_batch


class MemoryTopic:
    """Batches per partition, as the log would store them. `fail_with` makes appends raise it
    (a full disk, a record too large) with nothing written."""

    def __init__(self, name: str, partitions: int):
        self.name = name
        self.partitions = partitions
        self.batches: dict[int, list[tuple[int, bytes]]] = {}  # partition -> (base offset, batch)
        self.end_offsets: dict[int, int] = {}
        self.fail_with: Exception | None = None
        self.flushes = 0

    @property
    def created(self) -> bool:
        return bool(self.batches)

    def replay(self) -> Iterator[tuple[int, int, bytes]]:
        for index in sorted(self.batches):
            for base_offset, batch in self.batches[index]:
                yield index, base_offset, batch

    def append(self, partition: int, records: list[Record], now_ms: int) -> int:
        if self.fail_with is not None:
            raise self.fail_with
        base_offset = self.end_offsets.get(partition, 0)
        self.batches.setdefault(partition, []).append(
            (base_offset, build_batch(records, base_offset=base_offset)))
        self.end_offsets[partition] = base_offset + len(records)
        return base_offset

    async def flush(self) -> None:
        self.flushes += 1
