"""Producing records: batches built with kbroker's record batch code, idempotent by default.

An idempotent producer gets a producer id (InitProducerId) and numbers each partition's
records from 0, so a retried request can never store a batch twice, as Kafka's producer does
with enable.idempotence=true (which needs acks=all). Keyed records go to the partition Kafka's
default partitioner picks (murmur2 of the key), so the same key lands where a Java or
librdkafka producer would put it; records without a key fill one partition per batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from kbroker.client.cluster import Cluster, check
from kbroker.protocol import messages
from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.records import NO_PRODUCER_ID, NO_SEQUENCE, Record, build_batch

COMPRESSION = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
ACKS = {"all": -1, "-1": -1, "1": 1, "0": 0}
BATCH_RECORDS = 10_000
TIMEOUT_MS = 30_000


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (org.apache.kafka.common.utils.Utils.murmur2), as a signed int32."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = length % 4
    if tail:
        start = length - tail
        for i in reversed(range(tail)):
            h ^= data[start + i] << (8 * i)
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h >= 1 << 31 else h


def partition_for_key(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass
class ProducedBatch:
    partition: int
    base_offset: int
    count: int


class Producer:
    """Sends records of one topic; `send` takes a list and returns where each batch landed."""

    def __init__(self, cluster: Cluster, topic: str, *, acks: str = "all", compression: str = "none",
                 idempotent: bool = True):
        self.cluster = cluster
        self.topic = topic
        self.acks = ACKS[acks]
        self.compression = COMPRESSION[compression]
        self.idempotent = idempotent and self.acks == -1
        self.producer_id, self.producer_epoch = NO_PRODUCER_ID, -1
        self._sequences: dict[int, int] = {}
        self._leaders: dict[int, int] = {}
        self._sticky = 0

    async def start(self, auto_create: bool = True) -> None:
        info = await self.cluster.topic_metadata(self.topic, auto_create)
        self._leaders = {p.partition_index: p.leader_id for p in info.partitions}
        if self.idempotent:
            response = await self.cluster.bootstrap.request(
                "InitProducerId", messages.InitProducerIdRequest(
                    transactional_id=None, transaction_timeout_ms=-1, producer_id=-1,
                    producer_epoch=-1))
            check(response.error_code, None, "InitProducerId")
            self.producer_id, self.producer_epoch = response.producer_id, response.producer_epoch

    @property
    def partitions(self) -> int:
        return len(self._leaders)

    def partition_of(self, record: Record, partition: int | None) -> int:
        if partition is not None:
            return partition
        if record.key is not None:
            return partition_for_key(record.key, self.partitions)
        return self._sticky

    async def send(self, records: list[Record], partition: int | None = None) -> list[ProducedBatch]:
        """Produce records (each to `partition`, its key's partition or the sticky one)."""
        if partition is not None and partition not in self._leaders:
            check(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, None, f"{self.topic}-{partition}")
        by_partition: dict[int, list[Record]] = {}
        for record in records:
            by_partition.setdefault(self.partition_of(record, partition), []).append(record)
        self._sticky = (self._sticky + 1) % self.partitions
        by_leader: dict[int, list[tuple[int, list[Record]]]] = {}
        for index, batch_records in by_partition.items():
            by_leader.setdefault(self._leaders[index], []).append((index, batch_records))
        produced = []
        for leader, batches in by_leader.items():
            produced += await self._produce(leader, batches)
        return produced

    async def _produce(self, leader: int, batches: list[tuple[int, list[Record]]]) -> list[ProducedBatch]:
        Request = messages.ProduceRequest
        data = []
        for index, records in batches:
            sequence = self._sequences.get(index, 0) if self.idempotent else NO_SEQUENCE
            data.append(Request.PartitionProduceData(index=index, records=build_batch(
                records, producer_id=self.producer_id, producer_epoch=self.producer_epoch,
                base_sequence=sequence, compression=self.compression)))
        connection = await self.cluster.node(leader)
        request = Request(acks=self.acks, timeout_ms=TIMEOUT_MS, topic_data=[
            Request.TopicProduceData(name=self.topic, partition_data=data)])
        if self.acks == 0:
            await connection.send("Produce", request, expect_response=False)
            return [ProducedBatch(index, -1, len(records)) for index, records in batches]
        response = await connection.request("Produce", request)
        counts = {index: len(records) for index, records in batches}
        produced = []
        for topic in response.responses:
            for p in topic.partition_responses:
                check(p.error_code, p.error_message, f"produce to {self.topic}-{p.index}")
                if self.idempotent:
                    self._sequences[p.index] = (self._sequences.get(p.index, 0)
                                                + counts[p.index]) & 0x7FFFFFFF
                produced.append(ProducedBatch(p.index, p.base_offset, counts[p.index]))
        return produced


def record(value: bytes | None, key: bytes | None = None, headers=(), timestamp_ms: int | None = None):
    """A Record stamped now unless a timestamp is given."""
    return Record(None, time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms,
                  key, value, tuple(headers))
