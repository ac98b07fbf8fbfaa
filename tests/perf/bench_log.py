"""Append throughput of PartitionLog for 1 MiB and 16 KiB batches (python tests/perf/bench_log.py).

Not collected by pytest (the name does not start with test_).
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile
import time

import crc32c

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from kbroker.log import LogConfig, PartitionLog  # noqa: E402
from kbroker.protocol.primitives import write_varint as varint  # noqa: E402

NOW = 1_700_000_000_000


def one_record_batch(value_size: int) -> bytes:
    """A batch holding one record with a value of value_size bytes (what matters is bytes)."""
    value = os.urandom(value_size)

    body = b"\x00" + varint(0) + varint(0) + varint(-1) + varint(len(value)) + value + varint(0)
    record = varint(len(body)) + body
    tail = struct.pack(">hiqqqhii", 0, 0, NOW, NOW, -1, -1, -1, 1) + record
    return struct.pack(">qiibI", 0, len(tail) + 9, -1, 2, crc32c.crc32c(tail)) + tail


def bench(batch_size: int, total_bytes: int) -> None:
    batch = one_record_batch(batch_size - 80)
    count = max(total_bytes // len(batch), 1)
    config = LogConfig(max_message_bytes=2 * len(batch))
    with tempfile.TemporaryDirectory() as tmp:
        log = PartitionLog.open(os.path.join(tmp, "bench-0"), "bench", 0, config, NOW)
        start = time.perf_counter()
        for _ in range(count):
            log.append_produce(batch, NOW)
        elapsed = time.perf_counter() - start
        log.close()
    print(f"{len(batch):>8} B batches: {count / elapsed:10.0f} appends/s, "
          f"{count * len(batch) / elapsed / 1e9:6.2f} GB/s, {elapsed / count * 1e6:7.1f} us/append")


if __name__ == "__main__":
    bench(1 << 20, 1 << 30)
    bench(16 << 10, 512 << 20)
    bench(1 << 10, 64 << 20)
