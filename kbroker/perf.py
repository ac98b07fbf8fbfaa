"""`kbroker perf produce|consume`: load generators shaped like Kafka's producer/consumer perf tests.

They speak the protocol through kbroker's own sans-IO codec over trio sockets rather than a client
library: kbroker's only runtime dependencies are trio and crc32c, and a generator that never
decodes or encodes records one by one measures the broker, not the client. Batches are built from
one records body made once (records differ only by their offset delta, so a batch of n records is
a prefix of it); each batch costs a header pack and a CRC. Works against any single-node broker.
"""

from __future__ import annotations

import argparse
import math
import os
import struct
import time

import trio

from kbroker.client.connection import ClientError, Connection
from kbroker.commands.common import add_tls_options, tls_context
from kbroker.protocol import messages
from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.primitives import write_varint
from kbroker.protocol.records import (
    ATTRIBUTES_OFFSET, CRC_OFFSET, HEADER, HEADER_SIZE, LOG_OVERHEAD, crc32c, iter_batches,
)

_NULL_KEY = write_varint(-1)
PROGRESS_INTERVAL_S = 5.0
MiB = 1024 * 1024


async def topic_partitions(connection: Connection, topic: str, create_partitions: int | None) -> int:
    """The topic's partition count, creating it (with CreateTopics when served) if needed."""
    if create_partitions and "CreateTopics" in connection.versions:
        topic_request = messages.CreateTopicsRequest.CreatableTopic(
            name=topic, num_partitions=create_partitions, replication_factor=1)
        response = await connection.request("CreateTopics", messages.CreateTopicsRequest(
            topics=[topic_request], timeout_ms=30_000))
        error = response.topics[0].error_code
        if error not in (ErrorCode.NONE, ErrorCode.TOPIC_ALREADY_EXISTS):
            raise ClientError(f"cannot create {topic}: {ErrorCode(error).name}")
    request = messages.MetadataRequest(
        topics=[messages.MetadataRequest.MetadataRequestTopic(name=topic)],
        allow_auto_topic_creation=True)
    for _ in range(50):  # an auto-created topic may need a moment to get leaders
        response = await connection.request("Metadata", request)
        info = response.topics[0]
        if info.error_code == ErrorCode.NONE and info.partitions and all(
                p.error_code == ErrorCode.NONE for p in info.partitions):
            return len(info.partitions)
        await trio.sleep(0.1)
    raise ClientError(f"topic {topic}: {ErrorCode(info.error_code).name}")


