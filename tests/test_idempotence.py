"""Idempotent producing as Kafka answers it: dedup of retries, sequence and epoch checks."""

from __future__ import annotations

import time

from kbroker.protocol import messages
from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.records import Record, build_batch
from tests.wire import WireClient


def _batch(producer_id: int, epoch: int, sequence: int, count: int = 2) -> bytes:
    now = int(time.time() * 1000)
    return build_batch([Record(timestamp=now, value=f"{sequence}-{i}".encode()) for i in range(count)],
                       producer_id=producer_id, producer_epoch=epoch, base_sequence=sequence)


def _produce(client: WireClient, topic: str, records: bytes):
    request = messages.ProduceRequest
    response = client.request("Produce", 9, acks=-1, timeout_ms=5000, topic_data=[
        request.TopicProduceData(name=topic, partition_data=[
            request.PartitionProduceData(index=0, records=records)])])
    return response.responses[0].partition_responses[0]


def test_sequence_dedup_and_epoch_rules(broker):
    topic = "idempotence-rules"
    with WireClient(broker.bootstrap) as client:
        client.request("Metadata", 12, topics=[
            messages.MetadataRequest.MetadataRequestTopic(name=topic)], allow_auto_topic_creation=True)
        init = client.request("InitProducerId", 4, transactional_id=None, transaction_timeout_ms=-1)
        assert init.error_code == ErrorCode.NONE and init.producer_epoch == 0
        pid = init.producer_id
        assert client.request("InitProducerId", 4, transactional_id=None,
                              transaction_timeout_ms=-1).producer_id != pid

        first = _produce(client, topic, _batch(pid, 0, 0))
        second = _produce(client, topic, _batch(pid, 0, 2))
        assert (first.error_code, first.base_offset) == (ErrorCode.NONE, 0)
        assert (second.error_code, second.base_offset) == (ErrorCode.NONE, 2)

        retry = _produce(client, topic, _batch(pid, 0, 0))
        assert (retry.error_code, retry.base_offset) == (ErrorCode.NONE, 0), \
            "a retry of a recent batch is answered with its original offset"

        gap = _produce(client, topic, _batch(pid, 0, 9))
        assert gap.error_code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER

        bumped = _produce(client, topic, _batch(pid, 1, 0))
        assert (bumped.error_code, bumped.base_offset) == (ErrorCode.NONE, 4)
        stale = _produce(client, topic, _batch(pid, 0, 4))
        assert stale.error_code == ErrorCode.INVALID_PRODUCER_EPOCH
        new_epoch_mid_sequence = _produce(client, topic, _batch(pid, 2, 5))
        assert new_epoch_mid_sequence.error_code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER

        request = messages.ListOffsetsRequest
        latest = client.request("ListOffsets", 7, replica_id=-1, topics=[
            request.ListOffsetsTopic(name=topic, partitions=[
                request.ListOffsetsPartition(partition_index=0, timestamp=-1)])])
        assert latest.topics[0].partitions[0].offset == 6


def test_kafka_python_default_idempotent_producer(broker, topic_name):
    from kafka import KafkaProducer

    from tests.kafka_clients import kafka_python_consume

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)  # idempotent by default in 3.x
    offsets = [producer.send(topic_name, value=f"{i}".encode()).get(10).offset for i in range(30)]
    producer.close()
    assert offsets == list(range(30))
    assert [r.value for r in kafka_python_consume(broker.bootstrap, topic_name, 30)] == \
        [f"{i}".encode() for i in range(30)]


def test_offset_for_leader_epoch_answers_the_single_epoch(broker):
    topic = "leader-epochs"
    with WireClient(broker.bootstrap) as client:
        client.request("Metadata", 12, topics=[
            messages.MetadataRequest.MetadataRequestTopic(name=topic)], allow_auto_topic_creation=True)
        _produce(client, topic, _batch(-1, -1, -1, count=3))
        request = messages.OffsetForLeaderEpochRequest

        def ask(epoch: int, current: int = -1, name: str = topic):
            response = client.request("OffsetForLeaderEpoch", 4, replica_id=-1, topics=[
                request.OffsetForLeaderTopic(topic=name, partitions=[
                    request.OffsetForLeaderPartition(partition=0, current_leader_epoch=current,
                                                     leader_epoch=epoch)])])
            answer = response.topics[0].partitions[0]
            return answer.error_code, answer.leader_epoch, answer.end_offset

        assert ask(0) == (ErrorCode.NONE, 0, 3)
        assert ask(0, current=5) == (ErrorCode.UNKNOWN_LEADER_EPOCH, -1, -1)
        assert ask(0, name="no-such-topic-epochs")[0] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
