"""One client connection: cut its byte stream into frames, dispatch each, send the answers.

A connection's requests are handled one at a time and answered in order, as Kafka does; a
long-polling fetch therefore delays only its own connection. Anything malformed closes that
connection alone. TlsConnection runs TLS through ssl.MemoryBIO on the same plain socket.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from functools import partial

import trio

import kbroker.api  # noqa: F401  (registers every handler)
from kbroker.api.context import ClientSession, RequestContext
from kbroker.api.quotas import apply_request_quota
from kbroker.api.registry import HANDLERS, CloseConnection, api_versions
from kbroker.api.routing import misdirected
from kbroker.api.security import exchange_raw_token
from kbroker.api.versions import unsupported_version_response
from kbroker.broker import Broker
from kbroker.limits import RepeatedWarnings, RequestMemory
from kbroker.listeners import ListenerConfig
from kbroker.protocol import FileRegion, codec, messages
from kbroker.protocol.codec import ProtocolError
from kbroker.protocol.error_responses import error_response
from kbroker.protocol.errors import ErrorCode
from kbroker.security.principal import NoMatchingRule, PrincipalMapper, distinguished_name

log = logging.getLogger("kbroker.server")
repeated_warnings = RepeatedWarnings(log)

_SIZE = struct.Struct(">i")
RECEIVE_CHUNK = 256 * 1024  # also the largest request read without a queued.max.request.bytes reservation
_RECEIVE_STEP = 1024 * 1024  # most bytes of a large frame received between two checkpoints
_GROWTH_MAX = 8 * 1024 * 1024  # a large frame's buffer grows by at most this much at once
_NOTHING = memoryview(b"")
_SEND_PARTS_MAX = 512  # iovecs per sendmsg, below IOV_MAX
_TLS_CHUNK = 256 * 1024  # most bytes encrypted before they are sent
_API_VERSIONS_KEY = messages.API_KEYS["ApiVersions"]
_ALLOWED_BEFORE_AUTHENTICATION = frozenset(
    messages.API_KEYS[name] for name in ("ApiVersions", "SaslHandshake", "SaslAuthenticate"))


class ConnectionClosed(Exception):
    """The peer closed the connection, or we decided to."""


@dataclass(slots=True)
class BoundListener:
    """A listener the server listens on: its settings, the port bound and, for SSL and
    SASL_SSL, its TLS context (kbroker/tls.py)."""

    config: ListenerConfig
    host: str
    port: int
    tls: ssl.SSLContext | None
    principals: PrincipalMapper | None  # ssl.principal.mapping.rules, with TLS
    node_id: int  # the simulated broker (--brokers N) this listener belongs to
    # With TLS: where a connection receives encrypted bytes, handed to its TLS layer before the
    # task yields, so the connections of a listener (one trio loop) can share it.
    encrypted_input: memoryview = memoryview(b"")

    @property
    def advertised(self) -> tuple[str, int]:
        return self.config.advertised_host, self.config.advertised_port or self.port


class Connection:
    """One client connection: framing in, responses out.

    The socket is a plain non-blocking stdlib socket: every receive and send is tried at once
    and only waits (trio.lowlevel.wait_readable/wait_writable) when the kernel says it would
    block. Going through trio's socket wrapper cost two scheduler passes and a cancel scope per
    call, about a third of a small request's broker time. Each request still passes at least
    one checkpoint, so a client that pipelines requests cannot starve the others.
    """

    def __init__(self, broker: Broker, sock: socket.socket, peer: str, memory: RequestMemory,
                 listener: BoundListener):
        self.broker = broker
        self._api_versions = api_versions(broker.release)
        self.sock = sock
        self.peer = peer
        self._memory = memory
        self._reserved = 0  # bytes of `memory` the request being read or handled holds
        self._ip = peer.rpartition(":")[0]  # what repeated warnings are counted by
        self.session = ClientSession(peer, listener.config.name, listener.config.security_protocol,
                                     listener.advertised, authenticated=not listener.config.uses_sasl,
                                     node_id=listener.node_id)
        self._sasl = listener.config.uses_sasl  # requests must wait for (re-)authentication
        self.waiting_since: float | None = None  # when it began to wait for a request, if it is
        self.cancel_scope = trio.CancelScope()  # cancelled to close an idle connection
        self._received = _NOTHING  # received bytes not yet handed out
        self._max_frame = broker.config["socket.request.max.bytes"]
        self._max_sasl_frame = broker.config["sasl.server.max.receive.size"]  # before authentication
        self._waited = False  # whether the current request has passed a checkpoint

    async def run(self) -> None:
        try:
            with self.cancel_scope:
                self.waiting_since = trio.current_time()
                await self._start()
                while True:
                    self.waiting_since = trio.current_time()
                    frame = await self._receive_frame()
                    self.waiting_since = None
                    muted_ms = await self._handle_frame(frame)
                    self._release_memory()
                    if muted_ms:  # a quota's throttle (KIP-219): the next request waits
                        await trio.sleep(muted_ms / 1000)
                    if not self._waited:
                        await trio.lowlevel.checkpoint()
                    self._waited = False
        except (ConnectionClosed, CloseConnection):
            pass
        except ssl.SSLError as exc:
            repeated_warnings.warning(("tls", self._ip), "connection %s: TLS failed (%s), closing",
                                      self.peer, exc.reason or exc)
        except OSError as exc:
            if exc.errno not in (errno.ECONNRESET, errno.EPIPE, errno.EBADF):
                log.info("connection %s: %s", self.peer, exc)
        except Exception:
            # A bug must cost one connection, never the broker.
            log.exception("connection %s: unexpected error, closing", self.peer)
        finally:
            self._release_memory()

    async def _start(self) -> None:
        """What a connection does before its first request: nothing without TLS."""

    def _release_memory(self) -> None:
        self._memory.release(self._reserved)
        self._reserved = 0

    async def _wait_readable(self) -> None:
        self._waited = True
        await trio.lowlevel.wait_readable(self.sock)

    async def _wait_writable(self) -> None:
        self._waited = True
        await trio.lowlevel.wait_writable(self.sock)

    async def _receive_more(self) -> None:
        while True:
            try:
                data = self.sock.recv(RECEIVE_CHUNK)
                break
            except BlockingIOError:
                await self._wait_readable()
        if not data:
            raise ConnectionClosed
        self._received = memoryview(bytes(self._received) + data if self._received else data)

    async def _receive_frame(self) -> memoryview:
        """Return the next request frame (without its size prefix).

        A frame that arrived whole in one receive is a view of the received bytes (immutable,
        so no copy is needed). The rest of a frame that did not is received straight into a
        buffer that grows as its bytes arrive, so an announced size costs nothing until sent;
        a frame larger than one receive first reserves its size in queued.max.request.bytes.
        """
        while len(self._received) < 4:
            await self._receive_more()
        (size,) = _SIZE.unpack_from(self._received)
        limit, setting = self._max_frame, "socket.request.max.bytes"
        if not self.session.authenticated:
            limit, setting = min(limit, self._max_sasl_frame), "sasl.server.max.receive.size"
        if size < (1 if self.session.sasl_raw_tokens else 8) or size > limit:
            repeated_warnings.warning(
                ("frame size", self._ip),
                "connection %s: frame size %d outside 8..%d (%s), closing",
                self.peer, size, limit, setting,
            )
            raise ConnectionClosed
        end = 4 + size
        if len(self._received) >= end:
            whole = self._received[4:end]
            self._received = self._received[end:] if len(self._received) > end else _NOTHING
            return whole
        if size > RECEIVE_CHUNK:
            await self._memory.reserve(size)
            self._reserved = size
        frame = bytearray(self._received[4:])
        self._received = _NOTHING
        have = len(frame)
        while have < size:
            if have == len(frame):  # full: double it (8 MiB at most at once), up to the frame's size
                frame += bytes(min(size - have, max(have, RECEIVE_CHUNK), _GROWTH_MAX))
            received = await self._receive_into(memoryview(frame)[have:have + _RECEIVE_STEP])
            if received == 0:
                raise ConnectionClosed
            have += received
            if have < size:  # a fast sender of a huge frame must not keep the others waiting
                self._waited = True
                await trio.lowlevel.checkpoint()
        return memoryview(frame)

    async def _receive_into(self, view: memoryview) -> int:
        while True:
            try:
                return self.sock.recv_into(view)
            except BlockingIOError:
                await self._wait_readable()

    async def _handle_frame(self, frame: memoryview) -> int:
        """Handle one request; returns how long (ms) a quota mutes the connection after it."""
        if self.session.sasl_raw_tokens:
            return await self._handle_raw_sasl_token(frame)
        started = time.perf_counter()
        try:
            header, body_offset = codec.decode_request_header(frame)
        except ProtocolError as exc:
            repeated_warnings.warning(("bad header", self._ip), "connection %s: bad request header (%s), closing",
                             self.peer, exc)
            raise ConnectionClosed from None
        entry = HANDLERS.get(header.request_api_key)
        if entry is None or not self._api_versions.serves(entry.api_key, header.request_api_version):
            if header.request_api_key == _API_VERSIONS_KEY:
                await self._send(codec.encode_response(
                    _API_VERSIONS_KEY, 0, header.correlation_id, unsupported_version_response(self._api_versions)
                ))
                return 0
            client = self.session.client_software or f"client-id:{header.client_id}"
            name = entry.name if entry is not None else f"api key {header.request_api_key}"
            self.broker.api_usage.record_unsupported(client, name, header.request_api_version)
            repeated_warnings.warning(
                ("unsupported version", client, name, header.request_api_version),
                "connection %s: %s sent %s version %d, which this broker does not serve, closing",
                self.peer, client, name, header.request_api_version,
            )
            raise ConnectionClosed
        if self._sasl and entry.api_key not in _ALLOWED_BEFORE_AUTHENTICATION \
                and not self.session.may_send_requests(time.monotonic()):
            repeated_warnings.warning(("unauthenticated", self._ip),
                             "connection %s: %s %s, closing", self.peer, entry.name,
                             "after its SASL session expired" if self.session.authenticated
                             else "before SASL authentication")
            raise ConnectionClosed
        try:
            request = codec.decode_request(header, frame, body_offset)
        except ProtocolError as exc:
            repeated_warnings.warning(("malformed", self._ip, entry.name),
                             "connection %s: malformed %s request (%s), closing", self.peer,
                             entry.name, exc)
            raise ConnectionClosed from None
        self.broker.api_usage.record(
            self.session.client_software or f"client-id:{header.client_id}", entry.name,
            header.request_api_version,
        )
        context = RequestContext(
            self.broker, self.session, header.request_api_version, header.correlation_id,
            header.client_id or "", request_bytes=len(frame),
        )
        faults = self.broker.faults
        if faults.by_api and (fault := faults.take(entry.api_key, context.client_id, self.session.node_id)):
            response = await faults.answer(fault, entry.api_key, context, request,
                                           partial(entry.handle, context, request))
        elif self.broker.several_brokers and misdirected(entry.api_key, request, context):
            response = error_response(entry.api_key, header.request_api_version, request,
                                      ErrorCode.NOT_COORDINATOR)
        else:
            response = await entry.handle(context, request)
        if self.broker.throttles.active:
            apply_request_quota(context, response, time.perf_counter() - started)
        if response is not None:
            await self._send(codec.encode_response(
                entry.api_key, header.request_api_version, header.correlation_id, response
            ))
        self.broker.metrics.request_done(entry.name, header.request_api_version,
                                         time.perf_counter() - started, response)
        if context.close_after_response:
            raise ConnectionClosed
        return context.throttle_ms

    async def _handle_raw_sasl_token(self, frame: memoryview) -> int:
        """After SaslHandshake v0 the SASL tokens travel bare in size-prefixed frames, both ways."""
        context = RequestContext(self.broker, self.session, 0, 0, "", request_bytes=len(frame))
        reply = await exchange_raw_token(context, bytes(frame))
        if reply is None:
            raise ConnectionClosed
        await self._send([_SIZE.pack(len(reply)), reply])
        return 0

    async def _send(self, parts: list) -> None:
        """Send a response: runs of buffers with one sendmsg (writev), FileRegions with sendfile."""
        buffers: list[bytes | bytearray | memoryview] = []
        for part in parts:
            if isinstance(part, FileRegion):
                if buffers:
                    await self._send_all(buffers)
                    buffers = []
                await self._send_file_region(part)
            else:
                buffers.append(part)
        if buffers:
            await self._send_all(buffers)

    async def _send_all(self, buffers: list) -> None:
        views = [memoryview(buffer).cast("B") for buffer in buffers]
        while views:
            try:
                sent = self.sock.sendmsg(views[:_SEND_PARTS_MAX])
            except BlockingIOError:
                await self._wait_writable()
                continue
            while views and sent >= len(views[0]):
                sent -= len(views.pop(0))
            if sent:
                views[0] = views[0][sent:]

    async def _send_file_region(self, region: FileRegion) -> None:
        """Send bytes of a segment file without copying them through Python."""
        position, remaining = region.position, region.size
        fd = self.sock.fileno()
        while remaining > 0:
            try:
                sent = os.sendfile(fd, region.fd, position, remaining)
            except BlockingIOError:
                await self._wait_writable()
                continue
            if sent == 0:
                raise ConnectionClosed  # the file is shorter than the region: never send garbage
            position += sent
            remaining -= sent


class TlsConnection(Connection):
    """A connection of an SSL or SASL_SSL listener: TLS through memory buffers (ssl.MemoryBIO),
    so the socket stays a plain non-blocking one, tried at once and waited on only when the
    kernel would block. Segment bytes cannot go through sendfile: they are read (os.pread) and
    encrypted, at most _TLS_CHUNK at a time."""

    def __init__(self, broker: Broker, sock: socket.socket, peer: str, memory: RequestMemory,
                 listener: BoundListener):
        super().__init__(broker, sock, peer, memory, listener)
        if listener.tls is None or listener.principals is None:
            raise ValueError(f"listener {listener.config.name} has no TLS")
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._raw = listener.encrypted_input
        self._tls = listener.tls.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._principals = listener.principals

    async def _start(self) -> None:
        """The TLS handshake; a client certificate names the principal (kbroker/security/principal.py).

        A failed handshake (no or an untrusted client certificate, not TLS at all) sends its TLS
        alert and closes after connection.failed.authentication.delay.ms, as Kafka does.
        """
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                await self._fill()
            except ssl.SSLError:
                await self._flush()
                await trio.sleep(self.broker.config["connection.failed.authentication.delay.ms"] / 1000)
                raise
        await self._flush()
        certificate = self._tls.getpeercert()
        if certificate:
            distinguished = distinguished_name(certificate.get("subject", ()))
            try:
                self.session.principal = "User:" + self._principals.name(distinguished)
            except NoMatchingRule as exc:
                log.info("connection %s: %s (ssl.principal.mapping.rules), closing", self.peer, exc)
                raise ConnectionClosed from None

    async def _fill(self) -> None:
        """Hand the TLS layer the next bytes the client sent."""
        received = await super()._receive_into(self._raw)  # from the socket itself
        if received == 0:
            raise ConnectionClosed
        self._incoming.write(self._raw[:received])

    async def _flush(self) -> None:
        """Send what the TLS layer has written."""
        while self._outgoing.pending:
            data = memoryview(self._outgoing.read())
            while data:
                try:
                    sent = self.sock.send(data)
                except BlockingIOError:
                    await self._wait_writable()
                    continue
                data = data[sent:]

    async def _receive_into(self, view: memoryview) -> int:
        while True:
            try:
                return self._tls.read(len(view), view)  # type: ignore[return-value]  # a count, given a buffer
            except ssl.SSLWantReadError:
                await self._flush()
                await self._fill()
            except ssl.SSLZeroReturnError:
                return 0

    async def _receive_more(self) -> None:
        while True:
            try:
                data = self._tls.read(RECEIVE_CHUNK)
                break
            except ssl.SSLWantReadError:
                await self._flush()
                await self._fill()
            except ssl.SSLZeroReturnError:
                raise ConnectionClosed from None
        if not data:
            raise ConnectionClosed
        self._received = memoryview(bytes(self._received) + data if self._received else data)

    async def _send_all(self, buffers: list) -> None:
        for buffer in buffers:
            view = memoryview(buffer).cast("B")
            for start in range(0, len(view), _TLS_CHUNK):
                self._tls.write(view[start:start + _TLS_CHUNK])
                await self._flush()

    async def _send_file_region(self, region: FileRegion) -> None:
        position, remaining = region.position, region.size
        while remaining > 0:
            chunk = os.pread(region.fd, min(remaining, _TLS_CHUNK), position)
            if not chunk:
                raise ConnectionClosed  # the file is shorter than the region: never send garbage
            self._tls.write(chunk)
            await self._flush()
            position += len(chunk)
            remaining -= len(chunk)
