"""The transaction coordinator as a plain state machine: one TxnMetadata per transactional id.

No I/O, no trio, no clock of its own: operations take `now_ms` and return either an ErrorCode
to answer at once or the next TxnMetadata. The caller writes that metadata to
__transaction_state and only then makes it current with `apply`, so memory never runs ahead
of the log. The rules are Apache Kafka's (TransactionCoordinator, TransactionMetadata,
TransactionStateManager), for both transaction versions of KIP-890: clients of transactions v1
keep their epoch across transactions (EndTxn before v5), clients of v2 get a new epoch from every
EndTxn (rules E5-E7); the labels below are referred to in the code.

States
  Empty              a producer id and epoch are assigned; no transaction is open.
  Ongoing            partitions (or a group's offsets partition) were added: a transaction runs.
  PrepareCommit      the commit is decided and stored; markers are being written.
  PrepareAbort       the abort is decided and stored; markers are being written.
  CompleteCommit     every marker of the commit is written; a new transaction may start.
  CompleteAbort      the same after an abort.
  Dead               the transactional id expired: its tombstone is written and it is forgotten.
  PrepareEpochFence  Kafka's mark between deciding to fence a producer and storing the abort.
                     Here both happen in one step (F), so it is never stored or seen, but
                     ListTransactions still accepts its name as a filter.
  Empty/Complete* -> Ongoing -> Prepare* -> Complete* -> Ongoing or Empty ...;
  Empty/Complete* -> PrepareAbort (v2 only, E7); Empty/Complete* -> Dead. Any other transition
  is a bug (IllegalTransition).

InitProducerId with a transactional id
  I1  An empty id -> INVALID_REQUEST. A timeout outside 1..transaction.max.timeout.ms ->
      INVALID_TRANSACTION_TIMEOUT.
  I2  An unknown id gets a new producer id with epoch -1 in state Empty, stored only with I5.
  I3  A producer id and epoch in the request (v3+, KIP-360) must name the current producer id,
      or the previous one with an exhausted epoch (a retry after I5 rotated the id); anything
      goes while the epoch is -1 (just created). Otherwise PRODUCER_FENCED.
  I4  PrepareCommit/PrepareAbort -> CONCURRENT_TRANSACTIONS (the client retries).
  I5  Empty/Complete*: when the epoch is exhausted (>= 32766) and the request names the
      current epoch or none, a new producer id with epoch 0. Otherwise epoch + 1, remembering
      the epoch the request named (or -1) as the last epoch; a request naming the last epoch is
      a retry of a bump it did not see, and gets the current epoch again; a request naming any
      other epoch -> PRODUCER_FENCED. The new timeout is kept; the state is Empty.
  I6  Ongoing: F, then CONCURRENT_TRANSACTIONS; the client's retry finds Complete* (I5).
  F   Fencing: epoch + 1, last epoch -1, PrepareAbort. The old producer's requests now fail
      with PRODUCER_FENCED (its batches with INVALID_PRODUCER_EPOCH) and its transaction is
      aborted with markers of the new epoch. Used by I6, T1 and recovery.

AddPartitionsToTxn, AddOffsetsToTxn
  A1  An empty id -> INVALID_REQUEST; an unknown id, or another producer id ->
      INVALID_PRODUCER_ID_MAPPING; another epoch -> PRODUCER_FENCED; Prepare* ->
      CONCURRENT_TRANSACTIONS.
  A2  Ongoing with every partition already in: NONE, nothing stored. Otherwise Ongoing with the
      union of partitions, started now unless it was Ongoing already, marked with the client's
      transaction version (2 when added implicitly by Produce v12+ / TxnOffsetCommit v5+).
  V   Verification (produce, TxnOffsetCommit, AddPartitionsToTxn v4 verify_only): A1's checks,
      then TRANSACTION_ABORTABLE for each partition not in the transaction (callers map the
      errors as Kafka does for old request versions).

EndTxn
  E1  The id, producer id and epoch are checked as in A1 (Prepare* is E3's business).
  E2  Ongoing -> PrepareCommit or PrepareAbort, same epoch and partitions.
  E3  CompleteCommit + commit and CompleteAbort + abort: NONE (a retry). PrepareCommit + commit
      and PrepareAbort + abort: CONCURRENT_TRANSACTIONS. Empty, or the opposite result ->
      INVALID_TXN_STATE.
  E4  Once every marker is written: Prepare* -> Complete*, no partitions, same epoch; after a
      v2 end with an exhausted epoch, the next producer id with epoch 0 (E5).
  Transactions v2 (EndTxn v5+) instead of E1-E3:
  E5  Ongoing -> Prepare* with epoch + 1 (the markers carry it), the old epoch as last epoch, and
      a new producer id kept as next producer id when the epoch is exhausted. The answer is the
      producer id and epoch the client continues with.
  E6  The request must name the current epoch, or (a retry) the epoch just before it; a retry
      across a producer id rotation names the previous producer id and the last epoch. A retry
      of the same result in Complete* is NONE, in Prepare* CONCURRENT_TRANSACTIONS. Anything
      else -> INVALID_PRODUCER_ID_MAPPING / PRODUCER_FENCED as in A1.
  E7  An abort with no transaction open (Empty, Complete*, not a retry) bumps the epoch as E5,
      started now; a commit there -> INVALID_TXN_STATE.

Timers and recovery
  T1  Ongoing for longer than its timeout (from the first partition added): F.
  T2  Empty/Complete* not updated for transactional.id.expiration.ms -> Dead.
  R   After a restart every Prepare* is completed (E4, markers written again). An Ongoing
      transaction stays open, as in Kafka: its producer may carry on and end it, the next
      InitProducerId for its id fences and aborts it (I), or T1 aborts it when its timeout,
      counted from its start before the restart, has passed. None is left hanging.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Callable, Iterable

from kbroker.protocol.errors import ErrorCode

TopicPartition = tuple[str, int]

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
INT16_MAX = (1 << 15) - 1


class TxnState(enum.IntEnum):
    """Kafka's transaction states, numbered by their ids in the transaction log."""

    EMPTY = 0
    ONGOING = 1
    PREPARE_COMMIT = 2
    PREPARE_ABORT = 3
    COMPLETE_COMMIT = 4
    COMPLETE_ABORT = 5
    DEAD = 6
    PREPARE_EPOCH_FENCE = 7

    @property
    def kafka_name(self) -> str:
        """The name DescribeTransactions and ListTransactions use ("PrepareCommit")."""
        return "".join(word.capitalize() for word in self.name.split("_"))


