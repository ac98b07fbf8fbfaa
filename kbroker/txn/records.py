"""The records of __transaction_state: one per change of a transactional id's metadata.

Key: Kafka's TransactionLogKey v0 (int16 version 0, int16-length transactional id), so the
topic compacts by transactional id as Kafka's does. A null value is the tombstone of an
expired id. Value (kbroker's own, version 100): int16 version, then Kafka's TransactionLogValue
v0 fields (producer id int64, epoch int16, timeout int32, state int8, partitions as an int32
count of (topic string, int32 count of int32 partitions), last update int64, start int64),
then what Kafka keeps only in memory: previous producer id int64, last epoch int16. Keeping
those lets a producer's retried InitProducerId succeed across a restart.
"""

from __future__ import annotations

import struct

from kbroker.protocol.records import Record
from kbroker.txn.state import TxnMetadata, TxnState

KEY_VERSION = 0
VALUE_VERSION = 100

_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_HEAD = struct.Struct(">hqhib")  # version, producer id, epoch, timeout, state
_TAIL = struct.Struct(">qqqh")  # last update, start, previous producer id, last epoch


class CorruptRecord(ValueError):
    """A __transaction_state record kbroker cannot read."""


def _string(value: str) -> bytes:
    data = value.encode()
    return _INT16.pack(len(data)) + data


def encode_key(transactional_id: str) -> bytes:
    return _INT16.pack(KEY_VERSION) + _string(transactional_id)


def encode(metadata: TxnMetadata, now_ms: int) -> Record:
    """The record storing this metadata (a tombstone for Dead)."""
    key = encode_key(metadata.transactional_id)
    if metadata.state is TxnState.DEAD:
        return Record(timestamp=now_ms, key=key, value=None)
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(metadata.partitions):
        by_topic.setdefault(topic, []).append(partition)
    parts = [_HEAD.pack(VALUE_VERSION, metadata.producer_id, metadata.producer_epoch,
                        metadata.timeout_ms, metadata.state), _INT32.pack(len(by_topic))]
    for topic, partitions in by_topic.items():
        parts.append(_string(topic))
        parts.append(struct.pack(f">i{len(partitions)}i", len(partitions), *partitions))
    parts.append(_TAIL.pack(metadata.last_update_ms, metadata.start_ms,
                            metadata.previous_producer_id, metadata.last_producer_epoch))
    return Record(timestamp=now_ms, key=key, value=b"".join(parts))


def decode_key(key: bytes | None) -> str:
    try:
        version, length = struct.unpack_from(">hh", key)
        if version != KEY_VERSION or len(key) != 4 + length:
            raise CorruptRecord(f"unexpected key version {version} or length")
        return key[4:].decode()
    except (TypeError, struct.error, ValueError) as exc:
        raise CorruptRecord(f"unreadable key: {exc}") from None


def decode(transactional_id: str, value: bytes) -> TxnMetadata:
    """The metadata a non-null value stores."""
    try:
        version, producer_id, epoch, timeout_ms, state = _HEAD.unpack_from(value)
        if version != VALUE_VERSION:
            raise CorruptRecord(f"unknown value version {version}")
        position = _HEAD.size
        (topics,) = _INT32.unpack_from(value, position)
        position += 4
        partitions = set()
        for _ in range(topics):
            (length,) = _INT16.unpack_from(value, position)
            topic = value[position + 2:position + 2 + length].decode()
            position += 2 + length
            (count,) = _INT32.unpack_from(value, position)
            partitions.update((topic, p) for p in struct.unpack_from(f">{count}i", value, position + 4))
            position += 4 + 4 * count
        last_update, start, previous_producer_id, last_epoch = _TAIL.unpack_from(value, position)
        if position + _TAIL.size != len(value):
            raise CorruptRecord("trailing bytes")
        return TxnMetadata(transactional_id, producer_id, previous_producer_id, epoch, last_epoch,
                           timeout_ms, TxnState(state), frozenset(partitions), start, last_update)
    except (struct.error, ValueError) as exc:  # UnicodeDecodeError and bad states included
        raise CorruptRecord(f"unreadable value: {exc}") from None
