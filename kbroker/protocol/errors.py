"""Kafka error codes (generated from protocol_specs/errors.json) and the exception that carries one."""

from __future__ import annotations

from kbroker.protocol.error_codes import ErrorCode

__all__ = ["ErrorCode", "KafkaError"]


class KafkaError(Exception):
    """A failure that the broker reports to the client as a Kafka error code."""

    def __init__(self, code: ErrorCode, message: str | None = None):
        super().__init__(f"{code.name}: {message}" if message else code.name)
        self.code = code
        self.message = message
