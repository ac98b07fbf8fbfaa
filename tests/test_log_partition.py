"""PartitionLog: append/read, segments and indexes, recovery, idempotence, transactions."""

from __future__ import annotations

import os
import struct

import crc32c
import pytest

from kbroker.log import LogConfig, LogManager, PartitionLog
from kbroker.log.batch import BatchHeader, compute_crc
from kbroker.protocol.errors import ErrorCode, KafkaError

NOW = 1_700_000_000_000


def varint(value: int) -> bytes:
    raw = (value << 1) ^ (value >> 63)
    out = bytearray()
    while raw >= 0x80:
        out.append((raw & 0x7F) | 0x80)
        raw >>= 7
    out.append(raw)
    return bytes(out)


def encode_record(offset_delta: int, ts_delta: int, key: bytes | None, value: bytes | None) -> bytes:
    body = bytearray(b"\x00")
    body += varint(ts_delta) + varint(offset_delta)
    for field in (key, value):
        if field is None:
            body += varint(-1)
        else:
            body += varint(len(field)) + field
    body += varint(0)
    return varint(len(body)) + bytes(body)


def build_batch(values=(b"v",), *, keys=None, timestamps=None, producer_id=-1, producer_epoch=-1,
                base_sequence=-1, transactional=False, attributes=0, base_offset=0,
                leader_epoch=-1, magic=2) -> bytes:
    """A RecordBatch v2 as a producer sends it (uncompressed)."""
    count = len(values)
    timestamps = list(timestamps) if timestamps is not None else [NOW + i for i in range(count)]
    keys = list(keys) if keys is not None else [b"k%d" % i for i in range(count)]
    records = b"".join(encode_record(i, timestamps[i] - timestamps[0], keys[i], values[i])
                       for i in range(count))
    attrs = attributes | (0x10 if transactional else 0)
    tail = struct.pack(">hiqqqhii", attrs, count - 1, timestamps[0], max(timestamps), producer_id,
                       producer_epoch, base_sequence, count) + records
    length = len(tail) + 9
    return struct.pack(">qiibI", base_offset, length, leader_epoch, magic, crc32c.crc32c(tail)) + tail


def read_bytes(region) -> bytes:
    if isinstance(region, (bytes, bytearray)):
        return bytes(region)
    return os.pread(region.fd, region.size, region.position)


def batches_in(data: bytes) -> list[BatchHeader]:
    out, pos = [], 0
    while pos < len(data):
        header = BatchHeader(data, pos)
        out.append(header)
        pos += header.size
    return out


@pytest.fixture
def log(tmp_path):
    log = PartitionLog.open(str(tmp_path / "t-0"), "t", 0, LogConfig(), NOW)
    yield log
    log.close()


def test_append_read_round_trip(log):
    first = log.append_produce(build_batch([b"a", b"b", b"c"]), NOW)
    second = log.append_produce(memoryview(build_batch([b"d"])), NOW)
    assert (first.base_offset, first.last_offset, first.duplicate) == (0, 2, False)
    assert (second.base_offset, second.last_offset) == (3, 3)
    assert first.log_append_time_ms == -1
    assert log.log_end_offset == log.high_watermark == log.last_stable_offset == 4
    data = read_bytes(log.read(0, 1 << 20).records)
    headers = batches_in(data)
    assert [h.base_offset for h in headers] == [0, 3]
    assert all(h.leader_epoch == 0 for h in headers)
    assert compute_crc(data[:headers[0].size]) == headers[0].crc
    assert read_bytes(log.read(1, 1 << 20).records) == data  # batch containing offset 1
    assert read_bytes(log.read(3, 1 << 20).records) == data[headers[0].size:]
    assert log.read(4, 1 << 20).records == b""
    with pytest.raises(KafkaError) as err:
        log.read(5, 100)
    assert err.value.code == ErrorCode.OFFSET_OUT_OF_RANGE
