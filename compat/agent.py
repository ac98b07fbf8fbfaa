"""The agent protocol: a cell drives each client through a child process speaking JSON lines.

Request  {"id": 1, "op": "produce", "args": {...}}
Response {"id": 1, "ok": <result>} or {"id": 1, "error": "Type: message", "kind": "error"|"unsupported"}

A process per client instance is what lets a scenario run a group member of kafkajs next to one of
kafka-python, and "crash" a member with SIGKILL exactly as a real consumer dies. `serve()` is the agent
side for Python drivers; node/agent.js implements the same protocol for kafkajs.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Unsupported(Exception):
    """The client has no such feature: the cell is N/A rather than FAIL."""


class ClientError(Exception):
    """The client reported an error (its exception type and message are in the text)."""


class AgentTimeout(Exception):
    """An operation did not answer in time: a hang, which is a failure."""


def describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text[:400]


def serve(make_driver) -> None:
    """Agent main loop for a Python driver: `make_driver(bootstrap)` then answer requests on stdin."""
    protocol_out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # library chatter on stdout must not corrupt the protocol stream
    sys.stdout = sys.stderr
    driver = make_driver(sys.argv[1])
    for line in sys.stdin:
        request = json.loads(line)
        method = getattr(driver, "op_" + request["op"], None)
        try:
            if method is None:
                raise Unsupported(f"{driver.name} has no {request['op']}")
            response = {"ok": method(**request.get("args", {}))}
        except Unsupported as exc:
            response = {"error": str(exc), "kind": "unsupported"}
        except Exception as exc:  # noqa: BLE001 - every client error is data for the scenario
            response = {"error": describe(exc), "kind": "error"}
        response["id"] = request["id"]
        protocol_out.write(json.dumps(response) + "\n")
    os._exit(0)  # stdin closed: the cell is done or dead; client threads must not keep us alive


def _die_with_parent() -> None:
    """Child side of Popen: get SIGKILLed when the cell dies, so no agent outlives a killed cell."""
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def spawn(command: list[str], env: dict | None = None, **kwargs) -> subprocess.Popen:
    """Popen for helper processes (agents, kcat): tied to our lifetime."""
    return subprocess.Popen(command, env={**os.environ, **(env or {})}, cwd=ROOT,
                            preexec_fn=_die_with_parent, **kwargs)


class Agent:
    """The cell's handle on one agent process."""

    _ids = itertools.count(1)

    def __init__(self, label: str, command: list[str], env: dict | None, log_path: Path):
        self.label = label
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = spawn(command, env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log)
        self._responses: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self._responses.put(json.loads(line))
            except ValueError:
                self._responses.put({"id": None, "error": f"bad agent output {line[:200]!r}", "kind": "error"})
        self._responses.put(None)

    def call(self, op: str, timeout: float = 30.0, **args):
        request_id = next(self._ids)
        try:
            self.proc.stdin.write((json.dumps({"id": request_id, "op": op, "args": args}) + "\n").encode())
            self.proc.stdin.flush()
        except OSError as exc:
            raise ClientError(f"{self.label} agent is gone ({exc}); see {self.log_path.name}") from None
        deadline = time.monotonic() + timeout
        while True:
            try:
                response = self._responses.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AgentTimeout(f"{self.label} {op} gave no answer in {timeout:.0f}s") from None
            if response is None:
                self._responses.put(None)
                raise ClientError(f"{self.label} agent exited ({self.proc.poll()}) during {op}; "
                                  f"log: {self.tail()}")
            if response.get("id") not in (request_id, None):
                continue  # the late answer to an operation that timed out earlier
            if "ok" in response:
                return response["ok"]
            if response.get("kind") == "unsupported":
                raise Unsupported(response["error"])
            raise ClientError(response["error"])

    def tail(self, size: int = 300) -> str:
        self._log.flush()
        try:
            return self.log_path.read_bytes()[-size:].decode(errors="replace").replace("\n", " | ")
        except OSError:
            return ""

    def crash(self) -> None:
        """SIGKILL: the client gets no chance to leave its group or flush."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.crash()
        self._log.close()
