"""confluent-kafka (librdkafka) driver."""

from __future__ import annotations

import time
from importlib import metadata

import confluent_kafka
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from compat.agent import serve
from compat.clients.base import MAX_FETCH, PyDriver, records_arg
from compat.security import from_env, librdkafka_settings
from compat.wire import Rec


def to_rec(message) -> Rec:
    timestamp_type, timestamp = message.timestamp()
    return Rec(key=message.key(), value=message.value(), headers=tuple(message.headers() or ()),
               timestamp=timestamp if timestamp_type else None,
               partition=message.partition(), offset=message.offset())


def check(message):
    if message.error():
        raise KafkaException(message.error())
    return message


class Adapter:
    """Adapter to the PyDriver consumer shape."""

    def __init__(self, consumer: Consumer):
        self.consumer = consumer

    def poll(self, timeout_s):
        # consume(100, timeout) waits for 100 messages or the whole timeout, which would add up to
        # timeout_s to every delivery the scenarios time: wait for one, then take what is there.
        first = self.consumer.poll(timeout_s)
        if first is None:
            return []
        return [to_rec(check(m)) for m in (first, *self.consumer.consume(99, 0))]

    def assigned(self):
        return [(tp.topic, tp.partition) for tp in self.consumer.assignment()]

    def commit(self, offsets):
        self.consumer.commit(offsets=[TopicPartition(t, p, o) for t, p, o in offsets], asynchronous=False)

    def close(self):
        self.consumer.close()


def wait_all(futures: dict, timeout: float = 30):
    for future in futures.values():
        future.result(timeout)


