"""`kbroker perf produce` and `kbroker perf consume` against a real broker (not a benchmark: the
figures they print are checked for shape and counts, never for speed)."""

from __future__ import annotations

import re
import subprocess
import sys

from confluent_kafka import Consumer, TopicPartition

RECORDS = 20_000
SUMMARY = re.compile(
    r"(\d+) records (sent|consumed), [\d.]+ records/sec \([\d.]+ MB/sec\), [\d.]+ ms avg latency, "
    r"[\d.]+ ms max latency, [\d.]+ ms 50th, [\d.]+ ms 95th, [\d.]+ ms 99th, [\d.]+ ms 99.9th\.")


def perf(broker, *args: str) -> re.Match:
    result = subprocess.run(
        [sys.executable, "-m", "kbroker", "perf", *args, "--bootstrap", broker.bootstrap],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = SUMMARY.search(result.stdout)
    assert summary is not None, result.stdout
    return summary


def end_offsets(bootstrap: str, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "perf-check"})
    try:
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(partitions)]
    finally:
        consumer.close()


def test_perf_produce_then_consume(broker, topic_name):
    produced = perf(broker, "produce", "--topic", topic_name, "--num-records", str(RECORDS),
                    "--record-size", "100", "--partitions", "2", "--acks", "all")
    assert produced.group(1, 2) == (str(RECORDS), "sent")
    offsets = end_offsets(broker.bootstrap, topic_name, 2)
    assert sum(offsets) == RECORDS and all(offsets)  # every record landed, on both partitions

    consumed = perf(broker, "consume", "--topic", topic_name, "--num-records", str(RECORDS))
    assert consumed.group(1, 2) == (str(RECORDS), "consumed")