class Stats:
    """Counts, latency samples and progress lines, as kafka-*-perf-test prints them."""

    def __init__(self, noun: str, interval_s: float = PROGRESS_INTERVAL_S):
        self.noun = noun
        self.start = self.window_start = time.monotonic()
        self.interval_s = interval_s
        self.records = self.bytes = 0
        self.window_records = self.window_bytes = 0
        self.window_latency_sum = self.window_latency_max = 0.0
        self.window_weight = 0.0
        self.samples: list[tuple[float, float]] = []  # (latency s, records it stands for)

    def add(self, records: int, nbytes: int, newest_latency: float, oldest_latency: float,
            samples: int = 10) -> None:
        """Account records whose latencies spread evenly from newest to oldest."""
        self.records += records
        self.bytes += nbytes
        self.window_records += records
        self.window_bytes += nbytes
        k = max(min(records, samples), 1)
        step = (oldest_latency - newest_latency) / k
        for i in range(k):
            latency = newest_latency + step * (i + 0.5)
            self.samples.append((latency, records / k))
        self.window_latency_sum += (newest_latency + oldest_latency) / 2 * records
        self.window_weight += records
        self.window_latency_max = max(self.window_latency_max, oldest_latency)
        now = time.monotonic()
        if now - self.window_start >= self.interval_s:
            elapsed = now - self.window_start
            print(f"{self.window_records} records {self.noun}, "
                  f"{self.window_records / elapsed:.1f} records/sec "
                  f"({self.window_bytes / elapsed / MiB:.2f} MB/sec), "
                  f"{self._ms(self.window_latency_sum / max(self.window_weight, 1))} ms avg latency, "
                  f"{self._ms(self.window_latency_max)} ms max latency.", flush=True)
            self.window_start = now
            self.window_records = self.window_bytes = 0
            self.window_latency_sum = self.window_latency_max = self.window_weight = 0.0

    @staticmethod
    def _ms(seconds: float) -> str:
        return f"{seconds * 1000:.2f}"

    def percentiles(self, *quantiles: float) -> list[float]:
        ordered = sorted(self.samples)
        total = sum(weight for _, weight in ordered)
        found, cumulative, wanted = [], 0.0, list(quantiles)
        for latency, weight in ordered:
            cumulative += weight
            while wanted and cumulative >= wanted[0] * total:
                found.append(latency)
                wanted.pop(0)
        return found + [ordered[-1][0] if ordered else 0.0] * len(wanted)

    def summary(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        total = sum(weight for _, weight in self.samples) or 1
        average = sum(latency * weight for latency, weight in self.samples) / total
        worst = max((latency for latency, _ in self.samples), default=0.0)
        p50, p95, p99, p999 = (self._ms(v) for v in self.percentiles(0.5, 0.95, 0.99, 0.999))
        return (f"{self.records} records {self.noun}, {self.records / elapsed:.1f} records/sec "
                f"({self.bytes / elapsed / MiB:.2f} MB/sec), {self._ms(average)} ms avg latency, "
                f"{self._ms(worst)} ms max latency, {p50} ms 50th, {p95} ms 95th, {p99} ms 99th, "
                f"{p999} ms 99.9th.")


class BatchMaker:
    """Record batches of identical records, each batch a header plus a prefix of one body."""

    def __init__(self, record_size: int, batch_size: int):
        value = os.urandom(record_size)
        records, ends = [], []
        length = 0
        self.per_batch = 0
        while True:
            delta = self.per_batch
            body = b"\x00\x00" + write_varint(delta) + _NULL_KEY + write_varint(record_size) + \
                value + b"\x00"
            record = write_varint(len(body)) + body
            if self.per_batch and HEADER_SIZE + length + len(record) > batch_size:
                break
            records.append(record)
            length += len(record)
            ends.append(length)
            self.per_batch += 1
        self._body = memoryview(b"".join(records))
        self._ends = ends

    def batch(self, count: int, timestamp_ms: int) -> bytes:
        body = self._body[:self._ends[count - 1]]
        header = bytearray(HEADER.pack(
            0, HEADER_SIZE - LOG_OVERHEAD + len(body), -1, 2, 0, 0, count - 1, timestamp_ms,
            timestamp_ms, -1, -1, -1, count))
        crc = crc32c(body, crc32c(memoryview(header)[ATTRIBUTES_OFFSET:]))
        struct.pack_into(">I", header, CRC_OFFSET, crc)
        return bytes(header) + body


async def run_produce(args: argparse.Namespace) -> Stats:
    connection = await Connection.open(args.bootstrap, "kbroker-perf", tls=tls_context(args))
    partitions = await topic_partitions(connection, args.topic, args.partitions)
    partitions = min(partitions, args.partitions or partitions)
    maker = BatchMaker(args.record_size, args.batch_size)
    stats = Stats("sent")
    window = trio.Semaphore(args.max_in_flight)
    send_channel, receive_channel = trio.open_memory_channel(math.inf)
    acks = {"all": -1}.get(args.acks, None)
    acks = int(args.acks) if acks is None else acks
    rate = args.throughput if args.throughput > 0 else None
    linger_s = args.linger_ms / 1000

    async def send_batches() -> None:
        sent, partition = 0, 0
        start = trio.current_time()
        while sent < args.num_records:
            room = min(maker.per_batch, args.num_records - sent)
            if rate is None:
                count = room
                await window.acquire()
                first_created = last_created = trio.current_time()
            else:
                first_created = start + sent / rate
                close_at = min(first_created + linger_s, start + (sent + room - 1) / rate)
                await trio.sleep_until(max(close_at, first_created))
                count = min(room, int((trio.current_time() - start) * rate) + 1 - sent)
                count = max(count, 1)
                last_created = start + (sent + count - 1) / rate
                await window.acquire()
            batch = maker.batch(count, time.time_ns() // 1_000_000)
            data = messages.ProduceRequest.PartitionProduceData(index=partition, records=batch)
            topic = messages.ProduceRequest.TopicProduceData(name=args.topic, partition_data=[data])
            await connection.send("Produce", messages.ProduceRequest(
                acks=acks, timeout_ms=30_000, topic_data=[topic]), expect_response=acks != 0)
            if acks == 0:
                now = trio.current_time()
                stats.add(count, count * args.record_size, now - last_created, now - first_created)
                window.release()
            else:
                send_channel.send_nowait((count, first_created, last_created))
            sent += count
            partition = (partition + 1) % partitions
        send_channel.close()

    async def receive_acks() -> None:
        async for count, first_created, last_created in receive_channel:
            response = await connection.receive()
            now = trio.current_time()
            for topic in response.responses:
                for partition in topic.partition_responses:
                    if partition.error_code:
                        raise ClientError(f"produce to {topic.name}-{partition.index}: "
                                        f"{ErrorCode(partition.error_code).name} "
                                        f"{partition.error_message or ''}")
            stats.add(count, count * args.record_size, now - last_created, now - first_created)
            window.release()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive_acks)
            await send_batches()
    finally:
        connection.close()
    return stats


async def run_consume(args: argparse.Namespace) -> Stats:
    connection = await Connection.open(args.bootstrap, "kbroker-perf", tls=tls_context(args))
    partitions = await topic_partitions(connection, args.topic, None)
    offsets = {p: args.from_offset for p in range(partitions)}
    stats = Stats("consumed")
    last_progress = time.monotonic()
    Request = messages.FetchRequest
    try:
        while stats.records < args.num_records:
            request = Request(
                replica_id=-1, max_wait_ms=args.fetch_wait_ms, min_bytes=1,
                max_bytes=args.fetch_max_bytes, isolation_level=0, session_id=0, session_epoch=-1,
                topics=[Request.FetchTopic(topic=args.topic, partitions=[
                    Request.FetchPartition(partition=p, current_leader_epoch=-1, fetch_offset=o,
                                           partition_max_bytes=args.max_partition_fetch_bytes)
                    for p, o in offsets.items()])])
            sent = time.monotonic()
            response = await connection.request("Fetch", request)
            now = time.monotonic()
            if response.error_code:
                raise ClientError(f"fetch: {ErrorCode(response.error_code).name}")
            count = nbytes = 0
            for topic in response.responses:
                for data in topic.partitions:
                    if data.error_code:
                        raise ClientError(f"fetch {args.topic}-{data.partition_index}: "
                                        f"{ErrorCode(data.error_code).name}")
                    fetched, size, next_offset = _count_records(
                        data.records, offsets[data.partition_index])
                    count, nbytes = count + fetched, nbytes + size
                    offsets[data.partition_index] = next_offset
            if count:
                last_progress = now
                stats.add(count, nbytes, now - sent, now - sent, samples=1)
            elif now - last_progress > args.timeout_s:
                print(f"no records for {args.timeout_s:.0f} s, stopping", flush=True)
                break
    finally:
        connection.close()
    return stats


def _count_records(records, offset: int) -> tuple[int, int, int]:
    """Records at or after `offset` in a fetched records value, their bytes and the next offset."""
    count = nbytes = 0
    for _, header in iter_batches(records or b"", allow_partial=True):
        last = header.base_offset + header.last_offset_delta
        if last < offset:
            continue
        if header.base_offset >= offset:
            count += header.records_count
        else:
            count += last - offset + 1
        nbytes += header.size
        offset = last + 1
    return count, nbytes, offset


def add_parser(commands) -> None:
    """The `perf` subcommand and its `produce` and `consume` commands."""
    perf = commands.add_parser("perf", help="measure a broker's throughput and latency")
    tests = perf.add_subparsers(dest="perf_command", required=True)
    for name, help_text in (("produce", "like kafka-producer-perf-test"),
                            ("consume", "like kafka-consumer-perf-test")):
        test = tests.add_parser(name, help=help_text)
        test.add_argument("-b", "--bootstrap", default="127.0.0.1:9092", help="host:port of the broker")
        test.add_argument("--topic", default="perf")
        test.add_argument("--num-records", type=int, default=1_000_000)
        add_tls_options(test)
        if name == "produce":
            test.add_argument("--record-size", type=int, default=1024, help="bytes of each value")
            test.add_argument("--throughput", type=float, default=-1,
                              help="target records/s; -1 for as fast as possible")
            test.add_argument("--acks", default="1", choices=["0", "1", "-1", "all"])
            test.add_argument("--batch-size", type=int, default=MiB, help="max bytes of a batch")
            test.add_argument("--linger-ms", type=float, default=5,
                              help="how long a batch waits for more records at --throughput")
            test.add_argument("--partitions", type=int,
                              help="create the topic with this many partitions (if the broker "
                                   "serves CreateTopics) and produce to that many")
            test.add_argument("--max-in-flight", type=int, default=5,
                              help="produce requests awaiting their answer at once")
        else:
            test.add_argument("--from-offset", type=int, default=0)
            test.add_argument("--fetch-max-bytes", type=int, default=50 * MiB)
            test.add_argument("--max-partition-fetch-bytes", type=int, default=MiB)
            test.add_argument("--fetch-wait-ms", type=int, default=500)
            test.add_argument("--timeout-s", type=float, default=10,
                              help="stop after this long without new records")


def main(args: argparse.Namespace) -> int:
    runner = run_produce if args.perf_command == "produce" else run_consume
    try:
        stats = trio.run(runner, args)
    except (ClientError, OSError) as exc:
        print(f"kbroker perf: {exc}", flush=True)
        return 1
    print(stats.summary(), flush=True)
    return 0
