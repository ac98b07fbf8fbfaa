"""`kbroker consume TOPIC`: print records as text (values) or JSON (one object per line).

Partitions are assigned by the tool, not by a group rebalance: with `-g GROUP` it starts where
the group committed (else at the end) and commits what it printed, as Kafka's consumers that
assign their own partitions do.
"""

from __future__ import annotations

import base64
import json
import sys

import trio

from kbroker.client import admin
from kbroker.client.consumer import (
    READ_COMMITTED,
    READ_UNCOMMITTED,
    ConsumedRecord,
    Consumer,
)
from kbroker.commands.common import Progress, add_bootstrap, fail, run, timestamp_ms


def add_parser(commands) -> None:
    consume = commands.add_parser("consume", help="print a topic's records")
    consume.add_argument("topic")
    start = consume.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true", help="start at the earliest offset")
    start.add_argument("-o", "--offset", type=int,
                       help="start at this offset (negative: that many records before the end)")
    start.add_argument("--from-time", metavar="ISO8601",
                       help="start at the first record at or after this time")
    consume.add_argument("-p", "--partition", type=int, help="read only this partition")
    consume.add_argument("-n", "--count", type=int, help="stop after this many records")
    consume.add_argument("-g", "--group", help="start at the group's committed offsets and commit")
    consume.add_argument("--format", choices=["text", "json"], default="text",
                         help="text: the value of each record on a line; json: one object per "
                              "line (bytes that are not UTF-8 as {\"base64\": ...})")
    consume.add_argument("--isolation", choices=["read_uncommitted", "read_committed"],
                         default="read_uncommitted")
    consume.add_argument("-e", "--exit-at-end", action="store_true",
                         help="stop once the end of every partition is reached")
    consume.add_argument("--timeout-ms", type=int,
                         help="stop when no record arrived for this long")
    add_bootstrap(consume)
    consume.set_defaults(handler=lambda args: run(_consume, args))


async def _start_positions(cluster, args, partitions: list[int]) -> dict[int, int]:
    earliest = await admin.list_offsets(cluster, args.topic, dict.fromkeys(partitions, admin.EARLIEST))
    latest = await admin.list_offsets(cluster, args.topic, dict.fromkeys(partitions, admin.LATEST))
    if args.from_beginning:
        return earliest
    if args.offset is not None:
        if args.offset >= 0:
            return dict.fromkeys(partitions, args.offset)
        return {p: max(latest[p] + args.offset, earliest[p]) for p in partitions}
    if args.from_time:
        found = await admin.list_offsets(cluster, args.topic,
                                         dict.fromkeys(partitions, timestamp_ms(args.from_time)))
        return {p: found[p] if found[p] >= 0 else latest[p] for p in partitions}
    if args.group:
        committed = await admin.committed_offsets(cluster, args.group, args.topic)
        return {p: committed.get((args.topic, p), latest[p]) for p in partitions}
    return latest


async def _consume(cluster, args) -> None:
    partitions = sorted(await cluster.leaders(args.topic))
    if args.partition is not None:
        if args.partition not in partitions:
            fail(f"topic {args.topic} has no partition {args.partition}")
        partitions = [args.partition]
    positions = await _start_positions(cluster, args, partitions)
    consumer = Consumer(cluster, args.topic, positions, isolation_level=READ_COMMITTED
                        if args.isolation == "read_committed" else READ_UNCOMMITTED)
    progress = Progress("consumed")
    idle_since = trio.current_time()
    write = _json_line if args.format == "json" else _value_line
    out = sys.stdout.buffer
    try:
        while args.count is None or progress.records < args.count:
            records = await consumer.fetch()
            if args.count is not None:
                records = records[:args.count - progress.records]
            for consumed in records:
                out.write(write(consumed))
            out.flush()
            if records:
                idle_since = trio.current_time()
                progress.add(len(records), sum(len(r.value or b"") for r in records))
                if args.group:
                    await _commit(cluster, args, consumer, records)
            elif args.timeout_ms is not None and \
                    trio.current_time() - idle_since >= args.timeout_ms / 1000:
                break
            if args.exit_at_end and consumer.caught_up():
                break
    finally:
        print(progress.summary(), file=sys.stderr)


async def _commit(cluster, args, consumer: Consumer, records: list[ConsumedRecord]) -> None:
    """Commit the offset after the last record printed of each partition."""
    next_offsets = {}
    for consumed in records:
        next_offsets[consumed.partition] = consumed.offset + 1
    await admin.commit_offsets(cluster, args.group, args.topic, next_offsets)


def _value_line(consumed: ConsumedRecord) -> bytes:
    return (consumed.value or b"") + b"\n"


def _text_or_base64(data: bytes | None):
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}


def _json_line(consumed: ConsumedRecord) -> bytes:
    return (json.dumps({
        "topic": consumed.topic, "partition": consumed.partition, "offset": consumed.offset,
        "timestamp": consumed.timestamp, "key": _text_or_base64(consumed.key),
        "value": _text_or_base64(consumed.value),
        "headers": [{"key": k, "value": _text_or_base64(v)} for k, v in consumed.headers],
    }) + "\n").encode()
