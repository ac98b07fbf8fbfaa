"""The share-partition state machine (kbroker/share/partition.py), without a broker."""

from __future__ import annotations

import pytest

from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.share.partition import (
    ACCEPT, ACKNOWLEDGED, ACQUIRED, ARCHIVED, AVAILABLE, GAP, REJECT, RELEASE, RENEW, AckBatch,
    Acquired, SharePartition, StateBatch,
)

LOCK = 30_000


def partition(start: int = 0, limit: int = 5, locks: int = 200) -> SharePartition:
    return SharePartition(start, delivery_limit=limit, max_record_locks=locks)


def states(sp: SharePartition) -> list[tuple[int, int, int, int]]:
    return [(r.first, r.last, r.state, r.delivery_count) for r in sp.runs]


def test_whole_batches_are_acquired_once_and_accepted_records_leave_the_window():
    sp = partition()
    assert sp.acquire("a", [(0, 4), (5, 9)], max_records=3, now_ms=0, lock_ms=LOCK) == [Acquired(0, 4, 1)]
    # The next member gets the next batch, never the first one again.
    assert sp.acquire("b", [(5, 9)], max_records=100, now_ms=0, lock_ms=LOCK) == [Acquired(5, 9, 1)]
    assert (sp.start_offset, sp.end_offset) == (0, 10)
    sp.acknowledge("a", [AckBatch(0, 4, [ACCEPT])], now_ms=1, lock_ms=LOCK)
    assert (sp.start_offset, sp.end_offset) == (5, 10)
    assert sp.next_fetch_offset() == 10


def test_record_limit_mode_splits_batches():
    sp = partition()
    assert sp.acquire("a", [(0, 9)], max_records=3, now_ms=0, lock_ms=LOCK, strict=True) == [Acquired(0, 2, 1)]
    assert sp.next_fetch_offset() == 3


def test_release_makes_records_available_with_a_higher_delivery_count():
    sp = partition()
    sp.acquire("a", [(0, 4)], 10, 0, LOCK)
    sp.acknowledge("a", [AckBatch(0, 4, [ACCEPT, RELEASE, ACCEPT, ACCEPT, ACCEPT])], 1, LOCK)
    assert sp.start_offset == 1
    assert sp.next_fetch_offset() == 1
    assert sp.acquire("b", [(0, 4)], 10, 2, LOCK) == [Acquired(1, 1, 2)]


def test_reject_and_gap_archive_records_for_good():
    sp = partition()
    sp.acquire("a", [(0, 3)], 10, 0, LOCK)
    sp.acknowledge("a", [AckBatch(0, 1, [REJECT]), AckBatch(2, 2, [GAP]), AckBatch(3, 3, [ACCEPT])], 1, LOCK)
    assert (sp.start_offset, sp.runs) == (4, [])
    assert sp.acquire("b", [(0, 3)], 10, 2, LOCK) == []


def test_delivery_count_limit_archives_records_released_too_often():
    sp = partition(limit=2)
    sp.acquire("a", [(0, 0), (1, 1)], 1, 0, LOCK)
    sp.acknowledge("a", [AckBatch(0, 0, [RELEASE])], 1, LOCK)
    assert sp.acquire("a", [(0, 0)], 1, 2, LOCK) == [Acquired(0, 0, 2)]
    sp.acknowledge("a", [AckBatch(0, 0, [RELEASE])], 3, LOCK)
    assert sp.start_offset == 1  # archived after its second delivery
    assert sp.acquire("a", [(1, 1)], 5, 4, LOCK) == [Acquired(1, 1, 1)]


def test_lock_expiry_returns_records_and_a_late_acknowledgement_fails():
    sp = partition()
    sp.acquire("a", [(0, 4)], 10, now_ms=1000, lock_ms=LOCK)
    assert sp.next_deadline() == 1000 + LOCK
    assert not sp.expire_locks(1000 + LOCK - 1)
    assert sp.expire_locks(1000 + LOCK)
    assert states(sp) == [(0, 4, AVAILABLE, 1)]
    with pytest.raises(KafkaError) as raised:
        sp.acknowledge("a", [AckBatch(0, 4, [ACCEPT])], 1000 + LOCK, LOCK)
    assert raised.value.code == ErrorCode.INVALID_RECORD_STATE
    assert sp.acquire("b", [(0, 4)], 10, 1000 + LOCK, LOCK) == [Acquired(0, 4, 2)]


def test_renew_restarts_the_lock():
    sp = partition()
    sp.acquire("a", [(0, 1)], 10, 0, LOCK)
    sp.acknowledge("a", [AckBatch(0, 1, [RENEW])], 10_000, LOCK)
    assert sp.next_deadline() == 10_000 + LOCK


