"""The log's timers on trio's MockClock: producer-id expiration and retention run on their
schedule, in virtual time, against real logs in a temporary directory."""

from __future__ import annotations

import trio

from kbroker.clock import Clock
from kbroker.config import Config
from kbroker.housekeeping import LogHousekeeping
from kbroker.log import LogManager
from kbroker.log.cleaner import LogCleaner
from kbroker.protocol.records import Record, build_batch
from kbroker.storage import Storage


def _housekeeping(tmp_path, **settings) -> tuple[LogHousekeeping, Clock]:
    clock = Clock()
    config = Config({"log.dirs": str(tmp_path), **settings})
    logs = LogManager(tmp_path, config.log_defaults(), clock.now_ms)
    return LogHousekeeping(config, Storage(logs, clock.now_ms, 1), LogCleaner(logs, 1000)), clock


def _append(storage: Storage, clock: Clock, topic: str, producer_id: int = -1,
            value: bytes = b"v") -> None:
    now = clock.now_ms()
    batch = build_batch([Record(timestamp=now, value=value)], producer_id=producer_id,
                        producer_epoch=0 if producer_id >= 0 else -1,
                        base_sequence=0 if producer_id >= 0 else -1)
    storage.append(storage.logs.partition(topic, 0), batch, now)


async def test_idle_producers_are_forgotten_at_the_next_check(autojump_clock, tmp_path):
    housekeeping, clock = _housekeeping(tmp_path, **{
        "producer.id.expiration.ms": "60000", "producer.id.expiration.check.interval.ms": "10000"})
    storage = housekeeping.storage
    storage.create_topic("t", 1)
    producers = storage.logs.partition("t", 0).producer_state.producers
    async with trio.open_nursery() as nursery:
        nursery.start_soon(housekeeping.run)  # checks at 10 s, 20 s, ...
        await trio.sleep(5)
        _append(storage, clock, "t", producer_id=7)  # idle long enough from 65 s
        await trio.sleep(64)
        assert list(producers) == [7]
        await trio.sleep(2)
        assert producers == {}
        nursery.cancel_scope.cancel()
    storage.logs.close()


async def test_retention_deletes_old_segments_every_check_interval(autojump_clock, tmp_path):
    housekeeping, clock = _housekeeping(tmp_path, **{"log.retention.check.interval.ms": "10000"})
    storage = housekeeping.storage
    storage.create_topic("t", 1, {"retention.ms": "60000", "segment.bytes": "1048576",
                                  "file.delete.delay.ms": "0"})
    partition_log = storage.logs.partition("t", 0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(housekeeping.run)  # retention at 0 s, 10 s, ...
        await trio.sleep(5)
        for _ in range(30):  # a few 1 MiB segments, stamped 5 s
            _append(storage, clock, "t", value=bytes(100_000))
        assert len(partition_log.segments) > 1
        await trio.sleep(64)  # at 69 s, the 60 s look found them 55 s old
        assert partition_log.log_start_offset == 0
        await trio.sleep(2)  # the 70 s look found them 65 s old
        assert partition_log.log_start_offset > 0
        nursery.cancel_scope.cancel()
    storage.logs.close()
