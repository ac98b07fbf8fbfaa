"""Coordinator records built from Kafka's schemas read and write the bytes Kafka's formats have."""

import pytest

from kbroker.groups import records as group_records
from kbroker.groups.offsets import CommittedOffset
from kbroker.protocol.coordinator_records import (
    decode_key, decode_value, encode_key, encode_value, record_class,
)
from kbroker.protocol.exceptions import CorruptFrame


def test_offset_commit_matches_the_stored_format():
    stored = group_records.offset_commit("g", ("t", 3), CommittedOffset(42, 7, "meta", 1000, None, 0))
    key = decode_key("group", stored.key)
    assert type(key).__name__ == "OffsetCommitKey"
    assert (key.group, key.topic, key.partition) == ("g", "t", 3)
    version, value = decode_value(key, stored.value)
    assert (version, value.offset, value.leader_epoch, value.metadata, value.commit_timestamp) == (
        3, 42, 7, "meta", 1000)
    assert encode_key(key) == bytes(stored.key)
    assert encode_value(value, 3) == bytes(stored.value)


def test_every_record_type_round_trips():
    for coordinator, names in {"group": ["GroupMetadataKey", "ConsumerGroupMetadataKey"],
                               "transaction": ["TransactionLogKey"],
                               "share": ["ShareSnapshotKey", "ShareUpdateKey"]}.items():
        for name in names:
            key = record_class(coordinator, name)()
            assert type(decode_key(coordinator, encode_key(key))) is type(key)


def test_transaction_value_tagged_fields_default():
    value = record_class("transaction", "TransactionLogValue")()
    assert value.previous_producer_id == -1 and value.client_transaction_version == 0


def test_unknown_or_short_keys_are_corrupt():
    with pytest.raises(CorruptFrame):
        decode_key("group", b"\x7f\x00")
    with pytest.raises(CorruptFrame):
        decode_key("group", b"\x00")
