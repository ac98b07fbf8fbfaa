"""Share group APIs under ACLs: besides the group's ACLs, each API checks the topics as Kafka's
KafkaApis does (TOPIC DESCRIBE for subscriptions and descriptions, TOPIC READ for fetching,
acknowledging and changing offsets), on the wire and with confluent-kafka's ShareConsumer."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import KafkaException, ShareConsumer
from confluent_kafka.admin import AclOperation, ResourcePatternType, ResourceType

from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.messages import (
    AlterShareGroupOffsetsRequest, DeleteShareGroupOffsetsRequest, DescribeShareGroupOffsetsRequest,
    IncrementalAlterConfigsRequest, ShareAcknowledgeRequest, ShareFetchRequest,
)
from kbroker.testing import running_broker
from tests.kafka_clients import confluent_producer
from tests.test_acls_clients import BROKER_ARGS, _allow, _config
from tests.test_acls_wire import _client
from tests.test_share_wire import heartbeat

GROUP_RESOURCE = 32
DENIED = "Topic authorization failed."


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory):
    """`readable` (alice: DESCRIBE and READ), `describable` (DESCRIBE only) and `secret`
    (nothing), 5 records each; alice may use the groups `sg-*`."""
    with running_broker(*BROKER_ARGS, data_dir=tmp_path_factory.mktemp("share-acls")) as broker:
        producer = confluent_producer(broker.bootstrap, **{
            "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
            "sasl.username": "admin", "sasl.password": "admin-secret"})
        for topic in ("readable", "describable", "secret"):
            for index in range(5):
                producer.produce(topic, value=b"%d" % index)
        assert producer.flush(15) == 0
        for operation in (AclOperation.READ, AclOperation.DESCRIBE, AclOperation.DELETE):
            _allow(broker, ResourceType.GROUP, "sg-", operation, ResourcePatternType.PREFIXED)
        _allow(broker, ResourceType.TOPIC, "readable", AclOperation.READ)  # READ implies DESCRIBE
        _allow(broker, ResourceType.TOPIC, "describable", AclOperation.DESCRIBE)
        yield broker


def _topic_ids(client) -> dict[str, uuid.UUID]:
    metadata = client.request("Metadata", 12, topics=None, allow_auto_topic_creation=False,
                              include_topic_authorized_operations=False)
    return {topic.name: topic.topic_id for topic in metadata.topics}


def _earliest(client, group: str) -> None:
    client.request("IncrementalAlterConfigs", 1, validate_only=False, resources=[
        IncrementalAlterConfigsRequest.AlterConfigsResource(
            resource_type=GROUP_RESOURCE, resource_name=group, configs=[
                IncrementalAlterConfigsRequest.AlterableConfig(
                    name="share.auto.offset.reset", config_operation=0, value="earliest")])])


def _fetch(client, group: str, member: str, epoch: int, topic_ids, acks=None):
    return client.request("ShareFetch", 1, group_id=group, member_id=member, share_session_epoch=epoch,
                          max_wait_ms=0, min_bytes=1, max_bytes=1 << 20, max_records=100, batch_size=100,
                          forgotten_topics_data=[], topics=[
                              ShareFetchRequest.FetchTopic(topic_id=topic_id, partitions=[
                                  ShareFetchRequest.FetchPartition(
                                      partition_index=0, acknowledgement_batches=(acks or {}).get(topic_id, []))])
                              for topic_id in topic_ids])


def _by_topic(response, ids: dict[str, uuid.UUID], field: str = "error_code") -> dict[str, int]:
    names = {topic_id: name for name, topic_id in ids.items()}
    return {names[topic.topic_id]: getattr(topic.partitions[0], field) for topic in response.responses}


def test_fetch_and_acknowledge_need_topic_read(acl_broker):
    group = "sg-fetch"
    with _client(acl_broker, "admin") as admin:
        ids = _topic_ids(admin)
        _earliest(admin, group)
    with _client(acl_broker, "alice") as alice:
        refused = heartbeat(alice, group, "m", 0, ["readable", "secret"])
        assert (refused.error_code, refused.error_message) == (ErrorCode.TOPIC_AUTHORIZATION_FAILED, None)
        joined = heartbeat(alice, group, "m", 0, ["readable", "describable"])
        assert joined.error_code == ErrorCode.NONE
        fetched = _fetch(alice, group, "m", 0, [ids["readable"], ids["describable"]])
        assert _by_topic(fetched, ids) == {"readable": ErrorCode.NONE,
                                           "describable": ErrorCode.TOPIC_AUTHORIZATION_FAILED}
        acquired = {name: [(a.first_offset, a.last_offset) for a in records]
                    for name, records in _by_topic(fetched, ids, "acquired_records").items()}
        assert acquired == {"readable": [(0, 4)], "describable": []}
        batch = [ShareFetchRequest.AcknowledgementBatch(first_offset=0, last_offset=0, acknowledge_types=[1])]
        piggybacked = _fetch(alice, group, "m", 1, [ids["readable"], ids["describable"]],
                             acks={ids["readable"]: batch, ids["describable"]: batch})
        assert _by_topic(piggybacked, ids, "acknowledge_error_code") == {
            "readable": ErrorCode.NONE, "describable": ErrorCode.TOPIC_AUTHORIZATION_FAILED}
        acknowledged = alice.request("ShareAcknowledge", 1, group_id=group, member_id="m",
                                     share_session_epoch=2, topics=[
            ShareAcknowledgeRequest.AcknowledgeTopic(topic_id=ids[name], partitions=[
                ShareAcknowledgeRequest.AcknowledgePartition(partition_index=0, acknowledgement_batches=[
                    ShareAcknowledgeRequest.AcknowledgementBatch(first_offset=1, last_offset=1,
                                                                 acknowledge_types=[1])])])
            for name in ("readable", "secret")])
        assert _by_topic(acknowledged, ids) == {"readable": ErrorCode.NONE,
                                                "secret": ErrorCode.TOPIC_AUTHORIZATION_FAILED}
        heartbeat(alice, group, "m", -1)


def test_describing_hides_or_refuses_undescribable_topics(acl_broker):
    group = "sg-describe"
    with _client(acl_broker, "admin") as admin:
        ids = _topic_ids(admin)
        _earliest(admin, group)
        heartbeat(admin, group, "admin-member", 0, ["readable", "secret"])
        _fetch(admin, group, "admin-member", 0, [ids["readable"], ids["secret"]])
        with _client(acl_broker, "alice") as alice:
            described = alice.request("ShareGroupDescribe", 1, group_ids=[group],
                                      include_authorized_operations=False).groups[0]
            assert (described.error_code, described.error_message, described.members) == (
                ErrorCode.TOPIC_AUTHORIZATION_FAILED,
                "The group has described topic(s) that the client is not authorized to describe.", [])
            assert admin.request("ShareGroupDescribe", 1, group_ids=[group]).groups[0].error_code == 0
            heartbeat(admin, group, "admin-member", -1)
            assert alice.request("ShareGroupDescribe", 1, group_ids=[group]).groups[0].error_code == 0

            def describe(topics):
                Group = DescribeShareGroupOffsetsRequest.DescribeShareGroupOffsetsRequestGroup
                Topic = DescribeShareGroupOffsetsRequest.DescribeShareGroupOffsetsRequestTopic
                response = alice.request("DescribeShareGroupOffsets", 1, groups=[Group(
                    group_id=group, topics=None if topics is None else
                    [Topic(topic_name=name, partitions=[0]) for name in topics])])
                return [(t.topic_name, p.start_offset, p.error_code, p.error_message)
                        for t in response.groups[0].topics for p in t.partitions]

            assert describe(None) == [("readable", 0, 0, None)]  # `secret` left out
            assert describe(["secret", "readable"]) == [
                ("readable", 0, 0, None), ("secret", -1, ErrorCode.TOPIC_AUTHORIZATION_FAILED, DENIED)]


def test_altering_and_deleting_offsets_need_topic_read(acl_broker):
    group = "sg-offsets"
    with _client(acl_broker, "alice") as alice:
        heartbeat(alice, group, "m", 0, ["readable"])
        heartbeat(alice, group, "m", -1)  # an empty share group
        Topic = AlterShareGroupOffsetsRequest.AlterShareGroupOffsetsRequestTopic
        Partition = AlterShareGroupOffsetsRequest.AlterShareGroupOffsetsRequestPartition
        altered = alice.request("AlterShareGroupOffsets", 0, group_id=group, topics=[
            Topic(topic_name=name, partitions=[Partition(partition_index=0, start_offset=3)])
            for name in ("readable", "describable")])
        assert [(t.topic_name, t.partitions[0].error_code, t.partitions[0].error_message)
                for t in altered.responses] == [
            ("readable", ErrorCode.NONE, None), ("describable", ErrorCode.TOPIC_AUTHORIZATION_FAILED, DENIED)]
        deleted = alice.request("DeleteShareGroupOffsets", 0, group_id=group, topics=[
            DeleteShareGroupOffsetsRequest.DeleteShareGroupOffsetsRequestTopic(topic_name=name)
            for name in ("secret", "readable")])
        assert [(t.topic_name, t.error_code, t.error_message) for t in deleted.responses] == [
            ("secret", ErrorCode.TOPIC_AUTHORIZATION_FAILED, DENIED), ("readable", ErrorCode.NONE, None)]


def _share_consumer(broker, group: str, topic: str) -> ShareConsumer:
    consumer = ShareConsumer(_config(broker, "alice", **{"group.id": group,
                                                         "share.acknowledgement.mode": "implicit"}))
    consumer.subscribe([topic])
    return consumer


def test_share_consumer_reads_a_readable_topic_and_is_refused_a_secret_one(acl_broker):
    readable = _share_consumer(acl_broker, "sg-client", "readable")
    with _client(acl_broker, "admin") as admin:
        _earliest(admin, "sg-client")
    try:
        values: list[bytes] = []
        deadline = time.monotonic() + 20
        while len(values) < 5 and time.monotonic() < deadline:
            values += [m.value() for m in readable.poll(0.5) if m.error() is None]
        assert sorted(values) == [b"0", b"1", b"2", b"3", b"4"]
    finally:
        readable.close()
    secret = _share_consumer(acl_broker, "sg-client-secret", "secret")
    try:
        errors = []
        deadline = time.monotonic() + 20
        while not errors and time.monotonic() < deadline:
            try:
                errors += [m.error() for m in secret.poll(0.5) if m.error() is not None]
            except KafkaException as exc:
                errors.append(exc.args[0])
        assert errors and errors[0].code() == ErrorCode.TOPIC_AUTHORIZATION_FAILED
    finally:
        secret.close()
