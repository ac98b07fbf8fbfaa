"""Log storage: append/read, segments and indexes, recovery, idempotence, transactions, LogManager."""

from __future__ import annotations

import os
import struct

import crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kbroker.log import LogConfig, LogManager, PartitionLog
from kbroker.protocol.primitives import write_varint as varint
from kbroker.protocol.records import BatchHeader, compute_crc
from kbroker.protocol.errors import ErrorCode, KafkaError

NOW = 1_700_000_000_000


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
        header = BatchHeader.parse(data, pos)
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
    assert all(h.partition_leader_epoch == 0 for h in headers)
    assert compute_crc(data[:headers[0].size]) == headers[0].crc
    assert read_bytes(log.read(1, 1 << 20).records) == data  # batch containing offset 1
    assert read_bytes(log.read(3, 1 << 20).records) == data[headers[0].size:]
    assert log.read(4, 1 << 20).records == b""
    with pytest.raises(KafkaError) as err:
        log.read(5, 100)
    assert err.value.code == ErrorCode.OFFSET_OUT_OF_RANGE


def small_config(**changes) -> LogConfig:
    """Tiny segments and dense indexes so that tests cross many segments."""
    import dataclasses
    return dataclasses.replace(LogConfig(), segment_bytes=1000, index_interval_bytes=100, **changes)


def reopen(log: PartitionLog, config: LogConfig | None = None) -> PartitionLog:
    log.close()
    return PartitionLog.open(log.directory, log.topic, log.partition, config or log.config, NOW)


def fill(log: PartitionLog, batches: int, per_batch: int = 3) -> None:
    for i in range(batches):
        log.append_produce(build_batch([b"value-%d-%d" % (i, j) for j in range(per_batch)]), NOW)


def all_offsets(log: PartitionLog, start: int | None = None, max_bytes: int = 1 << 20) -> list[int]:
    """Every batch base offset readable from start, following reads across segments."""
    offset = log.log_start_offset if start is None else start
    bases = []
    while offset < log.log_end_offset:
        headers = batches_in(read_bytes(log.read(offset, max_bytes).records))
        assert headers, offset
        bases.extend(h.base_offset for h in headers)
        offset = headers[-1].last_offset + 1
    return bases


def test_roll_by_size_and_lookups_across_segments(tmp_path):
    log = PartitionLog.open(str(tmp_path / "t-0"), "t", 0, small_config(), NOW)
    fill(log, 60)
    assert len(log.segments) > 5
    assert all(seg.size <= 1000 for seg in log.segments)
    assert all(len(seg.index) > 0 for seg in log.segments[:-1])
    names = sorted(os.listdir(log.directory))
    assert "00000000000000000000.log" in names and "00000000000000000000.index" in names
    assert all_offsets(log) == [3 * i for i in range(60)]
    for offset in range(log.log_end_offset):
        headers = batches_in(read_bytes(log.read(offset, 1).records))
        assert len(headers) == 1 and headers[0].base_offset == offset - offset % 3
    log.close()


def test_read_limits(log):
    fill(log, 10)
    size = batches_in(read_bytes(log.read(0, 1 << 20).records))[0].size
    assert len(batches_in(read_bytes(log.read(0, 2 * size + 1).records))) == 2
    assert len(batches_in(read_bytes(log.read(0, 1).records))) == 1  # at least one whole batch
    assert log.read(0, 1, min_one_batch=False).records == b""
    assert [h.base_offset for h in batches_in(read_bytes(log.read(0, 1 << 20, upper_offset=7).records))] \
        == [0, 3]
    assert log.read(6, 1 << 20, upper_offset=7).records == b""


def test_roll_by_time(log):
    log.append_produce(build_batch([b"a"], timestamps=[NOW]), NOW)
    log.append_produce(build_batch([b"b"], timestamps=[NOW + 1000]), NOW + 1000)
    assert len(log.segments) == 1
    week = log.config.segment_ms
    log.append_produce(build_batch([b"c"], timestamps=[NOW + week + 1]), NOW + week + 1)
    assert [s.base_offset for s in log.segments] == [0, 2]


