"""Coordinator records built from Kafka's schemas read and write the bytes Kafka's formats have."""

import struct

import pytest

from kbroker.groups import records as group_records
from kbroker.groups.classic_model import GroupSnapshot, StoredMember
from kbroker.groups.offsets import CommittedOffset
from kbroker.protocol.coordinator_records import decode_key, decode_value, encode_key, encode_value, record_class
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


# -- __consumer_offsets as kbroker wrote it before the generated records ---------------------
# Bytes written by kbroker's earlier hand-written encoder (key hex, value hex or None): the
# generated records must read them, and write the same bytes for the same entries.

OLD_RECORDS = {
    "offset": ("00010002673100066f726465727300000002",
               "0003000000000000002a0000000500046d6574610000018bcfe56800"),
    "expiring": ("00010002673100066f726465727300000003",
                 "0001000000000000000700000000018bcfe568010000018bcff323a0"),
    "offset_tombstone": ("00010002673100066f726465727300000002", None),
    "group": ("000200026731",
              "00030008636f6e73756d657200000003000572616e676500036d2d310000018bcfe568020000000200"
              "036d2d31ffff0008636c69656e742d61000a2f3132372e302e302e31000493e00000afc80000000500"
              "0173756200000005000261736700036d2d3200087374617469632d320008636c69656e742d62000a2f"
              "3132372e302e302e320000ea60000027100000000000000000"),
    "group_tombstone": ("000200026731", None),
    "pending": ("03e80002673100066f7264657273000000010000000000002329",
                "0003000000000000000b00000004000274780000018bcfe56803"),
    "txn_end": ("03e90000000000002329", "01"),
}

GROUP = GroupSnapshot("g1", "consumer", 3, "range", "m-1", 1700000000002, (
    StoredMember("m-1", None, "client-a", "/127.0.0.1", 300000, 45000, b"\x00\x01sub",
                               b"\x00\x02asg"),
    StoredMember("m-2", "static-2", "client-b", "/127.0.0.2", 60000, 10000, b"", b"")))
OLD_ENTRIES = {
    "offset": group_records.OffsetCommitEntry(
        "g1", ("orders", 2), CommittedOffset(42, 5, "meta", 1700000000000, None, 77)),
    "expiring": group_records.OffsetCommitEntry(
        "g1", ("orders", 3), CommittedOffset(7, -1, "", 1700000000001, 1700000900000, 77)),
    "offset_tombstone": group_records.OffsetCommitEntry("g1", ("orders", 2), None),
    "group": group_records.GroupEntry("g1", GROUP),
    "group_tombstone": group_records.GroupEntry("g1", None),
    "pending": group_records.PendingOffsetEntry(
        9001, "g1", ("orders", 1), CommittedOffset(11, 4, "tx", 1700000000003, None, 77)),
    "txn_end": group_records.TransactionEndEntry(9001, True),
}


@pytest.mark.parametrize("name", OLD_RECORDS)
def test_records_written_before_the_generated_classes_still_load(name):
    key, value = (None if text is None else bytes.fromhex(text) for text in OLD_RECORDS[name])
    entry = group_records.decode(key, value, 77)
    assert entry == OLD_ENTRIES[name]
    match entry:
        case group_records.OffsetCommitEntry(group_id, partition, committed):
            written = group_records.offset_commit(group_id, partition, committed)
        case group_records.GroupEntry(group_id, snapshot):
            written = group_records.group_metadata(group_id, snapshot)
        case group_records.PendingOffsetEntry(producer_id, group_id, partition, committed):
            written = group_records.pending_offset(producer_id, group_id, partition, committed)
        case group_records.TransactionEndEntry(producer_id, commit):
            written = group_records.transaction_end(producer_id, commit)
    assert (bytes(written.key), None if written.value is None else bytes(written.value)) == (key, value)


def test_unreadable_offsets_records_are_value_errors():
    key, value = (bytes.fromhex(text) for text in OLD_RECORDS["offset"])
    for bad_key, bad_value in ((key, value[:-1]), (key[:-1], value), (key, b"\x00\x09" + value[2:])):
        with pytest.raises((ValueError, struct.error)):
            group_records.decode(bad_key, bad_value, 0)
    assert group_records.decode(b"\x00\x03" + key[2:], value, 0) is None  # a consumer group record
