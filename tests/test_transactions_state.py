"""The transaction state machine's rules (kbroker/txn/state.py) and its log records, no I/O."""

from __future__ import annotations

import itertools

import pytest

from kbroker.protocol.coordinator_records import decode_key, decode_value
from kbroker.protocol.errors import ErrorCode
from kbroker.txn import records
from kbroker.txn.state import (
    IllegalTransition, TransactionStates, TxnMetadata, TxnState, is_epoch_exhausted,
)

TID = "app-1"
P0, P1 = ("t", 0), ("t", 1)
MAX_TIMEOUT = 60_000


@pytest.fixture
def machine() -> TransactionStates:
    ids = itertools.count(1000)
    return TransactionStates(MAX_TIMEOUT, lambda: next(ids))


def stored(machine: TransactionStates, step):
    """Apply a step as the coordinator does once it is written; returns it."""
    assert isinstance(step, TxnMetadata), step
    machine.apply(step)
    return step


def init(machine, now=0, expected=None, timeout=10_000):
    return stored(machine, machine.init_producer_id(TID, timeout, expected, now))


def begin(machine, meta, partitions=(P0,), now=1):
    return stored(machine, machine.add_partitions(TID, meta.producer_id, meta.producer_epoch,
                                                  partitions, now))


def finish(machine, meta, commit=True, now=2):
    prepared = stored(machine, machine.end_transaction(TID, meta.producer_id, meta.producer_epoch,
                                                       commit, now))
    return stored(machine, machine.complete(prepared, now))


# -- InitProducerId --------------------------------------------------------------------------

def test_i1_bad_requests(machine):
    assert machine.init_producer_id("", 1000, None, 0) == ErrorCode.INVALID_REQUEST
    assert machine.init_producer_id(TID, 0, None, 0) == ErrorCode.INVALID_TRANSACTION_TIMEOUT
    assert machine.init_producer_id(TID, MAX_TIMEOUT + 1, None, 0) == \
        ErrorCode.INVALID_TRANSACTION_TIMEOUT
    assert machine.get(TID) is None


def test_i2_i5_new_id_then_epoch_bumps(machine):
    first = init(machine)
    assert (first.producer_id, first.producer_epoch, first.state) == (1000, 0, TxnState.EMPTY)
    second = init(machine, timeout=20_000)
    assert (second.producer_id, second.producer_epoch, second.timeout_ms) == (1000, 1, 20_000)
    assert second.last_producer_epoch == -1


def test_i2_unstored_new_id_is_not_remembered(machine):
    step = machine.init_producer_id(TID, 1000, None, 0)
    assert isinstance(step, TxnMetadata)
    assert machine.get(TID) is None


def test_i3_kip360_continuation_and_retry(machine):
    first = init(machine)
    bumped = init(machine, expected=(first.producer_id, first.producer_epoch))
    assert bumped.producer_epoch == 1 and bumped.last_producer_epoch == 0
    # The same request again (its answer was lost): the current epoch, no new bump.
    retried = init(machine, expected=(first.producer_id, first.producer_epoch))
    assert retried.producer_epoch == 1
    # An epoch that is neither current nor last: fenced.
    assert machine.init_producer_id(TID, 1000, (first.producer_id, 7), 5) == ErrorCode.PRODUCER_FENCED
    # Another producer id altogether.
    assert machine.init_producer_id(TID, 1000, (999, 0), 5) == ErrorCode.PRODUCER_FENCED


def test_i3_a_new_id_accepts_any_expected_producer(machine):
    created = init(machine, expected=(42, 3))
    assert (created.producer_id, created.producer_epoch) == (1000, 0)


def test_i5_epoch_exhaustion_rotates_producer_id(machine):
    meta = init(machine)
    machine.load(TxnMetadata(TID, meta.producer_id, meta.producer_id, 32766, -1, 1000,
                             TxnState.COMPLETE_COMMIT, frozenset(), 5, 5))
    assert is_epoch_exhausted(32766)
    rotated = init(machine, expected=(meta.producer_id, 32766))
    assert (rotated.producer_id, rotated.producer_epoch) == (1001, 0)
    assert rotated.previous_producer_id == meta.producer_id and rotated.last_producer_epoch == 32766
    # A retry naming the old id with the exhausted epoch is still the same producer (I3).
    again = machine.init_producer_id(TID, 1000, (meta.producer_id, 32766), 6)
    assert isinstance(again, TxnMetadata)


