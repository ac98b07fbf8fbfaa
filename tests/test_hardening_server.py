"""Defects of issue 12 at the server's edge, reproduced with raw sockets against a real broker:
announced-but-unsent request sizes, queued.max.request.bytes, running out of file descriptors,
connection limits, failed-authentication delay and repeated warnings."""

from __future__ import annotations

import json
import resource
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from kbroker.testing import READY_MARKER, running_broker
from tests.polling import wait_for
from tests.wire import WireClient

MIB = 1024 * 1024


def _status_kib(pid: int, field: str) -> int:
    """A memory figure of a process from /proc/<pid>/status (VmRSS: now, VmHWM: peak), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _connect(bootstrap: str, source_ip: str = "127.0.0.1") -> socket.socket:
    host, port = bootstrap.rsplit(":", 1)
    sock = socket.socket()
    sock.settimeout(10)
    sock.bind((source_ip, 0))
    sock.connect((host, int(port)))
    return sock


def _answers_api_versions(sock: socket.socket) -> bool:
    """Whether the broker answers an ApiVersions request on this connection."""
    client = WireClient.__new__(WireClient)
    client.sock, client.client_id = sock, "hardening"
    client._correlation = iter(range(1, 1000))
    try:
        return client.request("ApiVersions", 3, client_software_name="test",
                              client_software_version="1").error_code == 0
    except (ConnectionError, OSError):
        return False


def _metadata_answered(bootstrap: str) -> bool:
    with WireClient(bootstrap) as client:
        return client.request("Metadata", 12, topics=[]).brokers[0].port > 0


def test_announced_frame_sizes_cost_no_memory_until_their_bytes_arrive():
    """50 connections announcing 100 MiB requests (and sending 1 MiB of each) used to make the
    broker allocate and zero 100 MiB per connection at once (5 GB); other clients waited."""
    with running_broker() as broker:
        pid = broker.process.pid
        attackers = []
        try:
            for _ in range(50):
                sock = _connect(broker.bootstrap)
                sock.sendall(struct.pack(">i", 100 * MIB) + bytes(MIB))
                attackers.append(sock)
            assert _metadata_answered(broker.bootstrap)
            assert _status_kib(pid, "VmHWM") < 300 * 1024
        finally:
            for sock in attackers:
                sock.close()
        assert _metadata_answered(broker.bootstrap)


def test_queued_max_request_bytes_bounds_requests_being_read():
    """20 clients each really sending a 20 MiB request: with queued.max.request.bytes at 1 MiB
    the broker reads one at a time (about 20 MiB held), not all 400 MiB at once."""
    with running_broker("--override", "queued.max.request.bytes=1048576") as broker:
        pid = broker.process.pid
        before_kib = _status_kib(pid, "VmHWM")
        senders = [_connect(broker.bootstrap) for _ in range(20)]
        # Bytes 0xff: api key -1, which the broker refuses once it has read the whole frame.
        frame = struct.pack(">i", 20 * MIB) + b"\xff" * (20 * MIB)
        threads = [threading.Thread(target=_send_quietly, args=(sock, frame)) for sock in senders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for sock in senders:
            sock.settimeout(30)
            assert sock.recv(1) == b""  # read whole, then refused
            sock.close()
        assert _metadata_answered(broker.bootstrap)
        assert _status_kib(pid, "VmHWM") - before_kib < 150 * 1024


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    sock.settimeout(60)
    try:
        sock.sendall(data)
    except OSError:
        pass


def _start_with_file_limit(tmp_path, soft: int, hard: int, *args: str):
    """A broker process started under `ulimit -n` soft/hard limits; returns (process, bootstrap)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    process = subprocess.Popen(
        [sys.executable, "-m", "kbroker", "serve", "--port", "0", "--data-dir", str(tmp_path),
         *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=limit)
    for line in process.stdout:
        if READY_MARKER in line:
            return process, line.split(READY_MARKER, 1)[1].split()[0]
    raise AssertionError("broker did not start")


def _stop(process: subprocess.Popen) -> str:
    process.terminate()
    output, _ = process.communicate(timeout=20)
    return output


def test_running_out_of_file_descriptors_does_not_stop_the_broker(tmp_path):
    """With `ulimit -n 64`, 200 connections used to make accept() fail with EMFILE and the
    broker exit with code 1. Now it logs (rate-limited), waits and carries on."""
    process, bootstrap = _start_with_file_limit(tmp_path, 64, 64)
    try:
        flood = [_connect(bootstrap) for _ in range(200)]  # the kernel's backlog takes them all
        time.sleep(1)  # let the broker hit the limit for a while
        assert process.poll() is None
        for sock in flood:
            sock.close()
        wait_for(lambda: _answers_api_versions(_connect(bootstrap)), timeout_s=20,
                 what="a new connection answered")
    finally:
        output = _stop(process)
    assert process.returncode == 0, output
    warnings = [line for line in output.splitlines() if "cannot accept connections" in line]
    assert 1 <= len(warnings) <= 3, output


def test_the_soft_open_file_limit_is_raised_to_the_hard_limit(tmp_path):
    process, _ = _start_with_file_limit(tmp_path, 256, 4096)
    try:
        with open(f"/proc/{process.pid}/limits") as limits:
            line = next(line for line in limits if line.startswith("Max open files"))
        assert line.split()[3:5] == ["4096", "4096"]
    finally:
        _stop(process)


def test_max_connections_lets_exactly_that_many_in():
    """max.connections=20 used to let a burst of 21 in now and then (a connection counted only
    once its task ran), so the burst is repeated."""
    with running_broker("--override", "max.connections=20") as broker:
        for _ in range(6):
            wait_for(lambda: _answered_in_burst(broker.bootstrap, 20) == 20, timeout_s=10,
                     what="every slot free again")
            assert _answered_in_burst(broker.bootstrap, 25) == 20


def _answered_in_burst(bootstrap: str, count: int) -> int:
    """Open `count` connections at once; how many of them the broker answers."""
    socks = [_connect(bootstrap) for _ in range(count)]
    try:
        return sum(_answers_api_versions(sock) for sock in socks)
    finally:
        for sock in socks:
            sock.close()


def test_max_connections_per_ip_and_its_overrides():
    with running_broker("--override", "max.connections.per.ip=2",
                        "--override", "max.connections.per.ip.overrides=127.0.0.2:4") as broker:
        default_ip = [_connect(broker.bootstrap) for _ in range(4)]
        overridden = [_connect(broker.bootstrap, "127.0.0.2") for _ in range(6)]
        try:
            assert sum(_answers_api_versions(sock) for sock in default_ip) == 2
            assert sum(_answers_api_versions(sock) for sock in overridden) == 4
        finally:
            for sock in default_ip + overridden:
                sock.close()
        # Slots are given back on close.
        wait_for(lambda: _answers_api_versions(_connect(broker.bootstrap)), timeout_s=10,
                 what="a freed slot")


@pytest.mark.parametrize("value", ["127.0.0.1", "127.0.0.1:x", ":3", "127.0.0.1:-1"])
def test_bad_per_ip_overrides_are_refused_at_start(tmp_path, value):
    result = subprocess.run(
        [sys.executable, "-m", "kbroker", "serve", "--port", "0", "--data-dir", str(tmp_path),
         "--override", f"max.connections.per.ip.overrides={value}"],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "max.connections.per.ip.overrides" in result.stderr


def _fail_plain_authentication(bootstrap: str) -> float:
    """One wrong PLAIN password; returns how long the broker took to answer it."""
    with WireClient(bootstrap) as client:
        assert client.request("SaslHandshake", 1, mechanism="PLAIN").error_code == 0
        started = time.monotonic()
        answer = client.request("SaslAuthenticate", 2, auth_bytes=b"\0alice\0wrong")
        elapsed = time.monotonic() - started
        assert answer.error_code == 58  # SASL_AUTHENTICATION_FAILED
        assert client.is_closed_by_peer()
        return elapsed


def test_failed_authentication_is_answered_after_the_delay():
    """Wrong passwords used to be answered at once (2,352 guesses a second on one connection at
    a time); connection.failed.authentication.delay.ms holds each answer back."""
    with running_broker("--sasl-user", "alice:secret",
                        "--override", "connection.failed.authentication.delay.ms=300") as broker:
        assert min(_fail_plain_authentication(broker.bootstrap) for _ in range(3)) >= 0.3


def test_a_removed_api_version_is_warned_about_once_and_recorded(tmp_path):
    """An old client repeating a version the broker does not serve used to log one WARNING per
    connection; it is now logged once a minute, and the version lands in --api-usage-file."""
    usage_file = tmp_path / "usage.json"
    with running_broker("--api-usage-file", str(usage_file)) as broker:
        for _ in range(30):
            with WireClient(broker.bootstrap, client_id="old-client") as client:
                # Produce v0 was removed in Kafka 4.0.
                client.send_raw(struct.pack(">ihhih", 20, 0, 0, 1, 10) + b"old-client")
                assert client.is_closed_by_peer()
    warnings = [line for line in broker.output if "Produce version 0" in line]
    assert len(warnings) == 1, broker.output
    usage = json.loads(usage_file.read_text())
    assert usage["client-id:old-client"]["Produce (unsupported)"] == [0]


def test_frames_before_authentication_are_bounded_by_sasl_server_max_receive_size():
    """Before authenticating, a client could make the broker read a frame of
    socket.request.max.bytes (100 MiB); Kafka bounds it at sasl.server.max.receive.size."""
    with running_broker("--sasl-user", "alice:secret") as broker:
        with WireClient(broker.bootstrap) as unauthenticated:
            unauthenticated.send_raw(struct.pack(">i", 1024 * 1024) + bytes(64))
            assert unauthenticated.is_closed_by_peer()
        with WireClient(broker.bootstrap) as client:  # small requests before authentication pass
            assert client.request("SaslHandshake", 1, mechanism="PLAIN").error_code == 0
            assert client.request("SaslAuthenticate", 2, auth_bytes=b"\0alice\0secret").error_code == 0
            assert client.request("Metadata", 12, topics=[]).brokers
