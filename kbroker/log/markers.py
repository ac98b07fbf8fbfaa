"""Transaction markers: the control batches that end a producer's transaction in a partition.

Batch layout and record encoding come from kbroker.protocol.records; this module only knows
what a COMMIT/ABORT control record holds: key (version 0, type), value (version 0,
coordinator epoch).
"""

from __future__ import annotations

import struct

from kbroker.protocol.records import Record, build_batch, iter_records

CONTROL_ABORT = 0
CONTROL_COMMIT = 1
# Kafka's LegacyRecord.RECORD_OVERHEAD_V0: a smaller batch length field means a corrupt batch.
MIN_LENGTH_FIELD = 14

_CONTROL_KEY = struct.Struct(">hh")
_CONTROL_VALUE = struct.Struct(">hi")


def build_marker_batch(base_offset: int, producer_id: int, producer_epoch: int, control_type: int,
                       coordinator_epoch: int, timestamp: int, leader_epoch: int) -> bytes:
    """A control batch holding one end-transaction marker."""
    record = Record(timestamp=timestamp, key=_CONTROL_KEY.pack(0, control_type),
                    value=_CONTROL_VALUE.pack(0, coordinator_epoch))
    return build_batch([record], base_offset=base_offset, producer_id=producer_id,
                       producer_epoch=producer_epoch, transactional=True, control=True,
                       partition_leader_epoch=leader_epoch)


def parse_marker(batch) -> tuple[int, int]:
    """(control type, coordinator epoch) of a control batch's record.

    The coordinator epoch is -1 when the value is not a commit/abort marker value.
    """
    record = next(iter_records(batch))
    if record.key is None or len(record.key) < _CONTROL_KEY.size:
        raise ValueError("control record key too short")
    _version, control_type = _CONTROL_KEY.unpack_from(record.key)
    coordinator_epoch = -1
    if record.value is not None and len(record.value) >= _CONTROL_VALUE.size:
        coordinator_epoch = _CONTROL_VALUE.unpack_from(record.value)[1]
    return control_type, coordinator_epoch
