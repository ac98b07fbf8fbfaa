"""`kbroker topic|produce|consume|group` against kbroker and against tansu, an independent
Kafka-compatible broker: the tools must only rely on the Kafka protocol."""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

from kbroker.testing import running_broker
from tests.cli_brokers import kbroker_command, running


@pytest.fixture(scope="module", params=["kbroker", "tansu"])
def bootstrap(request):
    with running(request.param) as address:
        yield address


def kb(bootstrap: str, *args: str, stdin: bytes | None = None) -> str:
    result = kbroker_command(bootstrap, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def kb_json(bootstrap: str, *args: str):
    return json.loads(kb(bootstrap, *args, "--json"))


def consume_json(bootstrap: str, topic: str, *args: str) -> list[dict]:
    out = kb(bootstrap, "consume", topic, "--format", "json", "-e", *args)
    return [json.loads(line) for line in out.splitlines()]


def test_topic_lifecycle(bootstrap, topic_name, request):
    kb(bootstrap, "topic", "create", topic_name, "-p", "3", "-c", "retention.ms=3600000")
    listed = {t["name"]: t for t in kb_json(bootstrap, "topic", "list")}
    assert listed[topic_name]["partitions"] == 3 and not listed[topic_name]["internal"]

    described = kb_json(bootstrap, "topic", "describe", topic_name)
    assert [p["partition"] for p in described["partitions"]] == [0, 1, 2]
    assert all(p["leader"] >= 0 and p["replicas"] and p["earliest"] == p["latest"] == 0
               for p in described["partitions"])
    configs = kb_json(bootstrap, "topic", "describe", topic_name, "--all-configs")["configs"]
    assert configs["retention.ms"] == "3600000"
    if "tansu" not in request.node.name:  # tansu reports the topic's own configs as defaults
        assert described["configs"] == {"retention.ms": "3600000"}

    duplicate = kbroker_command(bootstrap, "topic", "create", topic_name)
    assert duplicate.returncode == 1
    assert b"TOPIC_ALREADY_EXISTS" in duplicate.stderr

    kb(bootstrap, "topic", "delete", topic_name)
    assert topic_name not in {t["name"] for t in kb_json(bootstrap, "topic", "list")}
    missing = kbroker_command(bootstrap, "topic", "describe", topic_name)
    assert missing.returncode == 1 and b"UNKNOWN_TOPIC_OR_PARTITION" in missing.stderr


def test_produce_consume_round_trip_with_keys_headers_and_binary_values(bootstrap, topic_name):
    kb(bootstrap, "topic", "create", topic_name, "-p", "2")
    kb(bootstrap, "produce", topic_name, "-p", "1", "--key-separator", "\t", "-H", "origin=cli",
       "-H", "n=1", stdin=b"k1\tplain text\nk2\t\xff\xfe binary\nk1\t{\"a\": 1}\n")
    records = consume_json(bootstrap, topic_name, "--from-beginning")
    assert [(r["partition"], r["offset"]) for r in records] == [(1, 0), (1, 1), (1, 2)]
    assert [r["key"] for r in records] == ["k1", "k2", "k1"]
    assert records[0]["value"] == "plain text"
    assert base64.b64decode(records[1]["value"]["base64"]) == b"\xff\xfe binary"
    assert json.loads(records[2]["value"]) == {"a": 1}
    assert records[0]["headers"] == [{"key": "origin", "value": "cli"}, {"key": "n", "value": "1"}]
    assert all(r["timestamp"] > 0 and r["topic"] == topic_name for r in records)

    values = kb(bootstrap, "consume", topic_name, "-p", "1", "-o", "2", "-n", "1")
    assert values == '{"a": 1}\n'


def test_keyed_records_land_where_kafka_partitioners_put_them(bootstrap, topic_name):
    kb(bootstrap, "topic", "create", topic_name, "-p", "4")
    kb(bootstrap, "produce", topic_name, "-k", "21", "--compression", "gzip", stdin=b"a\nb\n")
    records = consume_json(bootstrap, topic_name, "--from-beginning")
    # murmur2(b"21") = -973932308 (Kafka's own test vector); & 0x7fffffff % 4 = 0.
    assert [(r["partition"], r["value"]) for r in records] == [(0, "a"), (0, "b")]


def test_group_lag_reset_and_delete(bootstrap, topic_name):
    group = f"g-{topic_name}"
    kb(bootstrap, "topic", "create", topic_name, "-p", "1")
    for i in range(5):  # one batch each: tansu 0.6 answers ListOffsets(latest) with the last
        kb(bootstrap, "produce", topic_name, stdin=b"r%d\n" % i)  # batch's base offset + 1
    assert kb(bootstrap, "consume", topic_name, "--from-beginning", "-n", "3", "-g", group) == \
        "r0\nr1\nr2\n"

    described = kb_json(bootstrap, "group", "describe", group)
    assert [(o["topic"], o["committed"], o["latest"], o["lag"]) for o in described["offsets"]] == \
        [(topic_name, 3, 5, 2)]
    assert group in {g["group"] for g in kb_json(bootstrap, "group", "list")}
    assert kb(bootstrap, "consume", topic_name, "-g", group, "-n", "2") == "r3\nr4\n"

    dry = kb_json(bootstrap, "group", "reset-offsets", group, "--topic", topic_name,
                  "--to-earliest", "--dry-run")
    assert [r["new_offset"] for r in dry] == [0]
    assert kb_json(bootstrap, "group", "describe", group)["offsets"][0]["committed"] == 5
    kb(bootstrap, "group", "reset-offsets", group, "--topic", topic_name, "--to-offset", "1")
    assert kb_json(bootstrap, "group", "describe", group)["offsets"][0]["lag"] == 4
    assert kb(bootstrap, "consume", topic_name, "-g", group, "-n", "1") == "r1\n"
    kb(bootstrap, "group", "reset-offsets", group, "--topic", topic_name, "--to-latest")
    assert kb_json(bootstrap, "group", "describe", group)["offsets"][0]["lag"] == 0

    kb(bootstrap, "group", "delete", group)
    assert group not in {g["group"] for g in kb_json(bootstrap, "group", "list")}


def test_unreachable_broker_is_an_error_not_a_traceback():
    result = kbroker_command("127.0.0.1:1", "topic", "list")
    assert result.returncode == 1
    assert result.stderr.decode().startswith("kbroker: cannot connect to 127.0.0.1:1")


@pytest.fixture(scope="module")
def kbroker_only():
    with running("kbroker") as address:
        yield address


def test_read_committed_skips_aborted_transactions(kbroker_only, topic_name):
    from confluent_kafka import Producer

    kb(kbroker_only, "topic", "create", topic_name)
    producer = Producer({"bootstrap.servers": kbroker_only, "transactional.id": topic_name})
    producer.init_transactions(10)
    for value, commit in ((b"aborted", False), (b"committed", True)):
        producer.begin_transaction()
        producer.produce(topic_name, value)
        producer.flush(10)
        if commit:
            producer.commit_transaction(10)
        else:
            producer.abort_transaction(10)
    assert kb(kbroker_only, "consume", topic_name, "--from-beginning", "-e",
              "--isolation", "read_committed") == "committed\n"
    assert kb(kbroker_only, "consume", topic_name, "--from-beginning", "-e") == \
        "aborted\ncommitted\n"


def test_times_files_and_progress(kbroker_only, topic_name, tmp_path):
    lines = tmp_path / "records.txt"
    lines.write_bytes(b"".join(b"line %d\n" % i for i in range(1000)))
    result = kbroker_command(kbroker_only, "produce", topic_name, "-f", str(lines), "-p", "0",
                             "--compression", "zstd")
    assert result.returncode == 0, result.stderr
    assert re.match(rb"1000 records produced in [\d.]+ s \([\d.]+ records/sec", result.stderr)
    first, last = consume_json(kbroker_only, topic_name, "--from-beginning")[::999]
    assert (first["value"], last["value"], last["offset"]) == ("line 0", "line 999", 999)

    future = datetime.fromtimestamp(last["timestamp"] / 1000 + 3600, UTC).isoformat()
    past = datetime.fromtimestamp(first["timestamp"] / 1000 - 3600, UTC).isoformat()
    assert kb(kbroker_only, "consume", topic_name, "--from-time", future, "-e") == ""
    assert kb(kbroker_only, "consume", topic_name, "--from-time", past, "-n", "1") == "line 0\n"

    group = f"g-{topic_name}"
    kb(kbroker_only, "group", "reset-offsets", group, "--topic", topic_name, "--to-time", past)
    assert kb_json(kbroker_only, "group", "describe", group)["offsets"][0]["committed"] == 0
    kb(kbroker_only, "group", "reset-offsets", group, "--topic", topic_name, "--to-time", future)
    assert kb_json(kbroker_only, "group", "describe", group)["offsets"][0]["lag"] == 0
    bad = kbroker_command(kbroker_only, "consume", topic_name, "--from-time", "yesterday")
    assert bad.returncode == 2 and b"not an ISO 8601 time" in bad.stderr


def test_sasl_plain_and_scram_logins(tmp_path):
    with running_broker("--sasl-user", "alice:secret", data_dir=tmp_path) as broker:
        for mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            kb(broker.bootstrap, "topic", "create", f"t-{mechanism}", "--sasl-username", "alice",
               "--sasl-password", "secret", "--sasl-mechanism", mechanism)
        wrong = kbroker_command(broker.bootstrap, "topic", "list", "--sasl-username", "alice",
                                "--sasl-password", "nope", "--sasl-mechanism", "SCRAM-SHA-256")
        assert wrong.returncode == 1 and b"SASL authentication failed" in wrong.stderr
        listed = kb(broker.bootstrap, "topic", "list", "--sasl-username", "alice",
                    "--sasl-password", "secret")
        assert all(f"t-{m}" in listed for m in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"))


def wait_for_group(bootstrap: str, group: str, done, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        result = kbroker_command(bootstrap, "group", "describe", group, "--json")
        described = json.loads(result.stdout) if result.returncode == 0 else None
        if described is not None and done(described):
            return described
        assert time.monotonic() < deadline, described or result.stderr
        time.sleep(0.2)


def test_consumers_of_one_group_share_the_partitions(kbroker_only, topic_name):
    # kbroker only: tansu 0.6's DescribeGroups shows no member assignments to check.
    bootstrap = kbroker_only
    group = f"g-{topic_name}"
    kb(bootstrap, "topic", "create", topic_name, "-p", "2")
    command = [sys.executable, "-m", "kbroker", "consume", topic_name, "-g", group, "-b", bootstrap]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    second = None
    try:
        wait_for_group(bootstrap, group, lambda g: g["state"] == "Stable" and len(g["members"]) == 1)
        second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        described = wait_for_group(bootstrap, group, lambda g: g["state"] == "Stable" and [
            m["assignment"] for m in g["members"]] in (
                [{topic_name: [0]}, {topic_name: [1]}], [{topic_name: [1]}, {topic_name: [0]}]))
        assert len({m["member_id"] for m in described["members"]}) == 2
    finally:
        for process in (first, second):
            if process is not None:
                process.send_signal(signal.SIGINT)  # the consumer leaves the group as it ends
                process.communicate(timeout=30)
    assert wait_for_group(bootstrap, group, lambda g: not g["members"])["state"] == "Empty"


def test_topic_create_takes_the_broker_defaults(tmp_path, topic_name):
    """As kafka-topics.sh: without -p/-r the broker's num.partitions and default.replication.factor."""
    with running_broker("--num-partitions", "2", data_dir=tmp_path, brokers=3) as cluster:
        kb(cluster.bootstrap, "topic", "create", topic_name)
        described = kb_json(cluster.bootstrap, "topic", "describe", topic_name)
        assert [len(p["replicas"]) for p in described["partitions"]] == [3, 3]  # min(3, N)
