"""The thin trio server: the listeners, one task per connection (kbroker/connection.py),
the broker's background tasks and the HTTP port, until cancelled.
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
import time
from dataclasses import replace
from functools import partial

import trio

from kbroker.broker import Broker
from kbroker.connection import RECEIVE_CHUNK, BoundListener, Connection, TlsConnection, repeated_warnings
from kbroker.http.app import HttpApp
from kbroker.http.server import serve_http
from kbroker.limits import ConnectionQuotas, RequestMemory
from kbroker.listeners import CannotListen, ListenerConfig, host_port
from kbroker.tls import TlsSetupError, principal_mapper, server_context

log = logging.getLogger("kbroker.server")

_ACCEPT_BACKOFF_S = (0.01, 1.0)  # pause after accept() fails for lack of descriptors, doubling
_PORT_BLOCK_ATTEMPTS = 20  # free first ports tried until the ports after it are free too


class Server:
    """Accepts connections and runs each in a task of the server's nursery.

    With `--brokers N` every listener is opened once per simulated node, on its port + the node's
    index (port 0: a free one each); a connection's session knows its node. A node's accept loops
    and connections run in one cancel scope, so stop_node() closes them all at once and
    start_node() binds the same ports again (the broker's `node_switch`).
    """

    def __init__(self, broker: Broker):
        self.broker = broker
        self.open_connections: set[Connection] = set()
        self.quotas = ConnectionQuotas(broker.config, broker.quotas)
        self.memory = RequestMemory(broker.config["queued.max.request.bytes"])
        self.nodes: dict[int, list[BoundListener]] = {}  # every node's listeners, in node order
        # the nodes accepting connections: the scope of their tasks, and set once those ended
        self._serving: dict[int, tuple[trio.CancelScope, trio.Event]] = {}
        self._nursery: trio.Nursery | None = None

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Open every listener of every node, then accept on each; reports the BoundListeners
        once clients can connect. A listener that cannot be set up stops it all with CannotListen."""
        free_ports = self.broker.several_brokers and any(
            settings.port == 0 for settings in self.broker.config.listeners())
        for attempt in range(_PORT_BLOCK_ATTEMPTS if free_ports else 1):
            try:
                bound = await self._open_all()
                break
            except CannotListen:
                if attempt == _PORT_BLOCK_ATTEMPTS - 1 or not free_ports:
                    raise
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._close_idle_connections)
            for node_id, pairs in bound.items():
                self.nodes[node_id] = [listener for listener, _ in pairs]
                self.broker.cluster.brokers[node_id].endpoints = {
                    listener.config.name: listener.advertised for listener in self.nodes[node_id]}
                self._serving[node_id] = await nursery.start(self._serve_node, pairs)
            self.broker.node_switch = self
            task_status.started([listener for listeners in self.nodes.values() for listener in listeners])

    async def _open_all(self) -> dict[int, list[tuple[BoundListener, trio.socket.SocketType]]]:
        """Every node's listeners. A port 0 listener takes a free port for the first node and the
        others take the ports after it as fixed ports do (_node_listener), so that `--port` of
        that first one starts them all again."""
        bound: dict[int, list[tuple[BoundListener, trio.socket.SocketType]]] = {}
        first_ports: dict[str, int] = {}
        try:
            for index, node_id in enumerate(self.broker.node_ids):
                bound[node_id] = []
                listeners = self.broker.config.listeners()
                for settings in listeners:
                    if index and settings.port == 0:
                        settings = replace(settings, port=first_ports[settings.name])
                    listener, sock = await self._open(
                        _node_listener(settings, index * len(listeners)), node_id)
                    first_ports.setdefault(settings.name, listener.port)
                    bound[node_id].append((listener, sock))
        except BaseException:
            for pairs in bound.values():
                for _, sock in pairs:
                    sock.close()
            raise
        return bound

    async def _serve_node(self, pairs, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        ended = trio.Event()
        try:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    for listener, sock in pairs:
                        nursery.start_soon(self._accept_connections, listener, sock)
                    task_status.started((scope, ended))
        finally:
            ended.set()

    async def stop_node(self, node_id: int) -> None:
        """Stop one simulated broker: the model moves its leaderships (kbroker/cluster.py B2),
        then its listeners close and its connections are dropped."""
        self.broker.cluster.stop_broker(node_id)
        serving = self._serving.pop(node_id, None)
        if serving is not None:
            scope, ended = serving
            scope.cancel()
            await ended.wait()  # its listeners are closed once the caller hears it stopped
            log.info("node %d stopped", node_id)

    async def start_node(self, node_id: int) -> None:
        """Start a stopped simulated broker again on the ports it had; CannotListen when one of
        them has been taken meanwhile."""
        self.broker.cluster._broker(node_id)  # BROKER_NOT_AVAILABLE for an unknown node
        if node_id in self._serving or self._nursery is None:
            return
        pairs = []
        try:
            for listener in self.nodes[node_id]:
                pairs.append(await self._open(replace(listener.config, port=listener.port), node_id))
        except BaseException:
            for _, sock in pairs:
                sock.close()
            raise
        self.broker.cluster.start_broker(node_id)
        self._serving[node_id] = await self._nursery.start(self._serve_node, pairs)
        log.info("node %d started", node_id)

    async def _open(self, listener: ListenerConfig, node_id: int) -> tuple[BoundListener, trio.socket.SocketType]:
        tls = principals = None
        if listener.uses_tls:
            try:
                tls = server_context(self.broker.config, listener)
            except TlsSetupError as exc:
                raise CannotListen(f"cannot set up listener {listener.name}: {exc}") from None
            principals = principal_mapper(self.broker.config, listener)
        host = listener.host or "0.0.0.0"
        sock = trio.socket.socket(
            trio.socket.AF_INET6 if ":" in host else trio.socket.AF_INET, trio.socket.SOCK_STREAM
        )
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
        try:
            await sock.bind((host, listener.port))
        except OSError as exc:
            sock.close()
            raise CannotListen(f"cannot listen on {host_port(host, listener.port)} (listeners): "
                               f"{exc.strerror}") from None
        sock.listen(512)
        encrypted_input = memoryview(bytearray(RECEIVE_CHUNK if tls else 0))
        return BoundListener(listener, host, sock.getsockname()[1], tls, principals, node_id,
                             encrypted_input), sock

    async def _accept_connections(self, listener: BoundListener, sock) -> None:
        kind = Connection if listener.tls is None else TlsConnection
        async with trio.open_nursery() as nursery:
            with sock:
                while True:
                    accepted, address = await self._accept(sock)
                    ip = address[0]
                    refusal = self.quotas.refusal(ip)
                    if refusal is not None:
                        repeated_warnings.warning(("refused", ip), "%s, closing %s", refusal, address)
                        accepted.close()
                        continue
                    throttle_ms = self.quotas.ip_throttle_ms(ip, int(time.monotonic() * 1000))
                    if throttle_ms:  # over its ip's connection_creation_rate: closed later
                        nursery.start_soon(_close_later, accepted, throttle_ms)
                        continue
                    accepted.setblocking(False)
                    accepted.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    connection = kind(self.broker, accepted, f"{ip}:{address[1]}", self.memory, listener)
                    # Counted before its task starts, so that a burst of accepts sees it.
                    self.quotas.opened(ip)
                    self.open_connections.add(connection)
                    nursery.start_soon(self._run_connection, connection, ip)
                    delay_ms = self.quotas.creation_delay_ms(int(time.monotonic() * 1000))
                    if delay_ms:  # max.connection.creation.rate: accept the next one later
                        await trio.sleep(delay_ms / 1000)

    async def _accept(self, listener) -> tuple[socket.socket, tuple]:
        """The next connection. Running out of file descriptors (EMFILE, ENFILE) or kernel
        memory is logged and waited out, as Kafka's acceptor does: it must not stop the broker."""
        backoff_s = _ACCEPT_BACKOFF_S[0]
        while True:
            try:
                accepted, address = await listener.accept()
            except OSError as exc:
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue  # the client gave up before we took it
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    raise
                repeated_warnings.warning("accept", "cannot accept connections: %s (%d open); retrying",
                                 exc.strerror, len(self.open_connections))
                await trio.sleep(backoff_s)
                backoff_s = min(2 * backoff_s, _ACCEPT_BACKOFF_S[1])
                continue
            return socket.socket(fileno=accepted.detach()), address

    async def _run_connection(self, connection: Connection, ip: str) -> None:
        try:
            await connection.run()
        finally:
            self.open_connections.discard(connection)
            self.quotas.closed(ip)
            trio.lowlevel.notify_closing(connection.sock)
            connection.sock.close()

    async def _close_idle_connections(self) -> None:
        """Close connections that have waited connections.max.idle.ms for a request.

        One sweep every tenth of the limit, as Kafka's own selector does lazily, instead of a
        timeout around every receive: a connection closes between 1 and 1.1 times the limit.
        """
        while True:
            idle_s = self.broker.config["connections.max.idle.ms"] / 1000
            await trio.sleep(idle_s / 10)
            now = trio.current_time()
            for connection in list(self.open_connections):
                since = connection.waiting_since
                if since is not None and now - since >= idle_s:
                    log.info("connection %s idle for %.0fs, closing", connection.peer, now - since)
                    connection.cancel_scope.cancel()


async def serve(broker: Broker, *, http_port: int | None = None,
                task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled: the listeners, the broker's background tasks and, if asked, the
    HTTP port (metrics, console) on the first listener's host.

    Reports (host, port, http_port or None) of the first listener through task_status once
    clients can connect (this is how embedders, kbroker.testing, run a broker inside their own
    trio program); `broker.listening` then holds every listener's (name, host, port), node by
    node with --brokers N.
    """
    server = Server(broker)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.serve)
        broker.listening = [(listener.config.name, listener.host, listener.port) for listener in listeners]
        broker.advertised = listeners[0].advertised
        nursery.start_soon(broker.run_background_tasks)
        host, port = listeners[0].host, listeners[0].port
        if http_port is not None:
            # The console reads the broker as a client of one of its listeners, PLAINTEXT first, TLS last.
            console = min(listeners, key=lambda listener: (listener.config.uses_tls, listener.config.uses_sasl))
            reachable = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(console.host, console.host)
            app = HttpApp(broker, lambda: [c.session for c in list(server.open_connections)],
                          host_port(reachable, console.port), console.config)
            try:
                _, http_port = await nursery.start(serve_http, app.routes(), host, http_port)
            except OSError as exc:
                raise CannotListen(f"cannot listen on {host}:{http_port} (--http-port): "
                                   f"{exc.strerror}") from None
        task_status.started((host, port, http_port))


def _node_listener(settings: ListenerConfig, offset: int) -> ListenerConfig:
    """A listener as a simulated node opens it: port (and advertised port) + offset, the node's
    index times the number of listeners, so that each node takes the next block of ports
    (PLAINTEXT 9092 and SSL 9093: node 1 on 9094 and 9095)."""
    if not offset:
        return settings
    return replace(settings, port=settings.port and settings.port + offset,
                   advertised_port=settings.advertised_port and settings.advertised_port + offset)


async def _close_later(sock: socket.socket, delay_ms: int) -> None:
    """Kafka's delayed close of a throttled connection: the client cannot retry at once."""
    try:
        await trio.sleep(delay_ms / 1000)
    finally:
        sock.close()


def listening_line(listening: list[tuple[str, str, int]]) -> str:
    """HOST:PORT of a single listener; HOST:PORT (NAME), ... of several; each listener's
    addresses of the simulated nodes (--brokers N) joined by commas, a bootstrap list."""
    by_name: dict[str, list[str]] = {}
    for name, host, port in listening:
        by_name.setdefault(name, []).append(host_port(host, port))
    if len(by_name) == 1:
        return ",".join(*by_name.values())
    return ", ".join(f"{','.join(addresses)} ({name})" for name, addresses in by_name.items())


async def run_broker(broker: Broker, *, http_port: int | None = None, announce=print) -> None:
    """Serve until SIGINT or SIGTERM, then stop cleanly."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            host, _, http_port = await nursery.start(partial(serve, broker, http_port=http_port))
            if http_port is not None:
                announce(f"kbroker: metrics and console on http://{host_port(host, http_port)}/",
                         flush=True)
            nodes = (f"nodes {broker.node_ids[0]}-{broker.node_ids[-1]}" if broker.several_brokers
                     else f"node {broker.node_id}")
            announce(f"kbroker {broker.identity.cluster_id} {nodes}: "
                     f"accepting connections on {listening_line(broker.listening)}", flush=True)
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                break
            nursery.cancel_scope.cancel()
