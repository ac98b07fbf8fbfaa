"""Which API keys and versions kbroker serves, and the handler of each.

Every handler module registers itself with `@serves(...)`; ApiVersions and the README's
table of supported APIs are derived from this registry, never kept by hand. Under
`--as-version` the versions served and advertised are the release's table (kbroker/versions.py)
within what the handlers serve: `api_versions(release)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Awaitable, Callable

from kbroker.api.context import RequestContext
from kbroker.protocol import messages
from kbroker import versions
from kbroker.versions import Release

Handler = Callable[[RequestContext, Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class ApiEntry:
    api_key: int
    name: str
    min_version: int
    max_version: int
    handle: Handler
    oldest_version: int  # served only for a release before 4.0 (KIP-896 removed the older ones)

    def supports(self, version: int) -> bool:
        return self.min_version <= version <= self.max_version


HANDLERS: dict[int, ApiEntry] = {}


def serves(api_name: str, min_version: int, max_version: int,
           oldest: int | None = None) -> Callable[[Handler], Handler]:
    """Register the decorated coroutine as the handler of `api_name` for these versions, and
    from `oldest` for releases before Kafka 4.0 (`--as-version`).

    The handler is called as `await handle(ctx, request)` and returns the response message,
    or None when no response is sent (Produce with acks=0).
    """
    api_key = messages.API_KEYS[api_name]

    def register(handle: Handler) -> Handler:
        if api_key in HANDLERS:
            raise RuntimeError(f"{api_name} registered twice")
        HANDLERS[api_key] = ApiEntry(api_key, api_name, min_version, max_version, handle,
                                     min_version if oldest is None else oldest)
        return handle

    return register


def supported_apis() -> list[ApiEntry]:
    """The registered APIs in key order (importing kbroker.api registers them all)."""
    return [HANDLERS[key] for key in sorted(HANDLERS)]


@dataclass(frozen=True, slots=True)
class ApiVersions:
    """The ranges one broker advertises and those it serves, by api key. They differ only
    where Kafka advertises versions it refuses (4.x: Produce from v0, KAFKA-18659)."""
    advertised: dict[int, tuple[int, int]]
    served: dict[int, tuple[int, int]]

    def serves(self, api_key: int, version: int) -> bool:
        served = self.served.get(api_key)
        return served is not None and served[0] <= version <= served[1]


def api_versions(release: Release | None) -> ApiVersions:
    """What a broker acting as `release` (None: the latest) advertises and serves."""
    return _api_versions(release and release.name)


@cache
def _api_versions(release_name: str | None) -> ApiVersions:
    if release_name is None:
        latest = {e.api_key: (e.min_version, e.max_version) for e in supported_apis()}
        return ApiVersions(latest, latest)
    release = versions.release(release_name)
    advertised, served = {}, {}
    for name, (low, high) in release.api_versions.items():
        entry = HANDLERS.get(messages.API_KEYS[name])
        if entry is None:  # an API kbroker does not serve (delegation tokens, streams groups)
            continue
        oldest = entry.oldest_version if release.has_removed_versions else entry.min_version
        advertised[entry.api_key] = (max(low, entry.oldest_version), min(high, entry.max_version))
        served[entry.api_key] = (max(low, oldest), min(high, entry.max_version))
    return ApiVersions(advertised, served)


class CloseConnection(Exception):
    """Raised by a handler when Kafka would answer by closing the connection."""
