"""Scenarios on a cluster of the cell's own (`kbroker serve --brokers 3`), changed while the client
works through the broker's HTTP control API (kbroker.testing's wrappers): leaders moved (`POST
/api/partitions/{t}/{p}/leader`), brokers stopped and started (`POST /api/brokers/{id}/stop|start`),
read from `GET /api/cluster`.

Topics have 3 replicas, so a partition always has a live in-sync replica to lead it. A producer
that must cross a change sends one record per request (`pace_ms`), with one producer, while the
cell changes the cluster; every record must then be stored exactly once, in order.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Callable

from compat.scenarios import (
    Ctx, Member, expect, expect_each_gets_its_own, expect_records, expect_stored, scenario, texts,
    wait_balanced, wait_settled, wait_until,
)
from compat.wire import Rec, decode_records, encode_records
from kbroker.groups.offsets_topic import key_partition

CLUSTER = ("--brokers", "3")
PACE_MS = 100


def leader(ctx: Ctx, topic: str, partition: int = 0) -> int:
    entries = ctx.broker.cluster()["topics"][topic]
    return next(entry["leader"] for entry in entries if entry["partition"] == partition)


def other_node(node: int) -> int:
    return node % 3 + 1


def coordinator(ctx: Ctx, internal_topic: str, key: str) -> int:
    """The leader of the key's partition of __consumer_offsets / __transaction_state, placed as
    the broker places it."""
    entries = ctx.broker.cluster()["topics"][internal_topic]
    index = key_partition(key, len(entries))
    return next(entry["leader"] for entry in entries if entry["partition"] == index)


def produce_across(ctx: Ctx, suffix: str, changes: tuple[Callable[[str], None], ...], what: str) -> None:
    """30 records to a new 3-replica topic, paced (one request each, 3 s, idempotent where the
    client can be), while the changes run one a second; then each record must be stored once, in order."""
    topic = ctx.create_topic(ctx.name(suffix), 1, replicas=3)
    records = texts(suffix, 30, partition=0)
    failure: list[BaseException] = []
    main = ctx.main  # started here: an agent dies with the thread that started it (PR_SET_PDEATHSIG)

    def produce() -> None:
        try:
            ctx.produce(topic, records, via=main, timeout=120, idempotent="idempotence" in ctx.features,
                        pace_ms=PACE_MS)
        except BaseException as exc:  # noqa: BLE001 - reported below, in the cell's thread
            failure.append(exc)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        for change in changes:
            time.sleep(1.0)
            change(topic)
    finally:
        producer.join(150)
    if failure:
        raise failure[0]
    expect(not producer.is_alive(), "the paced produce did not end")
    expect_stored(ctx, topic, 0, [replace(r, partition=None) for r in records], what=what)


@scenario("cluster_leader_change", "3 brokers: the partition's leader moves twice while a paced producer "
          "(idempotent where it can be) sends 30 records; each stored once, in order", broker=CLUSTER, timeout=120)
def cluster_leader_change(ctx: Ctx):
    def move(topic: str) -> None:
        ctx.broker.move_leader(topic, 0, other_node(leader(ctx, topic)))

    produce_across(ctx, "lc", (move, move), "after two leader changes")


@scenario("cluster_broker_stop_produce", "3 brokers: the leader is stopped while a paced producer sends 30 "
          "records, and started again; each stored once, in order", broker=CLUSTER, timeout=120)
def cluster_broker_stop_produce(ctx: Ctx):
    stopped: list[int] = []

    def stop(topic: str) -> None:
        stopped.append(leader(ctx, topic))
        ctx.broker.stop_broker(stopped[0])

    produce_across(ctx, "sp", (stop, lambda topic: ctx.broker.start_broker(stopped[0])), "after the leader stopped")


@scenario("cluster_broker_stop_consume", "3 brokers: a consumer reading a partition keeps reading when its "
          "leader is stopped; every record once, in order", broker=CLUSTER, timeout=120)
def cluster_broker_stop_consume(ctx: Ctx):
    topic = ctx.create_topic(ctx.name("sc"), 1, replicas=3)
    before, after = texts("before", 10, partition=0), texts("after", 10, partition=0)
    ctx.produce(topic, before, via=ctx.helper)
    ctx.main.call("watch_start", topic=topic, partition=0, offset="earliest", options={})
    seen: list[Rec] = []

    def has(count: int):
        def probe() -> bool:
            seen.extend(decode_records(ctx.main.call("watch_state")["records"]))
            return len(seen) >= count
        return probe

    wait_until(has(10), 30, lambda: f"the consumer got {len(seen)} of 10 records before the stop")
    stopped = leader(ctx, topic)
    ctx.broker.stop_broker(stopped)
    ctx.produce(topic, after, via=ctx.helper)
    wait_until(has(20), 40, lambda: f"the consumer got {len(seen)} of 20 records after the leader stopped")
    time.sleep(0.5)
    has(len(seen) + 1)()  # anything delivered twice comes in meanwhile
    want = [replace(r, offset=i, partition=0) for i, r in enumerate(before + after)]
    expect_records([r.without("timestamp", "headers", "arrived") for r in seen], want, "read across the stop")
    ctx.broker.start_broker(stopped)


@scenario("cluster_coordinator_failover", "3 brokers: the group coordinator is stopped while a second member "
          "joins; the group rebalances on the new coordinator and each member gets its own partitions",
          broker=CLUSTER, timeout=180)
def cluster_coordinator_failover(ctx: Ctx):
    topic, group = ctx.create_topic(ctx.name("cf"), 4, replicas=3), ctx.name("grp")
    first = Member(ctx, "m1", group, [topic], session_timeout_ms=6000)
    wait_balanced([first], topic, 4, 40, "alone")
    stopped = coordinator(ctx, "__consumer_offsets", group)
    second = Member(ctx, "m2", group, [topic], session_timeout_ms=6000)
    ctx.broker.stop_broker(stopped)
    expect(coordinator(ctx, "__consumer_offsets", group) != stopped, "the coordinator did not move")
    # settled for longer than a session (6 s) plus a client's retries of the stopped coordinator
    # (kafkajs: about 9 s, then it restarts its consumer): nobody is still rejoining
    wait_settled([first, second], topic, 4, 90, "after the coordinator failed over", hold=12)
    expect_each_gets_its_own(ctx, [first, second], topic, 4, 1)
    for member in (first, second):
        member.close()
    ctx.broker.start_broker(stopped)


@scenario("cluster_txn_coordinator_failover", "3 brokers: a transaction commits, its coordinator is stopped, the "
          "same transactional id aborts one and commits one on the new coordinator; read_committed sees exactly "
          "the committed", needs=("transactions",), broker=CLUSTER, timeout=150)
def cluster_txn_coordinator_failover(ctx: Ctx):
    topic, txid = ctx.create_topic(ctx.name("tc"), 1, replicas=3), ctx.name("txid")
    batches = {name: texts(f"tc-{name}", count, partition=0) for name, count in (("A", 3), ("B", 2), ("C", 3))}

    def transactions(*steps: tuple[str, str]) -> None:
        ctx.main.call("transaction", timeout=120, topic=topic, txid=txid, steps=[
            {"records": encode_records(batches[name]), "end": end} for name, end in steps])

    transactions(("A", "commit"))
    stopped = coordinator(ctx, "__transaction_state", txid)
    ctx.broker.stop_broker(stopped)
    transactions(("B", "abort"), ("C", "commit"))
    ctx.broker.start_broker(stopped)

    def placed(records, offsets):
        return [replace(r, offset=o) for r, o in zip(records, offsets)]

    committed = placed(batches["A"], [0, 1, 2]) + placed(batches["C"], [7, 8, 9])
    got = ctx.consume(topic, 0, 0, len(committed), isolation="read_committed")
    expect_records([r.without("timestamp", "headers") for r in got], committed, "read_committed")
