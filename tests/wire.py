"""A minimal Kafka client built on kbroker's own codec, for tests that need exact requests
(bad input, exact error codes, versions no installed client sends)."""

from __future__ import annotations

import itertools
import socket
import struct

from kbroker.protocol import codec, messages


class WireClient:
    """One blocking connection speaking raw Kafka requests."""

    def __init__(self, bootstrap: str, timeout_s: float = 10.0, client_id: str = "wire-test",
                 source_address: tuple[str, int] | None = None):
        host, port = bootstrap.split(",")[0].rsplit(":", 1)  # a list: its first broker
        self.sock = socket.create_connection((host, int(port)), timeout=timeout_s,
                                             source_address=source_address)
        self.client_id = client_id
        self._correlation = itertools.count(1)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "WireClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive_frame(self) -> bytes:
        size = struct.unpack(">i", self._receive_exactly(4))[0]
        return self._receive_exactly(size)

    def _receive_exactly(self, count: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < count:
            chunk = self.sock.recv(count - len(chunks))
            if not chunk:
                raise ConnectionError("connection closed by the broker")
            chunks += chunk
        return bytes(chunks)

    def is_closed_by_peer(self) -> bool:
        """True once the broker has closed this connection."""
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True

    def request(self, api_name: str, version: int, **fields):
        """Send one request built from keyword fields and return the decoded response body."""
        api_key = messages.API_KEYS[api_name]
        body = messages.request_class(api_key)(**fields)
        correlation_id = next(self._correlation)
        self.send_raw(codec.encode_request(api_key, version, correlation_id, self.client_id, body))
        got_correlation, response = codec.decode_response(api_key, version, self.receive_frame())
        assert got_correlation == correlation_id
        return response
