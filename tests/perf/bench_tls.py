"""Produce and consume through an SSL listener and a PLAINTEXT listener of one kbroker, with
`kbroker perf`, and print rec/s and the broker's CPU seconds per million records for each.

    python tests/perf/bench_tls.py [--records 300000] [--record-size 1024] [--rounds 2]

The rounds alternate plaintext and SSL on the same broker so that the machine's other load
touches both alike; compare the ratios, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from kbroker.certs import make_certificates
from kbroker.testing import running_broker


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def perf(command: str, bootstrap: str, topic: str, records: int, size: int, tls: list[str]) -> float:
    args = [sys.executable, "-m", "kbroker", "perf", command, "-b", bootstrap, "--topic", topic,
            "--num-records", str(records), *tls]
    if command == "produce":
        args += ["--record-size", str(size)]
    output = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return float(re.search(r"([\d.]+) records/sec", output).group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--record-size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        certs = Path(directory) / "certs"
        make_certificates(certs)
        with running_broker("--override", "listeners=PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0",
                            "--override", "ssl.keystore.type=PEM",
                            "--override", f"ssl.keystore.location={certs / 'broker.pem'}",
                            data_dir=Path(directory) / "data") as broker:
            pid = broker.process.pid
            results: dict[tuple[str, str], list[tuple[float, float]]] = {}
            for round_number in range(options.rounds):
                for name, tls in (("PLAINTEXT", []), ("SSL", ["--ssl-cafile", str(certs / "ca.pem")])):
                    topic = f"bench-{name.lower()}-{round_number}"
                    for command in ("produce", "consume"):
                        before = cpu_seconds(pid)
                        rate = perf(command, broker.listeners[name], topic, options.records,
                                    options.record_size, tls)
                        cpu_per_million = (cpu_seconds(pid) - before) * 1e6 / options.records
                        results.setdefault((command, name), []).append((rate, cpu_per_million))
    print(f"| {options.records} x {options.record_size} B, median of {options.rounds} | rec/s | "
          "broker CPU s/M rec |")
    print("|---|---:|---:|")
    for (command, name), runs in results.items():
        print(f"| {command} {name} | {statistics.median(r for r, _ in runs):,.0f} | "
              f"{statistics.median(c for _, c in runs):.2f} |")
    for command in ("produce", "consume"):
        plain, tls = (statistics.median(r for r, _ in results[(command, n)]) for n in ("PLAINTEXT", "SSL"))
        print(f"{command}: SSL/PLAINTEXT throughput {tls / plain:.2f}")


if __name__ == "__main__":
    main()