def test_recovery_truncated_mid_batch(tmp_path):
    log = PartitionLog.open(str(tmp_path / "t-0"), "t", 0, small_config(), NOW)
    fill(log, 30)
    leo = log.log_end_offset
    active = log.segments[-1]
    path = active.prefix + ".log"
    log.close()
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 10)
    log = PartitionLog.open(os.path.dirname(path), "t", 0, small_config(), NOW)
    assert log.log_end_offset == leo - 3
    assert all_offsets(log) == [3 * i for i in range(29)]
    assert log.append_produce(build_batch([b"x"]), NOW).base_offset == leo - 3
    log.close()


def test_recovery_corrupt_last_batch(tmp_path):
    log = PartitionLog.open(str(tmp_path / "t-0"), "t", 0, small_config(), NOW)
    fill(log, 30)
    leo = log.log_end_offset
    path = log.segments[-1].prefix + ".log"
    log.close()
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size - 5)
        byte = f.read(1)
        f.seek(size - 5)
        f.write(bytes([byte[0] ^ 0xFF]))
    log = PartitionLog.open(os.path.dirname(path), "t", 0, small_config(), NOW)
    assert log.log_end_offset == leo - 3
    assert os.path.getsize(path) < size
    assert all_offsets(log) == [3 * i for i in range(29)]
    log.close()


def test_missing_and_damaged_indexes_rebuilt(tmp_path):
    log = PartitionLog.open(str(tmp_path / "t-0"), "t", 0, small_config(), NOW)
    fill(log, 40)
    expected = {seg.base_offset: (list(seg.index.keys), list(seg.index.values), list(seg.time_index.keys))
                for seg in log.segments}
    first, second = log.segments[0].prefix, log.segments[1].prefix
    log.close()
    os.unlink(first + ".index")
    os.unlink(first + ".timeindex")
    with open(second + ".index", "ab") as f:
        f.write(b"\x01\x02\x03")  # torn entry
    log = PartitionLog.open(str(tmp_path / "t-0"), "t", 0, small_config(), NOW)
    got = {seg.base_offset: (list(seg.index.keys), list(seg.index.values), list(seg.time_index.keys))
           for seg in log.segments}
    assert got == expected
    assert os.path.getsize(first + ".index") == 8 * len(expected[0][0])
    assert all_offsets(log) == [3 * i for i in range(40)]
    log.close()


def test_out_of_order_index_rebuilt(tmp_path):
    log = PartitionLog.open(str(tmp_path / "t-0"), "t", 0, small_config(), NOW)
    fill(log, 20)
    prefix = log.segments[0].prefix
    entries = len(log.segments[0].index)
    log.close()
    with open(prefix + ".index", "wb") as f:
        f.write(struct.pack(">ii", 5, 300) + struct.pack(">ii", 2, 100))
    log = PartitionLog.open(str(tmp_path / "t-0"), "t", 0, small_config(), NOW)
    assert len(log.segments[0].index) == entries
    assert all_offsets(log) == [3 * i for i in range(20)]
    log.close()


def test_log_append_time_rewrites_batch(tmp_path):
    import dataclasses
    config = dataclasses.replace(LogConfig(), message_timestamp_type="LogAppendTime")
    log = PartitionLog.open(str(tmp_path / "t-0"), "t", 0, config, NOW)
    sent = build_batch([b"a", b"b"], timestamps=[5, 6])
    result = log.append_produce(sent, NOW + 42)
    assert result.log_append_time_ms == NOW + 42
    data = read_bytes(log.read(0, 1 << 20).records)
    header = BatchHeader.parse(data)
    assert header.attributes & 0x08
    assert header.max_timestamp == NOW + 42 and header.base_timestamp == 5
    assert compute_crc(data) == header.crc
    assert data[61:] == sent[61:]
    assert log.offset_for_timestamp(NOW + 1) == (0, NOW + 42)
    log.close()


def produce_error(log: PartitionLog, batch, now=NOW) -> ErrorCode:
    before = (log.log_end_offset, log.size_bytes)
    with pytest.raises(KafkaError) as err:
        log.append_produce(batch, now)
    assert (log.log_end_offset, log.size_bytes) == before
    return err.value.code


