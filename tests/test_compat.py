"""The client compatibility matrix as part of the test suite: every (scenario, current client) cell.

The matrix runs once per session (`python -m compat --strict`, its own kbroker, cells in parallel);
each cell is then its own test, so a regression names its scenario and client. Expected failures
are listed in compat/expected_failures.py only: they xfail here, and one that passes fails (XPASS)
so the list stays honest. N/A cells (a client without the feature) are skipped.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from compat.registry import CURRENT
from compat.scenarios import SCENARIOS

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def matrix(tmp_path_factory) -> dict:
    report_dir = tmp_path_factory.mktemp("compat")
    done = subprocess.run([sys.executable, "-m", "compat", "--strict", "--report-dir", str(report_dir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    print(done.stdout[-6000:], done.stderr[-3000:])
    report = report_dir / "REPORT.json"
    assert report.exists(), f"python -m compat wrote no report:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return json.loads(report.read_text())["results"]


@pytest.mark.parametrize("client", CURRENT)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_cell(matrix, scenario, client):
    result = matrix[scenario][client]
    status = result["status"]
    if status == "N/A":
        pytest.skip(f"{client} has no such feature: {result['reason']}")
    if status == "XFAIL":
        pytest.xfail(f"{result['expected']} (observed: {result['reason']})")
    assert status != "XPASS", (f"passes but is listed in compat/expected_failures.py "
                               f"({result['expected']}): remove it from the list")
    assert status == "PASS", result["reason"]
