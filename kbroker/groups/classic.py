"""The classic group protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) as a plain state machine.

No trio, no sockets, no clock of its own: every operation takes `now_ms` and returns an Outcome,
the answers for parked JoinGroup/SyncGroup requests (keyed by the opaque `waiter` the caller
passed in, possibly the caller's own) and the groups whose metadata must be written to
__consumer_offsets before those answers go out. Deadlines live in `self.timers`; the caller runs
`expire(now_ms)` when `next_deadline()` has passed. The rules are Apache Kafka's classic group
coordinator's (GroupMetadataManager, ClassicGroup); the numbers below are referred to in the code.

JoinGroup with the checks before it (R1-R4, J1-J8) and session expiry (H3) are in classic_join.py,
with the rebalance they drive (ClassicJoins, the base of ClassicGroups); this module adds the
requests that only trigger or await a rebalance, commits, deletion and loading.

States
  Empty                no members; committed offsets may remain.
  PreparingRebalance   collecting JoinGroups for the next generation.
  CompletingRebalance  generation bumped, waiting for the leader's SyncGroup.
  Stable               heartbeats and commits of the current generation.
  Dead                 deleted (DeleteGroups, expired offsets). The group leaves the map at
                       once, so later requests find an unknown group; Kafka's
                       COORDINATOR_NOT_AVAILABLE for Dead groups only covers the moment
                       between marking a group Dead and removing it, which kbroker has not.
  Empty -> PreparingRebalance -> CompletingRebalance -> Stable; PreparingRebalance -> Empty when
  nobody is left; CompletingRebalance/Stable -> PreparingRebalance on a join, leave or failure.

SyncGroup
  S1  Unknown or Empty group -> UNKNOWN_MEMBER_ID; then V; a generation other than the group's ->
      ILLEGAL_GENERATION; a protocol type or name given and not the group's ->
      INCONSISTENT_GROUP_PROTOCOL.
  S2  PreparingRebalance -> REBALANCE_IN_PROGRESS. CompletingRebalance: the request waits; the
      leader's assignments (empty bytes for members it left out) are stored, every waiting member
      is answered and the group becomes Stable. Stable: the member's assignment at once.

Heartbeat
  H1  Unknown group -> UNKNOWN_MEMBER_ID; then V; another generation -> ILLEGAL_GENERATION.
  H2  PreparingRebalance -> REBALANCE_IN_PROGRESS, CompletingRebalance/Stable -> NONE; both renew
      the session.
  H3  Session expiry: see classic_join.py.

LeaveGroup
  L1  Unknown group -> UNKNOWN_MEMBER_ID for the request. Per member: an empty member id with a
      known instance id removes that static member, without one UNKNOWN_MEMBER_ID; a pending id is
      dropped; otherwise V, then removal. A removed member's waiting join gets UNKNOWN_MEMBER_ID.
  L2  If anyone left: Stable/CompletingRebalance rebalance; PreparingRebalance may complete.

V   Member validation: with an instance id, an unknown instance -> UNKNOWN_MEMBER_ID and one
    mapped to another member id -> FENCED_INSTANCE_ID; a member id not in the group ->
    UNKNOWN_MEMBER_ID.

OffsetCommit (validate_offset_commit)
  C1  Unknown group: generation < 0 creates an Empty "simple" group, else ILLEGAL_GENERATION
      (GROUP_ID_NOT_FOUND from OffsetCommit v9).
  C2  Generation < 0 on an Empty group is accepted (assign() consumers, admin clients).
  C3  With a generation >= 0, a member id or an instance id: V, then the generation must be the
      group's (ILLEGAL_GENERATION). With none of them a non-Empty group -> UNKNOWN_MEMBER_ID
      (not for transactional commits).
  C4  CompletingRebalance -> REBALANCE_IN_PROGRESS (not for transactional commits). During
      PreparingRebalance the current generation may still commit. In Stable and
      PreparingRebalance a commit renews the member's session.
"""

from __future__ import annotations

from typing import Any

from kbroker.groups.classic_join import ClassicJoins, join_error
from kbroker.groups.classic_model import (
    COMPLETING, DEAD, EMPTY, PREPARING, STABLE, ClassicGroup, GroupSnapshot, Member, Outcome,
    SyncResult,
)
from kbroker.protocol.errors import ErrorCode


