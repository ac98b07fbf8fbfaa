"""The ACL checks of librdkafka's own suite (tests/0081-admin.c: do_test_CreateAcls,
do_test_DescribeAcls, do_test_DeleteAcls) and of confluent-kafka-python's (integration/admin:
test_basic_operations' verify_admin_acls, test_describe_operations), run through confluent-kafka
against kbroker configured as their test clusters are: an ACL authorizer with
allow.everyone.if.no.acl.found=true (trivup's server.properties), SASL/PLAIN user `sasl_user` for
the authorized-operations checks. docs/CLIENT_SUITES.md runs the suites themselves."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import ConsumerGroupState, TopicCollection
from confluent_kafka.admin import (
    AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient, NewTopic,
    ResourcePatternType, ResourceType,
)

from kbroker.testing import running_broker
from tests.kafka_clients import confluent_producer
from tests.wire import WireClient

TRIVUP_AUTHORIZER = ("--override", "authorizer.class.name=kafka.security.authorizer.AclAuthorizer",
                     "--override", "allow.everyone.if.no.acl.found=true")
ANY = (AclOperation.ANY, AclPermissionType.ANY)


@pytest.fixture(scope="module")
def trivup_like_broker(tmp_path_factory):
    """PLAINTEXT for librdkafka's and test_basic_operations' checks, SASL_PLAINTEXT (PLAIN,
    sasl_user) for test_describe_operations'."""
    with running_broker("--sasl-user", "sasl_user:sasl_user", *TRIVUP_AUTHORIZER,
                        "--override", "listeners=PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
                        "--override", "sasl.enabled.mechanisms=PLAIN",
                        data_dir=tmp_path_factory.mktemp("suites-acls")) as started:
        yield started


def _admin(broker, listener: str = "PLAINTEXT") -> AdminClient:
    config = {"bootstrap.servers": broker.listeners.get(listener, broker.bootstrap)}
    if listener == "SASL_PLAINTEXT":
        config |= {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                   "sasl.username": "sasl_user", "sasl.password": "sasl_user"}
    return AdminClient(config)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _create(admin: AdminClient, bindings: list[AclBinding]) -> None:
    for future in admin.create_acls(bindings).values():
        assert future.result() is None


def _binding(resource_type, name, pattern, principal, operation, permission=AclPermissionType.ALLOW):
    return AclBinding(resource_type, name, pattern, principal, "*", operation, permission)


def _filter(resource_type, name, pattern, operation=AclOperation.ANY, permission=AclPermissionType.ANY):
    return AclBindingFilter(resource_type, name, pattern, None, None, operation, permission)


# -- librdkafka tests/0081-admin.c -------------------------------------------------------------

@pytest.mark.parametrize("version", [0, 1])  # 0: LITERAL only (before Kafka 2.0), 1: PREFIXED too
def test_librdkafka_0081_create_acls(trivup_like_broker, version):
    admin = _admin(trivup_like_broker)
    base = _name("do_test_CreateAcls")
    first = ResourcePatternType.PREFIXED if version else ResourcePatternType.LITERAL
    _create(admin, [_binding(ResourceType.TOPIC, f"{base}_1", first, "User:test1", AclOperation.READ),
                    _binding(ResourceType.TOPIC, f"{base}_2", ResourcePatternType.LITERAL, "User:test2",
                             AclOperation.WRITE)])


