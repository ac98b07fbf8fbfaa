"""Loader and LogManager: the clean-shutdown marker, recovery points, damaged topic files,
all-or-nothing topic creation and the bounded set of open files."""

from __future__ import annotations

import dataclasses
import logging
import os

import pytest

from kbroker.log import LogConfig, LogManager
from kbroker.log.checkpoint import CLEAN_SHUTDOWN_FILE, RECOVERY_POINT_FILE, format_offsets, read_offsets
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.records import Record, build_batch, iter_batches

NOW = 1_700_000_000_000
SMALL = dataclasses.replace(LogConfig(), segment_bytes=1000, index_interval_bytes=100)


def batch(i: int) -> bytes:
    return build_batch([Record(timestamp=NOW + i, key=b"k%d" % i, value=b"v" * 50)])


def fill(manager: LogManager, topic: str, count: int, partition: int = 0) -> None:
    log = manager.partition(topic, partition)
    for i in range(count):
        log.append_produce(batch(i), NOW)


def flip_byte_in_batch(path: str, which: int) -> None:
    """Flip the last byte (inside the records, under the CRC) of the batch number `which`."""
    with open(path, "r+b") as f:
        data = f.read()
        position, header = list(iter_batches(data))[which]
        f.seek(position + header.size - 1)
        f.write(bytes([data[position + header.size - 1] ^ 0xFF]))


def segment_paths(directory: str) -> list[str]:
    return sorted(os.path.join(directory, n) for n in os.listdir(directory) if n.endswith(".log"))


def test_clean_shutdown_means_no_scan_and_no_loss(tmp_path):
    data = str(tmp_path)
    manager = LogManager(data, SMALL)
    manager.create_topic("t", 1)
    fill(manager, "t", 5)
    manager.close()
    assert os.path.exists(os.path.join(data, CLEAN_SHUTDOWN_FILE))
    [segment] = segment_paths(os.path.join(data, "t-0"))
    flip_byte_in_batch(segment, 2)
    size = os.path.getsize(segment)

    manager = LogManager(data, SMALL)
    assert not os.path.exists(os.path.join(data, CLEAN_SHUTDOWN_FILE))  # a crash now is unclean
    log = manager.partition("t", 0)
    assert log.log_end_offset == 5 and os.path.getsize(segment) == size
    manager.close()


def test_unclean_shutdown_recovers_from_the_recovery_point_only(tmp_path, caplog):
    data = str(tmp_path)
    manager = LogManager(data, SMALL)
    manager.create_topic("t", 1)
    fill(manager, "t", 40)  # several segments
    log = manager.partition("t", 0)
    log.flush()
    assert log.recovery_point == 40
    manager.write_recovery_checkpoint(manager.recovery_checkpoint())
    assert read_offsets(os.path.join(data, RECOVERY_POINT_FILE)) == {("t", 0): 40}
    fill(manager, "t", 10)  # after the recovery point
    sealed, active = log.segments[0].path, log.segments[-1].path
    del manager  # a crash: never closed, no marker (the OS keeps what was written)
    flip_byte_in_batch(sealed, 1)  # below the recovery point: not scanned, kept as it is
    flip_byte_in_batch(active, 0)  # above it: the log is cut there, and says so
    sealed_size = os.path.getsize(sealed)

    with caplog.at_level(logging.WARNING, logger="kbroker.log"):
        manager = LogManager(data, SMALL)
    log = manager.partition("t", 0)
    assert os.path.getsize(sealed) == sealed_size
    cut_at = log.log_end_offset
    assert 40 <= cut_at < 50
    [warning] = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert f"at offset {cut_at}" in warning and "bytes" in warning and "t-0" in warning
    manager.close()


def test_missing_checkpoint_after_a_crash_scans_everything(tmp_path, caplog):
    data = str(tmp_path)
    manager = LogManager(data, SMALL)
    manager.create_topic("t", 1)
    fill(manager, "t", 40)
    first = manager.partition("t", 0).segments[0].path
    del manager  # a crash: never closed, no marker (the OS keeps what was written)
    flip_byte_in_batch(first, 1)
    with caplog.at_level(logging.WARNING, logger="kbroker.log"):
        manager = LogManager(data, SMALL)
    assert manager.partition("t", 0).log_end_offset == 1
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "truncated segment 0 at offset 1" in messages and "deleted" in messages
    manager.close()


def test_damaged_topic_file_is_skipped_and_its_partitions_kept(tmp_path, caplog):
    data = str(tmp_path)
    manager = LogManager(data, LogConfig())
    manager.create_topic("good", 1)
    bad = manager.create_topic("bad", 2)
    fill(manager, "bad", 3)
    manager.close()
    meta = os.path.join(data, "__kbroker_topics", f"{bad.topic_id}.json")
    for damage in (b"", b"{not json", b'{"name": "bad"}', b"[1, 2]"):
        with open(meta, "wb") as f:
            f.write(damage)
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="kbroker.log"):
            manager = LogManager(data, LogConfig())
        assert list(manager.topics) == ["good"]
        [error] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert meta in error and "left untouched" in error
        assert os.path.isdir(os.path.join(data, "bad-0")) and os.path.isdir(os.path.join(data, "bad-1"))
        manager.close()


