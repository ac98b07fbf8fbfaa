"""One share partition: which records of a topic partition a share group has delivered, to whom,
how often, and which are done (Kafka's SharePartition, KIP-932).

Rules:
1. The in-flight window is [start_offset, end_offset): the share-partition start offset (SPSO) is
   the first offset not yet done, the end offset (SPEO) the first offset never acquired. Every
   offset of the window lies in exactly one run: consecutive offsets with one state, delivery
   count, owner and lock deadline. Offsets below the SPSO are done; those from the SPEO on are
   available and have never been delivered.
2. States: AVAILABLE (0) -> ACQUIRED (1) by one member, with an acquisition lock of the group's
   record lock duration; ACQUIRED -> ACKNOWLEDGED (2) on ACCEPT, ARCHIVED (4) on REJECT or GAP,
   AVAILABLE on RELEASE, on lock expiry and when the member leaves. ACKNOWLEDGED and ARCHIVED
   are final.
3. Each acquisition counts one delivery. A record going back to AVAILABLE whose delivery count
   has reached group.share.delivery.count.limit is ARCHIVED instead.
4. Acquisition takes the AVAILABLE runs of the window that the log read covers, then new records
   after the SPEO, whole log batches at a time: max_records is a soft limit that a batch may
   exceed (ShareAcquireMode batch_optimized), or a hard one (record_limit). New records are
   acquired only while the window holds fewer than group.share.partition.max.record.locks
   offsets. Offsets between batches (compacted away), control batches and records of aborted
   transactions under read_committed are ARCHIVED as they enter the window, never delivered.
5. An acknowledgement names ranges of offsets with one type for the range or one per offset
   (0 GAP, 1 ACCEPT, 2 RELEASE, 3 REJECT, 4 RENEW: the lock starts again). Ranges wholly below the
   SPSO are ignored. A range reaching past the SPEO is INVALID_REQUEST, so is an unknown type or a
   type list of the wrong length; any offset not ACQUIRED by the acknowledging member is
   INVALID_RECORD_STATE. One acknowledgement of a partition applies all or nothing.
6. After every change the SPSO moves past the leading ACKNOWLEDGED and ARCHIVED runs, which are
   forgotten. Records the log no longer holds (below its start offset) are ARCHIVED.
7. What is persisted is the SPSO and the runs of the window, ACQUIRED ones as AVAILABLE with
   their delivery count: after a restart nothing done is delivered again and every record not
   done is delivered again.
"""

from __future__ import annotations

import itertools
from bisect import bisect_right
from dataclasses import dataclass
from typing import Iterable, NamedTuple

from kbroker.protocol.errors import ErrorCode, KafkaError

AVAILABLE, ACQUIRED, ACKNOWLEDGED, ARCHIVED = 0, 1, 2, 4
GAP, ACCEPT, RELEASE, REJECT, RENEW = 0, 1, 2, 3, 4
_FINAL = (ACKNOWLEDGED, ARCHIVED)
_TARGET_STATE = {GAP: ARCHIVED, ACCEPT: ACKNOWLEDGED, REJECT: ARCHIVED}


@dataclass(slots=True)
class Run:
    """Consecutive offsets [first, last] sharing one state."""

    first: int
    last: int
    state: int
    delivery_count: int = 0
    member: str | None = None
    deadline_ms: int = 0  # when an ACQUIRED run's lock expires

    def copy(self, first: int, last: int) -> Run:
        return Run(first, last, self.state, self.delivery_count, self.member, self.deadline_ms)


class Acquired(NamedTuple):
    first: int
    last: int
    delivery_count: int


class StateBatch(NamedTuple):
    """A persisted run: Kafka's PersisterStateBatch."""

    first: int
    last: int
    state: int
    delivery_count: int


class AckBatch(NamedTuple):
    first: int
    last: int
    types: list[int]  # one for the whole range, or one per offset


