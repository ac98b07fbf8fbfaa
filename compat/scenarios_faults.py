"""Scenarios on a broker of the cell's own with faults injected (`POST /api/faults`, kbroker/faults.py):
retriable errors a client must ride out, and a slow fetch. Each checks that its faults fired as
many times as asked, so a client that never met them cannot pass.
"""

from __future__ import annotations

from dataclasses import replace

from compat.scenarios import Ctx, expect, expect_stored, scenario, texts

TIMES = 3


def hits(ctx: Ctx, fault_id: str) -> int:
    return next(fault["hits"] for fault in ctx.broker.faults() if fault["id"] == fault_id)


@scenario("retriable_errors", f"Produce, then Fetch, answered NOT_LEADER_OR_FOLLOWER {TIMES} times each: the "
          "client retries; every record stored and read once, in order", broker=(), timeout=90)
def retriable_errors(ctx: Ctx):
    topic = ctx.create_topic(ctx.name("retry"), 1)
    records = texts("retry", 10, partition=0)
    produce_fault = ctx.broker.add_fault("Produce", "NOT_LEADER_OR_FOLLOWER", times=TIMES)
    ctx.produce(topic, records, idempotent="idempotence" in ctx.features)
    expect(hits(ctx, produce_fault) == TIMES, f"the Produce fault fired {hits(ctx, produce_fault)} times")
    fetch_fault = ctx.broker.add_fault("Fetch", "NOT_LEADER_OR_FOLLOWER", times=TIMES)
    expect_stored(ctx, topic, 0, [replace(r, partition=None) for r in records], what="after the errors")
    expect(hits(ctx, fetch_fault) == TIMES, f"the Fetch fault fired {hits(ctx, fetch_fault)} times")


@scenario("slow_fetch", "Fetch answered 3 s late, twice: the consumer waits without an error and reads every "
          "record once, in order", broker=(), timeout=90)
def slow_fetch(ctx: Ctx):
    topic = ctx.create_topic(ctx.name("slow"), 1)
    records = texts("slow", 5, partition=0)
    ctx.produce(topic, records, via=ctx.helper)
    fault = ctx.broker.add_fault("Fetch", delay_ms=3000, times=2)
    expect_stored(ctx, topic, 0, [replace(r, partition=None) for r in records], what="through slow fetches")
    expect(hits(ctx, fault) >= 1, "no Fetch was slowed down")
