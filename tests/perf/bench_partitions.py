"""Restart time and memory against partition count (python tests/perf/bench_partitions.py).

For each count (1k, 5k, 10k by default) a broker runs under `ulimit -n 1024` (as a shell's
default is on many machines); topics of 500 partitions each are created, every partition gets
one batch, and the broker is stopped cleanly. Then it is measured:

- clean restart: from starting the process to its first Metadata answer (ms), and RSS then;
- after every partition was used once (ListOffsets over all): RSS, and the open files of the
  process (bounded by log.open.files.max, whatever the partition count);
- unclean restart (kill -9 first): every partition is recovered at start, as Kafka does.

Not a test: nothing is asserted. The figures go in tests/perf/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kbroker.protocol import messages  # noqa: E402
from kbroker.protocol.records import Record, build_batch  # noqa: E402
from kbroker.testing import BrokerProcess  # noqa: E402
from tests.wire import WireClient  # noqa: E402

PER_TOPIC = 500
OPEN_FILES = 1024
Creatable = messages.CreateTopicsRequest.CreatableTopic
PRODUCE = messages.ProduceRequest
OFFSETS = messages.ListOffsetsRequest


def limit_open_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def topics_for(count: int) -> list[tuple[str, int]]:
    return [(f"bench-{i}", min(PER_TOPIC, count - i * PER_TOPIC))
            for i in range((count + PER_TOPIC - 1) // PER_TOPIC)]


def fill(broker: BrokerProcess, count: int) -> None:
    batch = build_batch([Record(timestamp=int(time.time() * 1000), key=b"k", value=b"v" * 100)])
    with WireClient(broker.bootstrap, timeout_s=300) as wire:
        for name, partitions in topics_for(count):
            wire.request("CreateTopics", 7, timeout_ms=60000, validate_only=False, topics=[Creatable(
                name=name, num_partitions=partitions, replication_factor=1, assignments=[], configs=[])])
            wire.request("Produce", 9, acks=1, timeout_ms=5000, transactional_id=None, topic_data=[
                PRODUCE.TopicProduceData(name=name, partition_data=[
                    PRODUCE.PartitionProduceData(index=p, records=batch) for p in range(partitions)])])


def first_answer_ms(broker: BrokerProcess, port: int) -> float:
    started = time.perf_counter()
    broker.start(port)
    with WireClient(broker.bootstrap) as wire:
        wire.request("Metadata", 12, topics=[], allow_auto_topic_creation=False,
                     include_topic_authorized_operations=False)
    return (time.perf_counter() - started) * 1000


def use_all(broker: BrokerProcess, count: int) -> None:
    with WireClient(broker.bootstrap, timeout_s=300) as wire:
        for name, partitions in topics_for(count):
            wire.request("ListOffsets", 7, replica_id=-1, isolation_level=0, topics=[OFFSETS.ListOffsetsTopic(
                name=name, partitions=[OFFSETS.ListOffsetsPartition(partition_index=p, timestamp=-1)
                                       for p in range(partitions)])])


def measure(count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-partitions-") as data_dir:
        broker = BrokerProcess(Path(data_dir), ["--log-level", "WARNING"], startup_timeout=300,
                               preexec_fn=limit_open_files)
        broker.start()
        port = broker.port
        fill(broker, count)
        broker.stop(120)
        result = {"clean restart ms": first_answer_ms(broker, port)}
        pid = broker.process.pid
        result["RSS at start MB"] = rss_mb(pid)
        use_all(broker, count)
        result["RSS all used MB"] = rss_mb(pid)
        result["open files all used"] = open_files(pid)
        broker.kill()
        result["unclean restart ms"] = first_answer_ms(broker, port)
        result["RSS after recovery MB"] = rss_mb(broker.process.pid)
        broker.stop(120)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="1000,5000,10000", help="partition counts, comma-separated")
    args = parser.parse_args()
    rows = {count: measure(count) for count in map(int, args.counts.split(","))}
    names = list(next(iter(rows.values())))
    print("| partitions | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for count, row in rows.items():
        print(f"| {count} | " + " | ".join(f"{row[name]:.0f}" for name in names) + " |")


if __name__ == "__main__":
    main()
