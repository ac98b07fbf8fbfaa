"""aiokafka driver: each operation runs its own asyncio loop; members own a loop in their thread."""

from __future__ import annotations

import asyncio

import aiokafka
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code

from compat.agent import serve
from compat.clients.base import MAX_FETCH, PyDriver, producer_settings, records_arg
from compat.security import Security, from_env
from compat.wire import Rec

try:
    from aiokafka.admin import ConfigResource, ConfigResourceType
except ImportError:  # older releases keep them in a submodule
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType


def to_rec(record) -> Rec:
    return Rec(key=record.key, value=record.value, headers=tuple((k, v) for k, v in record.headers or ()),
               timestamp=record.timestamp, partition=record.partition, offset=record.offset)


def raise_errors(obj) -> None:
    """aiokafka's admin returns raw responses: turn the first non-zero error_code into its exception."""
    if isinstance(obj, dict):
        code = obj.get("error_code")
        if code:
            raise for_code(code)(obj.get("error_message") or str(obj)[:200])
        for value in obj.values():
            raise_errors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            raise_errors(value)


def security_settings(security: Security) -> dict:
    """aiokafka takes an SSLContext (verifying the broker against the CA) instead of file names."""
    if security.protocol == "PLAINTEXT":
        return {}
    from aiokafka.helpers import create_ssl_context
    return {"security_protocol": security.protocol, "ssl_context": create_ssl_context(cafile=security.ca),
            "sasl_mechanism": security.mechanism, "sasl_plain_username": security.username,
            "sasl_plain_password": security.password}


