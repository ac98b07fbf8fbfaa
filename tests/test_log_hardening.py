"""Faults and scale against a real broker: a corrupt byte after a clean shutdown, damaged topic
files, a disk that refuses writes, and more partitions than open files."""

from __future__ import annotations

import os
import resource
import signal
import time

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import CorruptRecordError

from kbroker.protocol import messages
from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.records import Record, build_batch, iter_batches
from kbroker.testing import BrokerProcess
from tests.kafka_clients import confluent_consume, confluent_producer
from tests.polling import wait_for
from tests.wire import WireClient

PRODUCE = messages.ProduceRequest
FETCH = messages.FetchRequest
Creatable = messages.CreateTopicsRequest.CreatableTopic


def create_topic(wire: WireClient, name: str, partitions: int) -> int:
    response = wire.request("CreateTopics", 7, timeout_ms=60000, validate_only=False, topics=[
        Creatable(name=name, num_partitions=partitions, replication_factor=1, assignments=[],
                  configs=[])])
    return response.topics[0].error_code


def produce(wire: WireClient, topic: str, batches: dict[int, bytes]) -> dict[int, int]:
    """One Produce request with a batch per partition; error code by partition."""
    response = wire.request("Produce", 9, acks=-1, timeout_ms=5000, transactional_id=None,
                            topic_data=[PRODUCE.TopicProduceData(name=topic, partition_data=[
                                PRODUCE.PartitionProduceData(index=index, records=records)
                                for index, records in batches.items()])])
    return {p.index: p.error_code for p in response.responses[0].partition_responses}


def fetch_error(wire: WireClient, topic: str, partition: int) -> int:
    response = wire.request("Fetch", 12, replica_id=-1, max_wait_ms=0, min_bytes=0, max_bytes=1 << 20,
                            isolation_level=0, session_id=0, session_epoch=-1, topics=[FETCH.FetchTopic(
                                topic=topic, partitions=[FETCH.FetchPartition(
                                    partition=partition, fetch_offset=0, partition_max_bytes=1 << 20,
                                    current_leader_epoch=-1, log_start_offset=-1)])],
                            forgotten_topics_data=[], rack_id="")
    return response.responses[0].partitions[0].error_code


def batch_of(size: int) -> bytes:
    return build_batch([Record(timestamp=int(time.time() * 1000), key=b"k", value=os.urandom(size))])


# -- a corrupt byte after a clean shutdown ----------------------------------------------------

def test_corrupt_byte_after_clean_shutdown_fails_that_batch_only(tmp_path):
    broker = BrokerProcess(tmp_path).start()
    try:
        values = [f"value-{i}".encode() for i in range(10)]
        producer = confluent_producer(broker.bootstrap, **{"linger.ms": 0})
        for value in values:
            producer.produce("flip", value=value)
            producer.flush(10)  # one batch per value
        assert broker.stop() == 0
        assert (tmp_path / ".kafka_cleanshutdown").exists()
        [segment] = (tmp_path / "flip-0").glob("*.log")
        data = bytearray(segment.read_bytes())
        position, header = list(iter_batches(data))[5]
        data[position + header.size - 2] ^= 0xFF  # inside batch 5's value, under its CRC
        segment.write_bytes(bytes(data))

        broker.start(broker.port)
        assert segment.stat().st_size == len(data), "nothing may be cut after a clean shutdown"
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, check_crcs=True,
                                 enable_auto_commit=False, consumer_timeout_ms=10000)
        partition = TopicPartition("flip", 0)
        consumer.assign([partition])
        consumer.seek(partition, 0)
        got = []
        with pytest.raises(CorruptRecordError):
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=500).values():
                    got += [r.value for r in records]
        assert got == values[:5]
        consumer.seek(partition, 6)
        rest = []
        deadline = time.monotonic() + 20
        while len(rest) < 4 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                rest += [r.value for r in records]
        assert rest == values[6:]
        consumer.close()
    finally:
        broker.stop()