def test_i4_prepare_states_ask_to_retry(machine):
    meta = begin(machine, init(machine))
    stored(machine, machine.end_transaction(TID, meta.producer_id, 0, True, 2))
    assert machine.init_producer_id(TID, 1000, None, 3) == ErrorCode.CONCURRENT_TRANSACTIONS


def test_i6_ongoing_is_fenced_and_aborted(machine):
    meta = begin(machine, init(machine), (P0, P1))
    fence = machine.init_producer_id(TID, 1000, None, 3)
    assert fence.state is TxnState.PREPARE_ABORT
    assert fence.producer_epoch == meta.producer_epoch + 1
    assert fence.partitions == {P0, P1}
    stored(machine, fence)
    done = stored(machine, machine.complete(fence, 4))
    assert done.state is TxnState.COMPLETE_ABORT and not done.partitions
    # The client's retry gets yet another epoch; the old one is fenced everywhere.
    again = init(machine, now=5)
    assert again.producer_epoch == meta.producer_epoch + 2
    assert machine.add_partitions(TID, meta.producer_id, meta.producer_epoch, [P0], 6) == \
        ErrorCode.PRODUCER_FENCED
    assert machine.end_transaction(TID, meta.producer_id, meta.producer_epoch, True, 6) == \
        ErrorCode.PRODUCER_FENCED


# -- AddPartitionsToTxn and verification -----------------------------------------------------

def test_a1_producer_checks(machine):
    meta = init(machine)
    pid = meta.producer_id
    assert machine.add_partitions("", pid, 0, [P0], 1) == ErrorCode.INVALID_REQUEST
    assert machine.add_partitions("other", pid, 0, [P0], 1) == ErrorCode.INVALID_PRODUCER_ID_MAPPING
    assert machine.add_partitions(TID, pid + 1, 0, [P0], 1) == ErrorCode.INVALID_PRODUCER_ID_MAPPING
    assert machine.add_partitions(TID, pid, 1, [P0], 1) == ErrorCode.PRODUCER_FENCED


def test_a2_partitions_accumulate_and_start_time_stays(machine):
    meta = begin(machine, init(machine), (P0,), now=10)
    assert (meta.state, meta.start_ms) == (TxnState.ONGOING, 10)
    assert machine.add_partitions(TID, meta.producer_id, 0, [P0], 11) == ErrorCode.NONE
    more = begin(machine, meta, (P1,), now=12)
    assert more.partitions == {P0, P1} and more.start_ms == 10
    after = begin(machine, finish(machine, more, now=13), (P1,), now=20)
    assert after.start_ms == 20 and after.partitions == {P1}


def test_v_verification(machine):
    meta = begin(machine, init(machine), (P0,))
    pid = meta.producer_id
    assert machine.verify(TID, pid, 0, [P0, P1]) == {P0: ErrorCode.NONE,
                                                     P1: ErrorCode.TRANSACTION_ABORTABLE}
    assert machine.verify(TID, pid, 1, [P0]) == {P0: ErrorCode.PRODUCER_FENCED}
    assert machine.verify("nope", pid, 0, [P0]) == {P0: ErrorCode.INVALID_PRODUCER_ID_MAPPING}
    stored(machine, machine.end_transaction(TID, pid, 0, False, 3))
    assert machine.verify(TID, pid, 0, [P0]) == {P0: ErrorCode.CONCURRENT_TRANSACTIONS}


# -- EndTxn --------------------------------------------------------------------------------------

