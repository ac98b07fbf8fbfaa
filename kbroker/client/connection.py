"""One connection to one broker, speaking the protocol through kbroker's sans-IO codec.

Requests may be pipelined (Kafka answers them in order). The versions used are the highest
both the broker and this client know, capped where a newer version changes the shape of a
request the tools fill in (e.g. Fetch v13 names topics by id).
"""

from __future__ import annotations

import importlib.metadata
import itertools
import ssl
import struct
from collections import deque
from functools import cache

import trio

from kbroker.client.sasl import SaslCredentials, SaslFailed
from kbroker.protocol import codec, messages

_SIZE = struct.Struct(">i")
# Highest version of each API the tools know how to fill in; lower ones are used if the broker says so.
WANTED_VERSIONS = {
    "ApiVersions": 3, "Metadata": 12, "CreateTopics": 7, "DeleteTopics": 5, "CreatePartitions": 3,
    "DescribeConfigs": 4, "IncrementalAlterConfigs": 1, "Produce": 9, "Fetch": 12,
    "ListOffsets": 7, "InitProducerId": 4, "FindCoordinator": 3, "ListGroups": 4,
    "DescribeGroups": 5, "OffsetFetch": 8, "OffsetCommit": 8, "DeleteGroups": 2,
    "DescribeLogDirs": 4, "SaslHandshake": 1, "SaslAuthenticate": 2,
    "JoinGroup": 7, "SyncGroup": 5, "Heartbeat": 4, "LeaveGroup": 4, "ConsumerGroupDescribe": 1,
    "DescribeClientQuotas": 1, "AlterClientQuotas": 1,
}


@cache
def software_version() -> str:
    """kbroker's version, sent as the client software version (KIP-511)."""
    try:
        return importlib.metadata.version("kbroker")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class ClientError(Exception):
    """The conversation with a broker failed (closed, refused, an API it does not serve)."""


def client_tls_context(cafile: str | None, certfile: str | None = None,
                       keyfile: str | None = None) -> ssl.SSLContext | None:
    """A client's TLS context trusting `cafile` (None: no TLS), with a certificate for mTLS."""
    if cafile is None:
        return None
    context = ssl.create_default_context(cafile=cafile)
    if certfile:
        context.load_cert_chain(certfile, keyfile)
    return context


