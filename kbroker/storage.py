"""Writing to the logs as every writer must: the one place where appends wake fetches and flush.

`Storage` wraps the LogManager for everything above the log layer. An append (a producer's
batch, a coordinator's records, a transaction marker) wakes the fetches waiting on that
partition, and `flush_if_due` applies flush.messages / flush.ms off the event loop; writers
append synchronously (so a coordinator's write-then-apply stays atomic) and await
`flush_if_due` before they answer. Appends that skip the await are still fsynced by the
flusher task within log.flush.scheduler.interval.ms.

`InternalTopic` is what a coordinator sees of the topic it keeps its state in
(__consumer_offsets, __transaction_state): created on the first write, appended to, replayed at
start, flushed. `LogTopic` is the real one; tests may use any object of that shape.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Iterator, Protocol

import trio

from kbroker.log import AppendResult, LogManager, PartitionLog, TopicInfo
from kbroker.log.partition import run_flush_jobs
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.records import Record, build_batch

log = logging.getLogger("kbroker")


class PartitionWakeups:
    """Lets long-polling fetches sleep until data arrives on any partition they read.

    A waiter registers one trio.Event under every partition it reads; an append sets the
    events of that partition only, so no fetch is woken by partitions it does not read.
    """

    def __init__(self) -> None:
        self._waiters: dict[tuple[str, int], set[trio.Event]] = {}

    def notify(self, topic: str, partition: int) -> None:
        for event in self._waiters.pop((topic, partition), ()):
            event.set()

    async def wait_for_data(self, partitions: list[tuple[str, int]], timeout_s: float) -> None:
        event = trio.Event()
        for key in partitions:
            self._waiters.setdefault(key, set()).add(event)
        try:
            with trio.move_on_after(timeout_s):
                await event.wait()
        finally:
            for key in partitions:
                waiting = self._waiters.get(key)
                if waiting is not None:
                    waiting.discard(event)
                    if not waiting:
                        del self._waiters[key]


class Storage:
    """The broker's logs, with the wake-ups and the flush policy every write must honour."""

    def __init__(self, logs: LogManager, clock: Callable[[], int], default_partitions: int):
        self.logs = logs
        self.clock = clock
        self.wakeups = PartitionWakeups()
        self.default_partitions = default_partitions  # num.partitions
        self.deletion_listeners: list[Callable[[list[str]], None]] = []
        self.creation_listeners: list[Callable[[str], None]] = []

    # -- topics ----------------------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int | None = None,
                     configs: dict[str, str] | None = None) -> TopicInfo:
        """Create a topic (auto-created ones get num.partitions and no overrides)."""
        count = partitions if partitions is not None else self.default_partitions
        info = self.logs.create_topic(name, count, configs or {})
        log.info("created topic %s with %d partitions", name, count)
        for listener in self.creation_listeners:
            listener(name)
        return info

    def delete_topics(self, names: list[str]) -> None:
        """Delete topics: fetches waiting on them wake up, then the deletion listeners (the
        group coordinator forgets their offsets) are told."""
        for name in names:
            info = self.logs.delete_topic(name)
            for index in range(info.partitions):
                self.wakeups.notify(name, index)
            log.info("deleted topic %s", name)
        if names:
            for listener in self.deletion_listeners:
                listener(names)

    # -- appends ---------------------------------------------------------------------------------

    def append(self, partition_log: PartitionLog, records, now_ms: int) -> AppendResult:
        """Append a batch as a producer sent it; raises KafkaError as validation fails."""
        result = partition_log.append_produce(records, now_ms)
        if not result.duplicate:
            self.wakeups.notify(partition_log.topic, partition_log.partition)
        return result

    async def write_markers(self, partitions: Iterable[tuple[str, int]], producer_id: int,
                            producer_epoch: int, commit: bool, coordinator_epoch: int,
                            now_ms: int) -> None:
        """A COMMIT or ABORT control batch on each partition, flushed as due. Deleted partitions
        are skipped, as in Kafka; so is one where a newer producer epoch already wrote."""
        written = []
        for topic, partition in partitions:
            partition_log = self.logs.partition(topic, partition)
            if partition_log is None:
                continue
            try:
                partition_log.append_control(producer_id, producer_epoch, commit,
                                             coordinator_epoch, now_ms)
            except KafkaError as exc:
                log.warning("no marker for %s-%d: %s", topic, partition, exc)
                continue
            self.wakeups.notify(topic, partition)
            written.append(partition_log)
        await self.flush_if_due(written)

    async def flush_if_due(self, partition_logs: list[PartitionLog] | None = None) -> None:
        """fsync the logs whose flush.messages / flush.ms say so, off the event loop.

        A writer checks only the logs it appended to (as Kafka checks flush.messages on
        append); the flusher task checks all of them every log.flush.scheduler.interval.ms,
        and also syncs rolled segments and written metadata files.
        """
        now = self.clock()
        if partition_logs is None:
            due = [partition_log for partition_log in self.logs.logs()
                   if partition_log.needs_flush(now) or partition_log.has_unsynced_files()]
        else:
            due = [partition_log for partition_log in partition_logs if partition_log.needs_flush(now)]
        await flush_logs(due, now)