@pytest.mark.parametrize("version", [0, 1])
def test_librdkafka_0081_describe_acls(trivup_like_broker, version):
    admin = _admin(trivup_like_broker)
    topic = _name("do_test_DescribeAcls")
    first = ResourcePatternType.PREFIXED if version else ResourcePatternType.LITERAL
    created = [_binding(ResourceType.TOPIC, topic, first, "User:test1", AclOperation.READ),
               _binding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:test2", AclOperation.WRITE)]
    _create(admin, created)
    # MATCH (version 1) finds the literal and the prefixed binding naming the topic.
    matching = ResourcePatternType.MATCH if version else ResourcePatternType.LITERAL
    assert sorted(admin.describe_acls(_filter(ResourceType.TOPIC, topic, matching)).result()) == sorted(created)
    writers = admin.describe_acls(_filter(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL,
                                          AclOperation.WRITE)).result()
    assert writers == [created[1]]


@pytest.mark.parametrize("version", [0, 1])
def test_librdkafka_0081_delete_acls(trivup_like_broker, version):
    admin = _admin(trivup_like_broker)
    base = _name("do_test_DeleteAcls")
    first = ResourcePatternType.PREFIXED if version else ResourcePatternType.LITERAL
    by_topic1 = [_binding(ResourceType.TOPIC, f"{base}_1", first, "User:test1", AclOperation.READ),
                 _binding(ResourceType.TOPIC, f"{base}_1", ResourcePatternType.LITERAL, "User:test2",
                          AclOperation.WRITE)]
    by_topic2 = [_binding(ResourceType.TOPIC, f"{base}_2", ResourcePatternType.LITERAL, "User:test2",
                          AclOperation.WRITE)]
    _create(admin, by_topic1 + by_topic2)
    delete_pattern = ResourcePatternType.MATCH if version else ResourcePatternType.LITERAL
    for name, pattern, expected in ((f"{base}_1", delete_pattern, by_topic1),
                                    (f"{base}_2", ResourcePatternType.LITERAL, by_topic2)):
        deleting = _filter(ResourceType.TOPIC, name, pattern)
        assert sorted(admin.delete_acls([deleting])[deleting].result()) == sorted(expected)
        assert admin.describe_acls(deleting).result() == []


def test_librdkafka_0081_describe_consumer_groups_with_authorized_ops(trivup_like_broker):
    """Over SASL, as 0081 runs it: with no ACL a group allows what Kafka 4 supports on groups
    (its configs included); an ACL allowing READ leaves READ and the DESCRIBE it implies."""
    admin = _admin(trivup_like_broker, "SASL_PLAINTEXT")
    sasl = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
            "sasl.username": "sasl_user", "sasl.password": "sasl_user"}
    topic, group = _name("authorized-ops"), _name("authorized-ops-group")
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result()
    producer = confluent_producer(trivup_like_broker.listeners["SASL_PLAINTEXT"], **sasl)
    producer.produce(topic, b"Hello Python!")
    assert producer.flush(10) == 0
    _commit_one_offset(trivup_like_broker.listeners["SASL_PLAINTEXT"], sasl, group, topic)

    def operations() -> set:
        described = admin.describe_consumer_groups([group], include_authorized_operations=True)[group]
        return set(described.result().authorized_operations)

    assert operations() == {AclOperation.DELETE, AclOperation.DESCRIBE, AclOperation.READ,
                            AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS}
    _create(admin, [_binding(ResourceType.GROUP, group, ResourcePatternType.LITERAL, "User:sasl_user",
                             AclOperation.READ)])
    assert operations() == {AclOperation.DESCRIBE, AclOperation.READ}
    cluster = admin.describe_cluster(include_authorized_operations=True).result()
    assert set(cluster.authorized_operations) == {
        AclOperation.CREATE, AclOperation.CLUSTER_ACTION, AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS,
        AclOperation.IDEMPOTENT_WRITE, AclOperation.ALTER, AclOperation.DESCRIBE}


@pytest.mark.parametrize("as_version, operations", [
    (None, {"READ", "DELETE", "DESCRIBE", "DESCRIBE_CONFIGS", "ALTER_CONFIGS"}),
    ("3.9", {"READ", "DELETE", "DESCRIBE"})])  # before 4.0 a group had no configs
def test_group_operations_of_each_release(tmp_path, as_version, operations):
    release = ("--as-version", as_version) if as_version else ()
    with running_broker(*release, *TRIVUP_AUTHORIZER, data_dir=tmp_path) as broker:
        with WireClient(broker.bootstrap) as wire:
            (group,) = wire.request("DescribeGroups", 5, groups=["g"], include_authorized_operations=True).groups
    assert group.authorized_operations == sum(1 << AclOperation[name].value for name in operations)


# -- confluent-kafka-python tests/integration/admin -------------------------------------------

