"""One table of settings: broker defaults derived from the topic settings, one parser and error
format, cross-field rules, startup errors as one line naming what the user typed, and settings
that do what they say (compression levels) or are refused (preallocate)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import kbroker.config
from kbroker.config import SETTINGS_BY_NAME, Config, ConfigSource
from kbroker.log.config import TOPIC_SETTINGS, LogConfig
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.messages import ProduceRequest
from kbroker.protocol.records import Record, build_batch
from kbroker.testing import running_broker
from tests.test_admin import create, topic
from tests.test_admin_configs import fetch_batches
from tests.test_transactions_wire import produce
from tests.wire import WireClient


def test_every_topic_setting_has_its_broker_default_with_the_same_rules():
    for setting in TOPIC_SETTINGS:
        if setting.broker_name is None:  # a topic-only config, e.g. remote.log.copy.disable
            continue
        broker = SETTINGS_BY_NAME[setting.broker_name]
        assert broker.topic_name == setting.name and broker.dynamic
        assert (broker.kind, broker.default, broker.low, broker.high, broker.choices) == \
            (setting.kind, setting.default, setting.low, setting.high, setting.choices)


def test_broker_values_become_the_topic_defaults():
    config = Config({"log.segment.bytes": "2097152", "log.cleanup.policy": "compact,delete",
                     "compression.zstd.level": "7"})
    defaults = config.log_defaults()
    assert (defaults.segment_bytes, defaults.cleanup_policy, defaults.compression_zstd_level) == \
        (2097152, ("compact", "delete"), 7)


@pytest.mark.parametrize("override, message", [
    ("log.segment.bytes=2147483648",
     "Invalid value 2147483648 for configuration log.segment.bytes: Not a number of type INT"),
    ("log.segment.bytes=1000",
     "Invalid value 1000 for configuration log.segment.bytes: Value must be at least 1048576"),
    ("no.such.setting=1", "Unknown broker config name: no.such.setting"),
    ("listeners=localhost", "Invalid value localhost for configuration listeners: 'localhost' is not "
     "NAME://HOST:PORT"),
    ("log.cleaner.min.compaction.lag.ms=10", "conflict topic config setting "
     "log.cleaner.min.compaction.lag.ms (10) > log.cleaner.max.compaction.lag.ms (5)"),
    ("log.preallocate=true", "Invalid value true for configuration log.preallocate: kbroker does "
     "not preallocate segment files"),
    ("compression.gzip.level=10",
     "Invalid value 10 for configuration compression.gzip.level: Value must be no more than 9"),
    ("group.min.session.timeout.ms=7000", "conflict broker config setting "
     "group.min.session.timeout.ms (7000) > group.max.session.timeout.ms (6500)"),
])
def test_startup_errors_are_one_line_naming_what_was_typed(tmp_path, override, message):
    """`--override log.segment.bytes=2147483648` used to pass the broker table and then stop the
    broker with a traceback naming segment.bytes."""
    result = subprocess.run(
        [sys.executable, "-m", "kbroker", "serve", "--port", "0", "--data-dir", str(tmp_path),
         "--override", "log.cleaner.max.compaction.lag.ms=5",
         "--override", "group.max.session.timeout.ms=6500", "--override", override],
        capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stderr) == (2, f"kbroker: {message}\n")


def test_alter_configs_keeps_the_rules_between_settings():
    config = Config()
    with pytest.raises(KafkaError) as err:
        config.set_dynamic(ConfigSource.DYNAMIC_BROKER_CONFIG, {
            "log.cleaner.min.compaction.lag.ms": "10", "log.cleaner.max.compaction.lag.ms": "5"})
    assert err.value.code == ErrorCode.INVALID_REQUEST
    assert config.log_defaults().min_compaction_lag_ms == 0  # nothing changed


@pytest.mark.parametrize("codec, low, high", [("gzip", 1, 9), ("zstd", 1, 19)])
def test_compression_levels_change_what_the_broker_stores(topic_name, codec, low, high):
    """compression.<codec>.level used to be accepted and ignored; now the broker recompresses
    with it when the topic's compression.type differs from the producer's."""
    text = Path(kbroker.config.__file__).read_bytes()  # prose and code compress like logs do
    batch = build_batch([Record(timestamp=1_700_000_000_000, value=text[i:i + 1000])
                         for i in range(0, len(text), 1000)])
    stored = {}
    with running_broker() as broker, WireClient(broker.bootstrap) as wire:
        for level in (low, high):
            name = f"{topic_name}-{level}"
            create(wire, topic(name, configs=[("compression.type", codec),
                                              (f"compression.{codec}.level", str(level))]))
            answer = produce(wire, name, 0, batch, None)
            assert answer.error_code == 0
            [header] = fetch_batches(wire, name)
            stored[level] = header.size
    assert stored[high] < stored[low]


def test_a_listener_address_in_use_is_one_line(tmp_path):
    with running_broker() as broker:
        result = subprocess.run(
            [sys.executable, "-m", "kbroker", "serve", "--port", str(broker.port), "--data-dir",
             str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == \
        f"kbroker: cannot listen on 127.0.0.1:{broker.port} (listeners): Address already in use"


def test_an_unusable_data_directory_is_one_line(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    result = subprocess.run(
        [sys.executable, "-m", "kbroker", "serve", "--port", "0", "--data-dir",
         str(tmp_path / "file" / "data")], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr == f"kbroker: cannot open the data: Not a directory: {tmp_path / 'file' / 'data'}\n"


def test_min_insync_replicas_over_one_refuses_acks_all_as_one_kafka_broker_does(topic_name):
    """min.insync.replicas used to be accepted and ignored."""
    batch = build_batch([Record(timestamp=1_700_000_000_000, value=b"v")])
    with running_broker() as broker, WireClient(broker.bootstrap) as wire:
        create(wire, topic(topic_name, configs=[("min.insync.replicas", "2")]))
        assert produce(wire, topic_name, 0, batch, None).error_code == ErrorCode.NOT_ENOUGH_REPLICAS
        request = ProduceRequest
        answer = wire.request("Produce", 9, transactional_id=None, acks=1, timeout_ms=5000, topic_data=[
            request.TopicProduceData(name=topic_name, partition_data=[
                request.PartitionProduceData(index=0, records=batch)])])
        assert answer.responses[0].partition_responses[0].error_code == 0


@pytest.mark.parametrize("name, value, message", [
    ("preallocate", "true", "Invalid value true for configuration preallocate: kbroker does not "
     "preallocate segment files"),
    ("leader.replication.throttled.replicas", "x", "Invalid value x for configuration "
     "leader.replication.throttled.replicas: leader.replication.throttled.replicas must be the "
     "literal '*' or a list of replicas in the following format: [partitionId]:[brokerId],"
     "[partitionId]:[brokerId],..."),
    ("remote.storage.enable", "true", "Tiered Storage functionality is disabled in the broker. "
     "Topic cannot be configured with remote log storage."),
])
def test_validators_report_in_the_common_format_unless_kafka_says_otherwise(name, value, message):
    with pytest.raises(KafkaError) as err:
        LogConfig().with_overrides({name: value})
    assert (err.value.code, err.value.message) == (ErrorCode.INVALID_CONFIG, message)


def test_an_api_usage_file_in_a_missing_directory_is_one_line(tmp_path):
    """It used to be accepted, then stop the running broker with a traceback at the first save."""
    result = subprocess.run(
        [sys.executable, "-m", "kbroker", "serve", "--port", "0", "--data-dir", str(tmp_path / "data"),
         "--api-usage-file", str(tmp_path / "missing" / "usage.json")],
        capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stderr) == \
        (2, f"kbroker: --api-usage-file: no directory {tmp_path / 'missing'}\n")
