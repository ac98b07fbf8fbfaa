"""Memory and responsiveness of one broker under huge announced and huge real requests
(issue 12.1, queued.max.request.bytes). A benchmark, not a test: it prints figures for
tests/perf/RESULTS.md.

    python tests/perf/bench_request_memory.py [--connections 50] [--senders 10] [--mib 100]

1. `--connections` raw sockets each announce a `--mib` MiB request and send 1 MiB of it;
   peak RSS (VmHWM) and Metadata latency on another connection.
2. `--senders` clients each send a whole `--mib` MiB request (refused once read); peak RSS and
   Metadata latency measured on another connection while they stream in.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import struct
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kbroker.testing import running_broker  # noqa: E402
from tests.wire import WireClient  # noqa: E402

MIB = 1024 * 1024


def status_mib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) // 1024
    raise LookupError(field)


def metadata_ms(bootstrap: str) -> float:
    with WireClient(bootstrap) as client:
        started = time.perf_counter()
        client.request("Metadata", 12, topics=[])
        return (time.perf_counter() - started) * 1000


def describe(latencies: list[float]) -> str:
    return f"Metadata median {statistics.median(latencies):.2f} ms, max {max(latencies):.2f} ms"


def announced(bootstrap: str, pid: int, connections: int, mib: int) -> None:
    host, port = bootstrap.rsplit(":", 1)
    sockets = []
    for _ in range(connections):
        sock = socket.create_connection((host, int(port)))
        sock.sendall(struct.pack(">i", mib * MIB) + bytes(MIB))
        sockets.append(sock)
    time.sleep(0.5)
    latencies = [metadata_ms(bootstrap) for _ in range(20)]
    print(f"{connections} connections announcing {mib} MiB (1 MiB sent each): peak RSS "
          f"{status_mib(pid, 'VmHWM')} MB; {describe(latencies)}")
    for sock in sockets:
        sock.close()


def streamed(bootstrap: str, pid: int, senders: int, mib: int) -> None:
    host, port = bootstrap.rsplit(":", 1)
    frame = struct.pack(">i", mib * MIB) + b"\xff" * (mib * MIB)  # api key -1: refused once read

    def send() -> None:
        with socket.create_connection((host, int(port))) as sock:
            try:
                sock.sendall(frame)
                sock.recv(1)
            except OSError:
                pass

    threads = [threading.Thread(target=send) for _ in range(senders)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    latencies = []
    while any(thread.is_alive() for thread in threads):
        latencies.append(metadata_ms(bootstrap))
        time.sleep(0.05)
    print(f"{senders} clients sending {mib} MiB each, in {time.monotonic() - started:.1f} s: peak RSS "
          f"{status_mib(pid, 'VmHWM')} MB; {describe(latencies)} over {len(latencies)} requests")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--mib", type=int, default=100)
    args = parser.parse_args()
    with running_broker() as broker:
        pid = broker.process.pid
        print(f"idle: RSS {status_mib(pid, 'VmRSS')} MB")
        announced(broker.bootstrap, pid, args.connections, args.mib)
        streamed(broker.bootstrap, pid, args.senders, args.mib)


if __name__ == "__main__":
    main()
