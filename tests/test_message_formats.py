"""Message formats v0/v1 (kbroker/log/message_formats.py): up-conversion of Produce v0-2
payloads and down-conversion for Fetch v0-3, on message sets written here byte by byte."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kbroker.log.message_formats import (
    NO_TIMESTAMP, LegacyMessage, down_convert, parse_message_set, up_convert,
)
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.records import (
    GZIP, LOG_APPEND_TIME, LZ4, NO_COMPRESSION, SNAPPY, ZSTD, BatchHeader, Record, build_batch,
    compress, decompress, iter_records,
)


def message(magic: int, key: bytes | None, value: bytes | None, *, offset: int = 0,
            timestamp: int = 0, attributes: int = 0) -> bytes:
    """One message set entry, written from the format's definition."""
    body = struct.pack(">bb", magic, attributes)
    if magic == 1:
        body += struct.pack(">q", timestamp)
    for field in (key, value):
        body += struct.pack(">i", -1) if field is None else struct.pack(">i", len(field)) + field
    whole = struct.pack(">I", zlib.crc32(body)) + body
    return struct.pack(">qi", offset, len(whole)) + whole


def wrapper(magic: int, codec: int, inner: bytes, *, timestamp: int = 0, attributes: int = 0) -> bytes:
    return message(magic, None, compress(codec, inner), offset=2, timestamp=timestamp,
                   attributes=codec | attributes)


def test_magic_0_messages_have_no_timestamp():
    payload = message(0, b"k", b"v") + message(0, None, b"w", offset=1)
    assert parse_message_set(payload) == [
        LegacyMessage(0, NO_TIMESTAMP, b"k", b"v", NO_COMPRESSION),
        LegacyMessage(0, NO_TIMESTAMP, None, b"w", NO_COMPRESSION)]


@pytest.mark.parametrize("codec", [GZIP, SNAPPY, LZ4])
def test_a_wrapper_is_opened_and_its_codec_kept(codec):
    inner = b"".join(message(1, b"k%d" % i, b"v%d" % i, offset=i, timestamp=1000 + i) for i in range(3))
    batch = up_convert(wrapper(1, codec, inner))
    header = BatchHeader.parse(batch)
    assert header.compression == codec and header.records_count == 3
    assert [(r.offset_delta, r.timestamp, r.key, r.value) for r in iter_records(batch)] == [
        (i, 1000 + i, b"k%d" % i, b"v%d" % i) for i in range(3)]


def test_a_log_append_time_wrapper_gives_its_timestamp_to_the_inner_messages():
    inner = message(1, None, b"a", timestamp=5) + message(1, None, b"b", offset=1, timestamp=6)
    payload = wrapper(1, GZIP, inner, timestamp=99, attributes=0x08)
    assert [m.timestamp for m in parse_message_set(payload)] == [99, 99]


def test_up_conversion_keeps_keys_values_and_create_times():
    payload = message(1, b"k", None, timestamp=123) + message(1, None, b"v", offset=1, timestamp=124)
    batch = up_convert(payload)
    header = BatchHeader.parse(batch)
    assert (header.base_offset, header.last_offset_delta, header.producer_id) == (0, 1, -1)
    assert [(r.timestamp, r.key, r.value) for r in iter_records(batch)] == [(123, b"k", None), (124, None, b"v")]


@pytest.mark.parametrize("payload, why", [
    (message(1, b"k", b"v")[:-1], "message size"),
    (message(1, b"k", b"v") + b"\x00\x00", "truncated message set"),
    (b"", "empty message set"),
    (build_batch([Record(value=b"x")]), "magic 2 is not 0 or 1"),
    (wrapper(1, GZIP, wrapper(1, GZIP, message(1, None, b"x"))), "inside a compressed message"),
])
def test_bad_message_sets_are_corrupt(payload, why):
    with pytest.raises(KafkaError) as caught:
        parse_message_set(payload)
    assert caught.value.code == ErrorCode.CORRUPT_MESSAGE and why in caught.value.message


def test_a_bad_crc_is_corrupt():
    payload = bytearray(message(0, b"k", b"v"))
    payload[-1] ^= 1
    with pytest.raises(KafkaError, match="CRC"):
        parse_message_set(bytes(payload))


def stored(*batches: bytes) -> bytes:
    return b"".join(batches)


def test_down_conversion_to_magic_1_keeps_offsets_and_timestamps_and_drops_headers():
    batch = build_batch([Record(timestamp=7, key=b"a", value=b"1", headers=(("h", b"x"),)),
                         Record(timestamp=8, value=b"2")], base_offset=40)
    converted = down_convert(batch, 1, 40, 1 << 20)
    assert parse_message_set(converted) == [LegacyMessage(1, 7, b"a", b"1", NO_COMPRESSION),
                                            LegacyMessage(1, 8, None, b"2", NO_COMPRESSION)]
    second = 12 + struct.unpack_from(">i", converted, 8)[0]
    assert [struct.unpack_from(">q", converted, at)[0] for at in (0, second)] == [40, 41]


