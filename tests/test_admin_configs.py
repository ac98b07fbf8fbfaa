"""Topic and broker configs: DescribeConfigs, AlterConfigs and IncrementalAlterConfigs with real
admin clients and on the wire, and topic configs taking effect on the data path."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource as AioConfigResource
from aiokafka.admin.config_resource import ConfigResourceType as AioType
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigSource
from confluent_kafka.admin import ConfigResource as CkConfigResource
from confluent_kafka.admin import NewTopic as CkNewTopic
from kafka import KafkaAdminClient
from kafka.admin import AlterConfigOp, ConfigResource

from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.messages import (
    AlterConfigsRequest, DescribeConfigsRequest, FetchRequest, IncrementalAlterConfigsRequest,
)
from kbroker.protocol.records import GZIP, ZSTD, BatchHeader, iter_batches
from kbroker.testing import running_broker
from tests.kafka_clients import confluent_consume, confluent_producer
from tests.test_admin import create, topic
from tests.wire import WireClient

TOPIC, BROKER = 2, 4
SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3


@pytest.fixture(scope="module")
def configs_broker(tmp_path_factory):
    with running_broker("--override", "log.retention.bytes=123456789",
                        data_dir=tmp_path_factory.mktemp("configs")) as started:
        yield started


def describe(wire: WireClient, resource_type: int, name: str, keys=None, version: int = 4, **flags):
    Resource = DescribeConfigsRequest.DescribeConfigsResource
    response = wire.request("DescribeConfigs", version, resources=[
        Resource(resource_type=resource_type, resource_name=name, configuration_keys=keys)], **flags)
    return response.results[0]


def incremental(wire: WireClient, resource_type: int, name: str, *ops, validate_only=False):
    Resource = IncrementalAlterConfigsRequest.AlterConfigsResource
    Config = IncrementalAlterConfigsRequest.AlterableConfig
    response = wire.request("IncrementalAlterConfigs", 1, validate_only=validate_only, resources=[
        Resource(resource_type=resource_type, resource_name=name, configs=[
            Config(name=key, config_operation=op, value=value) for key, op, value in ops])])
    return response.responses[0].error_code, response.responses[0].error_message


def values(result) -> dict:
    return {config.name: config.value for config in result.configs}


# -- DescribeConfigs -------------------------------------------------------------------------

def test_describe_topic_configs(configs_broker, topic_name):
    with WireClient(configs_broker.bootstrap) as wire:
        create(wire, topic(topic_name, configs=[("retention.ms", "1234"), ("cleanup.policy", "compact,delete")]))
        result = describe(wire, TOPIC, topic_name, include_synonyms=True, include_documentation=True)
        assert result.error_code == 0
        configs = {config.name: config for config in result.configs}
        retention = configs["retention.ms"]
        assert (retention.value, retention.config_source, retention.read_only, retention.config_type) == \
            ("1234", 1, False, 5)
        assert [(s.name, s.value, s.source) for s in retention.synonyms] == [
            ("retention.ms", "1234", 1), ("log.retention.ms", "604800000", 5)]
        assert configs["cleanup.policy"].value == "compact,delete" and configs["cleanup.policy"].config_type == 7
        size = configs["retention.bytes"]  # the broker default comes from the command line
        assert (size.value, size.config_source) == ("123456789", 4)
        assert [(s.name, s.source) for s in size.synonyms] == [("log.retention.bytes", 4), ("log.retention.bytes", 5)]
        assert configs["min.cleanable.dirty.ratio"].config_type == 6 and configs["preallocate"].config_type == 1
        assert retention.documentation
        # Filtered keys; unknown keys are left out.
        old = describe(wire, TOPIC, topic_name, keys=["retention.ms", "segment.ms", "nope"], version=1)
        assert [(c.name, c.config_source) for c in old.configs] == [("retention.ms", 1), ("segment.ms", 5)]
        assert describe(wire, TOPIC, "missing").error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        assert describe(wire, TOPIC, "bad name").error_code == ErrorCode.INVALID_TOPIC_EXCEPTION


def test_describe_broker_configs(configs_broker):
    with WireClient(configs_broker.bootstrap) as wire:
        result = describe(wire, BROKER, "1", include_synonyms=True)
        configs = {config.name: config for config in result.configs}
        assert configs["num.partitions"].read_only and configs["log.dirs"].read_only
        assert not configs["log.retention.ms"].read_only and not configs["max.connections"].read_only
        assert (configs["log.retention.bytes"].value, configs["log.retention.bytes"].config_source) == ("123456789", 4)
        assert (configs["log.retention.ms"].value, configs["log.retention.ms"].config_source) == ("604800000", 5)
        assert configs["log.cleanup.policy"].config_type == 7
        # Nothing set for the whole cluster yet but what eligible leader replicas pin (KIP-966).
        assert [(c.name, c.value, c.config_source) for c in describe(wire, BROKER, "").configs] == [
            ("min.insync.replicas", "1", 3)]
        wrong = describe(wire, BROKER, "2")
        assert (wrong.error_code, wrong.error_message) == (
            ErrorCode.INVALID_REQUEST, "Unexpected broker id, expected 1 or empty string, but received 2")
        assert describe(wire, 8, "1").error_code == ErrorCode.INVALID_REQUEST


def test_kafka_python_describe_and_alter(configs_broker, topic_name):
    admin = KafkaAdminClient(bootstrap_servers=configs_broker.bootstrap)
    try:
        admin.create_topics({topic_name: {"num_partitions": 1}})
        resource = ConfigResource("TOPIC", topic_name)
        assert admin.describe_configs([resource])["topic"][topic_name] == {}  # nothing modified
        admin.alter_configs([ConfigResource("TOPIC", topic_name, {
            "retention.ms": "3000", "cleanup.policy": (AlterConfigOp.APPEND, "compact")})])
        modified = admin.describe_configs([resource], include_synonyms=True)["topic"][topic_name]
        assert {k: v["value"] for k, v in modified.items()} == {"retention.ms": "3000",
                                                               "cleanup.policy": "delete,compact"}
        admin.alter_configs([ConfigResource("TOPIC", topic_name, {
            "cleanup.policy": (AlterConfigOp.SUBTRACT, "delete")})])
        admin.reset_configs([ConfigResource("TOPIC", topic_name, ["retention.ms"])])
        modified = admin.describe_configs([resource])["topic"][topic_name]
        assert {k: v["value"] for k, v in modified.items()} == {"cleanup.policy": "compact"}
        every = admin.describe_configs([resource], config_filter="all")["topic"][topic_name]
        assert every["retention.ms"]["config_source"] == "DEFAULT_CONFIG"
        with pytest.raises(ValueError):  # kafka-python refuses configs Kafka reports read-only
            admin.alter_configs([ConfigResource("BROKER", "1", {"num.partitions": "3"})])
    finally:
        admin.close()


@pytest.mark.filterwarnings("ignore:alter_configs has been deprecated")
def test_confluent_incremental_and_legacy_alter(configs_broker, topic_name):
    admin = AdminClient({"bootstrap.servers": configs_broker.bootstrap})
    admin.create_topics([CkNewTopic(topic_name, 1, 1, config={"segment.ms": "100000"})])[topic_name].result()
    resource = CkConfigResource("topic", topic_name, incremental_configs=[
        ConfigEntry("retention.ms", "7000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("segment.ms", None, incremental_operation=AlterConfigOpType.DELETE)])
    admin.incremental_alter_configs([resource])[resource].result()
    described = admin.describe_configs([CkConfigResource("topic", topic_name)])
    entries = list(described.values())[0].result()
    assert entries["retention.ms"].value == "7000"
    assert entries["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert entries["segment.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    # The legacy AlterConfigs replaces every override: retention.ms goes back to its default.
    legacy = CkConfigResource("topic", topic_name, set_config={"max.message.bytes": "5000"})
    admin.alter_configs([legacy])[legacy].result()
    entries = list(admin.describe_configs([CkConfigResource("topic", topic_name)]).values())[0].result()
    assert entries["retention.ms"].is_default and entries["max.message.bytes"].value == "5000"
    bad = CkConfigResource("topic", topic_name, incremental_configs=[
        ConfigEntry("retention.ms", "x", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as caught:
        admin.incremental_alter_configs([bad])[bad].result()
    assert caught.value.args[0].code() == ErrorCode.INVALID_CONFIG


def test_non_default_topic_configs_as_confluent_kafka_pythons_suite_expects(broker, topic_name):
    """confluent-kafka-python's test_incremental_alter_configs against Kafka 4.1+: the
    cluster-level min.insync.replicas that eligible leader replicas pin (KIP-966) is listed with
    the topic's own overrides."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    names = [f"{topic_name}-1", f"{topic_name}-2"]
    for future in admin.create_topics([CkNewTopic(name, 2, 1, config={"compression.type": "gzip"})
                                       for name in names]).values():
        future.result()
    appended, subtracted = (
        CkConfigResource("topic", names[0], incremental_configs=[
            ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND),
            ConfigEntry("retention.ms", "10000", incremental_operation=AlterConfigOpType.SET)]),
        CkConfigResource("topic", names[1], incremental_configs=[
            ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.SUBTRACT),
            ConfigEntry("retention.ms", "5000", incremental_operation=AlterConfigOpType.SET)]))
    for future in admin.incremental_alter_configs([appended, subtracted]).values():
        assert future.result() is None
    described = admin.describe_configs([CkConfigResource("topic", name) for name in names])
    non_default = {resource.name: sorted(str(entry) for entry in future.result().values() if not entry.is_default)
                   for resource, future in described.items()}
    assert non_default == {
        names[0]: ['cleanup.policy="delete,compact"', 'compression.type="gzip"', 'min.insync.replicas="1"',
                   'retention.ms="10000"'],
        names[1]: ['cleanup.policy=""', 'compression.type="gzip"', 'min.insync.replicas="1"',
                   'retention.ms="5000"']}
    pinned = list(admin.describe_configs([CkConfigResource("topic", names[0])]).values())[0].result()
    assert pinned["min.insync.replicas"].source == ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value


