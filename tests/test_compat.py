"""The client compatibility matrix as part of the test suite: every (scenario, current client) cell.

The matrix runs once per session (`python -m compat --strict`, its own kbroker, cells in parallel);
each cell is then its own test, so a regression names its scenario and client. Expected failures
are listed in compat/expected_failures.py only: they xfail here, and one that passes fails (XPASS)
so the list stays honest. N/A cells (a client without the feature) are skipped. A failed cell is
run once more; passing then, it shows as FLAKY in the report and does not fail the suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from compat.agent import ClientError
from compat.registry import CURRENT
from compat.scenarios import SCENARIOS, Fail, expect_error, expect_records, wait_balanced
from compat.wire import Rec

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def matrix(tmp_path_factory) -> dict:
    report_dir = tmp_path_factory.mktemp("compat")
    # two retries: CI shares a 2-core machine, and kafka-python 3.0.12 has a rare group-join race
    # of its own (compat/clients/kafka_python.py); a cell that fails, then passes shows as FLAKY
    done = subprocess.run([sys.executable, "-m", "compat", "--strict", "--retries", "2", "--report-dir",
                           str(report_dir), "--log-dir", str(report_dir / "logs")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    print(done.stdout[-6000:], done.stderr[-3000:])
    report = report_dir / "REPORT.json"
    assert report.exists(), f"python -m compat wrote no report:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return json.loads(report.read_text())["results"]["plaintext/latest"]


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
    if status == "FLAKY":
        print(f"{scenario} / {client} passed on a retry; {result['reason']}")
    assert status in ("PASS", "FLAKY"), result["reason"]


# --- the matrix's own checks must be able to fail ------------------------------------------------


def records(*values: bytes, start: int = 0) -> list[Rec]:
    return [Rec(key=b"k", value=v, partition=0, offset=start + i, headers=(("h", b"1"),)) for i, v in enumerate(values)]


@pytest.mark.parametrize("got", [
    records(b"b", b"a"),                        # order
    records(b"a"),                              # a record missing
    records(b"a", b"b", b"c"),                  # one too many
    records(b"a", b"", ),                       # empty instead of the value
    [records(b"a")[0], Rec(key=b"k", value=None, partition=0, offset=1, headers=(("h", b"1"),))],  # null
    records(b"a", b"b", start=1),               # offsets
    [records(b"a")[0], Rec(key=b"k", value=b"b", partition=0, offset=1)],  # headers lost
])
def test_expect_records_rejects_any_difference(got):
    expect_records(records(b"a", b"b"), records(b"a", b"b"), "same")
    with pytest.raises(Fail):
        expect_records(got, records(b"a", b"b"), "differs")


def failing_with(text):
    def call():
        raise ClientError(text)
    return call


def test_expect_error_needs_the_documented_error_in_time():
    assert "UNKNOWN_TOPIC" in expect_error(failing_with("KafkaError UNKNOWN_TOPIC_OR_PART"), r"unknown.?topic", "x")
    with pytest.raises(Fail, match="no error"):
        expect_error(lambda: None, r"unknown.?topic", "x")
    with pytest.raises(Fail, match="unexpected error"):
        expect_error(failing_with("Local: Message timed out"), r"unknown.?topic", "x")
    with pytest.raises(Fail, match="after"):
        expect_error(failing_with("unknown topic"), r"unknown.?topic", "x", within=-1)


class FakeMember:
    def __init__(self, label, assigned):
        self.label, self.assigned = label, set(assigned)

    def refresh(self):
        return self


@pytest.mark.parametrize("owned", [
    [[0, 1], [1, 2, 3]],   # shared partition
    [[0, 1], [2]],         # partition 3 unowned
    [[0, 1, 2, 3], []],    # a member with nothing
])
def test_wait_balanced_rejects_bad_assignments(owned):
    members = [FakeMember(f"m{i}", [("t", p) for p in ps]) for i, ps in enumerate(owned)]
    with pytest.raises(Fail, match="assignments"):
        wait_balanced(members, "t", 4, 0.3, "test")
    wait_balanced([FakeMember("a", [("t", 0), ("t", 2)]), FakeMember("b", [("t", 1), ("t", 3)])], "t", 4, 0.3, "ok")
