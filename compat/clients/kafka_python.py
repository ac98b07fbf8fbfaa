"""kafka-python driver (3.x; 2.0.x for --wide, which lacks idempotence and transactions)."""

from __future__ import annotations

import time

import kafka
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.structs import OffsetAndMetadata

from compat.agent import serve
from compat.clients.base import MAX_FETCH, PyDriver, producer_settings, records_arg
from compat.security import Security, from_env
from compat.wire import Rec

MAJOR = int(kafka.__version__.split(".")[0])


def to_rec(record) -> Rec:
    return Rec(key=record.key, value=record.value, headers=tuple((k, v) for k, v in record.headers or ()),
               timestamp=record.timestamp, partition=record.partition, offset=record.offset)


def offset_meta(offset: int) -> OffsetAndMetadata:
    try:
        return OffsetAndMetadata(offset, "", -1)
    except TypeError:  # 2.0.x has no leader epoch field
        return OffsetAndMetadata(offset, "")


def security_settings(security: Security) -> dict:
    """kafka-python's names (aiokafka shares the SASL ones); the CA file verifies the broker."""
    if security.protocol == "PLAINTEXT":
        return {}
    return {"security_protocol": security.protocol, "ssl_cafile": security.ca, "ssl_check_hostname": True,
            "sasl_mechanism": security.mechanism, "sasl_plain_username": security.username,
            "sasl_plain_password": security.password}


class Consumer:
    """Adapter to the PyDriver consumer shape."""

    def __init__(self, consumer: KafkaConsumer):
        self.consumer = consumer

    def poll(self, timeout_s: float) -> list[Rec]:
        batches = self.consumer.poll(timeout_ms=int(timeout_s * 1000))
        return [to_rec(r) for records in batches.values() for r in records]

    def assigned(self):
        return [(tp.topic, tp.partition) for tp in self.consumer.assignment()]

    def commit(self, offsets):
        self.consumer.commit({TopicPartition(t, p): offset_meta(o) for t, p, o in offsets})

    def close(self):
        self.consumer.close()


