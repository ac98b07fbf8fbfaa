"""The log's timer-driven tasks, each as Kafka schedules it: flusher, retention, cleaner and
producer-id expiration. They read time from the broker's Clock and sleep with trio."""

from __future__ import annotations

import logging

import trio

from kbroker.config import Config
from kbroker.log.cleaner import LogCleaner
from kbroker.storage import Storage

log = logging.getLogger("kbroker")

PURGE_INTERVAL_MS = 1000  # how often files of deleted segments and topics are looked at
OPEN_PER_TICK = 100  # partitions not used since the start that each tick opens (for retention
# and compaction), few enough to keep each tick short


class LogHousekeeping:
    """Runs the log's background work in one nursery."""

    def __init__(self, config: Config, storage: Storage, cleaner: LogCleaner):
        self.config = config
        self.storage = storage
        self.cleaner = cleaner

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._run_flusher)
            nursery.start_soon(self._run_retention)
            nursery.start_soon(self._run_cleaner)
            nursery.start_soon(self._run_producer_expiration)
            nursery.start_soon(self._run_recovery_checkpoint)

    async def _run_flusher(self) -> None:
        interval_s = self.config["log.flush.scheduler.interval.ms"] / 1000
        while True:
            await trio.sleep(interval_s)
            await self.storage.flush_if_due()

    async def _run_retention(self) -> None:
        """Kafka's retention task: every log.retention.check.interval.ms, whole segments past
        retention.ms / retention.bytes (or below the log start offset) go; files of deleted
        segments and topics are removed once their file.delete.delay.ms has passed."""
        logs, clock = self.storage.logs, self.storage.clock
        next_check = 0
        while True:
            now = clock()
            logs.open_some(OPEN_PER_TICK)
            if now >= next_check:
                logs.apply_retention(now)
                next_check = now + self.config["log.retention.check.interval.ms"]
            logs.purge_deleted(now)
            await trio.sleep(min(next_check - now, PURGE_INTERVAL_MS) / 1000)

    async def _run_recovery_checkpoint(self) -> None:
        """Kafka's recovery-point checkpoint: every log.flush.offset.checkpoint.interval.ms the
        offsets up to which each partition is fsynced are written (off the loop), so that
        recovery after a crash scans only what came after."""
        logs = self.storage.logs
        interval_ms = self.config["log.flush.offset.checkpoint.interval.ms"]
        if interval_ms <= 0:  # as Kafka's scheduler: no period, so only at shutdown
            return
        interval_s = interval_ms / 1000
        while True:
            await trio.sleep(interval_s)
            data = logs.recovery_checkpoint()
            try:
                await trio.to_thread.run_sync(logs.write_recovery_checkpoint, data)
            except OSError as exc:
                log.error("cannot write the recovery-point checkpoint: %s", exc)

    async def _run_producer_expiration(self) -> None:
        """Kafka's producer-id expiration: every producer.id.expiration.check.interval.ms, the
        state of producers idle for producer.id.expiration.ms (and in no transaction) goes."""
        logs, clock = self.storage.logs, self.storage.clock
        while True:
            await trio.sleep(self.config["producer.id.expiration.check.interval.ms"] / 1000)
            expired = logs.remove_expired_producers(clock(),
                                                    self.config["producer.id.expiration.ms"])
            if expired:
                log.info("expired the state of %d idle producers", expired)

    async def _run_cleaner(self) -> None:
        """Kafka's log cleaner thread: compacts the filthiest compacted log, one at a time.

        The reading and writing runs in a worker thread; choosing and swapping run here, so a
        cleaning never sees a half-done append and readers never see a half-done swap.
        """
        if not self.config["log.cleaner.enable"]:
            return
        cleaner, clock = self.cleaner, self.storage.clock
        while True:
            job = cleaner.next_job(clock())
            if job is None:
                await trio.sleep(self.config["log.cleaner.backoff.ms"] / 1000)
                continue
            try:
                await trio.to_thread.run_sync(job.clean, cleaner.key_capacity,
                                               abandon_on_cancel=True)
                cleaner.finish(job, clock())
            except Exception:
                log.exception("cleaning %s-%d failed; the partition is left uncompacted",
                              job.log.topic, job.log.partition)
                cleaner.give_up(job)
            except BaseException:
                job.stop = True  # shutting down: the thread stops at its next batch
                raise