def test_releases_before_4_1_pin_no_min_insync_replicas(tmp_path):
    with running_broker("--as-version", "3.9", data_dir=tmp_path) as broker:
        with WireClient(broker.bootstrap) as wire:
            assert describe(wire, BROKER, "").configs == []


def test_eligible_leader_replicas_pin_the_static_min_insync_replicas(tmp_path):
    with running_broker("--override", "min.insync.replicas=2", data_dir=tmp_path) as broker:
        with WireClient(broker.bootstrap) as wire:
            cluster = describe(wire, BROKER, "", include_synonyms=True)
            assert [(c.name, c.value, c.config_source) for c in cluster.configs] == [
                ("min.insync.replicas", "2", 3)]


def test_aiokafka_describe_and_alter(configs_broker, topic_name):
    async def scenario():
        admin = AIOKafkaAdminClient(bootstrap_servers=configs_broker.bootstrap)
        await admin.start()
        try:
            with WireClient(configs_broker.bootstrap) as wire:
                create(wire, topic(topic_name))
            responses = await admin.alter_configs([AioConfigResource(AioType.TOPIC, topic_name,
                                                                     {"retention.bytes": "999"})])
            assert [r.resources[0][0] for r in responses if r.resources] == [0]
            responses = await admin.describe_configs([AioConfigResource(AioType.TOPIC, topic_name)])
            found = {entry[0]: entry[1] for entry in responses[0].resources[0][4]}
            assert found["retention.bytes"] == "999"
        finally:
            await admin.close()

    asyncio.run(scenario())


