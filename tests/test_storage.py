"""Storage is the one place writes go through: every kind of append wakes the fetches parked on
its partition (a producer's batch, a coordinator's records, a transaction marker)."""

from __future__ import annotations

import trio

from kbroker.clock import Clock
from kbroker.groups.offsets_topic import OFFSETS_TOPIC, OFFSETS_TOPIC_CONFIGS
from kbroker.log import LogConfig, LogManager
from kbroker.protocol.records import Record, build_batch
from kbroker.storage import LogTopic, Storage


async def _woken_after_ms(storage: Storage, clock: Clock, partition: tuple[str, int], write) -> int:
    """How long (virtual ms) a fetch parked on `partition` for up to 30 s waits when `write` runs."""
    started = clock.now_ms()
    woken = []

    async def fetch():
        await storage.wakeups.wait_for_data([partition], 30.0)
        woken.append(clock.now_ms() - started)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fetch)
        await trio.sleep(1)
        await write()
    return woken[0]


async def test_every_writer_wakes_the_fetches_on_its_partition(autojump_clock, tmp_path):
    clock = Clock()
    logs = LogManager(tmp_path, LogConfig(), clock.now_ms)
    storage = Storage(logs, clock.now_ms, 1)
    storage.create_topic("t", 1)
    offsets_topic = LogTopic(storage, OFFSETS_TOPIC, 1, OFFSETS_TOPIC_CONFIGS)

    async def produce():
        storage.append(logs.partition("t", 0), build_batch([Record(value=b"v")]), clock.now_ms())

    async def commit_offsets():
        offsets_topic.append(0, [Record(key=b"k", value=b"v")], clock.now_ms())

    async def end_transaction():
        await storage.write_markers([("t", 0)], 5, 0, True, 0, clock.now_ms())

    assert await _woken_after_ms(storage, clock, ("t", 0), produce) == 1000
    offsets_topic.append(0, [Record(key=b"k", value=b"first")], clock.now_ms())  # creates the topic
    assert await _woken_after_ms(storage, clock, (OFFSETS_TOPIC, 0), commit_offsets) == 1000
    transactional = build_batch([Record(value=b"v")], producer_id=5, producer_epoch=0,
                                base_sequence=0, transactional=True)
    storage.append(logs.partition("t", 0), transactional, clock.now_ms())
    assert await _woken_after_ms(storage, clock, ("t", 0), end_transaction) == 1000
    logs.close()
