"""Real kbrokers for test suites (kbroker's own and its users').

    with running_broker() as broker:      # a child process
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    with embedded_broker() as broker:     # a thread of this process, started in milliseconds
        broker.create_topic("orders", partitions=3, retention_ms=60000)
        assert [r.value for r in broker.records("orders")] == [...]

`serve_in_nursery(nursery)` serves one in a trio program, `asyncio_broker()` in an asyncio one.

The broker listens on a free loopback port with a fresh data directory unless one is given,
and is stopped with SIGTERM (then SIGKILL if it does not exit) when the block ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from kbroker.embedded import BrokerConveniences, BrokerHandle, asyncio_broker, embedded_broker, serve_in_nursery

__all__ = ["BrokerHandle", "BrokerProcess", "asyncio_broker", "embedded_broker", "running_broker",
           "serve_in_nursery"]

READY_MARKER = "accepting connections on "
HTTP_MARKER = "metrics and console on "


@dataclass
class BrokerProcess(BrokerConveniences):
    """A kbroker child process and how to reach it."""

    data_dir: Path
    args: list[str] = field(default_factory=list)
    startup_timeout: float = 15.0
    process: subprocess.Popen | None = None
    bootstrap: str = ""  # HOST:PORT, or with --brokers N every node's, joined by commas
    http: str | None = None  # base URL of the HTTP port, when started with --http-port
    listeners: dict[str, str] = field(default_factory=dict)  # NAME -> HOST:PORT, when several
    output: list[str] = field(default_factory=list)
    preexec_fn: Callable[[], None] | None = None  # run in the child before exec (e.g. rlimits)

    @property
    def addresses(self) -> list[str]:
        """HOST:PORT of every simulated broker (one without --brokers), in node id order."""
        return self.bootstrap.split(",")

    @property
    def host(self) -> str:
        return self.addresses[0].rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        """The first node's port; node i listens on port + i."""
        return int(self.addresses[0].rsplit(":", 1)[1])

    def start(self, port: int = 0) -> "BrokerProcess":
        command = [
            sys.executable, "-m", "kbroker", "serve",
            "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(self.data_dir),
            *self.args,
        ]
        self.output = []
        self.bootstrap = ""
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            preexec_fn=self.preexec_fn,
        )
        ready = threading.Event()
        threading.Thread(target=self._pump_output, args=(self.process, ready), daemon=True).start()
        if not ready.wait(self.startup_timeout) or not self.bootstrap:
            self.kill()
            raise RuntimeError("kbroker did not start:\n" + "".join(self.output))
        return self

    def _pump_output(self, process: subprocess.Popen, ready: threading.Event) -> None:
        assert process.stdout is not None  # started with stdout=PIPE
        for line in process.stdout:
            self.output.append(line)
            if HTTP_MARKER in line:
                self.http = line.split(HTTP_MARKER, 1)[1].split()[0].rstrip("/")
            if not ready.is_set() and READY_MARKER in line:
                addresses = line.split(READY_MARKER, 1)[1].strip()
                self.bootstrap = addresses.split()[0]
                # several listeners: "HOST:PORT (NAME), HOST:PORT (NAME)"
                self.listeners = {entry.split(" (")[1].rstrip(")"): entry.split(" (")[0]
                                  for entry in addresses.split(", ") if " (" in entry}
                ready.set()
        ready.set()

    def stop(self, timeout: float = 10.0) -> int:
        """Shut down cleanly with SIGTERM; returns the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        """Stop like a crash (SIGKILL): nothing gets a chance to flush."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self) -> "BrokerProcess":
        """Stop cleanly and start again on the same port and data directory."""
        port = self.port
        self.stop()
        return self.start(port)


@contextlib.contextmanager
def running_broker(*args: str, data_dir: str | os.PathLike | None = None, brokers: int = 1):
    """Yield a started BrokerProcess; extra args go to `kbroker serve` (e.g. "--override", "x=y").
    brokers=3 simulates three brokers (`--brokers 3`): `addresses` lists them all."""
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="kbroker-"))
        extra = ["--brokers", str(brokers)] if brokers != 1 else []
        broker = BrokerProcess(Path(data_dir), [*extra, *args]).start()
        stack.callback(broker.stop)
        yield broker
