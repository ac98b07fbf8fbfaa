"""`kbroker produce TOPIC`: one record per line of stdin (or -f FILE), idempotent by default."""

from __future__ import annotations

import contextlib
import sys

import trio

from kbroker.client.producer import ACKS, BATCH_RECORDS, COMPRESSION, Producer, record
from kbroker.commands.common import Progress, add_bootstrap, fail, key_values, run

READ_CHUNK = 256 * 1024  # well below a produce request's batch size


def add_parser(commands) -> None:
    produce = commands.add_parser("produce", help="produce the lines of stdin (or a file) as records")
    produce.add_argument("topic")
    produce.add_argument("-k", "--key", help="the key of every record")
    produce.add_argument("-H", "--header", action="append", default=[], metavar="KEY=VALUE",
                         help="a header of every record (repeatable)")
    produce.add_argument("-p", "--partition", type=int,
                         help="produce to this partition (default: by key, else spread)")
    produce.add_argument("--key-separator", metavar="S",
                         help="each line is KEY S VALUE (split at the first S)")
    produce.add_argument("--acks", default="all", choices=sorted(ACKS))
    produce.add_argument("--compression", default="none", choices=list(COMPRESSION))
    produce.add_argument("--no-idempotence", dest="idempotent", action="store_false",
                         help="plain producer (idempotence needs --acks all and is the default)")
    produce.add_argument("-f", "--file", help="read the records from this file instead of stdin")
    add_bootstrap(produce)
    produce.set_defaults(handler=lambda args: run(_produce, args))


async def _produce(cluster, args) -> None:
    headers = [(k, v.encode()) for k, v in key_values(args.header).items()]
    key = None if args.key is None else args.key.encode()
    separator = None if args.key_separator is None else args.key_separator.encode()
    producer = Producer(cluster, args.topic, acks=args.acks, compression=args.compression,
                        idempotent=args.idempotent)
    await producer.start()
    progress = Progress("produced")
    line_number = 0
    file = await trio.to_thread.run_sync(open, args.file, "rb") if args.file else None  # a FIFO blocks
    with file if file is not None else contextlib.nullcontext(sys.stdin.buffer) as stream:
        async for lines in _line_chunks(stream):
            records = []
            for line in lines:
                line_number += 1
                record_key, value = key, line
                if separator is not None:
                    record_key, found, value = line.partition(separator)
                    if not found:
                        fail(f"no key separator on line {line_number}")
                records.append(record(value, record_key, headers))
            for start in range(0, len(records), BATCH_RECORDS):
                batch = records[start:start + BATCH_RECORDS]
                await producer.send(batch, args.partition)
                progress.add(len(batch), sum(len(r.value) for r in batch))
    print(progress.summary(), file=sys.stderr)


async def _line_chunks(stream):
    """Lists of complete lines (without their newline) as soon as they arrive, read in a thread
    so that an interactive stdin is produced line by line and a big file in large chunks."""
    pending = b""
    while True:
        chunk = await trio.to_thread.run_sync(stream.read1, READ_CHUNK)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        if lines:
            yield [line.rstrip(b"\r") for line in lines]
    if pending:
        yield [pending.rstrip(b"\r")]