def test_create_topic_is_all_or_nothing(tmp_path):
    data = str(tmp_path)
    manager = LogManager(data, LogConfig())
    with open(os.path.join(data, "t-3"), "w") as f:  # a file where partition 3's directory goes
        f.write("x")
    with pytest.raises(KafkaError) as err:
        manager.create_topic("t", 6)
    assert err.value.code == ErrorCode.KAFKA_STORAGE_ERROR
    assert "t" not in manager.topics
    assert sorted(os.listdir(data)) == ["__kbroker_topics", "t-3"]
    assert os.listdir(os.path.join(data, "__kbroker_topics")) == []
    manager.close()


def test_open_files_stay_bounded_and_reads_survive_eviction(tmp_path):
    data = str(tmp_path)
    manager = LogManager(data, LogConfig(), open_files_max=16)
    manager.create_topic("many", 200)
    for partition in range(200):
        fill(manager, "many", 2, partition)
    assert len(manager.log_dir.files) <= 16
    region = manager.partition("many", 0).read(0, 1 << 20).records
    for partition in range(1, 200):  # evicts partition 0's file; the region keeps its fd open
        manager.partition("many", partition).read(0, 1 << 20)
    assert len(manager.log_dir.files) <= 16
    assert list(iter_batches(os.pread(region.fd, region.size, region.position)))
    for partition in range(200):
        assert manager.partition("many", partition).read(0, 1 << 20).records.size > 0
    manager.close()  # 200 logs to make durable: one sync() of everything
    assert set(read_offsets(os.path.join(data, RECOVERY_POINT_FILE)).values()) == {2}
    assert os.path.exists(os.path.join(data, CLEAN_SHUTDOWN_FILE))
    manager = LogManager(data, LogConfig(), open_files_max=16)
    assert manager.logs() == []  # nothing is opened before it is used
    assert manager.partition("many", 199).log_end_offset == 2
    manager.close()


def test_checkpoint_format_is_kafkas(tmp_path):
    path = str(tmp_path / RECOVERY_POINT_FILE)
    with open(path, "wb") as f:
        f.write(format_offsets({("a", 0): 5, ("b-c", 12): 0}))
    with open(path) as f:
        assert f.read() == "0\n2\na 0 5\nb-c 12 0\n"
    assert read_offsets(path) == {("a", 0): 5, ("b-c", 12): 0}
    with open(path, "w") as f:
        f.write("0\n3\na 0 5\n")
    assert read_offsets(path) == {}


def test_flush_job_outlives_rolls_deletions_and_evictions_meanwhile(tmp_path):
    from kbroker.log import PartitionLog
    from kbroker.log.handles import LogDir

    log = PartitionLog.open(str(tmp_path / "t-0"), "t", 0, SMALL, NOW, log_dir=LogDir(open_files_max=2))
    for i in range(10):
        log.append_produce(batch(i), NOW)
    job = log.begin_flush(NOW)  # on the loop; the thread gets only the job's handles
    for i in range(30):  # meanwhile the loop rolls, deletes and lets files go
        log.append_produce(batch(i), NOW)
    log.delete_segments(len(log.segments) - 1, NOW)
    log.purge_deleted(NOW + 10**9)
    assert len(log.log_dir.files) <= 2
    job.run()
    assert job.error is None
    log.finish_flush(job)
    assert log.recovery_point == 10
    assert log.has_unsynced_files()  # segments sealed meanwhile wait for the next job
    log.flush(NOW)
    assert log.recovery_point == 40 and not log.has_unsynced_files()
    log.close()


def test_failed_index_write_leaves_nothing_of_the_batch(tmp_path, monkeypatch):
    from kbroker.log import PartitionLog
    from kbroker.log.index import SparseIndex

    log = PartitionLog.open(str(tmp_path / "t-0"), "t", 0, SMALL, NOW)
    for i in range(3):
        log.append_produce(batch(i), NOW)
    size, entries = log.segments[-1].size, len(log.segments[-1].index)

    def disk_error(*args, **kwargs):
        raise OSError(5, "Input/output error")

    with monkeypatch.context() as patch:
        patch.setattr(SparseIndex, "append", disk_error)
        with pytest.raises(KafkaError) as err:
            log.append_produce(batch(3), NOW)
    assert err.value.code == ErrorCode.KAFKA_STORAGE_ERROR
    segment = log.segments[-1]
    assert (segment.size, len(segment.index), os.path.getsize(segment.path)) == (size, entries, size)
    assert log.append_produce(batch(4), NOW).base_offset == 3
    assert [h.base_offset for _, h in iter_batches(os.pread(segment.fd, 1 << 20, 0))] == [0, 1, 2, 3]
    log.close()