class Driver(PyDriver):
    name = "confluent-kafka"

    def op_hello(self):
        features = ["admin", "admin_groups", "delete_groups", "timestamps", "commit_offsets", "repeated_headers",
                    "idempotence", "transactions"] + [
            f"compression:{codec}" for codec in ("gzip", "snappy", "lz4", "zstd")] + (
            ["share_consumer"] if hasattr(confluent_kafka, "ShareConsumer") else []) + (
            # KIP-848 (group.protocol=consumer) is generally available from librdkafka 2.12
            ["consumer_protocol"] if confluent_kafka.libversion()[1] >= 0x020C0000 else [])
        return {"client": self.name, "version": metadata.version("confluent-kafka"),
                "detail": f"librdkafka {confluent_kafka.libversion()[0]}", "features": features}

    def common(self) -> dict:
        return {"bootstrap.servers": self.bootstrap, "client.id": self.client_id(),
                "broker.address.family": "v4", **librdkafka_settings(from_env())}

    def admin(self) -> AdminClient:
        # keep the returned client referenced until its futures resolve: a collected AdminClient
        # fails them with _DESTROY
        self._admin = AdminClient(self.common())
        return self._admin

    def op_metadata(self):
        metadata = self.admin().list_topics(timeout=15)
        return {"brokers": [[b.host, b.port] for b in metadata.brokers.values()],
                "topics": {name: len(t.partitions) for name, t in metadata.topics.items()}}

    def op_create_topics(self, topics):
        wait_all(self.admin().create_topics(
            [NewTopic(t["name"], t["partitions"], t.get("replicas", 1), config=t.get("config") or {}) for t in topics],
            operation_timeout=15))

    def op_delete_topics(self, topics):
        wait_all(self.admin().delete_topics(topics, operation_timeout=15))

    def op_describe_configs(self, topic, keys):
        futures = self.admin().describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)])
        configs = list(futures.values())[0].result(15)
        return {key: configs[key].value for key in keys if key in configs}

    def op_alter_configs(self, topic, config):
        try:
            from confluent_kafka.admin import AlterConfigOpType, ConfigEntry
        except ImportError:  # before 2.2: only the (non-incremental) AlterConfigs API
            wait_all(self.admin().alter_configs([ConfigResource(ConfigResource.Type.TOPIC, topic, set_config=config)]))
            return
        entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in config.items()]
        wait_all(self.admin().incremental_alter_configs(
            [ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=entries)]))

    def op_create_partitions(self, topic, count):
        from confluent_kafka.admin import NewPartitions
        wait_all(self.admin().create_partitions([NewPartitions(topic, count)], operation_timeout=15))

    def op_list_groups(self):
        return [listing.group_id for listing in self.admin().list_consumer_groups().result(15).valid]

    def op_describe_group(self, group):
        described = list(self.admin().describe_consumer_groups([group]).values())[0].result(15)
        return {"state": described.state.name, "members": len(described.members)}

    def op_group_offsets(self, group, topic):
        from confluent_kafka import ConsumerGroupTopicPartitions
        future = list(self.admin().list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)]).values())[0]
        return sorted([tp.topic, tp.partition, tp.offset] for tp in future.result(15).topic_partitions
                      if tp.topic == topic and tp.offset >= 0)

    def op_delete_groups(self, groups):
        wait_all(self.admin().delete_consumer_groups(groups))

    def op_set_group_config(self, group, config):
        from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ResourceType
        entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in config.items()]
        wait_all(self.admin().incremental_alter_configs(
            [ConfigResource(ResourceType.GROUP, group, incremental_configs=entries)]))

    def op_share_consume(self, group, topic, count, ack="accept", timeout_ms=20000):
        from confluent_kafka import AcknowledgeType, ShareConsumer
        ack_type = {"accept": AcknowledgeType.ACCEPT, "release": AcknowledgeType.RELEASE,
                    "reject": AcknowledgeType.REJECT}[ack]
        consumer = ShareConsumer({**self.common(), "group.id": group, "share.acknowledgement.mode": "explicit"})
        got = []
        try:
            consumer.subscribe([topic])
            deadline = time.monotonic() + timeout_ms / 1000
            while len(got) < count and time.monotonic() < deadline:
                for message in consumer.poll(0.5):
                    consumer.acknowledge(check(message), ack_type)
                    got.append([message.offset(), message.value().decode(), message.delivery_count()])
                consumer.commit_sync()
        finally:
            consumer.close()
        return got

    def producer(self, options: dict, **extra) -> Producer:
        config = {**self.common(), "acks": "all", "linger.ms": 5,
                  "message.max.bytes": options.get("max_request_size", 1000000),
                  "compression.type": options.get("compression") or "none", **extra}
        if options.get("idempotent"):
            config["enable.idempotence"] = True
        if "timeout_ms" in options:  # give up sooner, and on a missing topic well before that
            config["message.timeout.ms"] = options["timeout_ms"]
            config["topic.metadata.propagation.max.ms"] = options["timeout_ms"] // 3
        return Producer(config)

    @staticmethod
    def send_all(producer: Producer, topic: str, records: list[Rec], pace_s: float = 0.0) -> list:
        results: list = [None] * len(records)

        def delivered(index):
            def report(error, message):
                results[index] = KafkaException(error) if error else message.offset()
            return report

        for index, r in enumerate(records):
            kwargs = {"partition": r.partition} if r.partition is not None else {}
            if r.timestamp is not None:
                kwargs["timestamp"] = r.timestamp
            producer.produce(topic, value=r.value, key=r.key, headers=list(r.headers) or None,
                             on_delivery=delivered(index), **kwargs)
            producer.poll(0)
            paced_until = time.monotonic() + pace_s  # paced: each record goes in a request of its own
            while (left := paced_until - time.monotonic()) > 0:
                producer.poll(left)
        return results

    @staticmethod
    def settle(producer: Producer, results: list, timeout: float):
        if producer.flush(timeout) > 0:
            raise TimeoutError("records still undelivered after flush")
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    def op_produce(self, topic, records, options=None):
        options = options or {}
        producer = self.producer(options)
        results = self.send_all(producer, topic, records_arg(records), options.get("pace_ms", 0) / 1000)
        return self.settle(producer, results, options.get("timeout_ms", 30000) / 1000 + 5)

    def op_transaction(self, topic, txid, steps, options=None):
        producer = self.producer(options or {}, **{"transactional.id": txid})
        producer.init_transactions(30)
        for step in steps:
            producer.begin_transaction()
            results = self.send_all(producer, topic, records_arg(step["records"]))
            self.settle(producer, results, 30)
            if step.get("offsets"):  # as a consume-transform-produce app would, outside the group
                group = Consumer(self.consumer_config({}, step["offsets"]["group"]))
                producer.send_offsets_to_transaction(
                    [TopicPartition(t, p, o) for t, p, o in step["offsets"]["offsets"]],
                    group.consumer_group_metadata(), 30)
                group.close()
            if step["end"] == "commit":
                producer.commit_transaction(30)
            else:
                producer.abort_transaction(30)

    def consumer_config(self, options: dict, group: str) -> dict:
        return {**self.common(), "group.id": group, "enable.auto.commit": options.get("auto_commit", False),
                "auto.offset.reset": options.get("reset", "earliest"),
                "isolation.level": options.get("isolation", "read_uncommitted"),
                "fetch.wait.max.ms": options.get("fetch_max_wait_ms", 500),
                "max.partition.fetch.bytes": MAX_FETCH, "session.timeout.ms": options.get("session_timeout_ms", 10000),
                "heartbeat.interval.ms": 1000}

    def op_list_offsets(self, topic, partition, spec):
        consumer = Consumer(self.consumer_config({}, "compat-unused"))
        try:
            if spec in ("earliest", "latest"):
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=15)
                return low if spec == "earliest" else high
            found = consumer.offsets_for_times([TopicPartition(topic, partition, spec)], timeout=15)[0]
            if found.error:
                raise KafkaException(found.error)
            return None if found.offset < 0 else found.offset
        finally:
            consumer.close()

    def make_assigned(self, topic, partition, offset, options):
        consumer = Consumer(self.consumer_config(options, "compat-unused"))
        start = {"earliest": OFFSET_BEGINNING, "latest": OFFSET_END}.get(offset, offset)
        consumer.assign([TopicPartition(topic, partition, start)])
        return Adapter(consumer)

    def make_member(self, group, topics, options):
        config = self.consumer_config(options, group)
        if options.get("assignor") == "roundrobin":
            config["partition.assignment.strategy"] = "roundrobin"
        if options.get("protocol") == "consumer":  # KIP-848: the broker assigns and times sessions
            del config["session.timeout.ms"], config["heartbeat.interval.ms"]
            config["group.protocol"] = "consumer"
            if options.get("remote_assignor"):
                config["group.remote.assignor"] = options["remote_assignor"]
        consumer = Consumer(config)
        consumer.subscribe(topics)
        return Adapter(consumer)


if __name__ == "__main__":
    serve(Driver)