def resign(batch: bytearray) -> bytes:
    struct.pack_into(">I", batch, 17, crc32c.crc32c(bytes(batch[21:])))
    return bytes(batch)


def test_validation_errors_leave_log_untouched(tmp_path):
    import dataclasses
    log = PartitionLog.open(str(tmp_path / "t-0"), "t", 0, LogConfig(), NOW)
    log.append_produce(build_batch(), NOW)
    good = build_batch([b"x", b"y"])
    assert produce_error(log, b"") == ErrorCode.INVALID_RECORD
    assert produce_error(log, good[:-1]) == ErrorCode.INVALID_RECORD
    assert produce_error(log, good + good) == ErrorCode.INVALID_RECORD
    assert produce_error(log, build_batch(magic=1)) == ErrorCode.INVALID_RECORD
    flipped = bytearray(good)
    flipped[-1] ^= 1
    assert produce_error(log, bytes(flipped)) == ErrorCode.CORRUPT_MESSAGE
    short = bytearray(good)
    struct.pack_into(">i", short, 8, 3)
    assert produce_error(log, bytes(short)) == ErrorCode.CORRUPT_MESSAGE
    wrong_count = bytearray(good)
    struct.pack_into(">i", wrong_count, 57, 3)
    assert produce_error(log, resign(wrong_count)) == ErrorCode.INVALID_RECORD
    assert produce_error(log, build_batch(attributes=0x20)) == ErrorCode.INVALID_RECORD
    assert produce_error(log, build_batch(producer_id=7, producer_epoch=0)) == ErrorCode.INVALID_RECORD
    assert produce_error(log, build_batch(attributes=0x08)) == ErrorCode.INVALID_TIMESTAMP
    big = build_batch([b"x" * 2_000_000])
    assert produce_error(log, big) == ErrorCode.MESSAGE_TOO_LARGE
    log.config = dataclasses.replace(LogConfig(), max_message_bytes=10_000_000, segment_bytes=1_000_000)
    assert produce_error(log, big) == ErrorCode.RECORD_LIST_TOO_LARGE
    log.config = LogConfig()
    hour = 3_600_000
    assert produce_error(log, build_batch(timestamps=[NOW + 2 * hour])) == ErrorCode.INVALID_TIMESTAMP
    log.config = dataclasses.replace(LogConfig(), message_timestamp_before_max_ms=hour)
    assert produce_error(log, build_batch(timestamps=[NOW - 2 * hour])) == ErrorCode.INVALID_TIMESTAMP
    assert log.append_produce(build_batch(timestamps=[-1]), NOW).base_offset == 1  # no timestamp
    log.config = dataclasses.replace(LogConfig(), cleanup_policy=("compact",))
    assert produce_error(log, build_batch([b"a", b"b"], keys=[b"k", None])) == ErrorCode.INVALID_RECORD
    assert log.append_produce(build_batch([b"a"], keys=[b"k"]), NOW).base_offset == 2
    assert all_offsets(log) == [0, 1, 2]
    log.close()


def test_trailing_partial_batch_is_ignored(log):
    good = build_batch([b"x"])
    log.append_produce(good + good[:20], NOW)
    assert read_bytes(log.read(0, 1 << 20).records)[16:] == good[16:]
    assert produce_error(log, good + good[:8] + struct.pack(">i", 1) + good[12:20]) \
        == ErrorCode.CORRUPT_MESSAGE


def idem(values, seq, epoch=0, pid=1000, **kw) -> bytes:
    return build_batch(values, producer_id=pid, producer_epoch=epoch, base_sequence=seq, **kw)


