"""`kbroker consume TOPIC`: print records as text (values) or JSON (one object per line).

With `-g GROUP` it joins the group (classic protocol, range assignor) and reads the partitions
it is given, from the group's committed offsets, committing what it printed; with `-g` and
`-p PARTITION` it reads that partition outside the group's membership and commits there.
"""

from __future__ import annotations

import base64
import json
import sys

import trio

from kbroker.client import admin
from kbroker.client.consumer import READ_COMMITTED, READ_UNCOMMITTED, ConsumedRecord, Consumer
from kbroker.client.group_member import GroupMember
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
    consume.add_argument("-g", "--group",
                         help="join this consumer group, start at its committed offsets, commit")
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
    """Where to start reading: a group's committed offsets first, then the start option given,
    else the end of each partition."""
    if not partitions:
        return {}
    earliest = await admin.list_offsets(cluster, args.topic, dict.fromkeys(partitions, admin.EARLIEST))
    latest = await admin.list_offsets(cluster, args.topic, dict.fromkeys(partitions, admin.LATEST))
    positions = latest
    if args.from_beginning:
        positions = earliest
    elif args.offset is not None and args.offset >= 0:
        positions = dict.fromkeys(partitions, args.offset)
    elif args.offset is not None:
        positions = {p: max(latest[p] + args.offset, earliest[p]) for p in partitions}
    elif args.from_time:
        found = await admin.list_offsets(cluster, args.topic,
                                         dict.fromkeys(partitions, timestamp_ms(args.from_time)))
        positions = {p: found[p] if found[p] >= 0 else latest[p] for p in partitions}
    if args.group:
        committed = await admin.committed_offsets(cluster, args.group, args.topic)
        positions = {p: committed.get((args.topic, p), positions[p]) for p in partitions}
    return positions


async def _consumer(cluster, args, partitions: list[int]) -> Consumer:
    return Consumer(cluster, args.topic, await _start_positions(cluster, args, partitions),
                    isolation_level=READ_COMMITTED if args.isolation == "read_committed"
                    else READ_UNCOMMITTED)


async def _consume(cluster, args) -> None:
    partitions = sorted(await cluster.leaders(args.topic))
    member = None
    if args.partition is not None:
        if args.partition not in partitions:
            fail(f"topic {args.topic} has no partition {args.partition}")
        partitions = [args.partition]
    elif args.group:
        member = GroupMember(cluster, args.group, args.topic)
        partitions = await member.join()
    consumer = await _consumer(cluster, args, partitions)
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
            in_group = True
            if records:
                idle_since = trio.current_time()
                progress.add(len(records), sum(len(r.value or b"") for r in records))
                if args.group:
                    in_group = await _commit(cluster, args, member, records)
            elif args.timeout_ms is not None and \
                    trio.current_time() - idle_since >= args.timeout_ms / 1000:
                break
            if args.exit_at_end and consumer.caught_up():
                break
            if member is not None and not (in_group and await member.heartbeat_if_due()):
                consumer = await _consumer(cluster, args, await member.join())  # rebalanced
            if not consumer.positions:
                await trio.sleep(0.5)  # no partition assigned: wait for the group to rebalance
    finally:
        if member is not None:
            await member.leave()
        print(progress.summary(), file=sys.stderr)


async def _commit(cluster, args, member: GroupMember | None, records: list[ConsumedRecord]) -> bool:
    """Commit the offset after the last record printed of each partition; False when the group
    rebalanced and this member must rejoin."""
    next_offsets = {}
    for consumed in records:
        next_offsets[consumed.partition] = consumed.offset + 1
    if member is None:
        await admin.commit_offsets(cluster, args.group, args.topic, next_offsets)
        return True
    return await member.commit(next_offsets)


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
