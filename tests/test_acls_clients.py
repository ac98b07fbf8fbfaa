"""ACLs with real clients: a broker with StandardAuthorizer, the super user `admin` and the
ordinary user `alice` (SASL/PLAIN), who may do only what the ACLs the tests grant allow."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient, ConfigResource,
    NewTopic, ResourcePatternType, ResourceType,
)
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import (
    ACL, ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType, ResourcePattern,
    ResourcePatternFilter,
)
from kafka.admin import ResourceType as KpResourceType
from kafka.errors import ClusterAuthorizationFailedError, GroupAuthorizationFailedError, TopicAuthorizationFailedError

from kbroker.testing import running_broker

AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
BROKER_ARGS = ("--sasl-user", "admin:admin-secret", "--sasl-user", "alice:alice-secret",
               "--override", f"authorizer.class.name={AUTHORIZER}", "--override", "super.users=User:admin")


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory):
    with running_broker(*BROKER_ARGS, data_dir=tmp_path_factory.mktemp("acls")) as started:
        yield started


def _config(broker, user: str, **extra) -> dict:
    return {"bootstrap.servers": broker.bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN", "sasl.username": user, "sasl.password": f"{user}-secret",
            **extra}


def _admin(broker, user: str) -> AdminClient:
    return AdminClient(_config(broker, user))


def _kafka_python_admin(broker, user: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=broker.bootstrap, security_protocol="SASL_PLAINTEXT",
                            sasl_mechanism="PLAIN", sasl_plain_username=user,
                            sasl_plain_password=f"{user}-secret")


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _allow(broker, resource_type, name: str, operation, pattern=ResourcePatternType.LITERAL,
           principal="User:alice") -> None:
    binding = AclBinding(resource_type, name, pattern, principal, "*", operation, AclPermissionType.ALLOW)
    admin = _admin(broker, "admin")  # kept: the futures fail once the client is gone
    for future in admin.create_acls([binding]).values():
        future.result(15)


def _create_topic(broker, name: str) -> None:
    admin = _admin(broker, "admin")
    for future in admin.create_topics([NewTopic(name, 1)]).values():
        future.result(15)


def _error_code(raised) -> int:
    return raised.value.args[0].code()


def test_confluent_admin_creates_describes_and_deletes_acls(acl_broker):
    admin = _admin(acl_broker, "admin")
    name = _unique("orders")
    literal = AclBinding(ResourceType.TOPIC, name, ResourcePatternType.LITERAL, "User:bob", "*",
                         AclOperation.READ, AclPermissionType.ALLOW)
    prefixed = AclBinding(ResourceType.TOPIC, name + "-", ResourcePatternType.PREFIXED, "User:bob",
                          "10.0.0.1", AclOperation.WRITE, AclPermissionType.DENY)
    for future in admin.create_acls([literal, prefixed]).values():
        assert future.result(15) is None
    every_bob = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, "User:bob", None,
                                 AclOperation.ANY, AclPermissionType.ANY)
    described = admin.describe_acls(every_bob).result(15)
    assert sorted(described, key=str) == sorted([literal, prefixed], key=str)
    # MATCH: every ACL that applies to the topic `<name>-eu` (the prefixed one, not the literal).
    matching = AclBindingFilter(ResourceType.TOPIC, name + "-eu", ResourcePatternType.MATCH, None,
                                None, AclOperation.ANY, AclPermissionType.ANY)
    assert admin.describe_acls(matching).result(15) == [prefixed]
    deleted = admin.delete_acls([every_bob])
    assert sorted(next(iter(deleted.values())).result(15), key=str) == sorted([literal, prefixed], key=str)
    assert admin.describe_acls(every_bob).result(15) == []


def test_confluent_admin_errors_of_the_acl_apis(acl_broker):
    alice = _admin(acl_broker, "alice")
    binding = AclBinding(ResourceType.TOPIC, "t", ResourcePatternType.LITERAL, "User:alice", "*",
                         AclOperation.ALL, AclPermissionType.ALLOW)
    with pytest.raises(KafkaException) as raised:
        next(iter(alice.create_acls([binding]).values())).result(15)
    assert _error_code(raised) == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    every = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                             AclOperation.ANY, AclPermissionType.ANY)
    with pytest.raises(KafkaException) as raised:
        next(iter(alice.delete_acls([every]).values())).result(15)
    assert _error_code(raised) == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    # librdkafka drops DescribeAcls' top-level error (an empty list); kafka-python reports it.
    kp_alice = _kafka_python_admin(acl_broker, "alice")
    try:
        with pytest.raises(ClusterAuthorizationFailedError):
            kp_alice.describe_acls(ACLFilter(
                None, None, ACLOperation.ANY, ACLPermissionType.ANY,
                ResourcePatternFilter(KpResourceType.ANY, None, ACLResourcePatternType.ANY)))
    finally:
        kp_alice.close()
    # Kafka refuses a CLUSTER resource with another name than kafka-cluster.
    bad = AclBinding(ResourceType.BROKER, "my-cluster", ResourcePatternType.LITERAL, "User:alice", "*",
                     AclOperation.ALTER, AclPermissionType.ALLOW)
    with pytest.raises(KafkaException) as raised:
        admin = _admin(acl_broker, "admin")
        next(iter(admin.create_acls([bad]).values())).result(15)
    assert _error_code(raised) == KafkaError.INVALID_REQUEST


def test_kafka_python_admin_acls(acl_broker):
    admin = _kafka_python_admin(acl_broker, "admin")
    try:
        group = _unique("kp-group")
        acl = ACL("User:carol", "*", ACLOperation.READ, ACLPermissionType.ALLOW,
                  ResourcePattern(KpResourceType.GROUP, group, ACLResourcePatternType.LITERAL))
        created = admin.create_acls([acl])
        assert created["failed"] == [] and len(created["succeeded"]) == 1
        carol = ACLFilter("User:carol", None, ACLOperation.ANY, ACLPermissionType.ANY,
                          ResourcePatternFilter(KpResourceType.ANY, None, ACLResourcePatternType.ANY))
        found, error = admin.describe_acls(carol)
        assert error.errno == 0
        assert [(a.resource_pattern.resource_name, a.operation) for a in found] == [(group, ACLOperation.READ)]
        [(_, removed, error)] = admin.delete_acls([carol])
        assert error.errno == 0 and len(removed) == 1
        assert admin.describe_acls(carol)[0] == []
    finally:
        admin.close()


def _produce(broker, user: str, topic: str, **extra):
    """One message; returns the delivery error (None when delivered)."""
    producer = Producer(_config(broker, user, **{"message.timeout.ms": 10000, **extra}))
    delivered = []
    producer.produce(topic, value=b"v", on_delivery=lambda err, msg: delivered.append(err))
    producer.flush(20)
    return delivered[0] if delivered else "not delivered"


def test_produce_needs_write_on_the_topic(acl_broker):
    topic = _unique("produce")
    _create_topic(acl_broker, topic)
    error = _produce(acl_broker, "alice", topic)
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    _allow(acl_broker, ResourceType.TOPIC, topic, AclOperation.WRITE)
    assert _produce(acl_broker, "alice", topic) is None
    # An idempotent producer needs IDEMPOTENT_WRITE on the cluster or WRITE on some topic: alice
    # has the latter now.
    assert _produce(acl_broker, "alice", topic, **{"enable.idempotence": True}) is None


def _consume_one(broker, user: str, topic: str, group: str):
    """(message, error) of a consumer in `group`, whichever comes first."""
    consumer = Consumer(_config(broker, user, **{"group.id": group, "auto.offset.reset": "earliest"}))
    consumer.subscribe([topic])
    try:
        for _ in range(40):
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                return None, message.error()
            consumer.commit(message, asynchronous=False)
            return message, None
        return None, None
    finally:
        consumer.close()


def test_consuming_in_a_group_needs_group_read_and_topic_read(acl_broker):
    topic, group = _unique("consume"), _unique("group")
    _create_topic(acl_broker, topic)
    assert _produce(acl_broker, "admin", topic) is None
    _allow(acl_broker, ResourceType.TOPIC, topic, AclOperation.READ)
    message, error = _consume_one(acl_broker, "alice", topic, group)
    assert message is None and error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    _allow(acl_broker, ResourceType.GROUP, group, AclOperation.READ)
    message, error = _consume_one(acl_broker, "alice", topic, group)
    assert error is None and message.value() == b"v"


def test_transactions_need_transactional_id_write(acl_broker):
    topic, transactional_id = _unique("txn"), _unique("tx")
    _create_topic(acl_broker, topic)
    _allow(acl_broker, ResourceType.TOPIC, topic, AclOperation.WRITE)
    config = _config(acl_broker, "alice", **{"transactional.id": transactional_id})
    with pytest.raises(KafkaException) as raised:
        Producer(config).init_transactions(15)
    assert _error_code(raised) == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    _allow(acl_broker, ResourceType.TRANSACTIONAL_ID, transactional_id, AclOperation.WRITE)
    producer = Producer(config)
    producer.init_transactions(15)
    producer.begin_transaction()
    producer.produce(topic, value=b"in a transaction")
    producer.commit_transaction(15)


def _describe_configs(admin, resource_type, name: str) -> dict:
    futures = admin.describe_configs([ConfigResource(resource_type, name)])
    return next(iter(futures.values())).result(15)


def test_creating_deleting_and_configuring_topics(acl_broker):
    alice = _admin(acl_broker, "alice")
    topic = _unique("alice-owned")
    with pytest.raises(KafkaException) as raised:
        alice.create_topics([NewTopic(topic, 1)])[topic].result(15)
    assert _error_code(raised) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    _allow(acl_broker, ResourceType.TOPIC, "alice-", AclOperation.CREATE, ResourcePatternType.PREFIXED)
    alice.create_topics([NewTopic(topic, 1)])[topic].result(15)
    with pytest.raises(KafkaException) as raised:
        _describe_configs(alice, ConfigResource.Type.TOPIC, topic)
    assert _error_code(raised) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    with pytest.raises(KafkaException) as raised:
        _describe_configs(alice, ConfigResource.Type.BROKER, "1")
    assert _error_code(raised) == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    _allow(acl_broker, ResourceType.TOPIC, topic, AclOperation.ALTER_CONFIGS)  # implies DESCRIBE_CONFIGS
    configs = _describe_configs(alice, ConfigResource.Type.TOPIC, topic)
    assert "retention.ms" in configs
    with pytest.raises(KafkaException) as raised:
        alice.delete_topics([topic])[topic].result(15)
    assert _error_code(raised) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    _allow(acl_broker, ResourceType.TOPIC, topic, AclOperation.DELETE)
    alice.delete_topics([topic])[topic].result(15)


def test_metadata_hides_topics_alice_may_not_describe(acl_broker):
    hidden, visible = _unique("hidden"), _unique("visible")
    _create_topic(acl_broker, hidden)
    _create_topic(acl_broker, visible)
    _allow(acl_broker, ResourceType.TOPIC, visible, AclOperation.READ)  # implies DESCRIBE
    topics = _admin(acl_broker, "alice").list_topics(timeout=15).topics
    assert visible in topics and hidden not in topics
    assert hidden in _admin(acl_broker, "admin").list_topics(timeout=15).topics


def test_acls_survive_a_restart(tmp_path):
    binding = AclBinding(ResourceType.GROUP, "kept", ResourcePatternType.PREFIXED, "User:alice", "*",
                         AclOperation.READ, AclPermissionType.ALLOW)
    every = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                             AclOperation.ANY, AclPermissionType.ANY)
    with running_broker(*BROKER_ARGS, data_dir=tmp_path) as first:
        admin = _admin(first, "admin")
        next(iter(admin.create_acls([binding]).values())).result(15)
    with running_broker(*BROKER_ARGS, data_dir=tmp_path) as second:
        admin = _admin(second, "admin")
        assert admin.describe_acls(every).result(15) == [binding]


def _kafka_python_credentials(user: str) -> dict:
    return dict(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                sasl_plain_username=user, sasl_plain_password=f"{user}-secret")


def test_kafka_python_producer_and_consumer_get_kafkas_errors(tmp_path):
    """A producer without ACLs is refused its topic's metadata (TOPIC_AUTHORIZATION_FAILED);
    with WRITE on one topic, writing another fails the same way. A consumer without GROUP READ
    gets GROUP_AUTHORIZATION_FAILED."""
    with running_broker(*BROKER_ARGS, data_dir=tmp_path) as broker:
        allowed, denied, group = _unique("kp-allowed"), _unique("kp-denied"), _unique("kp-group")
        _create_topic(broker, allowed)
        _create_topic(broker, denied)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, max_block_ms=10000,
                                 **_kafka_python_credentials("alice"))
        try:
            with pytest.raises(TopicAuthorizationFailedError):
                producer.send(allowed, b"no ACL yet").get(15)
        finally:
            producer.close()
        _allow(broker, ResourceType.TOPIC, allowed, AclOperation.WRITE)
        _allow(broker, ResourceType.TOPIC, allowed, AclOperation.READ)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, max_block_ms=10000,
                                 **_kafka_python_credentials("alice"))
        try:
            producer.send(allowed, b"allowed").get(15)
            with pytest.raises(TopicAuthorizationFailedError):
                producer.send(denied, b"denied").get(15)
        finally:
            producer.close()
        consumer = KafkaConsumer(allowed, bootstrap_servers=broker.bootstrap, group_id=group,
                                 auto_offset_reset="earliest", **_kafka_python_credentials("alice"))
        try:
            with pytest.raises(GroupAuthorizationFailedError):
                consumer.poll(10000)
        finally:
            consumer.close(autocommit=False)