def test_idempotent_duplicates_and_sequence_errors(log):
    assert log.append_produce(idem([b"a", b"b"], 0), NOW).base_offset == 0
    assert log.append_produce(idem([b"c"], 2), NOW).base_offset == 2
    dup = log.append_produce(idem([b"a", b"b"], 0), NOW)
    assert (dup.base_offset, dup.last_offset, dup.duplicate) == (0, 1, True)
    assert log.log_end_offset == 3
    assert produce_error(log, idem([b"d"], 5)) == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert produce_error(log, idem([b"d"], 1)) == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert produce_error(log, idem([b"d"], 3, epoch=1)) == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert log.append_produce(idem([b"d"], 0, epoch=1), NOW).base_offset == 3
    assert produce_error(log, idem([b"e"], 1, epoch=0)) == ErrorCode.INVALID_PRODUCER_EPOCH
    # a retry of a batch from the older epoch is no longer a duplicate
    assert produce_error(log, idem([b"c"], 2, epoch=0)) == ErrorCode.INVALID_PRODUCER_EPOCH
    # an unknown producer may start at any sequence
    assert log.append_produce(idem([b"f"], 77, pid=2000), NOW).base_offset == 4


def test_idle_producers_expire(tmp_path):
    manager = LogManager(str(tmp_path), LogConfig())
    manager.create_topic("t", 1)
    log = manager.partition("t", 0)
    log.append_produce(idem([b"a"], 0, pid=1), NOW)
    log.append_produce(idem([b"b"], 0, pid=2, transactional=True), NOW)
    assert manager.remove_expired_producers(NOW + 10, 100) == 0
    assert manager.remove_expired_producers(NOW + 100, 100) == 1  # not the one in a transaction
    assert set(log.producer_state.producers) == {2}
    assert log.append_produce(idem([b"c"], 9, pid=1), NOW).base_offset == 2  # unknown again
    manager.close()


def test_only_last_five_batches_deduplicated(log):
    for seq in range(7):
        log.append_produce(idem([b"x"], seq), NOW)
    assert log.append_produce(idem([b"x"], 2), NOW).duplicate
    assert produce_error(log, idem([b"x"], 1)) == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER


def test_sequence_wraps_at_int32_max(log):
    top = (1 << 31) - 1
    log.append_produce(idem([b"a", b"b"], top - 1), NOW)
    assert log.append_produce(idem([b"c"], 0), NOW).base_offset == 2
    log.append_produce(idem([b"d", b"e"], top, pid=5), NOW)  # sequences top and 0
    assert produce_error(log, idem([b"f"], 0, pid=5)) == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert log.append_produce(idem([b"f"], 1, pid=5), NOW).base_offset == 5


def test_producer_state_survives_restart(tmp_path):
    log = PartitionLog.open(str(tmp_path / "t-0"), "t", 0, small_config(), NOW)
    for seq in range(30):
        log.append_produce(idem([b"v%d" % seq], seq), NOW)
    # a crash: no snapshot at the end, state comes from the roll snapshot plus a header scan
    for segment in log.segments:
        segment.close()
    log = PartitionLog.open(str(tmp_path / "t-0"), "t", 0, small_config(), NOW)
    assert log.append_produce(idem([b"v29"], 29), NOW).duplicate
    assert produce_error(log, idem([b"z"], 31)) == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    log = reopen(log)  # clean close: snapshot at the LEO
    assert log.append_produce(idem([b"v29"], 29), NOW).base_offset == 29
    log.close()
    snapshots = [name for name in os.listdir(log.directory) if name.endswith(".snapshot")]
    assert snapshots == ["%020d.snapshot" % log.log_end_offset]
    os.unlink(os.path.join(log.directory, snapshots[0]))
    log = PartitionLog.open(log.directory, "t", 0, small_config(), NOW)  # full header scan
    assert log.append_produce(idem([b"v28"], 28), NOW).duplicate
    assert log.append_produce(idem([b"n"], 30), NOW).base_offset == 30
    log.close()


