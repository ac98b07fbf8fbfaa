"""The transaction coordinator: on its own (in-memory __transaction_state, recorded markers and
staged-offset ends) for its rules and timers, and on a broker's logs for what markers do to data
partitions (recovery after a crash at any step, the aborted-transaction index). Everything runs
on trio's MockClock: timeouts and expiration pass in virtual time, nothing sleeps."""

from __future__ import annotations

import glob
import os

import pytest
import trio

from kbroker.broker import Broker
from kbroker.clock import Clock
from kbroker.config import Config
from kbroker.groups.coordinator import OffsetToCommit
from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.records import Record, build_batch, iter_batches
from kbroker.txn.coordinator import TRANSACTION_STATE_TOPIC, TransactionCoordinator
from kbroker.txn.state import TxnState
from tests.memory_topic import MemoryTopic

TID = "txn-a"
CLEANUP_INTERVAL_S = 10  # transaction.abort.timed.out.transaction.cleanup.interval.ms


class RecordedMarkers:
    """A MarkerWriter that remembers what it was asked to write."""

    def __init__(self):
        self.written: list[tuple[tuple, int, int, bool]] = []

    async def write_markers(self, partitions, producer_id, producer_epoch, commit,
                            coordinator_epoch, now_ms) -> None:
        self.written.append((tuple(partitions), producer_id, producer_epoch, commit))


class RecordedOffsetEnds:
    """The group coordinator's offset staging, as far as the transaction coordinator sees it;
    `failures` makes that many calls raise first."""

    def __init__(self):
        self.ended: list[tuple[int, bool]] = []
        self.failures = 0

    async def end_transaction(self, producer_id: int, commit: bool) -> None:
        self.ended.append((producer_id, commit))
        if self.failures:
            self.failures -= 1
            raise OSError("disk full")


@pytest.fixture
def unit():
    """Open (or reopen) a transaction coordinator on one in-memory __transaction_state. Its
    tests ask for pytest-trio's `autojump_clock` too, so that trio runs them in virtual time."""
    clock = Clock()
    topic = MemoryTopic(TRANSACTION_STATE_TOPIC, 1)
    producer_ids = iter(range(1000, 2000))

    def open_(**overrides) -> TransactionCoordinator:
        return TransactionCoordinator(Config(overrides), topic, clock.now_ms,
                                      lambda: next(producer_ids), open_.markers, open_.offsets)

    open_.topic, open_.markers, open_.offsets = topic, RecordedMarkers(), RecordedOffsetEnds()
    return open_


async def begin_on(coordinator: TransactionCoordinator, partitions=(("t", 0),),
                   timeout_ms: int = 60_000) -> tuple[int, int]:
    error, pid, epoch = await coordinator.init_producer_id(TID, timeout_ms, None)
    assert error == ErrorCode.NONE
    assert await coordinator.add_partitions(TID, pid, epoch, partitions) == ErrorCode.NONE
    return pid, epoch


async def test_the_timer_aborts_a_timed_out_transaction_and_fences_its_producer(autojump_clock, unit):
    coordinator = unit()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(coordinator.run)  # looks every CLEANUP_INTERVAL_S
        pid, epoch = await begin_on(coordinator, (("t", 0), ("t", 1)), timeout_ms=15_000)
        await trio.sleep(2 * CLEANUP_INTERVAL_S - 0.5)  # 15 s not yet passed at the 10 s look
        assert coordinator.describe(TID).state is TxnState.ONGOING and not unit.markers.written
        await trio.sleep(1)
        meta = coordinator.describe(TID)
        assert (meta.state, meta.producer_epoch) == (TxnState.COMPLETE_ABORT, epoch + 1)
        assert unit.markers.written == [((("t", 0), ("t", 1)), pid, epoch + 1, False)]
        assert unit.offsets.ended == [(pid, False)]
        nursery.cancel_scope.cancel()
    assert await coordinator.end_transaction(TID, pid, epoch, True) == ErrorCode.PRODUCER_FENCED


async def test_the_timer_retries_a_failed_completion(autojump_clock, unit):
    coordinator = unit()
    pid, epoch = await begin_on(coordinator)
    unit.offsets.failures = 1
    # The decision is stored, so the client is told NONE; completion waits for the timer.
    assert await coordinator.end_transaction(TID, pid, epoch, False) == ErrorCode.NONE
    assert coordinator.describe(TID).state is TxnState.PREPARE_ABORT
    assert await coordinator.add_partitions(TID, pid, epoch, [("t", 1)]) == \
        ErrorCode.CONCURRENT_TRANSACTIONS
    async with trio.open_nursery() as nursery:
        nursery.start_soon(coordinator.run)
        await trio.sleep(CLEANUP_INTERVAL_S + 0.5)
        assert coordinator.describe(TID).state is TxnState.COMPLETE_ABORT
        nursery.cancel_scope.cancel()
    assert unit.offsets.ended == [(pid, False), (pid, False)]
    assert len(unit.markers.written) == 2  # written again: harmless, as after a restart