FLUSH_JOBS_AT_ONCE = 64  # logs per worker-thread run: bounds the files held open by a flush


async def flush_logs(partition_logs: list[PartitionLog], now_ms: int) -> None:
    """Flush jobs are gathered on the loop, fsynced in a worker thread, and marked done on the
    loop again: the thread touches file descriptors only, never the logs' bookkeeping."""
    for start in range(0, len(partition_logs), FLUSH_JOBS_AT_ONCE):
        jobs = []
        for partition_log in partition_logs[start:start + FLUSH_JOBS_AT_ONCE]:
            try:
                jobs.append((partition_log, partition_log.begin_flush(now_ms)))
            except OSError as exc:
                log.error("cannot flush %s: %s", partition_log.name, exc)
        await trio.to_thread.run_sync(run_flush_jobs, [job for _, job in jobs])
        for partition_log, job in jobs:
            partition_log.finish_flush(job)


class InternalTopic(Protocol):
    """The topic a coordinator keeps its state in, as the coordinator sees it."""

    name: str
    partitions: int  # how many it is created with; coordinators route keys over these

    def replay(self) -> Iterator[tuple[int, int, bytes]]:
        """(partition, base offset, batch) of every stored data batch, in order per partition."""

    def append(self, partition: int, records: list[Record], now_ms: int) -> int:
        """Write records as one batch, creating the topic first if needed; the batch's base
        offset. Raises KafkaError or OSError with nothing written."""

    async def flush(self) -> None:
        """fsync what the topic's flush settings say is due."""


class LogTopic:
    """An InternalTopic stored in the broker's logs."""

    def __init__(self, storage: Storage, name: str, partitions: int, configs: dict[str, str]):
        self.storage = storage
        self.name = name
        self.partitions = partitions
        self.configs = configs

    def replay(self) -> Iterator[tuple[int, int, bytes]]:
        for partition_log in self._partition_logs():
            for header, batch in partition_log.stored_batches():
                if not header.is_control:
                    yield partition_log.partition, header.base_offset, batch

    def append(self, partition: int, records: list[Record], now_ms: int) -> int:
        storage = self.storage
        if self.name not in storage.logs.topics:
            storage.create_topic(self.name, self.partitions, self.configs)
        partition_log = storage.logs.partition(self.name, partition)
        if partition_log is None:
            raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"{self.name}-{partition}")
        return storage.append(partition_log, build_batch(records), now_ms).base_offset

    async def flush(self) -> None:
        await self.storage.flush_if_due(self._partition_logs())

    def _partition_logs(self) -> list[PartitionLog]:
        """The topic's partitions as stored (none before the first append)."""
        logs = self.storage.logs
        info = logs.topics.get(self.name)
        found = [logs.partition(self.name, index) for index in range(info.partitions)] if info else []
        return [partition_log for partition_log in found if partition_log is not None]
