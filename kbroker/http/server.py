"""A small HTTP/1.1 server on trio: keep-alive, Content-Length bodies, a routing table.

Routes are (method, path) pairs, exact or with `{name}` segments that match any one segment
and land in `Request.params` (`/api/faults/{id}`); the query string is parsed into `Request.query`. A
handler that raises answers 500 and costs only its own request: nothing here may take the
broker down.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl, unquote, urlsplit

import trio

log = logging.getLogger("kbroker.http")

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024
IDLE_TIMEOUT_S = 30.0
_END_OF_HEADERS = b"\r\n\r\n"


@dataclass
class Request:
    method: str
    path: str
    version: str = "HTTP/1.1"
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case
    body: bytes = b""
    params: dict[str, str] = field(default_factory=dict)  # the route's {name} segments


@dataclass
class Response:
    body: bytes | str = b""
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Routes:
    """The routing table: (method, path) -> handler."""

    def __init__(self):
        self.table: dict[tuple[str, str], Handler] = {}

    def add(self, method: str, path: str, handler: Handler) -> None:
        self.table[(method, path)] = handler

    def _find(self, method: str, path: str) -> tuple[Handler | None, dict[str, str]]:
        handler = self.table.get((method, path))
        if handler is not None:
            return handler, {}
        segments = path.split("/")
        for (route_method, route), candidate in self.table.items():
            params = _segment_params(route, segments)
            if route_method == method and params is not None:
                return candidate, params
        return None, {}

    async def dispatch(self, request: Request) -> Response:
        handler, request.params = self._find(request.method, request.path)
        if handler is None and request.method == "HEAD":
            handler, request.params = self._find("GET", request.path)
        if handler is None:
            if any(_segment_params(path, request.path.split("/")) is not None for _, path in self.table):
                return text_response(HTTPStatus.METHOD_NOT_ALLOWED)
            return text_response(HTTPStatus.NOT_FOUND)
        try:
            return await handler(request)
        except Exception:
            log.exception("HTTP %s %s failed", request.method, request.path)
            return text_response(HTTPStatus.INTERNAL_SERVER_ERROR)


def _segment_params(route: str, segments: list[str]) -> dict[str, str] | None:
    """The {name} segments of `route` if the path's segments match it, else None."""
    pattern = route.split("/")
    if "{" not in route or len(pattern) != len(segments):
        return None if route != "/".join(segments) else {}
    params = {}
    for expected, actual in zip(pattern, segments):
        if expected.startswith("{") and expected.endswith("}") and actual:
            params[expected[1:-1]] = unquote(actual)
        elif expected != actual:
            return None
    return params


def text_response(status: HTTPStatus, text: str | None = None) -> Response:
    return Response(f"{text or status.phrase}\n", int(status), "text/plain; charset=utf-8")


async def serve_http(routes: Routes, host: str, port: int, *,
                     task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve `routes` until cancelled; reports the bound (host, port)."""
    async def handle(stream: trio.SocketStream) -> None:
        try:
            await _serve_connection(routes, stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            pass
        except Exception:  # a bug costs one HTTP connection, never the broker
            log.exception("HTTP connection failed")

    listeners = await trio.open_tcp_listeners(port, host=host)  # OSError if the port is taken
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        task_status.started((host, listeners[0].socket.getsockname()[1]))


async def _serve_connection(routes: Routes, stream: trio.SocketStream) -> None:
    buffer = bytearray()
    async with stream:
        while True:
            request = None
            with trio.move_on_after(IDLE_TIMEOUT_S):
                try:
                    request = await _read_request(stream, buffer)
                except BadRequest as exc:
                    await _write(stream, text_response(HTTPStatus(exc.status), str(exc)), False)
                    return
            if request is None:  # closed, or idle too long
                return
            keep_alive = _keep_alive(request)
            response = await routes.dispatch(request)
            await _write(stream, response, keep_alive, head=request.method == "HEAD")
            if not keep_alive:
                return


def _keep_alive(request: Request) -> bool:
    connection = request.headers.get("connection", "").lower()
    if request.version == "HTTP/1.0":
        return connection == "keep-alive"
    return connection != "close"


async def _read_request(stream: trio.SocketStream, buffer: bytearray) -> Request | None:
    while (end := buffer.find(_END_OF_HEADERS)) < 0:
        if len(buffer) > MAX_HEADER_BYTES:
            raise BadRequest(431, "request headers too large")
        data = await stream.receive_some(65536)
        if not data:
            return None
        buffer += data
    head = bytes(buffer[:end]).decode("latin-1")
    del buffer[:end + len(_END_OF_HEADERS)]
    request_line, *header_lines = head.split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    headers = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest(400, "malformed header")
        headers[name.strip().lower()] = value.strip()
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise BadRequest(400, "bad Content-Length") from None
    if length < 0 or length > MAX_BODY_BYTES:
        raise BadRequest(413, "request body too large")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise BadRequest(411, "chunked request bodies are not supported; send Content-Length")
    while len(buffer) < length:
        data = await stream.receive_some(65536)
        if not data:
            return None
        buffer += data
    body = bytes(buffer[:length])
    del buffer[:length]
    url = urlsplit(target)
    return Request(method, url.path or "/", version, dict(parse_qsl(url.query)), headers, body)


async def _write(stream: trio.SocketStream, response: Response, keep_alive: bool,
                 head: bool = False) -> None:
    body = response.body.encode() if isinstance(response.body, str) else response.body
    status = HTTPStatus(response.status)
    lines = [f"HTTP/1.1 {status.value} {status.phrase}",
             f"Content-Type: {response.content_type}", f"Content-Length: {len(body)}",
             f"Connection: {'keep-alive' if keep_alive else 'close'}",
             *(f"{name}: {value}" for name, value in response.headers.items())]
    await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") +
                          (b"" if head else body))