def test_acknowledgements_are_all_or_nothing_and_only_by_the_owner():
    sp = partition()
    sp.acquire("a", [(0, 4)], 10, 0, LOCK)
    sp.acquire("b", [(5, 9)], 10, 0, LOCK)
    with pytest.raises(KafkaError) as raised:
        sp.acknowledge("a", [AckBatch(0, 4, [ACCEPT]), AckBatch(5, 5, [ACCEPT])], 1, LOCK)
    assert raised.value.code == ErrorCode.INVALID_RECORD_STATE
    assert states(sp)[0] == (0, 4, ACQUIRED, 1)  # nothing applied
    with pytest.raises(KafkaError) as raised:
        sp.acknowledge("a", [AckBatch(0, 12, [ACCEPT])], 1, LOCK)
    assert raised.value.code == ErrorCode.INVALID_REQUEST
    for bad in (AckBatch(0, 4, [ACCEPT, ACCEPT]), AckBatch(0, 0, [7]), AckBatch(3, 2, [ACCEPT])):
        with pytest.raises(KafkaError) as raised:
            sp.acknowledge("a", [bad], 1, LOCK)
        assert raised.value.code == ErrorCode.INVALID_REQUEST


def test_acknowledging_below_the_start_offset_is_ignored():
    sp = partition()
    sp.acquire("a", [(0, 4)], 10, 0, LOCK)
    sp.acknowledge("a", [AckBatch(0, 4, [ACCEPT])], 1, LOCK)
    sp.acknowledge("a", [AckBatch(0, 4, [ACCEPT])], 2, LOCK)
    assert sp.start_offset == 5


def test_a_leaving_member_releases_its_records():
    sp = partition()
    sp.acquire("a", [(0, 4)], 10, 0, LOCK)
    sp.acquire("b", [(5, 6)], 10, 0, LOCK)
    assert sp.release_member("a")
    assert states(sp) == [(0, 4, AVAILABLE, 1), (5, 6, ACQUIRED, 1)]
    assert not sp.release_member("a")


def test_record_locks_bound_the_window():
    sp = partition(locks=100)
    assert sp.acquire("a", [(0, 59), (60, 119), (120, 179)], 500, 0, LOCK) == [Acquired(0, 99, 1)]
    assert sp.next_fetch_offset() is None
    sp.acknowledge("a", [AckBatch(0, 49, [ACCEPT])], 1, LOCK)
    assert sp.next_fetch_offset() == 100
    assert sp.acquire("b", [(60, 119), (120, 179)], 500, 1, LOCK) == [Acquired(100, 149, 1)]


def test_gaps_between_batches_and_aborted_batches_are_archived():
    sp = partition()
    acquired = sp.acquire("a", [(0, 1), (5, 6), (7, 9)], 100, 0, LOCK, skipped=[(5, 6)])
    assert acquired == [Acquired(0, 1, 1), Acquired(7, 9, 1)]
    sp.acknowledge("a", [AckBatch(0, 1, [ACCEPT])], 1, LOCK)
    assert sp.start_offset == 7  # 2-4 had no records, 5-6 were aborted


def test_records_below_the_log_start_are_archived():
    sp = partition()
    sp.acquire("a", [(0, 9)], 100, 0, LOCK)
    sp.expire_locks(LOCK)
    assert sp.archive_before(4)
    assert (sp.start_offset, sp.next_fetch_offset()) == (4, 4)
    assert sp.archive_before(50)
    assert (sp.start_offset, sp.end_offset, sp.runs) == (50, 50, [])


def test_persisted_state_restores_everything_not_done():
    sp = partition()
    sp.acquire("a", [(0, 4), (5, 9)], 100, 0, LOCK)
    sp.acknowledge("a", [AckBatch(0, 1, [ACCEPT]), AckBatch(3, 3, [REJECT]), AckBatch(4, 4, [RELEASE])], 1, LOCK)
    saved = sp.state_batches()
    assert saved == [StateBatch(2, 2, AVAILABLE, 1), StateBatch(3, 3, ARCHIVED, 1),
                     StateBatch(4, 9, AVAILABLE, 1)]
    restored = SharePartition(sp.start_offset, 5, 200, saved)
    assert (restored.start_offset, restored.end_offset) == (2, 10)
    assert restored.acquire("b", [(0, 4), (5, 9)], 100, 2, LOCK) == [Acquired(2, 2, 2), Acquired(4, 9, 2)]


def test_restored_state_drops_batches_below_the_start_and_marks_holes_available():
    restored = SharePartition(5, 5, 200, [StateBatch(0, 6, ACKNOWLEDGED, 1), StateBatch(9, 9, ARCHIVED, 2)])
    assert states(restored) == [(7, 8, AVAILABLE, 0), (9, 9, ARCHIVED, 2)]
    assert restored.start_offset == 7
