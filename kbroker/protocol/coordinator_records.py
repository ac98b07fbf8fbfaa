"""The records Kafka's coordinators keep in their internal topics, built from the specs
generated from Kafka's own schemas (protocol_specs/records/<coordinator>/), like any message.

Each coordinator numbers its record types. A record key is the int16 record type followed by
the key struct at version 0; a record value is an int16 version followed by the value struct,
and a null value is a tombstone for its key.
"""

from __future__ import annotations

import struct
from functools import cache
from typing import Any

from kbroker.protocol.codec import decode_data, decode_struct, encode_data
from kbroker.protocol.exceptions import CorruptFrame
from kbroker.protocol.messages import build_message_class
from kbroker.protocol.specs import load
from kbroker.protocol.specs_path import SPECS_DIR

COORDINATORS = ("group", "transaction", "share")
_RECORD_TYPE = struct.Struct(">h")
_RECORD_TYPES: dict[type, int] = {}  # every record class built so far -> its record type

# The record classes are built at run time from their specs and have no static types: to a type
# checker, their objects are Any.


@cache
def _classes(coordinator: str) -> dict[str, Any]:
    classes = {}
    for path in sorted((SPECS_DIR / "records" / coordinator).glob("*.json")):
        spec = load(f"records/{coordinator}/{path.stem}")
        cls = build_message_class(spec)
        _RECORD_TYPES[cls] = spec["record_type"]
        classes[spec["name"]] = cls
    return classes


def record_class(coordinator: str, name: str) -> Any:
    """A key or value class by its schema name, e.g. ("group", "OffsetCommitValue")."""
    return _classes(coordinator)[name]


@cache
def _key_classes(coordinator: str) -> dict[int, Any]:
    return {_RECORD_TYPES[cls]: cls for name, cls in _classes(coordinator).items() if name.endswith("Key")}


def encode_key(key: Any) -> bytes:
    return encode_data(key, 0, prefix=_RECORD_TYPES[type(key)])


def decode_key(coordinator: str, data: bytes | memoryview) -> Any:
    """The key object of a record; its class says which record type it is."""
    try:
        (record_type,) = _RECORD_TYPE.unpack_from(data, 0)
    except struct.error as e:
        raise CorruptFrame("record key shorter than its type") from e
    cls = _key_classes(coordinator).get(record_type)
    if cls is None:
        raise CorruptFrame(f"unknown {coordinator} record type {record_type}")
    return decode_struct(cls, 0, data, 2)


def value_class_for(key: Any) -> Any:
    """The value class that goes with a key object (OffsetCommitKey -> OffsetCommitValue)."""
    coordinator = _coordinator_of(type(key))
    return _classes(coordinator)[type(key).__name__.removesuffix("Key") + "Value"]


def _coordinator_of(cls: type) -> str:
    for coordinator in COORDINATORS:
        if _classes(coordinator).get(cls.__name__) is cls:
            return coordinator
    raise ValueError(f"{cls.__name__} is not a coordinator record")


def encode_value(value: Any, version: int) -> bytes:
    return encode_data(value, version)


def decode_value(key: Any, data: bytes | memoryview) -> tuple[int, Any]:
    """(version, value object) of the value stored under `key`."""
    return decode_data(value_class_for(key), data)