def test_confluent_kafka_python_verify_admin_acls():
    """verify_admin_acls of test_basic_operations: on a cluster holding no other ACLs."""
    with running_broker(*TRIVUP_AUTHORIZER, "--override", "super.users=User:ANONYMOUS") as broker:
        admin = _admin(broker)
        topic, group = _name("acls-topic"), _name("test-group-acls")
        bindings = [
            _binding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:test-user-1", AclOperation.READ),
            _binding(ResourceType.TOPIC, topic, ResourcePatternType.PREFIXED, "User:test-user-2",
                     AclOperation.WRITE, AclPermissionType.DENY),
            _binding(ResourceType.GROUP, group, ResourcePatternType.PREFIXED, "User:test-user-2", AclOperation.ALL)]
        _create(admin, bindings)
        every = _filter(ResourceType.ANY, None, ResourcePatternType.ANY)
        prefixed = _filter(ResourceType.ANY, None, ResourcePatternType.PREFIXED)
        topics = _filter(ResourceType.TOPIC, None, ResourcePatternType.ANY)
        groups = _filter(ResourceType.GROUP, None, ResourcePatternType.ANY)
        assert sorted(admin.describe_acls(every).result()) == sorted(bindings)
        assert sorted(admin.delete_acls([prefixed])[prefixed].result()) == sorted(bindings[1:])
        deleted = admin.delete_acls([topics, groups])
        assert (deleted[topics].result(), deleted[groups].result()) == ([bindings[0]], [])
        assert admin.describe_acls(every).result() == []


def _authorized_operations(describe) -> list:
    assert describe(include_authorized_operations=False).authorized_operations is None
    return describe(include_authorized_operations=True).authorized_operations


def _check_an_acl_narrows_the_operations(admin, describe, allowed, dropped, resource_type, name) -> None:
    """verify_provided_describe_for_authorized_operations: with no ACL on the resource sasl_user
    may do everything; once one ACL allows it `allowed`, that is all it may do there."""
    before = _authorized_operations(describe)
    assert allowed in before and dropped in before
    _create(admin, [_binding(resource_type, name, ResourcePatternType.LITERAL, "User:sasl_user", allowed)])
    after = describe(include_authorized_operations=True).authorized_operations
    assert allowed in after and dropped not in after
    removing = _filter(resource_type, name, ResourcePatternType.ANY)
    assert len(admin.delete_acls([removing])[removing].result()) == 1


def test_confluent_kafka_python_describe_operations(trivup_like_broker):
    admin = _admin(trivup_like_broker, "SASL_PLAINTEXT")

    def describe_cluster(**options):
        return admin.describe_cluster(request_timeout=10, **options).result()

    _check_an_acl_narrows_the_operations(admin, describe_cluster, AclOperation.ALTER, AclOperation.ALTER_CONFIGS,
                                         ResourceType.BROKER, "kafka-cluster")
    described = describe_cluster()
    assert isinstance(described.cluster_id, str) and described.nodes and described.controller is not None

    topic = _name("test-topic")
    admin.create_topics([NewTopic(topic, 1, 1, config={"compression.type": "gzip"})])[topic].result()

    def describe_topic(**options):
        return admin.describe_topics(TopicCollection([topic]), request_timeout=10, **options)[topic].result()

    _check_an_acl_narrows_the_operations(admin, describe_topic, AclOperation.READ, AclOperation.DELETE,
                                         ResourceType.TOPIC, topic)
    partition = describe_topic().partitions[0]
    assert (partition.id, len(partition.replicas), len(partition.isr)) == (0, 1, 1)

    group = _name("test-group")
    sasl = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
            "sasl.username": "sasl_user", "sasl.password": "sasl_user"}
    producer = confluent_producer(trivup_like_broker.listeners["SASL_PLAINTEXT"], **sasl)
    producer.produce(topic, b"Hello Python!")
    assert producer.flush(10) == 0
    _commit_one_offset(trivup_like_broker.listeners["SASL_PLAINTEXT"], sasl, group, topic)

    def describe_group(**options):
        return admin.describe_consumer_groups([group], request_timeout=10, **options)[group].result()

    _check_an_acl_narrows_the_operations(admin, describe_group, AclOperation.READ, AclOperation.DELETE,
                                         ResourceType.GROUP, group)
    described_group = describe_group()
    assert (described_group.is_simple_consumer_group, described_group.state) == (False, ConsumerGroupState.EMPTY)
    assert admin.delete_consumer_groups([group], request_timeout=10)[group].result() is None


def _commit_one_offset(bootstrap: str, sasl: dict, group: str, topic: str) -> None:
    """A subscribed consumer that read the record and left: the group is EMPTY, not simple."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, **sasl})
    try:
        consumer.subscribe([topic])
        message = None
        for _ in range(60):
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                break
        assert message is not None and message.value() == b"Hello Python!"
        consumer.commit(message=message, asynchronous=False)
    finally:
        consumer.close()