def test_transactions_markers_lso_and_aborted_list(tmp_path):
    log = PartitionLog.open(str(tmp_path / "t-0"), "t", 0, LogConfig(), NOW)
    log.append_produce(build_batch([b"plain"]), NOW)                                   # 0
    log.append_produce(idem([b"a1", b"a2"], 0, pid=1, transactional=True), NOW)        # 1-2
    log.append_produce(idem([b"b1"], 0, pid=2, transactional=True), NOW)               # 3
    assert log.last_stable_offset == 1
    assert log.high_watermark == 4
    stable = batches_in(read_bytes(log.read(0, 1 << 20, log.last_stable_offset).records))
    assert [h.base_offset for h in stable] == [0]
    assert produce_error(log, idem([b"x"], 2, pid=1)) == ErrorCode.INVALID_TXN_STATE
    abort_at = log.append_control(1, 0, False, 5, NOW)
    assert abort_at == 4
    assert log.last_stable_offset == 3
    commit_at = log.append_control(2, 0, True, 5, NOW)
    assert commit_at == 5 and log.last_stable_offset == log.log_end_offset == 6
    marker = BatchHeader.parse(read_bytes(log.read(4, 1 << 20).records))
    assert marker.attributes & 0x30 == 0x30 and marker.producer_id == 1
    assert log.aborted_transactions(0, 6) == [(1, 1)]
    assert log.aborted_transactions(5, 6) == []
    with pytest.raises(KafkaError) as err:
        log.append_control(1, 0, True, 4, NOW)
    assert err.value.code == ErrorCode.TRANSACTION_COORDINATOR_FENCED
    log.append_produce(idem([b"a3"], 2, pid=1, transactional=True), NOW)               # 6, new txn
    assert log.last_stable_offset == 6
    directory = log.directory
    for segment in log.segments:  # crash
        segment.close()
    os.unlink(log.segments[0].prefix + ".txnindex")
    log = PartitionLog.open(directory, "t", 0, LogConfig(), NOW)
    assert log.aborted_transactions(0, 7) == [(1, 1)]
    assert log.last_stable_offset == 6
    log.append_control(1, 0, False, 5, NOW)
    assert log.aborted_transactions(0, 8) == [(1, 1), (1, 6)]
    log = reopen(log)
    assert log.aborted_transactions(2, 8) == [(1, 1), (1, 6)]
    assert log.last_stable_offset == 8
    log.close()


def test_offset_for_timestamp_and_max_timestamp(tmp_path):
    log = PartitionLog.open(str(tmp_path / "t-0"), "t", 0, small_config(), NOW)
    for i in range(40):
        log.append_produce(build_batch([b"a", b"b"], timestamps=[NOW + 10 * i, NOW + 10 * i + 5]), NOW)
    assert log.offset_for_timestamp(NOW) == (0, NOW)
    assert log.offset_for_timestamp(NOW + 1) == (1, NOW + 5)
    assert log.offset_for_timestamp(NOW + 6) == (2, NOW + 10)
    assert log.offset_for_timestamp(NOW + 200) == (40, NOW + 200)
    assert log.offset_for_timestamp(NOW + 395) == (79, NOW + 395)
    assert log.offset_for_timestamp(NOW + 396) is None
    assert log.max_timestamp() == (NOW + 395, 79)
    log = reopen(log)
    assert log.offset_for_timestamp(NOW + 201) == (41, NOW + 205)
    assert log.max_timestamp() == (NOW + 395, 79)
    log.close()


def test_end_offset_for_epoch(log):
    assert log.end_offset_for_epoch(0) == (-1, -1)
    fill(log, 2)
    assert log.end_offset_for_epoch(0) == (0, 6)
    assert log.end_offset_for_epoch(3) == (0, 6)
    assert log.end_offset_for_epoch(-1) == (-1, -1)


def test_delete_records_and_retention(tmp_path):
    import dataclasses
    log = PartitionLog.open(str(tmp_path / "t-0"), "t", 0, small_config(), NOW)
    fill(log, 40)
    segments = len(log.segments)
    second = log.segments[1].base_offset
    region = log.read(0, 100).records
    assert log.delete_records_before(second + 1, NOW) == second + 1
    assert log.log_start_offset == second + 1 and log.segments[0].base_offset == second
    assert len(log.segments) == segments - 1
    assert os.pread(region.fd, region.size, region.position)  # pending sendfile still works
    assert any(name.endswith(".deleted") for name in os.listdir(log.directory))
    with pytest.raises(KafkaError):
        log.read(second, 100)
    assert batches_in(read_bytes(log.read(second + 1, 1).records))[0].base_offset == second
    with pytest.raises(KafkaError):
        log.delete_records_before(log.log_end_offset + 1, NOW)
    log.purge_deleted(NOW + log.config.file_delete_delay_ms)
    assert not any(name.endswith(".deleted") for name in os.listdir(log.directory))
    log = reopen(log)
    assert log.log_start_offset == second + 1
    log.config = dataclasses.replace(log.config, retention_bytes=2500)
    assert log.apply_retention(NOW) > 0
    assert log.size_bytes <= 2500 + 1000
    log.config = dataclasses.replace(log.config, retention_ms=1000, retention_bytes=-1)
    leo = log.log_end_offset
    log.apply_retention(NOW + 10_000)
    assert len(log.segments) == 1 and log.segments[0].size == 0
    assert log.log_start_offset == log.log_end_offset == leo
    assert log.append_produce(build_batch(), NOW).base_offset == leo
    log.close()


