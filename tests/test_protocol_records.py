"""RecordBatch v2: build/parse round trips, in-place patches, and agreement with kafka-python."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kbroker.protocol import records
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.records import BatchHeader, Record, build_batch, iter_batches, iter_records

kafka_records = pytest.importorskip("kafka.record.default_records")

CODECS = [records.NO_COMPRESSION, records.GZIP]
if records.cramjam is not None:
    CODECS += [records.SNAPPY, records.LZ4, records.ZSTD]

SAMPLE = [
    Record(timestamp=1_700_000_000_000, key=b"k0", value=b"v0", headers=(("h", b"1"), ("n", None))),
    Record(timestamp=1_699_999_999_000, key=None, value=b"v1" * 1000),  # earlier: negative delta
    Record(timestamp=1_700_000_000_500, key=b"", value=None),
]


def decoded(batch) -> list[Record]:
    return list(iter_records(batch))


@pytest.mark.parametrize("compression", CODECS)
def test_build_and_read_back(compression):
    batch = build_batch(
        SAMPLE, base_offset=40, producer_id=7, producer_epoch=2, base_sequence=11,
        transactional=True, compression=compression,
    )
    header = BatchHeader.parse(batch)
    assert header.size == len(batch)
    assert (header.base_offset, header.last_offset, header.records_count) == (40, 42, 3)
    assert (header.producer_id, header.producer_epoch, header.base_sequence, header.last_sequence) == (7, 2, 11, 13)
    assert header.compression == compression and header.is_transactional and not header.is_control
    assert header.base_timestamp == SAMPLE[0].timestamp
    assert header.max_timestamp == max(r.timestamp for r in SAMPLE)
    assert records.crc_is_valid(batch)
    assert decoded(batch) == [r._replace(offset_delta=i) for i, r in enumerate(SAMPLE)]


@pytest.mark.parametrize("compression", CODECS)
def test_kafka_python_reads_our_batches(compression):
    batch = build_batch(SAMPLE, base_offset=5, producer_id=3, producer_epoch=0, base_sequence=0,
                        compression=compression)
    theirs = kafka_records.DefaultRecordBatch(batch)
    assert theirs.validate_crc()
    got = [(r.offset, r.timestamp, r.key, r.value, [tuple(h) for h in r.headers]) for r in theirs]
    assert got == [(5 + i, r.timestamp, r.key, r.value, list(r.headers)) for i, r in enumerate(SAMPLE)]


@pytest.mark.parametrize("compression", CODECS)
def test_we_read_kafka_python_batches(compression):
    builder = kafka_records.DefaultRecordBatchBuilder(
        magic=2, compression_type=compression, is_transactional=False, producer_id=9,
        producer_epoch=1, base_sequence=100, batch_size=1 << 20,
    )
    for i, r in enumerate(SAMPLE):
        builder.append(i, timestamp=r.timestamp, key=r.key, value=r.value, headers=list(r.headers))
    batch = bytes(builder.build())
    assert records.crc_is_valid(batch)
    header = BatchHeader.parse(batch)
    assert (header.producer_id, header.base_sequence, header.compression) == (9, 100, compression)
    assert decoded(batch) == [r._replace(offset_delta=i) for i, r in enumerate(SAMPLE)]


def test_patches_keep_the_batch_valid():
    batch = bytearray(build_batch(SAMPLE))
    records.set_base_offset(batch, 1000)
    records.set_partition_leader_epoch(batch, 3)
    assert records.crc_is_valid(batch)  # both fields are outside the CRC
    header = BatchHeader.parse(batch)
    assert (header.base_offset, header.partition_leader_epoch) == (1000, 3)

    records.set_max_timestamp(batch, 42, log_append_time=True)
    assert records.crc_is_valid(batch)
    header = BatchHeader.parse(batch)
    assert header.timestamp_type == records.LOG_APPEND_TIME and header.max_timestamp == 42
    assert [r.timestamp for r in iter_records(batch)] == [42, 42, 42]  # LogAppendTime applies to all


def test_patches_at_an_offset_in_a_larger_buffer():
    first, second = build_batch(SAMPLE[:1]), build_batch(SAMPLE[1:])
    buf = bytearray(first + second)
    records.set_max_timestamp(buf, 7, offset=len(first))
    assert records.crc_is_valid(buf, 0) and records.crc_is_valid(buf, len(first))
    assert BatchHeader.parse(buf, len(first)).max_timestamp == 7


def test_iter_batches():
    first, second = build_batch(SAMPLE[:1], base_offset=0), build_batch(SAMPLE[1:], base_offset=1)
    both = first + second
    assert [(pos, h.base_offset) for pos, h in iter_batches(both)] == [(0, 0), (len(first), 1)]
    partial = both[:-3]
    assert [h.base_offset for _, h in iter_batches(partial, allow_partial=True)] == [0]
    with pytest.raises(KafkaError) as info:
        list(iter_batches(partial))
    assert info.value.code == ErrorCode.CORRUPT_MESSAGE


def test_explicit_offset_deltas_and_control_batches():
    batch = build_batch([Record(offset_delta=0, key=b"\x00\x00\x00\x01", value=b"\x00\x00\x00\x00\x00\x05")],
                        control=True, transactional=True, producer_id=1, producer_epoch=0)
    header = BatchHeader.parse(batch)
    assert header.is_control and header.is_transactional
    assert next(iter_records(batch)).key == b"\x00\x00\x00\x01"


def test_every_truncation_is_corrupt_message():
    batch = build_batch(SAMPLE)
    for cut in range(len(batch)):
        with pytest.raises(KafkaError) as info:
            decoded(batch[:cut])
        assert info.value.code == ErrorCode.CORRUPT_MESSAGE


def test_bad_magic_and_empty_batches():
    batch = bytearray(build_batch(SAMPLE))
    batch[records.MAGIC_OFFSET] = 1
    with pytest.raises(KafkaError, match="magic"):
        decoded(batch)
    with pytest.raises(ValueError):
        build_batch([])


@settings(max_examples=300, deadline=1000)
@given(st.sampled_from([records.NO_COMPRESSION, records.GZIP]), st.data())
def test_mutated_batches_fail_cleanly(compression, data):
    batch = bytearray(build_batch(SAMPLE, compression=compression))
    for _ in range(data.draw(st.integers(1, 4))):
        batch[data.draw(st.integers(records.HEADER_SIZE - 4, len(batch) - 1))] = data.draw(st.integers(0, 255))
    try:
        decoded(batch)
    except KafkaError as e:
        assert e.code == ErrorCode.CORRUPT_MESSAGE