STATES_BY_NAME = {state.kafka_name: state for state in TxnState}
COMPLETE = (TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT)
PREPARE = (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT)
_IDLE = (TxnState.EMPTY, *COMPLETE)

_VALID_PREVIOUS = {
    TxnState.EMPTY: _IDLE,
    TxnState.ONGOING: (TxnState.ONGOING, *_IDLE),
    TxnState.PREPARE_COMMIT: (TxnState.ONGOING,),
    TxnState.PREPARE_ABORT: (TxnState.ONGOING, *_IDLE),  # from idle states: E7
    TxnState.COMPLETE_COMMIT: (TxnState.PREPARE_COMMIT,),
    TxnState.COMPLETE_ABORT: (TxnState.PREPARE_ABORT,),
    TxnState.DEAD: _IDLE,
}


def is_epoch_exhausted(epoch: int) -> bool:
    """Kafka never hands out Short.MAX: one epoch must stay free to fence the last producer."""
    return epoch >= INT16_MAX - 1


class IllegalTransition(Exception):
    """A transition the rules never produce: a bug, as Kafka's IllegalStateException."""


@dataclasses.dataclass(frozen=True, slots=True)
class TxnMetadata:
    """What the coordinator knows of one transactional id (one __transaction_state record)."""

    transactional_id: str
    producer_id: int
    previous_producer_id: int
    producer_epoch: int
    last_producer_epoch: int
    timeout_ms: int
    state: TxnState
    partitions: frozenset[TopicPartition]
    start_ms: int  # -1 while no transaction was started since the last Empty
    last_update_ms: int
    next_producer_id: int = NO_PRODUCER_ID  # E5: the producer id after an exhausted epoch
    client_transaction_version: int = 0  # A2: 2 when the transaction follows KIP-890's v2

    def continued_as(self) -> tuple[int, int]:
        """The producer id and epoch a v2 client continues with once this end completes (E5)."""
        if self.next_producer_id != NO_PRODUCER_ID:
            return self.next_producer_id, 0
        return self.producer_id, self.producer_epoch

    def to(self, state: TxnState, now_ms: int, **changes) -> TxnMetadata:
        return dataclasses.replace(self, state=state, last_update_ms=now_ms, **changes)


