"""The broker's HTTP control API seen from outside (`kbroker ctl`, kbroker.testing): plain
blocking JSON calls with urllib, so that any program can use it without trio."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

DEFAULT_URL = "http://127.0.0.1:8080"
TIMEOUT_S = 10.0


class ControlError(Exception):
    """The broker refused a call (its {"error": ...} message) or could not be reached."""


class Control:
    """The control API of the broker whose HTTP port (`--http-port`) is at `url`."""

    def __init__(self, url: str = DEFAULT_URL):
        self.url = url.rstrip("/")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read())["error"]
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {exc.code} {exc.reason}"
            raise ControlError(message) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ControlError(f"cannot reach {self.url}: {reason}") from None

    def add_fault(self, api: str, error: str | None = None, *, times: int | None = None,
                  client_id: str | None = None, broker: int | None = None, delay_ms: int = 0,
                  disconnect: bool = False) -> str:
        """Add a fault (see kbroker/faults.py); returns its id."""
        return self._call("POST", "/api/faults", {
            "api": api, "error": error, "times": times, "client_id": client_id,
            "broker": broker, "delay_ms": delay_ms, "disconnect": disconnect})["id"]

    def faults(self) -> list[dict]:
        """Every fault with its "hits"."""
        return self._call("GET", "/api/faults")

    def delete_fault(self, fault_id: str) -> None:
        self._call("DELETE", f"/api/faults/{fault_id}")

    def cluster(self) -> dict:
        """The simulated cluster: {"brokers": [{"id", "host", "port", "up"}, ...], "topics":
        {name: [{"partition", "leader", "leader_epoch", "replicas", "isr"}, ...]}}."""
        return self._call("GET", "/api/cluster")

    def stop_broker(self, node_id: int) -> dict:
        """Stop a broker of the cluster (`serve --brokers N`): its listener closes, its
        connections drop, its leaderships and coordinators move; returns its entry."""
        return self._call("POST", f"/api/brokers/{node_id}/stop", {})

    def start_broker(self, node_id: int) -> dict:
        """Start a stopped broker again: it listens on the same port and rejoins the ISRs."""
        return self._call("POST", f"/api/brokers/{node_id}/start", {})

    def move_leader(self, topic: str, partition: int, node_id: int) -> dict:
        """Make `node_id` (a replica in the ISR) lead the partition, with a new leader epoch;
        returns the partition's entry."""
        return self._call("POST", f"/api/partitions/{quote(topic, safe='')}/{partition}/leader",
                          {"node": node_id})
