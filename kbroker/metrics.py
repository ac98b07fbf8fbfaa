"""The broker's counters for the HTTP /metrics page: requests, errors, latencies, bytes in/out.

They are updated on the hot paths, so each update is a few dict increments: the server calls
`request_done` once per request, Produce `produced` and Fetch `fetched` once per partition.
Everything that can be read from the broker's state when a scrape comes (offsets, sizes,
groups, connections) is not counted here.
"""

from __future__ import annotations

import bisect
import time
from functools import cache

from kbroker.protocol.messages import Struct

# Upper bounds (ms) of the request latency histogram buckets; +Inf is implied.
LATENCY_BUCKETS_MS = (0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


@cache
def _error_walker(cls: type[Struct]):
    """A function appending the non-zero error codes of a message of class `cls` (None when the
    class holds none), built once per class from its schema fields."""
    has_code = any(f.attr == "error_code" and f.struct is None for f in cls._fields)
    # (the ignores: mypy takes a class whose instances are unhashable for an unhashable class)
    children = [(f.attr, f.array, walker) for f in cls._fields if f.struct is not None
                for walker in [_error_walker(f.struct)] if walker is not None]  # type: ignore[arg-type]
    if not has_code and not children:
        return None

    def walk(message, found: list) -> None:
        if has_code and message.error_code:
            found.append(message.error_code)
        for attr, array, child in children:
            value = getattr(message, attr)
            if value is None:
                continue
            if array:
                for item in value:
                    child(item, found)
            else:
                child(value, found)

    return walk


class LatencyHistogram:
    __slots__ = ("buckets", "count", "sum_ms")

    def __init__(self):
        self.buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)  # the last one is +Inf
        self.count = 0
        self.sum_ms = 0.0

    def observe(self, ms: float) -> None:
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS_MS, ms)] += 1
        self.count += 1
        self.sum_ms += ms


class Metrics:
    """Counters since the broker started."""

    def __init__(self):
        self.started = time.time()
        self.requests: dict[tuple[str, int], int] = {}  # (API name, version) -> requests
        self.errors: dict[tuple[str, int], int] = {}  # (API name, error code) -> responses
        self.latency: dict[str, LatencyHistogram] = {}
        self.bytes_in: dict[str, int] = {}  # topic -> bytes of appended batches
        self.messages_in: dict[str, int] = {}  # topic -> records appended
        self.bytes_out: dict[str, int] = {}  # topic -> bytes of records fetched

    def request_done(self, api_name: str, version: int, seconds: float, response: Struct | None) -> None:
        key = (api_name, version)
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.latency.get(api_name)
        if histogram is None:
            histogram = self.latency[api_name] = LatencyHistogram()
        histogram.observe(seconds * 1000)
        if response is not None:
            walker = _error_walker(type(response))  # type: ignore[arg-type]  # (see _error_walker)
            if walker is not None:
                found: list[int] = []
                walker(response, found)
                for code in found:
                    error_key = (api_name, code)
                    self.errors[error_key] = self.errors.get(error_key, 0) + 1

    def produced(self, topic: str, nbytes: int, records: int) -> None:
        self.bytes_in[topic] = self.bytes_in.get(topic, 0) + nbytes
        self.messages_in[topic] = self.messages_in.get(topic, 0) + records

    def fetched(self, topic: str, nbytes: int) -> None:
        self.bytes_out[topic] = self.bytes_out.get(topic, 0) + nbytes
