"""The records of __transaction_state: one per change of a transactional id's metadata, in
Kafka's formats, through the record classes generated from its schemas
(kbroker/protocol/coordinator_records.py).

Key: TransactionLogKey (record type 0, the transactional id), so the topic compacts by
transactional id as Kafka's does; a null value is the tombstone of an expired id. Value:
TransactionLogValue v1, as Kafka 4 writes it with transaction.version 1+ (previous and next
producer id, the client's transaction version). Like Kafka, the last epoch of a KIP-360 bump
is kept in memory only.

kbroker before 2026-12 wrote a value of its own, version 100 (TransactionLogValue v0's fields,
then the previous producer id and the last epoch); data dirs holding it still load.
"""

from __future__ import annotations

import struct

from kbroker.protocol.coordinator_records import (
    decode_key as decode_record_key, decode_value, encode_key as encode_record_key, encode_value,
    record_class,
)
from kbroker.protocol.exceptions import ProtocolError
from kbroker.protocol.records import Record
from kbroker.txn.state import NO_PRODUCER_EPOCH, TxnMetadata, TxnState

VALUE_VERSION = 1
LEGACY_VALUE_VERSION = 100

TransactionLogKey = record_class("transaction", "TransactionLogKey")
TransactionLogValue = record_class("transaction", "TransactionLogValue")


class CorruptRecord(ValueError):
    """A __transaction_state record kbroker cannot read."""


def encode_key(transactional_id: str) -> bytes:
    return encode_record_key(TransactionLogKey(transactional_id=transactional_id))


def encode(metadata: TxnMetadata, now_ms: int) -> Record:
    """The record storing this metadata (a tombstone for Dead)."""
    key = encode_key(metadata.transactional_id)
    if metadata.state is TxnState.DEAD:
        return Record(timestamp=now_ms, key=key, value=None)
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(metadata.partitions):
        by_topic.setdefault(topic, []).append(partition)
    value = TransactionLogValue(
        producer_id=metadata.producer_id, previous_producer_id=metadata.previous_producer_id,
        next_producer_id=metadata.next_producer_id, producer_epoch=metadata.producer_epoch,
        transaction_timeout_ms=metadata.timeout_ms, transaction_status=int(metadata.state),
        transaction_partitions=None if metadata.state is TxnState.EMPTY else [
            TransactionLogValue.PartitionsSchema(topic=topic, partition_ids=partitions)
            for topic, partitions in by_topic.items()],
        transaction_last_update_timestamp_ms=metadata.last_update_ms,
        transaction_start_timestamp_ms=metadata.start_ms,
        client_transaction_version=metadata.client_transaction_version)
    return Record(timestamp=now_ms, key=key, value=encode_value(value, VALUE_VERSION))


def decode_key(key: bytes | None) -> str:
    if key is None:
        raise CorruptRecord("record without a key")
    try:
        return decode_record_key("transaction", key).transactional_id
    except (ProtocolError, TypeError, ValueError) as exc:
        raise CorruptRecord(f"unreadable key: {exc}") from None


def decode(transactional_id: str, value: bytes) -> TxnMetadata:
    """The metadata a non-null value stores."""
    try:
        if struct.unpack_from(">h", value)[0] == LEGACY_VALUE_VERSION:
            return _decode_legacy(transactional_id, value)
        _, stored = decode_value(TransactionLogKey(), value)
        state = TxnState(stored.transaction_status)
        partitions = frozenset() if state is TxnState.EMPTY else frozenset(
            (entry.topic, partition) for entry in stored.transaction_partitions or ()
            for partition in entry.partition_ids)
        return TxnMetadata(transactional_id, stored.producer_id, stored.previous_producer_id,
                           stored.producer_epoch, NO_PRODUCER_EPOCH, stored.transaction_timeout_ms,
                           state, partitions, stored.transaction_start_timestamp_ms,
                           stored.transaction_last_update_timestamp_ms, stored.next_producer_id,
                           stored.client_transaction_version)
    except (ProtocolError, struct.error, ValueError) as exc:  # bad states and UTF-8 included
        raise CorruptRecord(f"unreadable value: {exc}") from None


_LEGACY_HEAD = struct.Struct(">hqhib")  # version, producer id, epoch, timeout, state
_LEGACY_TAIL = struct.Struct(">qqqh")  # last update, start, previous producer id, last epoch


def _decode_legacy(transactional_id: str, value: bytes) -> TxnMetadata:
    """Version 100: TransactionLogValue v0's fields, then the previous producer id and last epoch."""
    _, producer_id, epoch, timeout_ms, state = _LEGACY_HEAD.unpack_from(value)
    position = _LEGACY_HEAD.size
    (topics,) = struct.unpack_from(">i", value, position)
    position += 4
    partitions: set[tuple[str, int]] = set()
    for _ in range(topics):
        (length,) = struct.unpack_from(">h", value, position)
        topic = bytes(value[position + 2:position + 2 + length]).decode()
        position += 2 + length
        (count,) = struct.unpack_from(">i", value, position)
        partitions.update((topic, p) for p in struct.unpack_from(f">{count}i", value, position + 4))
        position += 4 + 4 * count
    last_update, start, previous_producer_id, last_epoch = _LEGACY_TAIL.unpack_from(value, position)
    if position + _LEGACY_TAIL.size != len(value):
        raise CorruptRecord("trailing bytes")
    return TxnMetadata(transactional_id, producer_id, previous_producer_id, epoch, last_epoch,
                       timeout_ms, TxnState(state), frozenset(partitions), start, last_update)