# -- altering: exact answers -----------------------------------------------------------------

def test_alter_topic_config_errors(configs_broker, topic_name):
    with WireClient(configs_broker.bootstrap) as wire:
        create(wire, topic(topic_name))
        assert incremental(wire, TOPIC, topic_name, ("retention.ms", SET, "x"))[0] == ErrorCode.INVALID_CONFIG
        assert incremental(wire, TOPIC, topic_name, ("no.such", SET, "1"))[0] == ErrorCode.INVALID_CONFIG
        assert incremental(wire, TOPIC, topic_name, ("retention.ms", APPEND, "1")) == (
            ErrorCode.INVALID_CONFIG, "Can't APPEND to key retention.ms because its type is not LIST.")
        assert incremental(wire, TOPIC, topic_name, ("min.compaction.lag.ms", SET, "9"),
                           ("max.compaction.lag.ms", SET, "8"))[0] == ErrorCode.INVALID_CONFIG
        assert incremental(wire, TOPIC, topic_name, ("retention.ms", SET, None))[0] == ErrorCode.INVALID_REQUEST
        assert incremental(wire, TOPIC, topic_name, ("retention.ms", SET, "1"), ("retention.ms", SET, "2"))[0] \
            == ErrorCode.INVALID_REQUEST
        assert incremental(wire, TOPIC, topic_name, ("retention.ms", 9, "1"))[0] == ErrorCode.INVALID_REQUEST
        assert incremental(wire, TOPIC, "missing", ("retention.ms", SET, "1")) == (
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "The topic 'missing' does not exist.")
        assert incremental(wire, TOPIC, "", ("retention.ms", SET, "1"))[0] == ErrorCode.INVALID_REQUEST
        assert incremental(wire, TOPIC, topic_name, ("retention.ms", SET, "1"), validate_only=True) == (0, None)
        assert values(describe(wire, TOPIC, topic_name, ["retention.ms"])) == {"retention.ms": "604800000"}
        Resource = AlterConfigsRequest.AlterConfigsResource
        Config = AlterConfigsRequest.AlterableConfig
        twice = [Resource(resource_type=TOPIC, resource_name=topic_name,
                          configs=[Config(name="retention.ms", value="5")])] * 2
        response = wire.request("AlterConfigs", 2, resources=twice, validate_only=False)
        assert [(r.error_code, r.error_message) for r in response.responses] == [
            (ErrorCode.INVALID_REQUEST, "Each resource must appear at most once.")] * 2