def test_cut_after_a_crash_is_logged_with_offsets_and_bytes(tmp_path):
    broker = BrokerProcess(tmp_path).start()
    try:
        producer = confluent_producer(broker.bootstrap, **{"linger.ms": 0})
        for _ in range(5):
            producer.produce("cut", value=b"x" * 100)
            producer.flush(10)
        broker.kill()
        assert not (tmp_path / ".kafka_cleanshutdown").exists()
        [segment] = (tmp_path / "cut-0").glob("*.log")
        os.truncate(segment, segment.stat().st_size - 7)
        broker.start(broker.port)
        [line] = wait_for(lambda: [line for line in broker.output if "truncated segment" in line], 10)
        assert "WARNING" in line and "cut-0" in line and "at offset 4" in line and "bytes" in line
        assert len(confluent_consume(broker.bootstrap, "cut", 4)) == 4
    finally:
        broker.stop()


# -- damaged topic files ----------------------------------------------------------------------

def test_damaged_topic_file_is_skipped_and_the_broker_starts(tmp_path):
    broker = BrokerProcess(tmp_path).start()
    try:
        with WireClient(broker.bootstrap) as wire:
            assert create_topic(wire, "fine", 1) == ErrorCode.NONE
            assert create_topic(wire, "damaged", 2) == ErrorCode.NONE
            assert produce(wire, "damaged", {0: batch_of(10)}) == {0: ErrorCode.NONE}
        assert broker.stop() == 0
        [meta] = [path for path in (tmp_path / "__kbroker_topics").iterdir()
                  if b'"damaged"' in path.read_bytes()]
        meta.write_bytes(b"\x00garbage")
        broker.start(broker.port)
        errors = wait_for(lambda: [line for line in broker.output if "ERROR" in line], 10)
        assert len(errors) == 1 and str(meta) in errors[0] and "Traceback" not in "".join(broker.output)
        assert (tmp_path / "damaged-0").is_dir() and (tmp_path / "damaged-1").is_dir()
        with WireClient(broker.bootstrap) as wire:
            topics = wire.request("Metadata", 12, topics=None, allow_auto_topic_creation=False,
                                  include_topic_authorized_operations=False).topics
            assert [t.name for t in topics] == ["fine"]
            assert produce(wire, "fine", {0: batch_of(10)}) == {0: ErrorCode.NONE}
        meta.write_bytes(b"")
        broker.restart()
        wait_for(lambda: any(str(meta) in line for line in broker.output if "ERROR" in line), 10)
    finally:
        broker.stop()


# -- a disk that refuses writes ---------------------------------------------------------------

FILE_SIZE_LIMIT = 256 * 1024


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


def test_write_errors_answer_kafka_storage_error_then_take_the_dir_offline(tmp_path):
    broker = BrokerProcess(tmp_path, preexec_fn=_limit_file_size).start()
    try:
        with WireClient(broker.bootstrap) as wire:
            assert create_topic(wire, "full", 2) == ErrorCode.NONE
            for _ in range(3):  # partition 1 gets close to the file-size limit
                assert produce(wire, "full", {1: batch_of(70_000)}) == {1: ErrorCode.NONE}
            # one request: partition 0 is appended, partition 1's write fails; both are answered
            assert produce(wire, "full", {0: batch_of(100), 1: batch_of(70_000)}) == {
                0: ErrorCode.NONE, 1: ErrorCode.KAFKA_STORAGE_ERROR}
            assert fetch_error(wire, "full", 0) == ErrorCode.NONE  # one failure: still online
            for _ in range(2):
                assert produce(wire, "full", {1: batch_of(70_000)}) == {1: ErrorCode.KAFKA_STORAGE_ERROR}
            # three failures in a row: the log dir is offline, every partition says so
            assert produce(wire, "full", {0: batch_of(100)}) == {0: ErrorCode.KAFKA_STORAGE_ERROR}
            assert fetch_error(wire, "full", 0) == ErrorCode.KAFKA_STORAGE_ERROR
        wait_for(lambda: any("offline" in line for line in broker.output), 10, "the offline log line")
        assert broker.stop() == 0
        broker.preexec_fn = None
        broker.start(broker.port)  # the failed appends left nothing behind: 3 + 1 batches
        records = confluent_consume(broker.bootstrap, "full", 1)
        assert len(records) == 1
        with WireClient(broker.bootstrap) as wire:
            offsets = wire.request("ListOffsets", 7, replica_id=-1, isolation_level=0, topics=[
                messages.ListOffsetsRequest.ListOffsetsTopic(name="full", partitions=[
                    messages.ListOffsetsRequest.ListOffsetsPartition(partition_index=p, timestamp=-1)
                    for p in (0, 1)])])
            assert [p.offset for p in offsets.topics[0].partitions] == [1, 3]
    finally:
        broker.stop()


