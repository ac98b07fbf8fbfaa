"""A few cells of the client matrix over SASL_SSL (`python -m compat --security sasl_ssl`): each
current client verifies the broker's certificate against a throwaway CA and authenticates, with
SCRAM-SHA-512, and kcat (librdkafka 2.0.2, which cannot do SCRAM against Kafka 4.x) also with PLAIN.
The whole matrix over SASL_SSL is for compat/REPORT.md; this keeps CI short.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from compat.registry import CURRENT

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("metadata", "produce_consume", "group_mixed_clients", "transactions")
RUNS = {"SCRAM-SHA-512": (CURRENT, SCENARIOS), "PLAIN": (("kcat",), ("metadata", "produce_consume", "group_join"))}
CELLS = [(mechanism, scenario, client) for mechanism, (clients, scenarios) in RUNS.items()
         for scenario in scenarios for client in clients]


@pytest.fixture(scope="module")
def matrices(tmp_path_factory) -> dict:
    out = {}
    for mechanism, (clients, scenarios) in RUNS.items():
        report_dir = tmp_path_factory.mktemp(f"compat-{mechanism}")
        done = subprocess.run([sys.executable, "-m", "compat", "--strict", "--retries", "1", "--security", "sasl_ssl",
                               "--sasl-mechanism", mechanism, "--clients", ",".join(clients),
                               "--scenarios", ",".join(scenarios), "--report-dir", str(report_dir)],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        print(done.stdout[-4000:], done.stderr[-2000:])
        report = report_dir / "REPORT.json"
        assert report.exists(), f"python -m compat wrote no report:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        out[mechanism] = json.loads(report.read_text())
    return out


@pytest.mark.parametrize("mechanism,scenario,client", CELLS)
def test_cell_over_sasl_ssl(matrices, mechanism, scenario, client):
    report = matrices[mechanism]
    assert list(report["variants"]) == ["sasl_ssl/latest"]
    result = report["results"]["sasl_ssl/latest"][scenario][client]
    if result["status"] == "N/A":
        pytest.skip(f"{client}: {result['reason']}")
    if result["status"] == "XFAIL":
        pytest.xfail(f"{result['expected']} (observed: {result['reason']})")
    assert result["status"] in ("PASS", "FLAKY"), result.get("expected") or result["reason"]
