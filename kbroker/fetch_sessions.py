"""Incremental fetch sessions (KIP-227), as plain state with no I/O.

A consumer that fetches the same partitions again and again opens a session (epoch 0);
later requests (epoch 1, 2, ...) name only partitions whose fetch position changed and
partitions to forget, and the broker answers with only the partitions that have news:
records, an error, or a moved high watermark, last stable offset or log start offset.

Rules, as Kafka applies them:
- epoch -1: a full fetch with no session (an existing session of that id is closed);
- epoch 0: closes the given session if any, opens a new one holding the request's partitions
  (or goes without a session when the cache is full of sessions), full response;
- epoch n > 0: the session must exist (FETCH_SESSION_ID_NOT_FOUND) and expect epoch n
  (INVALID_FETCH_SESSION_EPOCH); the request's partitions are added or updated, the forgotten
  ones removed, and the epoch moves to n + 1.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass, field

from kbroker.protocol.errors import ErrorCode, KafkaError

FINAL_EPOCH = -1
INITIAL_EPOCH = 0

# A partition is keyed by (topic key, partition), where the topic key is the topic id
# for Fetch v13+ and the topic name before.
PartitionKey = tuple[object, int]


@dataclass(slots=True)
class FetchPosition:
    """What the consumer asked for on one partition, kept between requests of a session."""

    topic: str | None  # None for a topic id this broker does not know
    topic_id: object  # the topic's uuid for Fetch v13+, None before
    partition: int
    fetch_offset: int
    max_bytes: int
    current_leader_epoch: int = -1
    # What the last response told the consumer, to decide whether there is news.
    sent_high_watermark: int = -1
    sent_last_stable_offset: int = -1
    sent_log_start_offset: int = -1

    def has_news(self, high_watermark: int, last_stable_offset: int, log_start_offset: int) -> bool:
        return (
            high_watermark != self.sent_high_watermark
            or last_stable_offset != self.sent_last_stable_offset
            or log_start_offset != self.sent_log_start_offset
        )

    def remember_sent(self, high_watermark: int, last_stable_offset: int, log_start_offset: int):
        self.sent_high_watermark = high_watermark
        self.sent_last_stable_offset = last_stable_offset
        self.sent_log_start_offset = log_start_offset


@dataclass(slots=True)
class FetchSession:
    session_id: int
    epoch: int
    positions: dict[PartitionKey, FetchPosition] = field(default_factory=dict)


class FetchSessionCache:
    """The broker's open fetch sessions, least recently used evicted first when full."""

    def __init__(self, max_sessions: int):
        self._max_sessions = max_sessions
        self._sessions: OrderedDict[int, FetchSession] = OrderedDict()
        self._ids = itertools.count(1)

    def resolve(
        self,
        session_id: int,
        epoch: int,
        requested: list[FetchPosition],
        forgotten: list[PartitionKey],
    ) -> tuple[FetchSession | None, list[FetchPosition], bool]:
        """Apply a request to the session cache.

        Returns (session or None, the positions to fetch, whether the response is incremental).
        Raises KafkaError for an unknown session or a wrong epoch.
        """
        if epoch in (FINAL_EPOCH, INITIAL_EPOCH):
            self._sessions.pop(session_id, None)
            if epoch == FINAL_EPOCH or self._max_sessions == 0:
                return None, requested, False
            return self._open(requested), requested, False
        session = self._sessions.get(session_id)
        if session is None:
            raise KafkaError(ErrorCode.FETCH_SESSION_ID_NOT_FOUND)
        if session.epoch != epoch:
            raise KafkaError(ErrorCode.INVALID_FETCH_SESSION_EPOCH)
        self._sessions.move_to_end(session_id)
        for key in forgotten:
            session.positions.pop(key, None)
        for position in requested:
            key = position_key(position)
            previous = session.positions.get(key)
            if previous is not None:
                position.remember_sent(previous.sent_high_watermark,
                                       previous.sent_last_stable_offset,
                                       previous.sent_log_start_offset)
            session.positions[key] = position
        session.epoch = epoch + 1
        return session, list(session.positions.values()), True

    def _open(self, positions: list[FetchPosition]) -> FetchSession:
        while len(self._sessions) >= self._max_sessions:
            self._sessions.popitem(last=False)
        session = FetchSession(next(self._ids), INITIAL_EPOCH + 1)
        for position in positions:
            session.positions[position_key(position)] = position
        self._sessions[session.session_id] = session
        return session


def position_key(position: FetchPosition) -> PartitionKey:
    return (position.topic_id if position.topic_id is not None else position.topic,
            position.partition)