def test_e2_e4_commit_keeps_epoch(machine):
    meta = begin(machine, init(machine), (P0, P1))
    prepared = machine.end_transaction(TID, meta.producer_id, 0, True, 5)
    assert prepared.state is TxnState.PREPARE_COMMIT and prepared.partitions == {P0, P1}
    stored(machine, prepared)
    done = stored(machine, machine.complete(prepared, 6))
    assert (done.state, done.producer_epoch, done.partitions) == \
        (TxnState.COMPLETE_COMMIT, 0, frozenset())


@pytest.mark.parametrize("state, commit, expected", [
    (TxnState.COMPLETE_COMMIT, True, ErrorCode.NONE),
    (TxnState.COMPLETE_COMMIT, False, ErrorCode.INVALID_TXN_STATE),
    (TxnState.COMPLETE_ABORT, False, ErrorCode.NONE),
    (TxnState.COMPLETE_ABORT, True, ErrorCode.INVALID_TXN_STATE),
    (TxnState.PREPARE_COMMIT, True, ErrorCode.CONCURRENT_TRANSACTIONS),
    (TxnState.PREPARE_COMMIT, False, ErrorCode.INVALID_TXN_STATE),
    (TxnState.PREPARE_ABORT, False, ErrorCode.CONCURRENT_TRANSACTIONS),
    (TxnState.PREPARE_ABORT, True, ErrorCode.INVALID_TXN_STATE),
    (TxnState.EMPTY, True, ErrorCode.INVALID_TXN_STATE),
    (TxnState.EMPTY, False, ErrorCode.INVALID_TXN_STATE),
])
def test_e3_end_in_other_states(machine, state, commit, expected):
    machine.load(TxnMetadata(TID, 7, 7, 3, -1, 1000, state, frozenset(), 1, 1))
    assert machine.end_transaction(TID, 7, 3, commit, 2) == expected


def test_e1_fenced_and_unknown(machine):
    meta = begin(machine, init(machine))
    assert machine.end_transaction(TID, meta.producer_id, 5, True, 3) == ErrorCode.PRODUCER_FENCED
    assert machine.end_transaction("x", meta.producer_id, 0, True, 3) == \
        ErrorCode.INVALID_PRODUCER_ID_MAPPING
    assert machine.end_transaction("", meta.producer_id, 0, True, 3) == ErrorCode.INVALID_REQUEST


def test_illegal_transitions_are_refused(machine):
    meta = init(machine)
    with pytest.raises(IllegalTransition):
        machine.apply(meta.to(TxnState.COMPLETE_COMMIT, 1))
    with pytest.raises(IllegalTransition):
        machine.complete(meta, 1)
    with pytest.raises(IllegalTransition):
        machine.fence(meta, 1)


# -- timers and admin ----------------------------------------------------------------------------

def test_t1_timed_out_transactions(machine):
    meta = begin(machine, init(machine, timeout=1000), now=100)
    assert machine.timed_out(1100) == []
    assert machine.timed_out(1101) == [meta]
    fenced = machine.fence(meta, 1101)
    assert (fenced.state, fenced.producer_epoch) == (TxnState.PREPARE_ABORT, 1)


def test_t2_idle_ids_expire(machine):
    init(machine, now=100)
    assert machine.expired(1099, 1000) == []
    (dead,) = machine.expired(1100, 1000)
    assert dead.state is TxnState.DEAD
    stored(machine, dead)
    assert machine.get(TID) is None
    begin(machine, init(machine, now=2000), now=2000)
    assert machine.expired(10**9, 1000) == []  # never while a transaction is open


def test_list_transactions_filters(machine):
    meta = begin(machine, init(machine, now=0), now=100)
    machine.load(TxnMetadata("idle", 5, 5, 0, -1, 1000, TxnState.EMPTY, frozenset(), -1, 0))
    listed, unknown = machine.list_transactions([], [], -1, 200)
    assert {item.transactional_id for item in listed} == {TID, "idle"}
    listed, unknown = machine.list_transactions(["Ongoing", "Bogus", "PrepareEpochFence"], [], -1, 200)
    assert [item.transactional_id for item in listed] == [TID] and unknown == ["Bogus"]
    listed, _ = machine.list_transactions([], [meta.producer_id], -1, 200)
    assert [item.transactional_id for item in listed] == [TID]
    listed, _ = machine.list_transactions(["Ongoing"], [], 100, 200)
    assert listed == []  # open for exactly 100 ms: not longer than the filter
    listed, _ = machine.list_transactions(["Ongoing"], [], 99, 200)
    assert len(listed) == 1


