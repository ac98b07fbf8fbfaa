"""Reading a partition log for a share fetch: the stored batches and the offsets they span.

A share partition acquires whole batches, so the read must know where each batch of the region
starts and ends; the region's bytes are read once and their headers walked (one step per batch,
never per record). Under read_committed the batches of aborted transactions are found as
Kafka's consumers find them (aborted producer ids become active at their first offset and end at
their marker) so that the share partition can archive them instead of delivering them; control
batches (transaction markers) hold no records for the consumer and are archived the same way.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from kbroker.log import PartitionLog
from kbroker.protocol.records import batch_headers
from kbroker.protocol.region import FileRegion


class LogRead(NamedTuple):
    data: bytes
    batches: list[tuple[int, int]]  # (base offset, last offset) of each whole batch
    skipped: list[tuple[int, int]]  # control batches and (read_committed) aborted ones among them


NOTHING = LogRead(b"", [], [])


def read_batches(partition_log: PartitionLog, offset: int, max_bytes: int, committed: bool) -> LogRead:
    """Whole batches from the one holding `offset`, below the high watermark (or the last stable
    offset when `committed`); raises KafkaError as PartitionLog.read does."""
    upper = partition_log.last_stable_offset if committed else partition_log.high_watermark
    if offset >= upper:
        return NOTHING
    region = partition_log.read(offset, max_bytes, upper, min_one_batch=True).records
    if not isinstance(region, FileRegion):  # b"": nothing readable
        return NOTHING
    data = os.pread(region.fd, region.size, region.position)
    headers = [header for position, header in batch_headers(data)
               if position + header.size <= len(data)]
    batches = [(header.base_offset, header.last_offset) for header in headers]
    skipped = [(header.base_offset, header.last_offset) for header in headers if header.is_control]
    if committed and headers:
        skipped = _aborted_or_control(partition_log, headers, upper)
    return LogRead(data, batches, skipped)


def _aborted_or_control(partition_log: PartitionLog, headers, upper: int) -> list[tuple[int, int]]:
    transactions = sorted(partition_log.aborted_transactions(headers[0].base_offset, upper),
                          key=lambda txn: txn[1])
    active: set[int] = set()
    skipped = []
    for header in headers:
        while transactions and transactions[0][1] <= header.last_offset:
            active.add(transactions.pop(0)[0])
        if header.is_control:
            active.discard(header.producer_id)
            skipped.append((header.base_offset, header.last_offset))
        elif header.is_transactional and header.producer_id in active:
            skipped.append((header.base_offset, header.last_offset))
    return skipped