class ClassicGroups(ClassicJoins):
    """Every classic group of the coordinator: SyncGroup, Heartbeat, LeaveGroup, commits, loading."""

    # -- SyncGroup -----------------------------------------------------------------------------

    def sync(self, waiter: Any, group_id: str, member_id: str, instance_id: str | None,
             generation_id: int, protocol_type: str | None, protocol_name: str | None,
             assignments: dict[str, bytes], now_ms: int) -> Outcome:
        """Handle a SyncGroup; its answer is among the replies, now or later."""
        group = self.groups.get(group_id)
        error = ErrorCode.NONE
        if not group_id:
            error = ErrorCode.INVALID_GROUP_ID  # R1
        elif group is None or group.state == EMPTY:
            error = ErrorCode.UNKNOWN_MEMBER_ID  # S1
        elif (error := group.validate_generation(member_id, instance_id, generation_id)) \
                != ErrorCode.NONE:
            pass
        elif _inconsistent(protocol_type, group.protocol_type) or \
                _inconsistent(protocol_name, group.protocol_name):
            error = ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        elif group.state == PREPARING:
            error = ErrorCode.REBALANCE_IN_PROGRESS  # S2
        if error != ErrorCode.NONE:
            self._reply(waiter, SyncResult(error))
            return self._take()
        assert group is not None  # without one, S1 answered
        member = group.members[member_id]
        group.pending_sync.discard(member_id)
        if not group.pending_sync:
            self.timers.cancel(("sync", group_id))
        if group.state == STABLE:
            self._reply(waiter, SyncResult(ErrorCode.NONE, group.protocol_type, group.protocol_name,
                                           member.assignment))
            return self._take()
        if member.awaiting_sync is not None and member.awaiting_sync is not waiter:
            self._reply(member.awaiting_sync, SyncResult(ErrorCode.REBALANCE_IN_PROGRESS))
        member.awaiting_sync = waiter
        if group.is_leader(member_id):
            for each in group.members.values():
                each.assignment = bytes(assignments.get(each.member_id, b""))
            self._out.stored.append(group.snapshot())
            self._propagate_assignment(group, ErrorCode.NONE, now_ms)
            group.transition(STABLE, now_ms)
        return self._take()

    # -- Heartbeat and LeaveGroup --------------------------------------------------------------

    def heartbeat(self, group_id: str, member_id: str, instance_id: str | None, generation_id: int,
                  now_ms: int) -> ErrorCode:
        if not group_id:
            return ErrorCode.INVALID_GROUP_ID  # R1
        group = self.groups.get(group_id)
        if group is None:
            return ErrorCode.UNKNOWN_MEMBER_ID  # H1
        error = group.validate_generation(member_id, instance_id, generation_id)
        if error != ErrorCode.NONE:
            return error
        member = group.members[member_id]
        self._schedule_heartbeat(group, member_id, member.session_timeout_ms, now_ms)  # H2
        return ErrorCode.REBALANCE_IN_PROGRESS if group.state == PREPARING else ErrorCode.NONE

    def leave(self, group_id: str, leaving: list[tuple[str, str | None]],
              now_ms: int) -> tuple[ErrorCode, list[ErrorCode], Outcome]:
        """Handle a LeaveGroup: (request error, one error per leaving member, outcome)."""
        if not group_id:
            return ErrorCode.INVALID_GROUP_ID, [], self._take()  # R1
        group = self.groups.get(group_id)
        if group is None:
            return ErrorCode.UNKNOWN_MEMBER_ID, [], self._take()  # L1
        errors = []
        for member_id, instance_id in leaving:
            if not member_id:
                static_id = group.static_members.get(instance_id) if instance_id is not None else None
                if static_id is None:
                    errors.append(ErrorCode.UNKNOWN_MEMBER_ID)
                    continue
                self._remove_member(group, group.members[static_id])
            elif member_id in group.pending_members:
                self._cancel_heartbeat(group, member_id)
                group.remove(member_id)
            elif (error := group.validate_member(member_id, instance_id)) != ErrorCode.NONE:
                errors.append(error)
                continue
            else:
                self._remove_member(group, group.members[member_id])
            errors.append(ErrorCode.NONE)
        if ErrorCode.NONE in errors:  # L2
            if group.state in (STABLE, COMPLETING):
                self._rebalance_or_complete_join(group, now_ms)
            elif group.state == PREPARING:
                self._maybe_complete_join(group, now_ms)
        return ErrorCode.NONE, errors, self._take()

    # -- offsets, deletion, loading ------------------------------------------------------------

    def validate_offset_commit(self, group_id: str, member_id: str, instance_id: str | None,
                               generation_id: int, now_ms: int, *, transactional: bool = False,
                               unknown_group_error: ErrorCode = ErrorCode.ILLEGAL_GENERATION
                               ) -> ErrorCode:
        """C1-C4: may the offsets of this commit be stored?"""
        group = self.groups.get(group_id)
        if group is None:
            if generation_id >= 0:
                return unknown_group_error  # C1
            self.groups[group_id] = ClassicGroup(group_id, now_ms)
            return ErrorCode.NONE
        if generation_id < 0 and group.state == EMPTY:
            return ErrorCode.NONE  # C2
        if generation_id >= 0 or member_id or instance_id is not None:  # C3
            error = group.validate_generation(member_id, instance_id, generation_id)
            if error != ErrorCode.NONE:
                return error
        elif not transactional and group.state != EMPTY:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if not transactional and group.state == COMPLETING:
            return ErrorCode.REBALANCE_IN_PROGRESS  # C4
        if group.state in (STABLE, PREPARING) and member_id in group.members:
            member = group.members[member_id]
            self._schedule_heartbeat(group, member_id, member.session_timeout_ms, now_ms)
        return ErrorCode.NONE

    def deletable(self, group_id: str) -> ErrorCode:
        """DeleteGroups' check: only Empty groups may go."""
        group = self.groups.get(group_id)
        if group is None:
            return ErrorCode.GROUP_ID_NOT_FOUND
        return ErrorCode.NON_EMPTY_GROUP if group.state != EMPTY else ErrorCode.NONE

    def drop(self, group_id: str) -> None:
        """Forget a group (deleted, expired or tombstoned in the log); it is Dead from now on."""
        group = self.groups.pop(group_id, None)
        if group is None:
            return
        for member in list(group.members.values()):
            self._remove_member(group, member)
        self.timers.cancel(("join", group_id))
        self.timers.cancel(("sync", group_id))
        group.transition(DEAD, group.state_timestamp_ms)

    def hand_over(self, group_id: str) -> Outcome:
        """The group becomes a consumer group (KIP-848 upgrade): requests parked in it are answered
        REBALANCE_IN_PROGRESS, so that their members rejoin it, and it is forgotten."""
        group = self.groups.get(group_id)
        if group is not None:
            for member in group.members.values():
                if member.awaiting_join is not None:
                    self._reply(member.awaiting_join, join_error(ErrorCode.REBALANCE_IN_PROGRESS,
                                                                  member.member_id))
                    member.awaiting_join = None
                if member.awaiting_sync is not None:
                    self._reply(member.awaiting_sync, SyncResult(ErrorCode.REBALANCE_IN_PROGRESS))
                    member.awaiting_sync = None
            self.drop(group_id)
        return self._take()

    def rebalance(self, group_id: str, now_ms: int) -> Outcome:
        """A group just loaded from a consumer group (KIP-848 downgrade): its members' sessions
        start and it rebalances at once."""
        group = self.groups[group_id]
        for member in group.members.values():
            self._schedule_heartbeat(group, member.member_id, member.session_timeout_ms, now_ms)
        self._prepare_rebalance(group, now_ms)
        return self._take()

    def ensure(self, group_id: str, now_ms: int) -> ClassicGroup:
        """The group, created Empty (as a commit's replay does for a simple group) if unknown."""
        group = self.groups.get(group_id)
        if group is None:
            group = self.groups[group_id] = ClassicGroup(group_id, now_ms)
        return group

    def load(self, snapshot: GroupSnapshot) -> None:
        """Restore a group from its stored metadata: Stable with members, Empty without."""
        self.drop(snapshot.group_id)
        group = ClassicGroup(snapshot.group_id, snapshot.state_timestamp_ms)
        group.protocol_type = snapshot.protocol_type or None
        group.generation_id = snapshot.generation_id
        group.protocol_name = snapshot.protocol_name
        for stored in snapshot.members:
            member = Member(stored.member_id, stored.instance_id, stored.client_id,
                            stored.client_host, stored.rebalance_timeout_ms,
                            stored.session_timeout_ms, snapshot.protocol_type,
                            [(snapshot.protocol_name or "", stored.subscription)], stored.assignment)
            group.members[member.member_id] = member
            if member.instance_id is not None:
                group.static_members[member.instance_id] = member.member_id
        if group.members:
            leader = snapshot.leader_id
            group.leader_id = leader if leader in group.members else next(iter(group.members))
            group.state = group.previous_state = STABLE
        self.groups[snapshot.group_id] = group

    def start_sessions(self, now_ms: int) -> None:
        """After loading: every loaded member gets a full session to show up (Kafka's onLoaded).

        Groups over group.max.size start a rebalance; nobody waits yet, so nobody is answered.
        """
        for group in self.groups.values():
            for member in group.members.values():
                self._schedule_heartbeat(group, member.member_id, member.session_timeout_ms, now_ms)
            if len(group.members) > self.settings.max_size:
                self._prepare_rebalance(group, now_ms)


def _inconsistent(requested: str | None, current: str | None) -> bool:
    return requested is not None and current is not None and requested != current
