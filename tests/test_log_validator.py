"""The validator's pure functions, called directly on memoryviews of batches."""

from __future__ import annotations

import dataclasses

import pytest

from kbroker.log import LogConfig
from kbroker.log.validator import (
    NO_TIMESTAMP, RecordErrors, record_fields, single_batch, stored_header, validate_produce_batch,
)
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.records import (
    GZIP, HEADER_SIZE, MAX_TIMESTAMP_OFFSET, BatchHeader, Record, build_batch, crc_is_valid,
)

NOW = 1_700_000_000_000


def batch(*values, keys=None, **kw) -> bytes:
    keys = keys or [b"k"] * len(values)
    return build_batch([Record(timestamp=NOW + i, key=k, value=v)
                        for i, (k, v) in enumerate(zip(keys, values))], **kw)


DEFAULTS = LogConfig()


def error_of(records, config=DEFAULTS, now=NOW) -> ErrorCode:
    with pytest.raises(KafkaError) as err:
        validate_produce_batch(memoryview(records), config, now, "t-0")
    return err.value.code


def test_valid_batch_passes_unchanged():
    data = batch(b"a", b"b")
    valid = validate_produce_batch(memoryview(data), LogConfig(), NOW, "t-0")
    assert bytes(valid.view) == data and not valid.header_changed
    assert valid.header == BatchHeader.parse(data)


def test_each_rule_has_its_error_code():
    data = bytearray(batch(b"a"))
    data[-1] ^= 1
    assert error_of(bytes(data)) == ErrorCode.CORRUPT_MESSAGE  # CRC
    assert error_of(batch(b"a") * 2) == ErrorCode.INVALID_RECORD  # two batches
    assert error_of(b"\x00" * 10) == ErrorCode.INVALID_RECORD
    assert error_of(batch(b"x" * 2000), dataclasses.replace(LogConfig(), max_message_bytes=1000)) \
        == ErrorCode.MESSAGE_TOO_LARGE
    assert error_of(batch(b"a"), now=NOW - 10**12) == ErrorCode.INVALID_TIMESTAMP
    compacted = dataclasses.replace(LogConfig(), cleanup_policy="compact")
    assert error_of(batch(b"a", keys=[None]), compacted) == ErrorCode.INVALID_RECORD
    assert error_of(build_batch([Record(timestamp=NOW, key=b"k", value=b"v")], control=True)) \
        == ErrorCode.INVALID_RECORD
    assert error_of(batch(b"a", producer_id=5, base_sequence=-1)) == ErrorCode.INVALID_RECORD


def test_single_batch_ignores_a_trailing_partial_batch():
    data = batch(b"a")
    view = single_batch(memoryview(data + data[:30]))
    assert bytes(view) == data


def test_recompression_to_the_topic_codec():
    config = dataclasses.replace(LogConfig(), compression_type="gzip")
    valid = validate_produce_batch(memoryview(batch(b"a" * 100, b"b")), config, NOW, "t-0")
    assert valid.header.compression == GZIP and crc_is_valid(bytes(valid.view))


def test_missing_max_timestamp_is_taken_from_records_and_resigned():
    data = bytearray(batch(b"a", b"b", b"c"))
    data[MAX_TIMESTAMP_OFFSET:MAX_TIMESTAMP_OFFSET + 8] = (-1).to_bytes(8, "big", signed=True)
    from kbroker.protocol.records import compute_crc
    data[17:21] = compute_crc(data).to_bytes(4, "big")
    valid = validate_produce_batch(memoryview(bytes(data)), LogConfig(), NOW, "t-0")
    assert valid.header_changed and valid.header.max_timestamp == NOW + 2
    stored = bytes(stored_header(valid, 40, 0, NO_TIMESTAMP)) + bytes(valid.view[HEADER_SIZE:])
    header = BatchHeader.parse(stored)
    assert (header.base_offset, header.max_timestamp) == (40, NOW + 2) and crc_is_valid(stored)


def test_log_append_time_stamps_the_stored_header():
    valid = validate_produce_batch(memoryview(batch(b"a")), LogConfig(), NOW, "t-0")
    stored = bytes(stored_header(valid, 7, 0, NOW + 99)) + bytes(valid.view[HEADER_SIZE:])
    header = BatchHeader.parse(stored)
    assert header.timestamp_type == 1 and header.max_timestamp == NOW + 99 and crc_is_valid(stored)


def test_record_fields_walks_keys_and_deltas():
    data = batch(b"a", b"b", keys=[b"k", None])
    fields = list(record_fields(data, BatchHeader.parse(data)))
    assert [(ts, off) for ts, off, _ in fields] == [(0, 0), (1, 1)]
    assert [key for _, _, key in fields] == [1, -1]


def test_records_out_of_range_are_named():
    """KIP-467: a batch whose timestamps leave the allowed range names the records that do."""
    hour = 3_600_000
    records = [Record(timestamp=ts, key=b"k", value=b"v") for ts in (NOW, NOW + 2 * hour, NOW - 1)]
    with pytest.raises(RecordErrors) as err:
        validate_produce_batch(memoryview(build_batch(records)), LogConfig(), NOW, "t-0")
    assert err.value.code == ErrorCode.INVALID_TIMESTAMP
    assert err.value.message == "One or more records have been rejected due to invalid timestamp"
    assert err.value.records == [(1, f"Timestamp {NOW + 2 * hour} of message with offset 1 is out "
                                     f"of range. The timestamp should be within [{NOW - (2**63 - 1)}, "
                                     f"{NOW + hour}]")]