def test_flush_policy(tmp_path):
    import dataclasses
    config = dataclasses.replace(LogConfig(), flush_interval_messages=3, flush_interval_ms=1000)
    log = PartitionLog.open(str(tmp_path / "t-0"), "t", 0, config, NOW)
    assert not log.needs_flush(NOW)
    log.append_produce(build_batch([b"a"]), NOW)
    assert not log.needs_flush(NOW)
    assert log.needs_flush(NOW + 1000)
    log.append_produce(build_batch([b"a", b"b"]), NOW)
    assert log.needs_flush(NOW)
    log.flush(NOW)
    assert not log.needs_flush(NOW + 5000)
    log.close()


def test_log_manager_topics_persist_and_reopen(tmp_path):
    data = str(tmp_path / "data")
    manager = LogManager(data, LogConfig())
    info = manager.create_topic("orders", 3, {"retention.ms": "1000", "cleanup.policy": "compact"})
    assert info.partitions == 3 and info.config.retention_ms == 1000 and info.config.compact
    assert manager.topic_by_id(info.topic_id) is info
    manager.partition("orders", 1).append_produce(build_batch([b"a", b"b"]), NOW)
    assert manager.partition("orders", 3) is None and manager.partition("nope", 0) is None
    with pytest.raises(KafkaError) as err:
        manager.create_topic("orders", 1)
    assert err.value.code == ErrorCode.TOPIC_ALREADY_EXISTS
    manager.create_topic("ord_ers", 1)
    with pytest.raises(KafkaError) as err:
        manager.create_topic("ord.ers", 1)
    assert err.value.code == ErrorCode.INVALID_TOPIC_EXCEPTION
    with pytest.raises(KafkaError) as err:
        manager.create_topic("x", 0)
    assert err.value.code == ErrorCode.INVALID_PARTITIONS
    with pytest.raises(KafkaError) as err:
        manager.create_topic("y", 1, {"segment.bytes": "12"})
    assert err.value.code == ErrorCode.INVALID_CONFIG
    assert "y" not in manager.topics
    manager.add_partitions("orders", 5)
    with pytest.raises(KafkaError) as err:
        manager.add_partitions("orders", 5)
    assert err.value.code == ErrorCode.INVALID_PARTITIONS
    manager.alter_topic_configs("orders", {"retention.ms": "5000"})
    assert manager.partition("orders", 0).config.retention_ms == 5000
    assert not manager.partition("orders", 0).config.compact
    with open(os.path.join(data, "orders-0", "partition.metadata")) as f:
        assert f.read().startswith("version: 0\ntopic_id: ")
    manager.close()

    manager = LogManager(data, LogConfig())
    info2 = manager.topics["orders"]
    assert (info2.topic_id, info2.partitions, info2.configs) == (info.topic_id, 5, {"retention.ms": "5000"})
    assert manager.partition("orders", 1).log_end_offset == 2
    assert manager.partition("orders", 4).log_end_offset == 0
    region = manager.partition("orders", 1).read(0, 100).records
    manager.delete_topic("orders")
    assert "orders" not in manager.topics and manager.partition("orders", 1) is None
    assert not os.path.exists(os.path.join(data, "orders-1"))
    assert os.pread(region.fd, region.size, region.position)
    with pytest.raises(KafkaError) as err:
        manager.delete_topic("orders")
    assert err.value.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    manager.purge_deleted(NOW * 2)
    assert sorted(os.listdir(data)) == ["__kbroker_topics", "ord_ers-0", "recovery-point-offset-checkpoint"]
    manager.create_topic("orders", 1)
    manager.close()
    assert LogManager(data, LogConfig()).partition("orders", 0).log_end_offset == 0


