"""Errors raised by the protocol layer; the server maps them to connection-level actions."""


class ProtocolError(Exception):
    """Base class: the bytes or the API version cannot be handled by the codec."""


class CorruptFrame(ProtocolError):
    """The frame is truncated, has trailing bytes, or holds an impossible value."""


class UnsupportedVersion(ProtocolError):
    """The API key or version is not described by protocol_specs/."""
