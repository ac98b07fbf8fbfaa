"""Fault injection: answer chosen requests with an error, late, or by closing the connection,
so that clients can be tested on the paths a healthy broker never shows.

A fault matches a request by API name, and optionally by client id and by the node id of the
broker it was sent to. It fires for its first `times` matching requests (every one when
`times` is None), then stops matching; it stays listed, with its hits, until deleted.
The first fault added that matches a request is the one that fires.

When a fault fires:
- `disconnect`: the connection is closed instead of answering (the request is not executed);
- `error`: the request is answered with that error everywhere its response has an error code
  (kbroker/protocol/error_responses.py) and is not executed, as if the broker refused it;
  a Produce with acks=0 has no response: its connection is closed, as Kafka does on errors;
- neither: the request is executed as usual;
- `delay_ms` holds the answer (or the disconnection) that long, on that connection only.

The server asks `by_api` first: with no faults it is an empty dict and costs one falsy check.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

import trio

from kbroker.protocol import messages
from kbroker.protocol.error_responses import error_response
from kbroker.protocol.errors import ErrorCode

_PRODUCE = messages.API_KEYS["Produce"]


class InvalidFault(ValueError):
    """A fault description that cannot be used: unknown API or error name, bad field."""


@dataclass
class Fault:
    id: str
    api: str
    error: str | None = None
    times: int | None = None  # None: until deleted
    client_id: str | None = None
    broker: int | None = None  # node id
    delay_ms: int = 0
    disconnect: bool = False
    hits: int = 0

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def matches(self, client_id: str, node_id: int) -> bool:
        return ((self.client_id is None or self.client_id == client_id)
                and (self.broker is None or self.broker == node_id))

    def describe(self) -> dict[str, Any]:
        return asdict(self)


_OPTIONAL_FIELDS = {"error": (str, type(None)), "times": (int, type(None)),
                    "client_id": (str, type(None)), "broker": (int, type(None)),
                    "delay_ms": (int,), "disconnect": (bool,)}


def parse_fault(spec: Any, fault_id: str) -> Fault:
    """A Fault from its JSON description; raises InvalidFault saying what is wrong."""
    if not isinstance(spec, dict):
        raise InvalidFault("a fault is a JSON object")
    unknown = set(spec) - set(_OPTIONAL_FIELDS) - {"api"}
    if unknown:
        raise InvalidFault(f"unknown fault fields: {', '.join(sorted(unknown))}")
    api = spec.get("api")
    if not isinstance(api, str) or api not in messages.API_KEYS:
        raise InvalidFault(f"unknown API {api!r}: expected a Kafka API name such as \"Produce\"")
    for name, types in _OPTIONAL_FIELDS.items():
        value = spec.get(name)
        if name in spec and (not isinstance(value, types) or
                             (isinstance(value, bool) and bool not in types)):
            raise InvalidFault(f"bad {name}: {value!r}")
    fault = Fault(fault_id, api, **{name: spec[name] for name in _OPTIONAL_FIELDS
                                    if name in spec and spec[name] is not None})
    if fault.error is not None and (fault.error not in ErrorCode.__members__ or fault.error == "NONE"):
        raise InvalidFault(f"unknown error {fault.error!r}: expected a Kafka error name such as "
                           "\"NOT_LEADER_OR_FOLLOWER\"")
    if fault.times is not None and fault.times < 1:
        raise InvalidFault("times must be at least 1, or null for until deleted")
    if fault.delay_ms < 0:
        raise InvalidFault("delay_ms must not be negative")
    if fault.error is not None and fault.disconnect:
        raise InvalidFault("a fault either answers with an error or disconnects, not both")
    if fault.error is None and not fault.disconnect and not fault.delay_ms:
        raise InvalidFault("a fault needs an error, a delay_ms or disconnect")
    return fault


class FaultInjector:
    """The faults of one broker, and what a matching request gets."""

    def __init__(self):
        self._faults: dict[str, Fault] = {}  # every fault until deleted, in the order added
        self.by_api: dict[int, list[Fault]] = {}  # the faults still matching, by API key
        self._ids = itertools.count(1)

    def add(self, spec: Any) -> Fault:
        fault = parse_fault(spec, str(next(self._ids)))
        self._faults[fault.id] = fault
        self.by_api.setdefault(messages.API_KEYS[fault.api], []).append(fault)
        return fault

    def list(self) -> list[Fault]:
        return list(self._faults.values())

    def delete(self, fault_id: str) -> bool:
        fault = self._faults.pop(fault_id, None)
        if fault is None:
            return False
        self._stop_matching(fault)
        return True

    def _stop_matching(self, fault: Fault) -> None:
        api_key = messages.API_KEYS[fault.api]
        matching = self.by_api.get(api_key, [])
        if fault in matching:
            matching.remove(fault)
        if not matching:
            self.by_api.pop(api_key, None)

    def take(self, api_key: int, client_id: str, node_id: int) -> Fault | None:
        """The fault firing for this request, counted as a hit, or None."""
        for fault in self.by_api.get(api_key, ()):
            if fault.matches(client_id, node_id):
                fault.hits += 1
                if fault.exhausted:
                    self._stop_matching(fault)
                return fault
        return None

    @staticmethod
    async def answer(fault: Fault, api_key: int, context, request, execute):
        """The response to a request `fault` fired on (a RequestContext's), or None with
        `context.close_after_response` set to close the connection; `execute()` runs it."""
        if fault.error is None and not fault.disconnect:
            response = await execute()
            await trio.sleep(fault.delay_ms / 1000)
            return response
        await trio.sleep(fault.delay_ms / 1000)
        if fault.error is None or (api_key == _PRODUCE and request.acks == 0):  # disconnect
            context.close_after_response = True
            return None
        return error_response(api_key, context.api_version, request, ErrorCode[fault.error],
                              f"injected by kbroker fault {fault.id}")