def test_state_names():
    assert [s.kafka_name for s in TxnState] == [
        "Empty", "Ongoing", "PrepareCommit", "PrepareAbort", "CompleteCommit", "CompleteAbort",
        "Dead", "PrepareEpochFence"]


# -- records ---------------------------------------------------------------------------------

def test_records_round_trip():
    """Kafka's TransactionLogValue v1; the last epoch is kept in memory only, as in Kafka."""
    meta = TxnMetadata("tx-é", 12, 11, 3, -1, 60_000, TxnState.ONGOING,
                       frozenset({("a", 0), ("a", 2), ("b-topic", 7)}), 1234, 5678,
                       next_producer_id=13, client_transaction_version=2)
    record = records.encode(meta, 9999)
    assert record.timestamp == 9999
    assert records.decode_key(record.key) == "tx-é"
    assert records.decode("tx-é", record.value) == meta
    assert records.decode("tx-é", records.encode(meta.to(TxnState.ONGOING, 5678, last_producer_epoch=2),
                                                 1).value) == meta
    empty = meta.to(TxnState.EMPTY, 5678, partitions=frozenset())
    assert records.decode("tx-é", records.encode(empty, 1).value) == empty


def test_records_match_kafkas_format():
    meta = TxnMetadata("app-1", 5000, 4999, 3, -1, 60_000, TxnState.PREPARE_COMMIT,
                       frozenset({("orders", 1)}), 1700000000010, 1700000000011)
    record = records.encode(meta, 0)
    key = decode_key("transaction", record.key)
    version, value = decode_value(key, record.value)
    assert (type(key).__name__, key.transactional_id, version) == ("TransactionLogKey", "app-1", 1)
    assert (value.producer_id, value.previous_producer_id, value.next_producer_id,
            value.producer_epoch, value.transaction_timeout_ms, value.transaction_status,
            [(p.topic, p.partition_ids) for p in value.transaction_partitions],
            value.transaction_last_update_timestamp_ms, value.transaction_start_timestamp_ms) == (
        5000, 4999, -1, 3, 60_000, 2, [("orders", [1])], 1700000000011, 1700000000010)


def test_records_written_by_kbroker_before_kafkas_format_still_load():
    """Value version 100, kbroker's own until 2026-12 (bytes written by that code)."""
    key = bytes.fromhex("000000056170702d31")
    value = bytes.fromhex(
        "0064000000000000138800030000ea60010000000200056175646974000000010000000000066f726465"
        "72730000000200000000000000010000018bcfe5680b0000018bcfe5680a00000000000013870002")
    assert records.decode_key(key) == "app-1"
    assert records.decode("app-1", value) == TxnMetadata(
        "app-1", 5000, 4999, 3, 2, 60_000, TxnState.ONGOING,
        frozenset({("orders", 0), ("orders", 1), ("audit", 0)}), 1700000000010, 1700000000011)


def test_records_tombstone_and_corruption():
    meta = TxnMetadata("x", 1, 1, 0, -1, 1, TxnState.DEAD, frozenset(), -1, 0)
    assert records.encode(meta, 1).value is None
    good = records.encode(meta.to(TxnState.EMPTY, 0), 1).value
    for bad in (good[:-1], good + b"\0", b"\x00\x00" + good[2:], good[:16] + b"\x09" + good[17:]):
        with pytest.raises(records.CorruptRecord):
            records.decode("x", bad)
    with pytest.raises(records.CorruptRecord):
        records.decode_key(b"\x00\x01\x00\x01x")
    with pytest.raises(records.CorruptRecord):
        records.decode_key(None)


# -- transactions v2 (EndTxn v5) -------------------------------------------------------------

