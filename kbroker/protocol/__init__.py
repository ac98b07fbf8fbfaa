"""Sans-IO Kafka protocol: message classes and codecs generated from protocol_specs/."""

from kbroker.protocol.codec import (
    decode_data, decode_request, decode_request_header, decode_response, encode_data,
    encode_request, encode_response,
)
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.exceptions import CorruptFrame, ProtocolError, UnsupportedVersion
from kbroker.protocol.region import FileRegion

__all__ = [
    "CorruptFrame", "ErrorCode", "FileRegion", "KafkaError", "ProtocolError", "UnsupportedVersion",
    "decode_data", "decode_request", "decode_request_header", "decode_response", "encode_data",
    "encode_request", "encode_response",
]
