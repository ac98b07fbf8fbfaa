"""LogConfig under Kafka topic config names, and topic name rules."""

from __future__ import annotations

import pytest

from kbroker.log import TOPIC_SETTINGS_BY_NAME, LogConfig, validate_topic_name
from kbroker.protocol.errors import ErrorCode, KafkaError


def test_defaults_match_kafka():
    config = LogConfig()
    kafka = config.to_kafka()
    assert kafka["segment.bytes"] == "1073741824"
    assert kafka["segment.ms"] == "604800000"
    assert kafka["max.message.bytes"] == "1048588"
    assert kafka["cleanup.policy"] == "delete"
    assert kafka["flush.messages"] == str((1 << 63) - 1)
    assert kafka["message.timestamp.type"] == "CreateTime"
    assert config.delete and not config.compact and not config.log_append_time


def test_overrides_parse_and_validate():
    config = LogConfig().with_overrides({
        "segment.bytes": "2097152", "cleanup.policy": "compact, delete",
        "min.cleanable.dirty.ratio": "0.25", "message.timestamp.type": "LogAppendTime",
        "preallocate": "FALSE", "retention.ms": "-1",
    })
    assert config.segment_bytes == 2097152
    assert config.cleanup_policy == ("compact", "delete") and config.compact and config.delete
    assert config.min_cleanable_dirty_ratio == 0.25 and config.log_append_time and not config.preallocate
    assert config.retention_ms == -1
    assert LogConfig().with_overrides({"retention.ms": None}) == LogConfig()


def test_an_empty_cleanup_policy_neither_deletes_nor_compacts():
    """Kafka 4.2 accepts cleanup.policy="" (KIP-1161): segments are kept forever."""
    config = LogConfig().with_overrides({"cleanup.policy": ""})
    assert config.cleanup_policy == () and not config.delete and not config.compact
    assert config.to_kafka()["cleanup.policy"] == ""


def test_kafka_4_topic_configs_are_listed():
    config = LogConfig().with_overrides({"follower.replication.throttled.replicas": "0:1,1:1",
                                         "leader.replication.throttled.replicas": "*"})
    kafka = config.to_kafka()
    assert kafka["follower.replication.throttled.replicas"] == "0:1,1:1"
    assert kafka["leader.replication.throttled.replicas"] == "*"
    assert (kafka["remote.storage.enable"], kafka["local.retention.ms"],
            kafka["local.retention.bytes"], kafka["remote.log.copy.disable"],
            kafka["remote.log.delete.on.disable"]) == ("false", "-2", "-2", "false", "false")


@pytest.mark.parametrize("name,value", [
    ("segment.bytes", "1000"), ("segment.bytes", "abc"), ("segment.bytes", str(1 << 31)),
    ("cleanup.policy", "forever"), ("cleanup.policy", "delete,none"), ("message.timestamp.type", "Now"),
    ("min.cleanable.dirty.ratio", "1.5"), ("retention.ms", "-2"), ("preallocate", "yes"),
    ("no.such.config", "1"), ("compression.type", "brotli"), ("preallocate", "true"),
    ("compression.gzip.level", "10"), ("compression.zstd.level", "23"),
    ("leader.replication.throttled.replicas", "0:1,x"), ("remote.storage.enable", "true"),
    ("local.retention.ms", "-3"),
])
def test_bad_values_are_invalid_config(name, value):
    with pytest.raises(KafkaError) as err:
        LogConfig().with_overrides({name: value})
    assert err.value.code == ErrorCode.INVALID_CONFIG


def test_every_setting_fills_a_field_and_every_field_has_a_setting():
    assert {setting.field for setting in TOPIC_SETTINGS_BY_NAME.values()} == set(LogConfig.__dataclass_fields__)


def test_errors_name_the_setting_and_the_value():
    with pytest.raises(KafkaError) as err:
        LogConfig().with_overrides({"segment.bytes": str(1 << 31)})
    assert err.value.message == \
        "Invalid value 2147483648 for configuration segment.bytes: Not a number of type INT"


def test_min_compaction_lag_may_not_exceed_the_max():
    config = LogConfig().with_overrides({"min.compaction.lag.ms": "9", "max.compaction.lag.ms": "8"})
    with pytest.raises(KafkaError) as err:
        config.check_rules()
    assert err.value.message == \
        "conflict topic config setting min.compaction.lag.ms (9) > max.compaction.lag.ms (8)"


@pytest.mark.parametrize("name", ["", ".", "..", "a" * 250, "bad name", "tópico", "a/b"])
def test_illegal_topic_names(name):
    with pytest.raises(KafkaError) as err:
        validate_topic_name(name)
    assert err.value.code == ErrorCode.INVALID_TOPIC_EXCEPTION


@pytest.mark.parametrize("name", ["a", "A-b_c.d", "__consumer_offsets", "x" * 249])
def test_legal_topic_names(name):
    validate_topic_name(name)
