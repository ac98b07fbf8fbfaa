"""Kafka error codes, loaded from protocol_specs/errors.json so names and numbers come from data."""

from __future__ import annotations

import enum
import json

from kbroker.protocol.specs_path import SPECS_DIR


def _load_codes() -> dict[str, int]:
    with open(SPECS_DIR / "errors.json", encoding="utf-8") as f:
        return {entry["name"]: entry["code"] for entry in json.load(f)}


ErrorCode = enum.IntEnum("ErrorCode", _load_codes())
ErrorCode.__doc__ = "Every Kafka error code by its Kafka name (ErrorCode.CORRUPT_MESSAGE == 2)."


class KafkaError(Exception):
    """A failure that the broker reports to the client as a Kafka error code."""

    def __init__(self, code: ErrorCode, message: str | None = None):
        super().__init__(f"{code.name}: {message}" if message else code.name)
        self.code = code
        self.message = message