def begin_v2(machine, meta, partitions=(P0,), now=1):
    return stored(machine, machine.add_partitions(TID, meta.producer_id, meta.producer_epoch,
                                                  partitions, now, transaction_version=2))


def end_v2(machine, meta, commit=True, now=2, epoch=None):
    return machine.end_transaction(TID, meta.producer_id,
                                   meta.producer_epoch if epoch is None else epoch, commit, now,
                                   transaction_version=2)


def test_e5_every_v2_end_bumps_the_epoch(machine):
    meta = init(machine)
    ongoing = begin_v2(machine, meta)
    assert ongoing.client_transaction_version == 2
    prepared = stored(machine, end_v2(machine, ongoing))
    assert (prepared.state, prepared.producer_epoch, prepared.last_producer_epoch) == (
        TxnState.PREPARE_COMMIT, 1, 0)
    assert prepared.continued_as() == (meta.producer_id, 1)
    done = stored(machine, machine.complete(prepared, 3))
    assert (done.state, done.producer_id, done.producer_epoch, done.partitions) == (
        TxnState.COMPLETE_COMMIT, meta.producer_id, 1, frozenset())
    # The next transaction runs at the new epoch; the old one is fenced.
    assert machine.add_partitions(TID, meta.producer_id, 0, [P0], 4, 2) == ErrorCode.PRODUCER_FENCED
    again = begin_v2(machine, done, now=5)
    assert stored(machine, end_v2(machine, again, commit=False)).producer_epoch == 2


def test_e6_v2_retries(machine):
    meta = init(machine)
    prepared = stored(machine, end_v2(machine, begin_v2(machine, meta)))
    # A retry names the epoch before the bump: busy while Prepare*, NONE once complete.
    assert end_v2(machine, meta) == ErrorCode.CONCURRENT_TRANSACTIONS
    assert end_v2(machine, meta, commit=False) == ErrorCode.INVALID_TXN_STATE
    stored(machine, machine.complete(prepared, 3))
    assert end_v2(machine, meta) == ErrorCode.NONE
    assert end_v2(machine, meta, commit=False) == ErrorCode.INVALID_TXN_STATE
    assert end_v2(machine, meta, epoch=5) == ErrorCode.PRODUCER_FENCED
    assert machine.end_transaction(TID, meta.producer_id + 9, 1, True, 4, 2) == \
        ErrorCode.INVALID_PRODUCER_ID_MAPPING


def test_e7_v2_abort_without_a_transaction_bumps_the_epoch(machine):
    meta = init(machine)
    assert end_v2(machine, meta, commit=True) == ErrorCode.INVALID_TXN_STATE
    prepared = stored(machine, end_v2(machine, meta, commit=False, now=7))
    assert (prepared.state, prepared.producer_epoch, prepared.start_ms) == (
        TxnState.PREPARE_ABORT, 1, 7)
    done = stored(machine, machine.complete(prepared, 8))
    # From CompleteAbort at the current epoch, another abort bumps again (not a retry).
    assert stored(machine, end_v2(machine, done, commit=False)).producer_epoch == 2


def test_e5_v2_end_rotates_an_exhausted_producer_id(machine):
    meta = init(machine)
    exhausted = stored(machine, meta.to(TxnState.EMPTY, 1, producer_epoch=32766))
    assert is_epoch_exhausted(exhausted.producer_epoch)
    prepared = stored(machine, end_v2(machine, begin_v2(machine, exhausted)))
    assert (prepared.producer_epoch, prepared.next_producer_id) == (32767, 1001)
    assert prepared.continued_as() == (1001, 0)
    done = stored(machine, machine.complete(prepared, 3))
    assert (done.producer_id, done.previous_producer_id, done.producer_epoch) == (1001, 1000, 0)
    # The producer's retry still names the old id and epoch.
    assert machine.end_transaction(TID, 1000, 32766, True, 4, 2) == ErrorCode.NONE


def test_v1_ends_keep_the_epoch(machine):
    meta = init(machine)
    done = finish(machine, begin(machine, meta))
    assert (done.producer_epoch, done.client_transaction_version) == (0, 0)