async def test_the_timer_expires_idle_transactional_ids(autojump_clock, unit):
    coordinator = unit(**{"transactional.id.expiration.ms": "25000"})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(coordinator.run)
        await coordinator.init_producer_id(TID, 1000, None)
        await trio.sleep(25)  # idle for 25 s at the 30 s look, not at the 20 s one
        assert coordinator.describe(TID) is not None
        await trio.sleep(CLEANUP_INTERVAL_S)
        assert coordinator.describe(TID) is None
        nursery.cancel_scope.cancel()
    assert unit().describe(TID) is None  # the tombstone replays


async def test_unreadable_records_are_skipped(autojump_clock, unit):
    await unit().init_producer_id(TID, 1000, None)
    unit.topic.append(0, [Record(key=b"\x00\x00\x00\x01z", value=b"junk")], 0)
    reopened = unit()
    assert reopened.describe(TID).state is TxnState.EMPTY
    assert reopened.describe("z") is None


async def test_a_failed_write_answers_not_coordinator_and_changes_nothing(autojump_clock, unit):
    coordinator = unit()
    pid, epoch = await begin_on(coordinator)
    unit.topic.fail_with = OSError("disk full")
    assert await coordinator.end_transaction(TID, pid, epoch, True) == ErrorCode.NOT_COORDINATOR
    assert coordinator.describe(TID).state is TxnState.ONGOING and not unit.markers.written


# -- on a broker's logs: what the markers do to data partitions -----------------------------------

@pytest.fixture
def open_broker(tmp_path):
    """Open (or reopen) a broker on one data dir (its clock runs on the test's MockClock)."""
    opened = []

    def open_(**overrides) -> Broker:
        broker = Broker(Config({"log.dirs": str(tmp_path), **overrides}))
        if "t" not in broker.logs.topics:
            broker.storage.create_topic("t", 2)
        opened.append(broker)
        return broker

    yield open_
    for broker in opened:
        broker.logs.close()


def append(broker: Broker, partition: int, pid: int, epoch: int, sequence: int, count: int = 2):
    now = broker.clock.now_ms()
    batch = build_batch([Record(timestamp=now, value=b"v%d" % i) for i in range(count)],
                        producer_id=pid, producer_epoch=epoch, base_sequence=sequence,
                        transactional=True)
    return broker.logs.partition("t", partition).append_produce(batch, now)


def markers(broker: Broker, partition: int) -> list[tuple[int, int]]:
    """(producer id, epoch) of each control batch of a partition."""
    return [(header.producer_id, header.producer_epoch)
            for header, _ in broker.logs.partition("t", partition).stored_batches()
            if header.is_control]


async def begin(broker: Broker, partitions=(("t", 0),), timeout_ms: int = 60_000):
    return await begin_on(broker.transactions, partitions, timeout_ms)


async def finished(broker: Broker, commit: bool):
    """A transaction with two records in t-0, ended."""
    pid, epoch = await begin(broker)
    append(broker, 0, pid, epoch, 0)
    assert await broker.transactions.end_transaction(TID, pid, epoch, commit) == ErrorCode.NONE
    return pid, epoch


async def test_state_survives_a_reopen(autojump_clock, open_broker):
    broker = open_broker()
    pid, epoch = await finished(broker, True)
    broker.logs.close()
    reopened = open_broker()
    meta = reopened.transactions.describe(TID)
    assert (meta.state, meta.producer_id, meta.producer_epoch) == (TxnState.COMPLETE_COMMIT, pid, 0)
    error, same_pid, next_epoch = await reopened.transactions.init_producer_id(TID, 1000, None)
    assert (error, same_pid, next_epoch) == (ErrorCode.NONE, pid, 1)
    assert reopened.producer_ids.allocate() > pid


async def test_restart_keeps_an_open_transaction_until_its_timeout(autojump_clock, open_broker):
    broker = open_broker()
    pid, epoch = await begin(broker, (("t", 0), ("t", 1)))
    append(broker, 0, pid, epoch, 0)
    assert broker.logs.partition("t", 0).last_stable_offset == 0
    broker.logs.close()  # as if killed: nothing settles the transaction

    reopened = open_broker()
    await reopened.transactions.settle_unfinished()
    # As in Kafka, the transaction outlives the restart: its producer may still end it.
    assert reopened.transactions.describe(TID).state is TxnState.ONGOING
    assert reopened.logs.partition("t", 0).last_stable_offset == 0
    await reopened.transactions.abort_timed_out()
    assert reopened.transactions.describe(TID).state is TxnState.ONGOING

    await trio.sleep(60.001)  # the timeout of begin(), counted from before the restart
    await reopened.transactions.abort_timed_out()
    meta = reopened.transactions.describe(TID)
    assert (meta.state, meta.producer_epoch) == (TxnState.COMPLETE_ABORT, epoch + 1)
    log0 = reopened.logs.partition("t", 0)
    assert log0.last_stable_offset == log0.high_watermark == 3
    assert log0.aborted_transactions(0, 3) == [(pid, 0)]
    assert markers(reopened, 1) == [(pid, epoch + 1)]
    # The old producer is fenced everywhere.
    assert await reopened.transactions.end_transaction(TID, pid, epoch, True) == \
        ErrorCode.PRODUCER_FENCED