class TlsSocket:
    """A TLS stream with the few socket methods Connection uses (send, recv, recv_into, close)."""

    def __init__(self, stream: trio.SSLStream):
        self._stream = stream

    @classmethod
    async def wrap(cls, sock: trio.socket.SocketType, context: ssl.SSLContext, host: str) -> TlsSocket:
        stream = trio.SSLStream(trio.SocketStream(sock), context, server_hostname=host)
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError as exc:
            sock.close()
            raise ClientError(f"TLS handshake with {host} failed: {exc.__cause__ or exc}") from None
        return cls(stream)

    async def send(self, data) -> int:
        await self._stream.send_all(data)
        return len(data)

    async def recv(self, size: int) -> bytes | bytearray:
        try:
            return await self._stream.receive_some(size)
        except trio.BrokenResourceError as exc:
            raise OSError(str(exc.__cause__ or exc)) from None

    async def recv_into(self, view: memoryview) -> int:
        data = await self.recv(len(view))
        view[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self._stream.transport_stream.socket.close()


class Connection:
    """One broker connection; requests may be pipelined, Kafka answers them in order."""

    def __init__(self, sock: trio.socket.SocketType | TlsSocket, client_id: str):
        self.sock = sock
        self.client_id = client_id
        self.versions: dict[str, int] = {}
        self._correlation = itertools.count(1)
        self._expected: deque[tuple[int, int, int]] = deque()
        self._buffer = bytearray()

    @classmethod
    async def open(cls, address: str, client_id: str = "kbroker-cli",
                   sasl: SaslCredentials | None = None, tls: ssl.SSLContext | None = None) -> Connection:
        """Connect to `host:port` (over TLS with `tls`), agree on API versions and authenticate
        if `sasl` says how."""
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ClientError(f"expected HOST:PORT, got {address!r}")
        try:
            sock = trio.socket.socket(trio.socket.AF_INET6 if ":" in host.strip("[]") else
                                      trio.socket.AF_INET)
            await sock.connect((host.strip("[]"), int(port)))
        except OSError as exc:
            raise ClientError(f"cannot connect to {address}: {exc.strerror or exc}") from None
        sock.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, 1)
        connection = cls(sock if tls is None else await TlsSocket.wrap(sock, tls, host.strip("[]")), client_id)
        await connection._negotiate_versions()
        if sasl is not None:
            await connection._authenticate(sasl)
        return connection

    async def _negotiate_versions(self) -> None:
        self.versions["ApiVersions"] = WANTED_VERSIONS["ApiVersions"]
        response = await self.request("ApiVersions", messages.ApiVersionsRequest(
            client_software_name=self.client_id, client_software_version=software_version()))
        if response.error_code:
            self.versions["ApiVersions"] = 0
            response = await self.request("ApiVersions", messages.ApiVersionsRequest())
        served = {api.api_key: (api.min_version, api.max_version) for api in response.api_keys}
        for name, wanted in WANTED_VERSIONS.items():
            low, high = served.get(messages.API_KEYS[name], (0, -1))
            if low <= min(wanted, high):
                self.versions[name] = min(wanted, high)

    async def _authenticate(self, credentials: SaslCredentials) -> None:
        """SaslHandshake, then SaslAuthenticate with each client token (KIP-152)."""
        response = await self.request("SaslHandshake", messages.SaslHandshakeRequest(
            mechanism=credentials.mechanism))
        if response.error_code:
            raise ClientError(f"the broker does not take SASL mechanism {credentials.mechanism} "
                              f"(it takes {', '.join(response.mechanisms)})")
        exchange = credentials.exchange()
        token = exchange.first()
        while token is not None:
            response = await self.request("SaslAuthenticate", messages.SaslAuthenticateRequest(
                auth_bytes=token))
            if response.error_code:
                raise ClientError(f"SASL authentication failed: {response.error_message or ''}")
            try:
                token = exchange.next(bytes(response.auth_bytes or b""))
            except SaslFailed as exc:
                raise ClientError(f"SASL authentication failed: {exc}") from None

    def version(self, api_name: str) -> int:
        """The version used for an API; ClientError if the broker does not serve one we know."""
        try:
            return self.versions[api_name]
        except KeyError:
            raise ClientError(f"the broker does not serve {api_name} in a version this client "
                              f"knows") from None

    async def send(self, api_name: str, body, expect_response: bool = True) -> None:
        """Send a request; its response (unless acks=0 says none comes) is left to receive()."""
        api_key, version = messages.API_KEYS[api_name], self.version(api_name)
        correlation_id = next(self._correlation)
        frame = codec.encode_request(api_key, version, correlation_id, self.client_id, body)
        if expect_response:
            self._expected.append((api_key, version, correlation_id))
        view = memoryview(frame)
        try:
            while view:
                view = view[await self.sock.send(view):]
        except OSError as exc:
            raise ClientError(f"sending {api_name}: {exc.strerror or exc}") from None

    async def receive(self):
        """The response to the oldest request sent and not yet received."""
        api_key, version, correlation_id = self._expected.popleft()
        frame = await self._receive_frame()
        got, body = codec.decode_response(api_key, version, frame)
        if got != correlation_id:
            raise ClientError(f"response {got} arrived for request {correlation_id}")
        return body

    async def request(self, api_name: str, body):
        await self.send(api_name, body)
        return await self.receive()

    async def _receive_frame(self) -> memoryview:
        while len(self._buffer) < 4:
            await self._receive_more()
        (size,) = _SIZE.unpack_from(self._buffer)
        if len(self._buffer) >= 4 + size:
            frame = self._buffer[4:4 + size]
            del self._buffer[:4 + size]
            return memoryview(frame)
        frame = bytearray(size)  # a large frame is received straight into place
        have = len(self._buffer) - 4
        frame[:have] = memoryview(self._buffer)[4:]
        self._buffer.clear()
        view = memoryview(frame)
        while have < size:
            have += await self._recv(self.sock.recv_into(view[have:]))
        return view

    async def _receive_more(self) -> None:
        self._buffer += await self._recv(self.sock.recv(256 * 1024))

    @staticmethod
    async def _recv(receiving):
        """Await a recv or recv_into; a closed connection or a socket error is a ClientError."""
        try:
            data = await receiving
        except OSError as exc:
            raise ClientError(f"receiving: {exc.strerror or exc}") from None
        if not data:
            raise ClientError("the broker closed the connection")
        return data

    def close(self) -> None:
        self.sock.close()
