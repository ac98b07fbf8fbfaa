"""The transaction coordinator in-process: __transaction_state replay, recovery after a crash at
any step, timeouts, expiration and the aborted-transaction index, on a fake clock."""

from __future__ import annotations

import glob
import os

import pytest

from kbroker.broker import Broker
from kbroker.config import Config
from kbroker.groups.coordinator import OffsetToCommit
from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.records import Record, build_batch, iter_batches
from kbroker.txn.coordinator import TRANSACTION_STATE_TOPIC
from kbroker.txn.state import TxnState
from tests.test_groups_coordinator import Clock

TID = "txn-a"
START = Clock().now


@pytest.fixture
def open_broker(tmp_path):
    """Open (or reopen) a broker on one data dir with a fake clock for its transactions."""
    opened = []

    def open_(clock: Clock, **overrides) -> Broker:
        broker = Broker(Config({"log.dirs": str(tmp_path), **overrides}))
        broker.transactions.clock = clock
        if "t" not in broker.logs.topics:
            broker.storage.create_topic("t", 2)
        opened.append(broker)
        return broker

    yield open_
    for broker in opened:
        broker.logs.close()


def append(broker: Broker, partition: int, pid: int, epoch: int, sequence: int, count: int = 2):
    batch = build_batch([Record(timestamp=START, value=b"v%d" % i) for i in range(count)],
                        producer_id=pid, producer_epoch=epoch, base_sequence=sequence,
                        transactional=True)
    return broker.logs.partition("t", partition).append_produce(batch, START)


def markers(broker: Broker, partition: int) -> list[tuple[int, int]]:
    """(producer id, epoch) of each control batch of a partition."""
    return [(header.producer_id, header.producer_epoch)
            for header, _ in broker.logs.partition("t", partition).stored_batches()
            if header.is_control]


async def begin(broker: Broker, partitions=(("t", 0),), timeout_ms: int = 60_000):
    coordinator = broker.transactions
    error, pid, epoch = await coordinator.init_producer_id(TID, timeout_ms, None)
    assert error == ErrorCode.NONE
    assert await coordinator.add_partitions(TID, pid, epoch, partitions) == ErrorCode.NONE
    return pid, epoch


async def finished(broker: Broker, commit: bool):
    """A transaction with two records in t-0, ended."""
    pid, epoch = await begin(broker)
    append(broker, 0, pid, epoch, 0)
    assert await broker.transactions.end_transaction(TID, pid, epoch, commit) == ErrorCode.NONE
    return pid, epoch


async def test_state_survives_a_reopen(open_broker):
    clock = Clock()
    broker = open_broker(clock)
    pid, epoch = await finished(broker, True)
    broker.logs.close()
    reopened = open_broker(clock)
    meta = reopened.transactions.describe(TID)
    assert (meta.state, meta.producer_id, meta.producer_epoch) == (TxnState.COMPLETE_COMMIT, pid, 0)
    error, same_pid, next_epoch = await reopened.transactions.init_producer_id(TID, 1000, None)
    assert (error, same_pid, next_epoch) == (ErrorCode.NONE, pid, 1)
    assert reopened.producer_ids.allocate() > pid


async def test_restart_keeps_an_open_transaction_until_its_timeout(open_broker):
    clock = Clock()
    broker = open_broker(clock)
    pid, epoch = await begin(broker, (("t", 0), ("t", 1)))
    append(broker, 0, pid, epoch, 0)
    assert broker.logs.partition("t", 0).last_stable_offset == 0
    broker.logs.close()  # as if killed: nothing settles the transaction

    reopened = open_broker(clock)
    await reopened.transactions.settle_unfinished()
    # As in Kafka, the transaction outlives the restart: its producer may still end it.
    assert reopened.transactions.describe(TID).state is TxnState.ONGOING
    assert reopened.logs.partition("t", 0).last_stable_offset == 0
    await reopened.transactions.abort_timed_out()
    assert reopened.transactions.describe(TID).state is TxnState.ONGOING

    clock.now += 60_000 + 1  # the timeout of begin(), counted from before the restart
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


async def test_open_transaction_can_be_committed_after_a_restart(open_broker):
    clock = Clock()
    broker = open_broker(clock)
    pid, epoch = await begin(broker, (("t", 0),))
    append(broker, 0, pid, epoch, 0)
    broker.logs.close()

    reopened = open_broker(clock)
    await reopened.transactions.settle_unfinished()
    assert await reopened.transactions.end_transaction(TID, pid, epoch, True) == ErrorCode.NONE
    assert reopened.transactions.describe(TID).state is TxnState.COMPLETE_COMMIT
    log0 = reopened.logs.partition("t", 0)
    assert log0.last_stable_offset == log0.high_watermark
    assert log0.aborted_transactions(0, log0.high_watermark) == []


