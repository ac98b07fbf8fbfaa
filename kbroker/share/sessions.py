"""Share sessions: the partitions a share consumer fetches, kept between its ShareFetch requests
(Kafka's ShareSessionCache and SharePartitionManager.newContext).

Rules:
1. A session belongs to one (group, member). ShareSessionEpoch 0 opens a full session, replacing
   any the member had; it may not carry acknowledgements (INVALID_REQUEST). The next request
   must carry epoch 1, then 2, ... (wrapping to 1 after INT32_MAX); another epoch is
   INVALID_SHARE_SESSION_EPOCH, a session the broker does not hold SHARE_SESSION_NOT_FOUND.
2. Epoch -1 closes the session after its acknowledgements; such a ShareFetch may not ask for
   partitions (INVALID_REQUEST). A ShareAcknowledge may not open a session (epoch 0 is
   INVALID_SHARE_SESSION_EPOCH).
3. An incremental request adds its partitions to the session and removes its forgotten ones.
4. At most group.share.max.share.sessions sessions exist; a new one beyond it is
   SHARE_SESSION_LIMIT_REACHED.
5. When a session ends (closed, replaced, its member gone) the member's acquired records are
   released: the caller does that with the key returned.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.primitives import INT32_MAX

INITIAL_EPOCH, FINAL_EPOCH = 0, -1
TopicIdPartition = tuple[uuid.UUID, int]


@dataclass(slots=True)
class ShareSession:
    group_id: str
    member_id: str
    epoch: int = 1
    partitions: dict[TopicIdPartition, None] = field(default_factory=dict)  # in request order


def _next_epoch(epoch: int) -> int:
    return 1 if epoch >= INT32_MAX else epoch + 1


class ShareSessionCache:
    def __init__(self, max_sessions: int):
        self.max_sessions = max_sessions
        self.sessions: dict[tuple[str, str], ShareSession] = {}

    def for_fetch(self, group_id: str, member_id: str, epoch: int, wanted: list[TopicIdPartition],
                  forgotten: list[TopicIdPartition], has_acknowledgements: bool) -> tuple[ShareSession, bool]:
        """(session, whether it was replaced) for a ShareFetch (rules 1-4). For epoch -1 the
        session is returned still open; the caller closes it after the acknowledgements."""
        key = (group_id, member_id)
        if epoch == FINAL_EPOCH:
            if wanted:
                raise KafkaError(ErrorCode.INVALID_REQUEST, "A final share fetch may not fetch partitions.")
            return self._existing(key), False
        if epoch == INITIAL_EPOCH:
            if has_acknowledgements:
                raise KafkaError(ErrorCode.INVALID_REQUEST,
                                 "Acknowledge data present in the initial share fetch request.")
            replaced = self.sessions.pop(key, None) is not None
            if len(self.sessions) >= self.max_sessions:
                raise KafkaError(ErrorCode.SHARE_SESSION_LIMIT_REACHED,
                                 "The broker holds the maximum number of share sessions.")
            session = self.sessions[key] = ShareSession(group_id, member_id, 1, dict.fromkeys(wanted))
            return session, replaced
        session = self._checked(key, epoch)
        for key_ in forgotten:
            session.partitions.pop(key_, None)
        session.partitions.update(dict.fromkeys(wanted))
        return session, False

    def for_acknowledge(self, group_id: str, member_id: str, epoch: int) -> ShareSession:
        key = (group_id, member_id)
        if epoch == INITIAL_EPOCH:
            raise KafkaError(ErrorCode.INVALID_SHARE_SESSION_EPOCH,
                             "A share acknowledge request may not open a share session.")
        if epoch == FINAL_EPOCH:
            return self._existing(key)
        return self._checked(key, epoch)

    def close(self, group_id: str, member_id: str) -> bool:
        return self.sessions.pop((group_id, member_id), None) is not None

    def _existing(self, key) -> ShareSession:
        session = self.sessions.get(key)
        if session is None:
            raise KafkaError(ErrorCode.SHARE_SESSION_NOT_FOUND, "The share session was not found.")
        return session

    def _checked(self, key, epoch: int) -> ShareSession:
        session = self._existing(key)
        if session.epoch != epoch:
            raise KafkaError(ErrorCode.INVALID_SHARE_SESSION_EPOCH,
                             f"The share session epoch is {session.epoch}, not {epoch}.")
        session.epoch = _next_epoch(session.epoch)
        return session