def test_broker_configs_are_dynamic_and_persisted(tmp_path, topic_name):
    with running_broker(data_dir=tmp_path) as broker:
        with WireClient(broker.bootstrap) as wire:
            create(wire, topic(topic_name))
            assert incremental(wire, BROKER, "1", ("log.retention.ms", SET, "4242")) == (0, None)
            assert incremental(wire, BROKER, "", ("log.cleanup.policy", APPEND, "compact")) == (0, None)
            assert incremental(wire, BROKER, "", ("log.cleanup.policy", SUBTRACT, "delete")) == (0, None)
            assert incremental(wire, BROKER, "1", ("num.partitions", SET, "3")) == (
                ErrorCode.INVALID_REQUEST, "Cannot update these configs dynamically: num.partitions")
            assert incremental(wire, BROKER, "1", ("log.retention.ms", SET, "x"))[0] == ErrorCode.INVALID_REQUEST
            assert incremental(wire, BROKER, "1", ("log.cleaner.min.cleanable.ratio", SET, "2"))[0] == \
                ErrorCode.INVALID_REQUEST
            assert incremental(wire, BROKER, "1", ("log.retention.ms", APPEND, "1"))[0] == ErrorCode.INVALID_CONFIG
            assert incremental(wire, BROKER, "7", ("log.retention.ms", SET, "1"))[0] == ErrorCode.INVALID_REQUEST
            assert incremental(wire, BROKER, "1", ("some.future.setting", SET, "1")) == (0, None)
    with running_broker(data_dir=tmp_path) as broker:  # restarted: still in effect
        with WireClient(broker.bootstrap) as wire:
            result = describe(wire, TOPIC, topic_name, include_synonyms=True)
            configs = {config.name: config for config in result.configs}
            assert (configs["retention.ms"].value, configs["retention.ms"].config_source) == ("4242", 2)
            assert (configs["cleanup.policy"].value, configs["cleanup.policy"].config_source) == ("compact", 3)
            cluster = describe(wire, BROKER, "", include_synonyms=True)
            assert [(c.name, c.value, c.config_source, [s.source for s in c.synonyms]) for c in cluster.configs] == \
                [("log.cleanup.policy", "compact", 3, [3]), ("min.insync.replicas", "1", 3, [3])]
            assert incremental(wire, BROKER, "1", ("log.retention.ms", DELETE, None)) == (0, None)
            assert values(describe(wire, TOPIC, topic_name, ["retention.ms"])) == {"retention.ms": "604800000"}
            broker_view = {c.name: c for c in describe(wire, BROKER, "1").configs}
            assert broker_view["some.future.setting"].value == "1"
            assert broker_view["some.future.setting"].read_only