async def test_restart_completes_a_decided_commit(open_broker):
    clock = Clock()
    broker = open_broker(clock)
    coordinator = broker.transactions
    pid, epoch = await begin(broker)
    group_partition = ("__consumer_offsets", broker.groups.partition_for("g"))
    assert await coordinator.add_partitions(TID, pid, epoch, [group_partition]) == ErrorCode.NONE
    errors = await broker.groups.stage_transactional_offsets(
        "g", pid, "", None, -1, [OffsetToCommit("t", 0, 42, -1, None)])
    assert errors == [ErrorCode.NONE]
    append(broker, 0, pid, epoch, 0)
    # Crash right after the decision is stored, before any marker.
    prepared = coordinator.states.end_transaction(TID, pid, epoch, True, clock())
    assert coordinator._store(prepared, clock()) == ErrorCode.NONE
    broker.logs.close()

    reopened = open_broker(clock)
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


async def test_failed_completion_is_retried(open_broker, monkeypatch):
    clock = Clock()
    broker = open_broker(clock)
    pid, epoch = await begin(broker)
    calls = []

    async def failing_once(producer_id, commit):
        calls.append(commit)
        if len(calls) == 1:
            raise OSError("disk full")

    monkeypatch.setattr(broker.groups, "end_transaction", failing_once)
    # The decision is stored, so the client is told NONE; completion waits for the timer.
    assert await broker.transactions.end_transaction(TID, pid, epoch, False) == ErrorCode.NONE
    assert broker.transactions.describe(TID).state is TxnState.PREPARE_ABORT
    assert await broker.transactions.add_partitions(TID, pid, epoch, [("t", 1)]) == \
        ErrorCode.CONCURRENT_TRANSACTIONS
    await broker.transactions.abort_timed_out()
    assert broker.transactions.describe(TID).state is TxnState.COMPLETE_ABORT
    assert calls == [False, False]


async def test_timed_out_transaction_is_aborted_and_fenced(open_broker):
    clock = Clock()
    broker = open_broker(clock)
    pid, epoch = await begin(broker, timeout_ms=1000)
    append(broker, 0, pid, epoch, 0)
    clock.now += 1000
    await broker.transactions.abort_timed_out()
    assert broker.transactions.describe(TID).state is TxnState.ONGOING
    clock.now += 1
    await broker.transactions.abort_timed_out()
    meta = broker.transactions.describe(TID)
    assert (meta.state, meta.producer_epoch) == (TxnState.COMPLETE_ABORT, epoch + 1)
    assert broker.logs.partition("t", 0).last_stable_offset == 3
    assert await broker.transactions.end_transaction(TID, pid, epoch, True) == \
        ErrorCode.PRODUCER_FENCED


async def test_idle_transactional_ids_expire(open_broker):
    clock = Clock()
    broker = open_broker(clock, **{"transactional.id.expiration.ms": "5000"})
    await broker.transactions.init_producer_id(TID, 1000, None)
    clock.now += 4999
    broker.transactions.expire_transactional_ids()
    assert broker.transactions.describe(TID) is not None
    clock.now += 1
    broker.transactions.expire_transactional_ids()
    assert broker.transactions.describe(TID) is None
    broker.logs.close()
    assert open_broker(clock).transactions.describe(TID) is None  # the tombstone replays


async def test_unreadable_records_are_skipped(open_broker):
    clock = Clock()
    broker = open_broker(clock)
    await broker.transactions.init_producer_id(TID, 1000, None)
    junk = build_batch([Record(timestamp=START, key=b"\x00\x00\x00\x01z", value=b"junk")])
    broker.logs.partition(TRANSACTION_STATE_TOPIC, 0).append_produce(junk, clock())
    broker.logs.close()
    reopened = open_broker(clock)
    assert reopened.transactions.describe(TID).state is TxnState.EMPTY
    assert reopened.transactions.describe("z") is None


async def test_aborted_transaction_index_is_rebuilt(open_broker):
    clock = Clock()
    broker = open_broker(clock)
    pid, _ = await finished(broker, False)
    expected = broker.logs.partition("t", 0).aborted_transactions(0, 3)
    assert expected == [(pid, 0)]
    directory = broker.logs.partition("t", 0).directory
    broker.logs.close()
    (index_file,) = glob.glob(os.path.join(directory, "*.txnindex"))
    os.unlink(index_file)
    reopened = open_broker(clock)
    log0 = reopened.logs.partition("t", 0)
    assert log0.aborted_transactions(0, 3) == expected
    assert log0.last_stable_offset == 3
    data = b"".join(batch for _, batch in log0.stored_batches())
    assert [h.is_control for _, h in iter_batches(data)] == [False, True]