def test_log_manager_removes_stray_partitions(tmp_path):
    data = str(tmp_path / "data")
    manager = LogManager(data, LogConfig())
    gone = manager.create_topic("gone", 2)
    manager.partition("gone", 0).append_produce(build_batch(), NOW)
    manager.close()
    os.unlink(os.path.join(data, "__kbroker_topics", f"{gone.topic_id}.json"))  # crash right after the commit
    os.makedirs(os.path.join(data, "unrelated-0"))
    manager = LogManager(data, LogConfig())
    assert sorted(os.listdir(data)) == ["__kbroker_topics", "recovery-point-offset-checkpoint",
                                        "unrelated-0"]
    manager.create_topic("gone", 1)
    assert manager.partition("gone", 0).log_end_offset == 0
    manager.close()


def test_corrupt_sealed_segment_drops_later_segments(tmp_path):
    log = PartitionLog.open(str(tmp_path / "t-0"), "t", 0, small_config(), NOW)
    fill(log, 40)
    second = log.segments[1]
    prefix, base = second.prefix, second.base_offset
    log.close()
    with open(prefix + ".log", "r+b") as f:
        f.seek(100)
        f.write(b"\xff" * 4)
    os.unlink(prefix + ".index")  # only damaged indexes make a sealed segment get rescanned
    log = PartitionLog.open(str(tmp_path / "t-0"), "t", 0, small_config(), NOW)
    assert log.segments[-1].base_offset == base
    assert all(b < log.log_end_offset for b in all_offsets(log))
    assert log.log_end_offset < 120 and log.log_end_offset % 3 == 0
    assert log.append_produce(build_batch(), NOW).base_offset == log.log_end_offset - 1
    log.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(1, 300), min_size=1, max_size=30), cut=st.integers(0, 2000))
def test_recovery_at_any_truncation_point(tmp_path_factory, sizes, cut):
    directory = str(tmp_path_factory.mktemp("p") / "t-0")
    log = PartitionLog.open(directory, "t", 0, small_config(), NOW)
    ends = []
    for i, size in enumerate(sizes):
        log.append_produce(idem([b"x" * size], i), NOW)
        ends.append((log.segments[-1].base_offset, log.segments[-1].size, log.log_end_offset))
    active = log.segments[-1]
    path, base = active.prefix + ".log", active.base_offset
    log.close()
    keep = max(os.path.getsize(path) - cut, 0)
    os.truncate(path, keep)
    log = PartitionLog.open(directory, "t", 0, small_config(), NOW)
    whole = [leo for seg_base, end, leo in ends if seg_base == base and end <= keep]
    assert log.log_end_offset == (whole[-1] if whole else base)
    assert all_offsets(log) == list(range(log.log_end_offset))
    # the producer continues right after the last surviving batch
    assert log.append_produce(idem([b"n"], log.log_end_offset), NOW).base_offset == log.log_end_offset - 1
    log.close()


def test_unset_max_timestamp_is_taken_from_the_records(tmp_path):
    """sarama 1.x leaves maxTimestamp at 0; time lookups must still find its records."""
    import struct as _struct

    from kbroker.protocol.records import MAX_TIMESTAMP_OFFSET, Record, build_batch, crc_is_valid

    log = PartitionLog.open(str(tmp_path / "t-0"), "t", 0, LogConfig(), NOW)
    batch = bytearray(build_batch([Record(timestamp=NOW - 50 + i, value=b"v") for i in range(3)]))
    _struct.pack_into(">q", batch, MAX_TIMESTAMP_OFFSET, 0)
    _struct.pack_into(">I", batch, 17, compute_crc(batch))
    log.append_produce(bytes(batch), NOW)
    assert log.offset_for_timestamp(NOW - 49) == (1, NOW - 49)
    stored = log.read(0, 1 << 20).records
    data = os.pread(stored.fd, stored.size, stored.position)
    assert BatchHeader.parse(data).max_timestamp == NOW - 48
    assert crc_is_valid(data)