# -- configs take effect ---------------------------------------------------------------------

def fetch_batches(wire: WireClient, topic_name: str) -> list[BatchHeader]:
    Topic, Partition = FetchRequest.FetchTopic, FetchRequest.FetchPartition
    response = wire.request("Fetch", 12, replica_id=-1, max_wait_ms=0, min_bytes=0, max_bytes=1 << 20,
                            isolation_level=0, session_id=0, session_epoch=-1, topics=[Topic(
                                topic=topic_name, partitions=[Partition(
                                    partition=0, fetch_offset=0, partition_max_bytes=1 << 20,
                                    current_leader_epoch=-1, log_start_offset=-1)])],
                            forgotten_topics_data=[], rack_id="")
    records = response.responses[0].partitions[0].records
    return [header for _, header in iter_batches(bytes(records))] if records else []


@pytest.mark.parametrize("codec, code", [("gzip", GZIP), ("zstd", ZSTD), ("uncompressed", 0)])
def test_compression_type_recompresses(configs_broker, topic_name, codec, code):
    with WireClient(configs_broker.bootstrap) as wire:
        create(wire, topic(topic_name, configs=[("compression.type", codec)]))
        producer = confluent_producer(configs_broker.bootstrap, **{"compression.type": "lz4", "linger.ms": 20})
        for i in range(50):
            producer.produce(topic_name, key=b"%d" % i, value=b"value %d" % i, timestamp=1_700_000_000_000 + i)
        assert producer.flush(10) == 0
        assert {header.compression for header in fetch_batches(wire, topic_name)} == {code}
        records = confluent_consume(configs_broker.bootstrap, topic_name, 50)
        assert [(m.offset(), m.key(), m.value(), m.timestamp()[1]) for m in records] == [
            (i, b"%d" % i, b"value %d" % i, 1_700_000_000_000 + i) for i in range(50)]


def test_message_configs_take_effect_without_restart(configs_broker, topic_name):
    with WireClient(configs_broker.bootstrap) as wire:
        create(wire, topic(topic_name))
        producer = confluent_producer(configs_broker.bootstrap, **{"linger.ms": 0})
        errors = []

        def produce(value: bytes, **extra) -> None:
            producer.produce(topic_name, value=value, on_delivery=lambda err, msg: errors.append(err), **extra)
            producer.flush(10)

        produce(b"x" * 2000)
        assert errors.pop() is None
        assert incremental(wire, TOPIC, topic_name, ("max.message.bytes", SET, "1000"),
                           ("message.timestamp.before.max.ms", SET, "60000")) == (0, None)
        produce(b"x" * 2000)
        assert errors.pop().code() == ErrorCode.MESSAGE_TOO_LARGE
        produce(b"old", timestamp=int(time.time() * 1000) - 3_600_000)
        assert errors.pop().code() == ErrorCode.INVALID_TIMESTAMP
        assert incremental(wire, TOPIC, topic_name, ("message.timestamp.type", SET, "LogAppendTime")) == (0, None)
        produce(b"stamped", timestamp=1_000)
        assert errors.pop() is None
        stamped = confluent_consume(configs_broker.bootstrap, topic_name, 2)[-1]
        kind, timestamp = stamped.timestamp()
        assert stamped.value() == b"stamped" and kind == 2 and abs(timestamp - time.time() * 1000) < 60_000