async def test_open_transaction_can_be_committed_after_a_restart(autojump_clock, open_broker):
    broker = open_broker()
    pid, epoch = await begin(broker, (("t", 0),))
    append(broker, 0, pid, epoch, 0)
    broker.logs.close()

    reopened = open_broker()
    await reopened.transactions.settle_unfinished()
    assert await reopened.transactions.end_transaction(TID, pid, epoch, True) == ErrorCode.NONE
    assert reopened.transactions.describe(TID).state is TxnState.COMPLETE_COMMIT
    log0 = reopened.logs.partition("t", 0)
    assert log0.last_stable_offset == log0.high_watermark
    assert log0.aborted_transactions(0, log0.high_watermark) == []


async def test_restart_completes_a_decided_commit(autojump_clock, open_broker):
    broker = open_broker()
    coordinator = broker.transactions
    pid, epoch = await begin(broker)
    group_partition = ("__consumer_offsets", broker.groups.partition_for("g"))
    assert await coordinator.add_partitions(TID, pid, epoch, [group_partition]) == ErrorCode.NONE
    errors = await broker.groups.stage_transactional_offsets(
        "g", pid, "", None, -1, [OffsetToCommit("t", 0, 42, -1, None)])
    assert errors == [ErrorCode.NONE]
    append(broker, 0, pid, epoch, 0)
    # Crash right after the decision is stored, before any marker.
    prepared = coordinator.states.end_transaction(TID, pid, epoch, True, coordinator.clock())
    assert coordinator._store(prepared, coordinator.clock()) == ErrorCode.NONE
    broker.logs.close()

    reopened = open_broker()
    assert reopened.transactions.describe(TID).state is TxnState.PREPARE_COMMIT
    assert await reopened.transactions.end_transaction(TID, pid, epoch, True) == \
        ErrorCode.CONCURRENT_TRANSACTIONS
    await reopened.transactions.settle_unfinished()
    assert reopened.transactions.describe(TID).state is TxnState.COMPLETE_COMMIT
    assert markers(reopened, 0) == [(pid, epoch)]
    log0 = reopened.logs.partition("t", 0)
    assert log0.last_stable_offset == 3 and log0.aborted_transactions(0, 3) == []
    ((topic, entries),) = reopened.groups.fetch_offsets("g", None, True)
    assert [(p, value.offset, error) for p, value, error in entries] == [(0, 42, ErrorCode.NONE)]


async def test_timed_out_transaction_is_aborted_and_fenced(autojump_clock, open_broker):
    broker = open_broker()
    pid, epoch = await begin(broker, timeout_ms=1000)
    append(broker, 0, pid, epoch, 0)
    await trio.sleep(1)
    await broker.transactions.abort_timed_out()
    assert broker.transactions.describe(TID).state is TxnState.ONGOING
    await trio.sleep(0.001)
    await broker.transactions.abort_timed_out()
    meta = broker.transactions.describe(TID)
    assert (meta.state, meta.producer_epoch) == (TxnState.COMPLETE_ABORT, epoch + 1)
    assert broker.logs.partition("t", 0).last_stable_offset == 3
    assert await broker.transactions.end_transaction(TID, pid, epoch, True) == \
        ErrorCode.PRODUCER_FENCED


async def test_aborted_transaction_index_is_rebuilt(autojump_clock, open_broker):
    broker = open_broker()
    pid, _ = await finished(broker, False)
    expected = broker.logs.partition("t", 0).aborted_transactions(0, 3)
    assert expected == [(pid, 0)]
    directory = broker.logs.partition("t", 0).directory
    broker.logs.close()
    (index_file,) = glob.glob(os.path.join(directory, "*.txnindex"))
    os.unlink(index_file)
    reopened = open_broker()
    log0 = reopened.logs.partition("t", 0)
    assert log0.aborted_transactions(0, 3) == expected
    assert log0.last_stable_offset == 3
    data = b"".join(batch for _, batch in log0.stored_batches())
    assert [h.is_control for _, h in iter_batches(data)] == [False, True]
