"""Share group throughput: records/s that 1 and 4 share consumers get from one partition, and the
broker's CPU per record (not a test: nothing is asserted).

    python tests/perf/bench_share.py [--records 200000] [--size 100] [--consumers 1,4] [--rounds 1]

Each round starts a fresh kbroker, fills a one-partition topic, then starts the share consumers
(confluent-kafka's ShareConsumer, implicit acknowledgement: every record is accepted by the next
poll), each in its own process, and times how long the group takes to receive every record.
The broker's CPU (utime + stime from /proc) is read before and after.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from confluent_kafka import Producer, ShareConsumer  # noqa: E402
from confluent_kafka.admin import (  # noqa: E402
    AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType,
)

from kbroker.testing import running_broker  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
TOPIC, GROUP = "bench-share", "bench-share-group"


def broker_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def prepare(bootstrap: str, records: int, size: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(TOPIC, 1)])[TOPIC].result()
    resource = ConfigResource(ResourceType.GROUP, GROUP, incremental_configs=[
        ConfigEntry("share.auto.offset.reset", "earliest", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource])[resource].result()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.num.messages": 10000})
    value = b"x" * size
    for _ in range(records):
        while True:
            try:
                producer.produce(TOPIC, value)
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush()


def consume(bootstrap: str, received, done, start) -> None:
    """One share consumer: counts what it gets into `received` until the group has it all."""
    consumer = ShareConsumer({"bootstrap.servers": bootstrap, "group.id": GROUP})
    consumer.subscribe([TOPIC])
    start.wait()
    while not done.is_set():
        count = sum(1 for message in consumer.poll(0.2) if message.error() is None)
        if count:
            with received.get_lock():
                received.value += count
    consumer.close()


def run(consumers: int, records: int, size: int) -> tuple[float, float]:
    """(records/s, broker CPU us per record) of one round."""
    with running_broker() as broker:
        prepare(broker.bootstrap, records, size)
        received = multiprocessing.Value("q", 0)
        done, start = multiprocessing.Event(), multiprocessing.Event()
        workers = [multiprocessing.Process(target=consume, args=(broker.bootstrap, received, done, start))
                   for _ in range(consumers)]
        for worker in workers:
            worker.start()
        time.sleep(1.0)  # let the consumers connect and join before the clock starts
        cpu = broker_cpu_s(broker.process.pid)
        started = time.perf_counter()
        start.set()
        deadline = started + 300
        while received.value < records and time.perf_counter() < deadline:
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
        used = broker_cpu_s(broker.process.pid) - cpu
        got = received.value
        done.set()
        for worker in workers:
            worker.join(30)
        if got < records:
            print(f"  only {got} of {records} records arrived in 300 s", file=sys.stderr)
        return got / elapsed, used / max(got, 1) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=100, help="value bytes")
    parser.add_argument("--consumers", default="1,4")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    print(f"| share consumers | records/s | broker CPU us/record |  ({args.records} records of "
          f"{args.size} B, 1 partition, medians of {args.rounds} rounds)")
    print("|---:|---:|---:|")
    for count in (int(c) for c in args.consumers.split(",")):
        rates, cpus = zip(*(run(count, args.records, args.size) for _ in range(args.rounds)))
        print(f"| {count} | {statistics.median(rates):,.0f} | {statistics.median(cpus):.1f} |", flush=True)


if __name__ == "__main__":
    main()