class Adapter:
    """Adapter to the PyDriver consumer shape, driving the consumer on this thread's own loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, consumer: AIOKafkaConsumer):
        self.loop, self.consumer = loop, consumer

    def poll(self, timeout_s):
        batches = self.loop.run_until_complete(self.consumer.getmany(timeout_ms=int(timeout_s * 1000)))
        return [to_rec(r) for records in batches.values() for r in records]

    def assigned(self):
        return [(tp.topic, tp.partition) for tp in self.consumer.assignment()]

    def commit(self, offsets):
        self.loop.run_until_complete(self.consumer.commit({TopicPartition(t, p): o for t, p, o in offsets}))

    def close(self):
        try:
            self.loop.run_until_complete(self.consumer.stop())
        finally:
            self.loop.close()


class Driver(PyDriver):
    name = "aiokafka"

    def op_hello(self):
        features = ["admin", "admin_groups", "timestamps", "commit_offsets", "repeated_headers", "idempotence",
                    "transactions"] + [
            f"compression:{codec}" for codec in ("gzip", "snappy", "lz4", "zstd")]
        return {"client": self.name, "version": aiokafka.__version__, "detail": "", "features": features}

    def common(self) -> dict:
        return {"bootstrap_servers": self.bootstrap, "client_id": self.client_id(), "request_timeout_ms": 15000,
                **security_settings(from_env())}

    def admin_call(self, method: str, *args, **kwargs):
        async def run():
            admin = AIOKafkaAdminClient(**self.common())
            await admin.start()
            try:
                return await getattr(admin, method)(*args, **kwargs)
            finally:
                await admin.close()

        return asyncio.run(run())

    def op_metadata(self):
        cluster = self.admin_call("describe_cluster")
        topics = self.admin_call("describe_topics")
        return {"brokers": [[b["host"], b["port"]] for b in cluster["brokers"]],
                "topics": {t["topic"]: len(t["partitions"]) for t in topics}}

    def op_create_topics(self, topics):
        response = self.admin_call("create_topics", [
            NewTopic(t["name"], t["partitions"], t.get("replicas", 1), topic_configs=t.get("config") or {})
            for t in topics])
        raise_errors(response.to_object())

    def op_delete_topics(self, topics):
        raise_errors(self.admin_call("delete_topics", topics).to_object())

    def op_describe_configs(self, topic, keys):
        responses = self.admin_call("describe_configs", [ConfigResource(ConfigResourceType.TOPIC, topic)])
        out = {}
        for response in responses:
            obj = response.to_object()
            raise_errors(obj)
            for resource in obj["resources"]:
                for entry in resource["config_entries"]:
                    if entry["config_names"] in keys:
                        out[entry["config_names"]] = entry["config_value"]
        return out

    def op_alter_configs(self, topic, config):
        responses = self.admin_call("alter_configs", [ConfigResource(ConfigResourceType.TOPIC, topic, config)])
        for response in responses if isinstance(responses, list) else [responses]:
            raise_errors(response.to_object())

    def op_create_partitions(self, topic, count):
        try:
            from aiokafka.admin import NewPartitions
        except ImportError:  # before 0.9 it used kafka-python's
            from kafka.admin import NewPartitions
        raise_errors(self.admin_call("create_partitions", {topic: NewPartitions(count)}).to_object())

    def op_list_groups(self):
        return [group[0] for group in self.admin_call("list_consumer_groups")]

    def op_describe_group(self, group):
        for response in self.admin_call("describe_consumer_groups", [group]):
            obj = response.to_object()
            raise_errors(obj)
            for described in obj["groups"]:
                return {"state": described["state"], "members": len(described["members"])}
        raise RuntimeError(f"{group} not described")

    def op_group_offsets(self, group, topic):
        offsets = self.admin_call("list_consumer_group_offsets", group)
        return sorted([tp.topic, tp.partition, meta.offset] for tp, meta in offsets.items()
                      if tp.topic == topic and meta.offset >= 0)

    def producer(self, options: dict, **extra) -> AIOKafkaProducer:
        config = producer_settings(self.common(), options, extra)
        if "timeout_ms" in options:
            config["request_timeout_ms"] = options["timeout_ms"]
        return AIOKafkaProducer(**config)

    @staticmethod
    async def send_all(producer: AIOKafkaProducer, topic: str, records: list[Rec], pace_s: float = 0.0) -> list[int]:
        futures = []
        for r in records:
            futures.append(await producer.send(topic, value=r.value, key=r.key, partition=r.partition,
                                               timestamp_ms=r.timestamp, headers=list(r.headers)))
            if pace_s:  # paced: each record goes in a request of its own
                await asyncio.sleep(pace_s)
        return [(await future).offset for future in futures]

    def op_produce(self, topic, records, options=None):
        options = options or {}

        async def run():
            producer = self.producer(options)
            await producer.start()
            try:
                # a safety net only: aiokafka's own request timeout (options.timeout_ms) comes first
                records_ = records_arg(records)
                pace_s = options.get("pace_ms", 0) / 1000
                return await asyncio.wait_for(self.send_all(producer, topic, records_, pace_s),
                                              options.get("timeout_ms", 30000) / 1000 + 10 + pace_s * len(records_))
            finally:
                await producer.stop()

        return asyncio.run(run())

    def op_transaction(self, topic, txid, steps, options=None):
        async def run():
            producer = self.producer(options or {}, transactional_id=txid)
            await producer.start()
            try:
                for step in steps:
                    await producer.begin_transaction()
                    await self.send_all(producer, topic, records_arg(step["records"]))
                    if step.get("offsets"):
                        await producer.send_offsets_to_transaction(
                            {TopicPartition(t, p): o for t, p, o in step["offsets"]["offsets"]},
                            step["offsets"]["group"])
                    if step["end"] == "commit":
                        await producer.commit_transaction()
                    else:
                        await producer.abort_transaction()
            finally:
                await producer.stop()

        asyncio.run(run())

    def consumer_config(self, options: dict) -> dict:
        return {**self.common(), "enable_auto_commit": False,
                "auto_offset_reset": options.get("reset", "earliest"),
                "isolation_level": options.get("isolation", "read_uncommitted"),
                "fetch_max_wait_ms": options.get("fetch_max_wait_ms", 500),
                "max_partition_fetch_bytes": MAX_FETCH, "fetch_max_bytes": MAX_FETCH}

    def op_list_offsets(self, topic, partition, spec):
        async def run():
            consumer = AIOKafkaConsumer(**self.consumer_config({}))
            await consumer.start()
            tp = TopicPartition(topic, partition)
            try:
                if spec == "earliest":
                    return (await consumer.beginning_offsets([tp]))[tp]
                if spec == "latest":
                    return (await consumer.end_offsets([tp]))[tp]
                found = (await consumer.offsets_for_times({tp: spec}))[tp]
                return None if found is None else found.offset
            finally:
                await consumer.stop()

        return asyncio.run(run())

    def make_assigned(self, topic, partition, offset, options):
        loop = asyncio.new_event_loop()

        async def start():
            consumer = AIOKafkaConsumer(**self.consumer_config(options))
            await consumer.start()
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            if offset == "earliest":
                await consumer.seek_to_beginning(tp)
            elif offset == "latest":
                await consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, offset)
            return consumer

        return Adapter(loop, loop.run_until_complete(start()))

    def make_member(self, group, topics, options):
        loop = asyncio.new_event_loop()
        config = {**self.consumer_config(options), "group_id": group,
                  "enable_auto_commit": options.get("auto_commit", False),
                  "session_timeout_ms": options.get("session_timeout_ms", 10000),
                  "heartbeat_interval_ms": 1000}
        if options.get("assignor") == "roundrobin":
            try:
                from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
            except ImportError:  # before 0.9 it used kafka-python's
                from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
            config["partition_assignment_strategy"] = [RoundRobinPartitionAssignor]

        async def start():
            consumer = AIOKafkaConsumer(*topics, **config)
            await consumer.start()
            return consumer

        return Adapter(loop, loop.run_until_complete(start()))


if __name__ == "__main__":
    serve(Driver)