def test_down_conversion_to_magic_0_and_from_compressed_batches():
    batch = build_batch([Record(timestamp=7, value=b"1"), Record(timestamp=8, value=b"2")],
                        compression=GZIP)
    assert [m.value for m in parse_message_set(down_convert(batch, 0, 0, 1 << 20))] == [b"1", b"2"]
    assert {m.magic for m in parse_message_set(down_convert(batch, 0, 0, 1 << 20))} == {0}


def test_down_conversion_skips_control_batches_and_offsets_before_the_fetch_offset():
    data = stored(build_batch([Record(value=b"0"), Record(value=b"1")], base_offset=0),
                  build_batch([Record(value=b"marker")], base_offset=2, control=True,
                              transactional=True, producer_id=1),
                  build_batch([Record(value=b"3")], base_offset=3))
    assert [m.value for m in parse_message_set(down_convert(data, 1, 1, 1 << 20))] == [b"1", b"3"]


def test_log_append_time_batches_keep_their_timestamp_type():
    batch = bytearray(build_batch([Record(timestamp=1, value=b"x")], timestamp_type=LOG_APPEND_TIME))
    converted = down_convert(bytes(batch), 1, 0, 1 << 20)
    assert converted[8 + 4 + 4 + 1] & 0x08  # the attributes byte of the first message


def test_down_conversion_respects_max_bytes_but_returns_at_least_one_message():
    batch = build_batch([Record(timestamp=1, value=bytes(100)) for _ in range(5)])
    one = down_convert(batch, 1, 0, 10)
    assert len(parse_message_set(one)) == 1
    two = down_convert(batch, 1, 0, 2 * len(one))
    assert len(parse_message_set(two)) == 2


def test_zstd_cannot_be_down_converted():
    with pytest.raises(KafkaError) as caught:
        down_convert(build_batch([Record(value=b"x")], compression=ZSTD), 1, 0, 1 << 20)
    assert caught.value.code == ErrorCode.UNSUPPORTED_COMPRESSION_TYPE


def test_partial_last_batch_of_a_read_is_left_out():
    first = build_batch([Record(value=b"a")], base_offset=0)
    second = build_batch([Record(value=b"b")], base_offset=1)
    assert [m.value for m in parse_message_set(down_convert(first + second[:-3], 0, 0, 1 << 20))] == [b"a"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([0, 1]))
def test_any_bytes_are_messages_or_corrupt(data, magic):
    """A Produce v0-2 payload never fails otherwise than with a Kafka error."""
    payloads = [data, message(magic, None, data), wrapper(magic, GZIP, data),
                message(magic, b"k", b"v") + data]
    for payload in payloads:
        try:
            parse_message_set(payload)
        except KafkaError as exc:
            assert exc.code == ErrorCode.CORRUPT_MESSAGE


def entries(message_set: bytes) -> list[tuple[int, int]]:
    """(offset, attributes) of the top-level entries of a message set."""
    found, pos = [], 0
    while pos < len(message_set):
        offset, size = struct.unpack_from(">qi", message_set, pos)
        found.append((offset, message_set[pos + 12 + 5]))
        pos += 12 + size
    return found


@pytest.mark.parametrize("magic, codec", [(1, GZIP), (1, SNAPPY), (1, LZ4), (0, GZIP), (0, SNAPPY)])
def test_a_compressed_batch_goes_down_as_one_wrapper(magic, codec):
    batch = build_batch([Record(timestamp=10 + i, value=b"%d" % i) for i in range(3)],
                        base_offset=20, compression=codec)
    converted = down_convert(batch, magic, 21, 1 << 20)
    assert entries(converted) == [(22, codec)]  # the wrapper carries the last offset
    inner = memoryview(decompress(codec, parse_wrapper_value(converted))).cast("B")
    expected_offsets = [0, 1, 2] if magic == 1 else [20, 21, 22]  # relative in magic 1
    assert [offset for offset, _ in entries(bytes(inner))] == expected_offsets
    assert [m.value for m in parse_message_set(converted)] == [b"0", b"1", b"2"]


def parse_wrapper_value(message_set: bytes) -> bytes:
    magic = message_set[12 + 4]
    pos = 12 + 6 + (8 if magic == 1 else 0)
    (key_length,) = struct.unpack_from(">i", message_set, pos)
    pos += 4 + max(key_length, 0)
    (length,) = struct.unpack_from(">i", message_set, pos)
    return message_set[pos + 4:pos + 4 + length]


def test_lz4_goes_uncompressed_into_magic_0():
    batch = build_batch([Record(value=b"a"), Record(value=b"b")], compression=LZ4)
    assert entries(down_convert(batch, 0, 0, 1 << 20)) == [(0, 0), (1, 0)]