# -- more partitions than open files ----------------------------------------------------------

OPEN_FILES = 1024
PARTITIONS = 3000  # 10,000 in tests/perf/bench_partitions.py; this fits CI's time


def _limit_open_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))


def test_thousands_of_partitions_under_ulimit_1024(tmp_path):
    broker = BrokerProcess(tmp_path, preexec_fn=_limit_open_files, startup_timeout=60).start()
    try:
        with WireClient(broker.bootstrap, timeout_s=120) as wire:
            assert create_topic(wire, "wide", PARTITIONS) == ErrorCode.NONE
            for start in range(0, PARTITIONS, 500):
                errors = produce(wire, "wide", {p: batch_of(20) for p in range(start, start + 500)})
                assert set(errors.values()) == {ErrorCode.NONE}
        assert broker.stop(60) == 0
        broker.start(broker.port)
        with WireClient(broker.bootstrap, timeout_s=120) as wire:
            offsets = wire.request("ListOffsets", 7, replica_id=-1, isolation_level=0, topics=[
                messages.ListOffsetsRequest.ListOffsetsTopic(name="wide", partitions=[
                    messages.ListOffsetsRequest.ListOffsetsPartition(partition_index=p, timestamp=-1)
                    for p in range(PARTITIONS)])])
            assert {p.offset for p in offsets.topics[0].partitions} == {1}
            assert fetch_error(wire, "wide", PARTITIONS - 1) == ErrorCode.NONE
        assert not [line for line in broker.output if "Too many open files" in line]
    finally:
        broker.stop()


def test_damaged_producer_id_block_is_a_one_line_error(tmp_path):
    broker = BrokerProcess(tmp_path).start()
    broker.stop()
    (tmp_path / "producer-id-block").write_text("")
    with pytest.raises(RuntimeError) as err:
        BrokerProcess(tmp_path).start()
    output = str(err.value)
    assert "Traceback" not in output
    [line] = [line for line in output.splitlines() if line.startswith("kbroker: ")]
    assert "producer-id-block" in line and "damaged" in line and "write a number" in line


def test_recovery_points_are_checkpointed_while_running(tmp_path):
    broker = BrokerProcess(tmp_path, ["--override", "log.flush.offset.checkpoint.interval.ms=200",
                                      "--override", "log.flush.interval.messages=1"]).start()
    try:
        with WireClient(broker.bootstrap) as wire:
            assert create_topic(wire, "cp", 2) == ErrorCode.NONE
            for _ in range(3):
                assert produce(wire, "cp", {1: batch_of(10)}) == {1: ErrorCode.NONE}
        checkpoint = tmp_path / "recovery-point-offset-checkpoint"
        wait_for(lambda: checkpoint.exists() and "cp 1 3" in checkpoint.read_text(), 10,
                 "the recovery point of cp-1 in the checkpoint")
        lines = checkpoint.read_text().splitlines()
        assert lines[0] == "0" and int(lines[1]) == len(lines) - 2
    finally:
        broker.stop()