class SharePartition:
    """The in-flight records of one (share group, topic partition)."""

    def __init__(self, start_offset: int, delivery_limit: int, max_record_locks: int,
                 batches: Iterable[StateBatch] = ()):
        self.start_offset = start_offset
        self.end_offset = start_offset
        self.delivery_limit = delivery_limit
        self.max_record_locks = max_record_locks
        self._runs: list[Run] = []
        for batch in sorted(batches):
            if batch.last < self.end_offset:
                continue
            first = max(batch.first, self.end_offset)
            if first > self.end_offset:  # never persisted: offsets not delivered yet
                self._runs.append(Run(self.end_offset, first - 1, AVAILABLE))
            state = AVAILABLE if batch.state == ACQUIRED else batch.state
            self._runs.append(Run(first, batch.last, state, batch.delivery_count))
            self.end_offset = batch.last + 1
        self._advance_start()

    # -- reading the state -----------------------------------------------------------------------

    @property
    def runs(self) -> list[Run]:
        return list(self._runs)

    def in_flight(self) -> int:
        return self.end_offset - self.start_offset

    def next_fetch_offset(self) -> int | None:
        """Where the next log read should start: the first AVAILABLE offset of the window, else
        the SPEO while locks are left; None when nothing may be acquired."""
        for run in self._runs:
            if run.state == AVAILABLE:
                return run.first
        return self.end_offset if self.in_flight() < self.max_record_locks else None

    def state_batches(self) -> list[StateBatch]:
        """The window as it is persisted (rule 7), adjacent equal runs merged."""
        merged: list[StateBatch] = []
        for run in self._runs:
            state = AVAILABLE if run.state == ACQUIRED else run.state
            if merged and merged[-1].state == state and merged[-1].delivery_count == run.delivery_count:
                merged[-1] = merged[-1]._replace(last=run.last)
            else:
                merged.append(StateBatch(run.first, run.last, state, run.delivery_count))
        return merged

    def next_deadline(self) -> int | None:
        deadlines = [run.deadline_ms for run in self._runs if run.state == ACQUIRED]
        return min(deadlines) if deadlines else None

    def acquired_by(self, member: str) -> list[Run]:
        return [run for run in self._runs if run.state == ACQUIRED and run.member == member]

    # -- acquisition -----------------------------------------------------------------------------

    def acquire(self, member: str, batches: list[tuple[int, int]], max_records: int, now_ms: int,
                lock_ms: int, strict: bool = False,
                skipped: Iterable[tuple[int, int]] = ()) -> list[Acquired]:
        """Acquire records the log read returned, as (base, last) offsets of its batches (rule 4)."""
        if not batches or max_records <= 0:
            return []
        read_first, read_last = batches[0][0], batches[-1][1]
        deadline = now_ms + lock_ms
        acquired: list[Run] = []
        count = 0
        # Redeliveries: AVAILABLE runs of the window the read covers.
        if read_first < self.end_offset:
            for run in self._slice(read_first, min(read_last, self.end_offset - 1)):
                if count >= max_records:
                    break
                if run.state != AVAILABLE:
                    continue
                if strict and run.last - run.first + 1 > max_records - count:
                    self._split(run.first + max_records - count)
                count += run.last - run.first + 1
                self._take(run, member, deadline)
                acquired.append(run)
        # New records: whole batches after the SPEO, while record locks are left.
        skipped = set(skipped)
        for base, last in batches:
            if count >= max_records or self.in_flight() >= self.max_record_locks:
                break
            if last < self.end_offset:
                continue
            if base > self.end_offset:
                self._append(Run(self.end_offset, base - 1, ARCHIVED))
            batch_last = last
            first = max(base, self.end_offset)
            room = self.max_record_locks - self.in_flight()
            if strict:
                room = min(room, max_records - count)
            last = min(last, first + room - 1)
            if (base, batch_last) in skipped:
                self._append(Run(first, last, ARCHIVED))
                continue
            run = Run(first, last, AVAILABLE)
            self._append(run)
            self._take(run, member, deadline)
            acquired.append(run)
            count += last - first + 1
        self._advance_start()
        return _merge_acquired(acquired)

    def _take(self, run: Run, member: str, deadline_ms: int) -> None:
        run.state = ACQUIRED
        run.delivery_count += 1
        run.member = member
        run.deadline_ms = deadline_ms

    def _append(self, run: Run) -> None:
        self._runs.append(run)
        self.end_offset = run.last + 1

    # -- acknowledgement -------------------------------------------------------------------------

    def acknowledge(self, member: str, batches: list[AckBatch], now_ms: int, lock_ms: int) -> None:
        """Apply one member's acknowledgement of this partition, all or nothing (rule 5);
        raises KafkaError(INVALID_REQUEST | INVALID_RECORD_STATE) with nothing changed."""
        planned: list[tuple[int, int, int]] = []
        for batch in batches:
            if batch.last < batch.first:
                raise KafkaError(ErrorCode.INVALID_REQUEST, "The acknowledgement batch's last offset "
                                 "is before its first offset.")
            size = batch.last - batch.first + 1
            if len(batch.types) not in (1, size) or any(t not in (GAP, ACCEPT, RELEASE, REJECT, RENEW)
                                                         for t in batch.types):
                raise KafkaError(ErrorCode.INVALID_REQUEST, f"Invalid acknowledge type: {batch.types}")
            if batch.last < self.start_offset:
                continue
            if batch.last >= self.end_offset:
                raise KafkaError(ErrorCode.INVALID_REQUEST,
                                 "Batch record not found. The last offset in request is past acquired records.")
            if len(batch.types) == 1:
                planned.append((max(batch.first, self.start_offset), batch.last, batch.types[0]))
                continue
            offset = batch.first
            for ack_type, group in itertools.groupby(batch.types):
                length = len(list(group))
                first, last = max(offset, self.start_offset), offset + length - 1
                if last >= first:
                    planned.append((first, last, ack_type))
                offset += length
        for first, last, _ in planned:
            self._check_owned(member, first, last)
        for first, last, ack_type in planned:
            for run in self._slice(first, last):
                self._apply(run, ack_type, now_ms + lock_ms)
        self._advance_start()

    def _check_owned(self, member: str, first: int, last: int) -> None:
        index = self._index(first)
        while index < len(self._runs) and self._runs[index].first <= last:
            run = self._runs[index]
            if run.state != ACQUIRED:
                raise KafkaError(ErrorCode.INVALID_RECORD_STATE,
                                 "The batch cannot be acknowledged. The batch is not in the acquired state.")
            if run.member != member:
                raise KafkaError(ErrorCode.INVALID_RECORD_STATE, "Member is not the owner of batch record")
            index += 1

    def _apply(self, run: Run, ack_type: int, renewed_deadline: int) -> None:
        if ack_type == RENEW:
            run.deadline_ms = renewed_deadline
        elif ack_type == RELEASE:
            self._release(run)
        else:
            run.state, run.member, run.deadline_ms = _TARGET_STATE[ack_type], None, 0

    def _release(self, run: Run) -> None:
        run.state = ARCHIVED if run.delivery_count >= self.delivery_limit else AVAILABLE
        run.member, run.deadline_ms = None, 0

    # -- releases --------------------------------------------------------------------------------

    def release_member(self, member: str) -> bool:
        """A member left or its share session ended: its records are available again (rule 3)."""
        runs = self.acquired_by(member)
        for run in runs:
            self._release(run)
        self._advance_start()
        return bool(runs)

    def expire_locks(self, now_ms: int) -> bool:
        """Release every run whose acquisition lock has expired; whether any did."""
        expired = [run for run in self._runs if run.state == ACQUIRED and run.deadline_ms <= now_ms]
        for run in expired:
            self._release(run)
        self._advance_start()
        return bool(expired)

    def archive_before(self, log_start_offset: int) -> bool:
        """Records the log dropped (retention, DeleteRecords) can no longer be delivered (rule 6)."""
        if log_start_offset <= self.start_offset:
            return False
        if log_start_offset >= self.end_offset:
            self._runs = []
            self.start_offset = self.end_offset = log_start_offset
            return True
        for run in self._slice(self.start_offset, log_start_offset - 1):
            run.state, run.member, run.deadline_ms = ARCHIVED, None, 0
        self._advance_start()
        return True

    def reset(self, start_offset: int) -> None:
        """AlterShareGroupOffsets: start again at `start_offset` with nothing in flight."""
        self._runs = []
        self.start_offset = self.end_offset = start_offset

    # -- runs ------------------------------------------------------------------------------------

    def _index(self, offset: int) -> int:
        return max(bisect_right(self._runs, offset, key=_first) - 1, 0)

    def _split(self, offset: int) -> None:
        """Make `offset` the first offset of a run (when it lies inside one)."""
        index = self._index(offset)
        if index >= len(self._runs):
            return
        run = self._runs[index]
        if run.first < offset <= run.last:
            self._runs.insert(index + 1, run.copy(offset, run.last))
            run.last = offset - 1

    def _slice(self, first: int, last: int) -> list[Run]:
        """The runs covering exactly [first, last] of the window, split where needed."""
        first, last = max(first, self.start_offset), min(last, self.end_offset - 1)
        if first > last:
            return []
        self._split(first)
        self._split(last + 1)
        start = self._index(first)
        end = bisect_right(self._runs, last, key=_first)
        return self._runs[start:end]

    def _advance_start(self) -> None:
        done = 0
        for run in self._runs:
            if run.state not in _FINAL:
                break
            done += 1
        if done:
            self.start_offset = self._runs[done - 1].last + 1
            del self._runs[:done]
        self._merge_runs()

    def _merge_runs(self) -> None:
        """Join neighbours with one state and count, so acknowledged ranges stay few runs."""
        merged: list[Run] = []
        for run in self._runs:
            previous = merged[-1] if merged else None
            if previous is not None and previous.state == run.state and previous.state != ACQUIRED \
                    and previous.delivery_count == run.delivery_count:
                previous.last = run.last
            else:
                merged.append(run)
        self._runs = merged


def _first(run: Run) -> int:
    return run.first


def _merge_acquired(runs: list[Run]) -> list[Acquired]:
    """The acquired runs as the response lists them: consecutive runs with one delivery count
    joined."""
    result: list[Acquired] = []
    for run in sorted(runs, key=_first):
        if result and result[-1].last + 1 == run.first and result[-1].delivery_count == run.delivery_count:
            result[-1] = result[-1]._replace(last=run.last)
        else:
            result.append(Acquired(run.first, run.last, run.delivery_count))
    return result
