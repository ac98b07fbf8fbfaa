"""Which API keys and versions kbroker serves, and the handler of each.

Every handler module registers itself with `@serves(...)`; ApiVersions and the README's
table of supported APIs are derived from this registry, never kept by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from kbroker.api.context import RequestContext
from kbroker.protocol import messages

Handler = Callable[[RequestContext, Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class ApiEntry:
    api_key: int
    name: str
    min_version: int
    max_version: int
    handle: Handler

    def supports(self, version: int) -> bool:
        return self.min_version <= version <= self.max_version


HANDLERS: dict[int, ApiEntry] = {}


def serves(api_name: str, min_version: int, max_version: int) -> Callable[[Handler], Handler]:
    """Register the decorated coroutine as the handler of `api_name` for these versions.

    The handler is called as `await handle(ctx, request)` and returns the response message,
    or None when no response is sent (Produce with acks=0).
    """
    api_key = messages.API_KEYS[api_name]

    def register(handle: Handler) -> Handler:
        if api_key in HANDLERS:
            raise RuntimeError(f"{api_name} registered twice")
        HANDLERS[api_key] = ApiEntry(api_key, api_name, min_version, max_version, handle)
        return handle

    return register


def supported_apis() -> list[ApiEntry]:
    """The registered APIs in key order (importing kbroker.api registers them all)."""
    return [HANDLERS[key] for key in sorted(HANDLERS)]


class CloseConnection(Exception):
    """Raised by a handler when Kafka would answer by closing the connection."""