class Driver(PyDriver):
    name = "kafka-python"

    def op_hello(self):
        features = ["admin", "timestamps", "commit_offsets", "repeated_headers"] + [
            f"compression:{codec}" for codec in ("gzip", "snappy", "lz4", "zstd")]
        if hasattr(KafkaProducer, "init_transactions"):
            features += ["idempotence", "transactions"]
        if hasattr(KafkaAdminClient, "list_groups"):  # the 3.x group admin API (2.0.x names differ)
            features += ["admin_groups", "delete_groups"]
        return {"client": self.name, "version": kafka.__version__, "detail": "", "features": features}

    def common(self) -> dict:
        return {"bootstrap_servers": self.bootstrap, "client_id": self.client_id(), "request_timeout_ms": 15000,
                **security_settings(from_env())}

    def admin(self) -> KafkaAdminClient:
        return KafkaAdminClient(**self.common())

    def consumer_config(self, options: dict) -> dict:
        config = {**self.common(), "enable_auto_commit": False,
                  "auto_offset_reset": options.get("reset", "earliest"),
                  "fetch_max_wait_ms": options.get("fetch_max_wait_ms", 500),
                  "max_partition_fetch_bytes": MAX_FETCH, "fetch_max_bytes": MAX_FETCH}
        if "isolation" in options:  # 2.0.x has no isolation_level at all
            config["isolation_level"] = options["isolation"]
        return config

    def op_metadata(self):
        admin = self.admin()
        try:
            brokers = [[b["host"], b["port"]] for b in admin.describe_cluster()["brokers"]]
            topics = {t.get("topic", t.get("name")): len(t["partitions"]) for t in admin.describe_topics()}
        finally:
            admin.close()
        return {"brokers": brokers, "topics": topics}

    def op_create_topics(self, topics):
        admin = self.admin()
        try:
            admin.create_topics([NewTopic(t["name"], t["partitions"], t.get("replicas", 1),
                                          topic_configs=t.get("config") or {})
                                 for t in topics])
        finally:
            admin.close()

    def op_delete_topics(self, topics):
        admin = self.admin()
        try:
            admin.delete_topics(topics)
        finally:
            admin.close()

    def op_describe_configs(self, topic, keys):
        admin = self.admin()
        try:
            if MAJOR >= 3:
                result = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)],
                                                config_filter="all")
                configs = {key: entry["value"] for key, entry in result["topic"][topic].items()}
            else:  # 2.0.x returns the raw responses: resources[(error, message, type, name, entries)]
                responses = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
                configs = {entry[0]: entry[1] for response in responses
                           for resource in response.resources for entry in resource[4]}
        finally:
            admin.close()
        return {key: configs[key] for key in keys if key in configs}

    def op_alter_configs(self, topic, config):
        admin = self.admin()
        try:
            result = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=config)])
        finally:
            admin.close()
        if hasattr(result, "resources"):  # 2.0.x: the raw response, resources[(error, message, type, name)]
            failed = [resource for resource in result.resources if resource[0]]
        else:  # 3.x: {"topic": {name: error class}}
            failed = [e for e in result.get("topic", {}).values() if getattr(e, "__name__", "NoError") != "NoError"]
        if failed:
            raise RuntimeError(f"alter_configs: {failed}")

    def admin_call(self, method: str, *args):
        admin = self.admin()
        try:
            return getattr(admin, method)(*args)
        finally:
            admin.close()

    def op_create_partitions(self, topic, count):
        from kafka.admin import NewPartitions
        self.admin_call("create_partitions", {topic: count if MAJOR >= 3 else NewPartitions(count)})

    def op_list_groups(self):
        return [group["group_id"] for group in self.admin_call("list_groups")]

    def op_describe_group(self, group):
        described = self.admin_call("describe_groups", [group])[group]
        return {"state": described["group_state"], "members": len(described["members"])}

    def op_group_offsets(self, group, topic):
        offsets = self.admin_call("list_group_offsets", [group]).get(group, {})
        return sorted([tp.topic, tp.partition, meta.offset] for tp, meta in offsets.items()
                      if tp.topic == topic and meta.offset >= 0)

    def op_delete_groups(self, groups):
        result = self.admin_call("delete_groups", groups)
        failed = {g: e for g, e in result.items() if e != "OK"}
        if failed:
            raise RuntimeError(f"delete_groups: {failed}")

    def producer(self, options: dict, **extra) -> KafkaProducer:
        config = producer_settings(self.common(), options, extra)
        if "timeout_ms" in options:
            config["max_block_ms"] = options["timeout_ms"]
            if MAJOR >= 3:
                config["delivery_timeout_ms"] = options["timeout_ms"]
                config["request_timeout_ms"] = max(1000, options["timeout_ms"] // 2)
        return KafkaProducer(**config)

    @staticmethod
    def send_all(producer: KafkaProducer, topic: str, records: list[Rec], pace_s: float = 0.0):
        futures = []
        for r in records:
            futures.append(producer.send(topic, key=r.key, value=r.value, headers=list(r.headers),
                                         partition=r.partition, timestamp_ms=r.timestamp))
            time.sleep(pace_s)  # paced: each record goes in a request of its own
        return futures

    def op_produce(self, topic, records, options=None):
        options = options or {}
        producer = self.producer(options)
        try:
            futures = self.send_all(producer, topic, records_arg(records), options.get("pace_ms", 0) / 1000)
            producer.flush(options.get("timeout_ms", 30000) / 1000)
            return [f.get(timeout=1).offset for f in futures]
        finally:
            producer.close(timeout=2)

    def op_transaction(self, topic, txid, steps, options=None):
        producer = self.producer(options or {}, transactional_id=txid)
        try:
            producer.init_transactions()
            for step in steps:
                producer.begin_transaction()
                futures = self.send_all(producer, topic, records_arg(step["records"]))
                producer.flush(30)
                for f in futures:
                    f.get(timeout=1)
                if step.get("offsets"):
                    producer.send_offsets_to_transaction(
                        {TopicPartition(t, p): offset_meta(o) for t, p, o in step["offsets"]["offsets"]},
                        step["offsets"]["group"])
                (producer.commit_transaction if step["end"] == "commit" else producer.abort_transaction)()
        finally:
            producer.close(timeout=2)

    def op_list_offsets(self, topic, partition, spec):
        consumer = KafkaConsumer(**self.consumer_config({}))
        tp = TopicPartition(topic, partition)
        try:
            if spec == "earliest":
                return consumer.beginning_offsets([tp])[tp]
            if spec == "latest":
                return consumer.end_offsets([tp])[tp]
            found = consumer.offsets_for_times({tp: spec})[tp]
            return None if found is None else found.offset
        finally:
            consumer.close()

    def make_assigned(self, topic, partition, offset, options):
        consumer = KafkaConsumer(**self.consumer_config(options))
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        if offset == "earliest":
            consumer.seek_to_beginning(tp)
        elif offset == "latest":
            consumer.seek_to_end(tp)
        else:
            consumer.seek(tp, offset)
        return Consumer(consumer)

    def make_member(self, group, topics, options):
        config = {**self.consumer_config(options), "group_id": group,
                  "enable_auto_commit": options.get("auto_commit", False),
                  "session_timeout_ms": options.get("session_timeout_ms", 10000),
                  "heartbeat_interval_ms": 1000}
        if options.get("assignor") == "roundrobin":
            from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
            config["partition_assignment_strategy"] = [RoundRobinPartitionAssignor]
        consumer = KafkaConsumer(**config)
        # kafka-python 3.0.12 can drop an assignment when its first join happens before it knows
        # the topic's partitions: the rejoin that the metadata then triggers may finish after
        # poll() returned, and need_rejoin() turns false without the assignment being applied
        # (the Java client fixed the same race in KAFKA-9815). Knowing the partitions before
        # subscribing avoids that rejoin; the broker's side is the same on Apache Kafka, where
        # group.initial.rebalance.delay.ms (3 s; kbroker's 100 ms) mostly hides the race.
        for topic in topics:
            consumer.partitions_for_topic(topic)
        consumer.subscribe(topics)
        return Consumer(consumer)


if __name__ == "__main__":
    serve(Driver)