@dataclasses.dataclass(frozen=True, slots=True)
class ListedTransaction:
    transactional_id: str
    producer_id: int
    state: TxnState


Step = ErrorCode | TxnMetadata


class TransactionStates:
    """Every transactional id of the broker and the rules that change them."""

    def __init__(self, max_timeout_ms: int, allocate_producer_id: Callable[[], int]):
        self.max_timeout_ms = max_timeout_ms
        self.allocate_producer_id = allocate_producer_id
        self.transactions: dict[str, TxnMetadata] = {}

    def get(self, transactional_id: str) -> TxnMetadata | None:
        return self.transactions.get(transactional_id)

    # -- changing state ------------------------------------------------------------------------

    def apply(self, metadata: TxnMetadata) -> None:
        """Make stored metadata current (Dead removes the id)."""
        current = self.transactions.get(metadata.transactional_id)
        if current is not None and current.state not in _VALID_PREVIOUS[metadata.state]:
            raise IllegalTransition(f"{metadata.transactional_id}: {current.state.kafka_name} -> "
                                    f"{metadata.state.kafka_name}")
        self.load(metadata)

    def load(self, metadata: TxnMetadata) -> None:
        """Take metadata replayed from the log as it is."""
        if metadata.state is TxnState.DEAD:
            self.transactions.pop(metadata.transactional_id, None)
        else:
            self.transactions[metadata.transactional_id] = metadata

    def forget(self, transactional_id: str) -> None:
        """A tombstone replayed from the log."""
        self.transactions.pop(transactional_id, None)

    # -- InitProducerId --------------------------------------------------------------------------

    def init_producer_id(self, transactional_id: str, timeout_ms: int,
                         expected: tuple[int, int] | None, now_ms: int) -> Step:
        """I1-I6: the Empty metadata to store and answer with, the fencing abort (I6), or an error."""
        if not transactional_id:
            return ErrorCode.INVALID_REQUEST
        if not 0 < timeout_ms <= self.max_timeout_ms:
            return ErrorCode.INVALID_TRANSACTION_TIMEOUT
        current = self.transactions.get(transactional_id)
        if current is None:  # I2
            current = TxnMetadata(transactional_id, self.allocate_producer_id(), NO_PRODUCER_ID,
                                  NO_PRODUCER_EPOCH, NO_PRODUCER_EPOCH, timeout_ms, TxnState.EMPTY,
                                  frozenset(), -1, now_ms)
        if expected is not None and not _is_known_producer(current, *expected):
            return ErrorCode.PRODUCER_FENCED  # I3
        if current.state in PREPARE:
            return ErrorCode.CONCURRENT_TRANSACTIONS  # I4
        if current.state is TxnState.ONGOING:
            return self.fence(current, now_ms)  # I6
        expected_epoch = None if expected is None else expected[1]
        if is_epoch_exhausted(current.producer_epoch) and \
                expected_epoch in (None, current.producer_epoch):
            return current.to(  # I5: a new producer id
                TxnState.EMPTY, now_ms, producer_id=self.allocate_producer_id(),
                previous_producer_id=current.producer_id, producer_epoch=0,
                last_producer_epoch=NO_PRODUCER_EPOCH if expected is None else current.producer_epoch,
                timeout_ms=timeout_ms, partitions=frozenset(), start_ms=-1)
        if expected_epoch is None:
            epoch, last_epoch = current.producer_epoch + 1, NO_PRODUCER_EPOCH
        elif current.producer_epoch == NO_PRODUCER_EPOCH or expected_epoch == current.producer_epoch:
            epoch, last_epoch = current.producer_epoch + 1, current.producer_epoch
        elif expected_epoch == current.last_producer_epoch:
            epoch, last_epoch = current.producer_epoch, current.last_producer_epoch
        else:
            return ErrorCode.PRODUCER_FENCED
        return current.to(TxnState.EMPTY, now_ms, previous_producer_id=current.producer_id,
                          producer_epoch=epoch, last_producer_epoch=last_epoch,
                          timeout_ms=timeout_ms, partitions=frozenset(), start_ms=-1)

    def fence(self, current: TxnMetadata, now_ms: int) -> TxnMetadata:
        """F: bump the epoch and abort the ongoing transaction with it."""
        if current.state is not TxnState.ONGOING:
            raise IllegalTransition(f"{current.transactional_id}: fencing in {current.state.kafka_name}")
        return current.to(TxnState.PREPARE_ABORT, now_ms, producer_epoch=current.producer_epoch + 1,
                          last_producer_epoch=NO_PRODUCER_EPOCH)

    # -- AddPartitionsToTxn, AddOffsetsToTxn, verification ------------------------------------

    def _check_producer(self, transactional_id: str, producer_id: int,
                        producer_epoch: int) -> TxnMetadata | ErrorCode:
        """A1/E1: the metadata if the producer owns the transactional id at this epoch."""
        if not transactional_id:
            return ErrorCode.INVALID_REQUEST
        current = self.transactions.get(transactional_id)
        if current is None or current.producer_id != producer_id:
            return ErrorCode.INVALID_PRODUCER_ID_MAPPING
        if current.producer_epoch != producer_epoch:
            return ErrorCode.PRODUCER_FENCED
        return current

    def add_partitions(self, transactional_id: str, producer_id: int, producer_epoch: int,
                       partitions: Iterable[TopicPartition], now_ms: int,
                       transaction_version: int = 0) -> Step:
        """A1-A2: the Ongoing metadata to store, or an error (NONE: nothing to store)."""
        current = self._check_producer(transactional_id, producer_id, producer_epoch)
        if isinstance(current, ErrorCode):
            return current
        if current.state in PREPARE:
            return ErrorCode.CONCURRENT_TRANSACTIONS
        added = current.partitions.union(partitions)
        if current.state is TxnState.ONGOING and added == current.partitions:
            return ErrorCode.NONE
        start = current.start_ms if current.state is TxnState.ONGOING else now_ms
        return current.to(TxnState.ONGOING, now_ms, partitions=added, start_ms=start,
                          client_transaction_version=transaction_version)

    def verify(self, transactional_id: str, producer_id: int, producer_epoch: int,
               partitions: Iterable[TopicPartition]) -> dict[TopicPartition, ErrorCode]:
        """V: whether each partition may take this producer's transactional writes now."""
        partitions = list(partitions)
        current = self._check_producer(transactional_id, producer_id, producer_epoch)
        if isinstance(current, ErrorCode):
            return dict.fromkeys(partitions, current)
        if current.state in PREPARE:
            return dict.fromkeys(partitions, ErrorCode.CONCURRENT_TRANSACTIONS)
        return {partition: ErrorCode.NONE if partition in current.partitions
                else ErrorCode.TRANSACTION_ABORTABLE for partition in partitions}

    # -- EndTxn --------------------------------------------------------------------------------

    def end_transaction(self, transactional_id: str, producer_id: int, producer_epoch: int,
                        commit: bool, now_ms: int, transaction_version: int = 0) -> Step:
        """E1-E3 (E5-E7 for v2): the Prepare* metadata to store, or the answer (NONE: a retry)."""
        if transaction_version >= 2:
            return self._end_transaction_v2(transactional_id, producer_id, producer_epoch, commit,
                                            now_ms)
        current = self._check_producer(transactional_id, producer_id, producer_epoch)
        if isinstance(current, ErrorCode):
            return current
        wanted_prepare = TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT
        wanted_complete = TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT
        if current.state is TxnState.ONGOING:
            return current.to(wanted_prepare, now_ms)
        if current.state is wanted_complete:
            return ErrorCode.NONE
        if current.state is wanted_prepare:
            return ErrorCode.CONCURRENT_TRANSACTIONS
        return ErrorCode.INVALID_TXN_STATE

    def _end_transaction_v2(self, transactional_id: str, producer_id: int, producer_epoch: int,
                            commit: bool, now_ms: int) -> Step:
        if not transactional_id:
            return ErrorCode.INVALID_REQUEST
        current = self.transactions.get(transactional_id)
        if current is None:
            return ErrorCode.INVALID_PRODUCER_ID_MAPPING
        retry_on_rotation = (current.previous_producer_id == producer_id
                             and producer_epoch == INT16_MAX - 1 and current.producer_epoch == 0)
        retry_on_bump = current.producer_epoch == producer_epoch + 1
        if current.producer_id != producer_id and not retry_on_rotation:
            return ErrorCode.INVALID_PRODUCER_ID_MAPPING
        retry = retry_on_bump or retry_on_rotation
        same_epoch = producer_epoch == current.producer_epoch
        if current.state in PREPARE:
            valid = retry_on_bump
        elif current.state in COMPLETE:
            valid = retry or same_epoch
        else:
            valid = same_epoch
        if not valid:
            return ErrorCode.PRODUCER_FENCED  # E6
        wanted_prepare = TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT
        wanted_complete = TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT
        if current.state is TxnState.ONGOING:
            return self._bump_for_end(current, wanted_prepare, now_ms, current.start_ms)  # E5
        if current.state in PREPARE:
            return ErrorCode.CONCURRENT_TRANSACTIONS if current.state is wanted_prepare \
                else ErrorCode.INVALID_TXN_STATE
        if retry:
            return ErrorCode.NONE if current.state is wanted_complete else ErrorCode.INVALID_TXN_STATE
        if commit:
            return ErrorCode.INVALID_TXN_STATE
        return self._bump_for_end(current, TxnState.PREPARE_ABORT, now_ms, now_ms)  # E7

    def _bump_for_end(self, current: TxnMetadata, state: TxnState, now_ms: int,
                      start_ms: int) -> TxnMetadata:
        """E5: Prepare* with the epoch bumped, rotating the producer id when it is exhausted."""
        next_producer_id = self.allocate_producer_id() \
            if is_epoch_exhausted(current.producer_epoch) else NO_PRODUCER_ID
        epoch = current.producer_epoch if current.producer_epoch == INT16_MAX \
            else current.producer_epoch + 1  # at Short.MAX only a broken producer: let it abort
        return current.to(state, now_ms, producer_epoch=epoch,
                          last_producer_epoch=current.producer_epoch, start_ms=start_ms,
                          next_producer_id=next_producer_id, client_transaction_version=2)

    def complete(self, prepared: TxnMetadata, now_ms: int) -> TxnMetadata:
        """E4: the Complete* metadata once the markers of a Prepare* state are written."""
        if prepared.state not in PREPARE:
            raise IllegalTransition(f"{prepared.transactional_id}: completing "
                                    f"{prepared.state.kafka_name}")
        state = TxnState.COMPLETE_COMMIT if prepared.state is TxnState.PREPARE_COMMIT \
            else TxnState.COMPLETE_ABORT
        if prepared.next_producer_id != NO_PRODUCER_ID:  # E4 after E5 with an exhausted epoch
            return prepared.to(state, now_ms, partitions=frozenset(),
                               producer_id=prepared.next_producer_id,
                               previous_producer_id=prepared.producer_id, producer_epoch=0,
                               next_producer_id=NO_PRODUCER_ID)
        return prepared.to(state, now_ms, partitions=frozenset())

    # -- timers --------------------------------------------------------------------------------

    def timed_out(self, now_ms: int) -> list[TxnMetadata]:
        """T1: the Ongoing transactions past their timeout."""
        return [m for m in self.transactions.values()
                if m.state is TxnState.ONGOING and m.start_ms + m.timeout_ms < now_ms]

    def expired(self, now_ms: int, expiration_ms: int) -> list[TxnMetadata]:
        """T2: the Dead metadata of idle transactional ids, to store as tombstones."""
        return [m.to(TxnState.DEAD, m.last_update_ms, partitions=frozenset())
                for m in self.transactions.values()
                if m.state in _IDLE and m.last_update_ms <= now_ms - expiration_ms]

    def in_state(self, *states: TxnState) -> list[TxnMetadata]:
        return [m for m in self.transactions.values() if m.state in states]

    # -- admin ---------------------------------------------------------------------------------

    def list_transactions(self, state_names: Iterable[str], producer_ids: Iterable[int],
                          min_duration_ms: int, now_ms: int
                          ) -> tuple[list[ListedTransaction], list[str]]:
        """ListTransactions: the matching transactions and the state filters not known."""
        state_names = list(state_names)
        unknown = [name for name in state_names if name not in STATES_BY_NAME]
        states = {STATES_BY_NAME[name] for name in state_names if name in STATES_BY_NAME}
        producer_ids = set(producer_ids)
        listed = [
            ListedTransaction(m.transactional_id, m.producer_id, m.state)
            for m in self.transactions.values()
            if (not producer_ids or m.producer_id in producer_ids)
            and (not state_names or m.state in states)
            and (min_duration_ms < 0 or now_ms - m.start_ms > min_duration_ms)
        ]
        return listed, unknown


def _is_known_producer(current: TxnMetadata, producer_id: int, epoch: int) -> bool:
    """I3: the producer a KIP-360 InitProducerId names may continue as this transactional id."""
    return (current.producer_epoch == NO_PRODUCER_EPOCH
            or producer_id == current.producer_id
            or (producer_id == current.previous_producer_id and is_epoch_exhausted(epoch)))
