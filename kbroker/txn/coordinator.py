"""The transaction coordinator: the trio layer around the state machine of kbroker.txn.state.

Every decision of the machine is written to __transaction_state before it becomes current or
anybody is answered, and the topic is replayed when the broker starts (created on the first
write). Ending a transaction writes the decision (Prepare*), then a COMMIT or ABORT control
batch to each data partition of the transaction and the group coordinator's end of the offsets
the producer staged, then the completion (Complete*). A restart in between finds Prepare* and
writes the markers again, which is harmless. Unlike Kafka, the markers are written before
EndTxn is answered: with one broker there is nobody to send them to but ourselves.

Dependencies are narrow: the settings, the InternalTopic for __transaction_state, a clock (ms),
a producer-id allocator, a MarkerWriter for the data partitions and the group coordinator's
offset staging (OffsetStaging), so that a test can give it fakes of each.

Timers (a task in the broker's nursery): recovery first (rule R), then every
transaction.abort.timed.out.transaction.cleanup.interval.ms timed-out transactions are aborted
(T1), failed completions retried and idle transactional ids expired (T2; Kafka runs that scan
on its own hourly timer, a scan of the ids is cheap enough to share this one).
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Protocol

import trio

from kbroker.config import Config
from kbroker.groups.offsets_topic import OFFSETS_TOPIC, key_partition
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.records import iter_records
from kbroker.storage import InternalTopic
from kbroker.txn import records
from kbroker.txn.state import (
    PREPARE, ListedTransaction, TopicPartition, TransactionStates, TxnMetadata, TxnState,
)

log = logging.getLogger("kbroker.txn")

TRANSACTION_STATE_TOPIC = "__transaction_state"
# Kafka's transaction.state.log.segment.bytes default; compacted by transactional id.
TRANSACTION_STATE_CONFIGS = {"cleanup.policy": "compact", "segment.bytes": "104857600"}
COORDINATOR_EPOCH = 0  # this broker leads __transaction_state forever


class MarkerWriter(Protocol):
    async def write_markers(self, partitions: Iterable[TopicPartition], producer_id: int,
                            producer_epoch: int, commit: bool, coordinator_epoch: int,
                            now_ms: int) -> None:
        """A COMMIT or ABORT control batch on each existing data partition, flushed as due."""


class OffsetStaging(Protocol):
    async def end_transaction(self, producer_id: int, commit: bool) -> None:
        """Commit or abort the offsets the producer staged in __consumer_offsets."""


class TransactionCoordinator:
    """The transactions of one broker, persisted in __transaction_state."""

    def __init__(self, config: Config, topic: InternalTopic, clock: Callable[[], int],
                 allocate_producer_id: Callable[[], int], markers: MarkerWriter,
                 offsets: OffsetStaging):
        self.topic = topic
        self.clock = clock
        self.markers = markers
        self.offsets = offsets
        self.states = TransactionStates(config["transaction.max.timeout.ms"], allocate_producer_id)
        self.num_partitions = topic.partitions
        self.expiration_ms = config["transactional.id.expiration.ms"]
        self.interval_s = config["transaction.abort.timed.out.transaction.cleanup.interval.ms"] / 1000
        self._ending: set[str] = set()  # transactional ids whose markers are being written
        self._replay()
        # R: decisions taken before the broker stopped, completed by run().
        self._unsettled = self.states.in_state(*PREPARE)

    # -- the log ---------------------------------------------------------------------------------


    def partition_for(self, transactional_id: str) -> int:
        """The __transaction_state partition keeping this id (whose leader coordinates it)."""
        return key_partition(transactional_id, self.num_partitions)
    def _replay(self) -> None:
        for index, _, batch in self.topic.replay():
            for record in iter_records(batch):
                try:
                    transactional_id = records.decode_key(record.key)
                    if record.value is None:
                        self.states.forget(transactional_id)
                    else:
                        self.states.load(records.decode(transactional_id, record.value))
                except records.CorruptRecord as exc:
                    log.warning("skipping a record of %s-%d: %s", TRANSACTION_STATE_TOPIC,
                                index, exc)
        log.info("loaded %d transactional ids", len(self.states.transactions))

    def _store(self, metadata: TxnMetadata, now_ms: int) -> ErrorCode:
        """Write metadata to the log, then make it current; the error to answer if it failed."""
        index = self.partition_for(metadata.transactional_id)
        try:
            self.topic.append(index, [records.encode(metadata, now_ms)], now_ms)
        except OSError:
            log.exception("could not store transactional id %s", metadata.transactional_id)
            return ErrorCode.NOT_COORDINATOR  # Kafka's answer to a storage error
        except KafkaError as exc:
            log.error("could not store transactional id %s: %s", metadata.transactional_id, exc)
            return ErrorCode.UNKNOWN_SERVER_ERROR  # as Kafka maps a record too large
        self.states.apply(metadata)
        return ErrorCode.NONE

    # -- requests --------------------------------------------------------------------------------

    async def init_producer_id(self, transactional_id: str, timeout_ms: int,
                               expected: tuple[int, int] | None) -> tuple[ErrorCode, int, int]:
        """InitProducerId with a transactional id: (error, producer id, epoch)."""
        answer = await self._init_producer_id(transactional_id, timeout_ms, expected)
        await self.topic.flush()
        return answer

    async def _init_producer_id(self, transactional_id: str, timeout_ms: int,
                                expected: tuple[int, int] | None) -> tuple[ErrorCode, int, int]:
        now = self.clock()
        step = self.states.init_producer_id(transactional_id, timeout_ms, expected, now)
        if isinstance(step, ErrorCode):
            return step, -1, -1
        if step.state is TxnState.PREPARE_ABORT:  # I6: abort the fenced transaction first
            error = await self._end(step, now)
            return (error if error != ErrorCode.NONE else ErrorCode.CONCURRENT_TRANSACTIONS), -1, -1
        error = self._store(step, now)
        if error != ErrorCode.NONE:
            return error, -1, -1
        return ErrorCode.NONE, step.producer_id, step.producer_epoch

    async def add_partitions(self, transactional_id: str, producer_id: int, producer_epoch: int,
                             partitions: Iterable[TopicPartition],
                             transaction_version: int = 0) -> ErrorCode:
        now = self.clock()
        step = self.states.add_partitions(transactional_id, producer_id, producer_epoch,
                                          partitions, now, transaction_version)
        if isinstance(step, ErrorCode):
            return step
        error = self._store(step, now)
        await self.topic.flush()
        return error

    def verify(self, transactional_id: str, producer_id: int, producer_epoch: int,
               partitions: Iterable[TopicPartition]) -> dict[TopicPartition, ErrorCode]:
        return self.states.verify(transactional_id, producer_id, producer_epoch, partitions)

    async def end_transaction(self, transactional_id: str, producer_id: int, producer_epoch: int,
                              commit: bool, transaction_version: int = 0) -> ErrorCode:
        """The answer to EndTxn; a v2 client continues as `describe(id).continued_as()`."""
        now = self.clock()
        step = self.states.end_transaction(transactional_id, producer_id, producer_epoch, commit, now,
                                           transaction_version)
        if isinstance(step, ErrorCode):
            return step
        error = await self._end(step, now)
        await self.topic.flush()
        return error

    def describe(self, transactional_id: str) -> TxnMetadata | None:
        return self.states.get(transactional_id)

    def list_transactions(self, state_names: Iterable[str], producer_ids: Iterable[int],
                          min_duration_ms: int) -> tuple[list[ListedTransaction], list[str]]:
        return self.states.list_transactions(state_names, producer_ids, min_duration_ms, self.clock())

    # -- ending transactions ---------------------------------------------------------------------

    async def _end(self, prepared: TxnMetadata, now_ms: int) -> ErrorCode:
        """Store a Prepare* decision, then complete it; the error if the decision failed."""
        error = self._store(prepared, now_ms)
        if error == ErrorCode.NONE:
            await self._complete(prepared)
        return error

    async def _complete(self, prepared: TxnMetadata) -> None:
        """E4: markers, the staged offsets' end, then Complete*; on failure a timer retries."""
        transactional_id = prepared.transactional_id
        if transactional_id in self._ending or self.states.get(transactional_id) is not prepared:
            return  # being completed, or already done
        self._ending.add(transactional_id)
        commit = prepared.state is TxnState.PREPARE_COMMIT
        try:
            # __consumer_offsets gets no marker here: the group coordinator ends its staged offsets.
            data_partitions = sorted(p for p in prepared.partitions if p[0] != OFFSETS_TOPIC)
            await self.markers.write_markers(data_partitions, prepared.producer_id,
                                             prepared.producer_epoch, commit, COORDINATOR_EPOCH,
                                             self.clock())
            await self.offsets.end_transaction(prepared.producer_id, commit)
            now = self.clock()
            self._store(self.states.complete(prepared, now), now)
        except (KafkaError, OSError):
            log.exception("could not complete the transaction of %s; will retry", transactional_id)
        finally:
            self._ending.discard(transactional_id)

    # -- timers ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Settle what a restart left open (R), then T1 and T2 on a timer until cancelled."""
        await self.settle_unfinished()
        while True:
            await trio.sleep(self.interval_s)
            try:
                await self.abort_timed_out()
                self.expire_transactional_ids()
                await self.topic.flush()
            except Exception:  # a bug here must not take the broker down; the next tick retries
                log.exception("transaction timers failed")

    async def settle_unfinished(self) -> None:
        """R: complete every Prepare* loaded; Ongoing transactions are left to their producer or T1."""
        unsettled, self._unsettled = self._unsettled, []
        for loaded in unsettled:
            if self.states.get(loaded.transactional_id) is loaded:  # else a request got there first
                await self._complete(loaded)
        await self.topic.flush()

    async def abort_timed_out(self) -> None:
        """T1, and another try for completions that failed."""
        for stuck in self.states.in_state(*PREPARE):
            await self._complete(stuck)
        now = self.clock()
        for expired in self.states.timed_out(now):
            if self.states.get(expired.transactional_id) is not expired:
                continue
            log.info("aborting the transaction of %s: open longer than its timeout of %d ms",
                     expired.transactional_id, expired.timeout_ms)
            await self._end(self.states.fence(expired, now), now)

    def expire_transactional_ids(self) -> None:
        """T2: tombstones for transactional ids idle for transactional.id.expiration.ms."""
        now = self.clock()
        for dead in self.states.expired(now, self.expiration_ms):
            if self._store(dead, now) == ErrorCode.NONE:
                log.info("transactional id %s expired", dead.transactional_id)
