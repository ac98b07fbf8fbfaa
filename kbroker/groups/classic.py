"""The classic group protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) as a plain state machine.

No trio, no sockets, no clock of its own: every operation takes `now_ms` and returns an Outcome,
the answers for parked JoinGroup/SyncGroup requests (keyed by the opaque `waiter` the caller
passed in, possibly the caller's own) and the groups whose metadata must be written to
__consumer_offsets before those answers go out. Deadlines live in `self.timers`; the caller runs
`expire(now_ms)` when `next_deadline()` has passed. The rules are Apache Kafka's classic group
coordinator's (GroupMetadataManager, ClassicGroup); the numbers below are referred to in the code.

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

Checks before the group
  R1  An empty group id -> INVALID_GROUP_ID (Join, Sync, Heartbeat, Leave).
  R2  A JoinGroup session timeout outside group.min/max.session.timeout.ms -> INVALID_SESSION_TIMEOUT.
  R3  JoinGroup for an unknown group: with a member id UNKNOWN_MEMBER_ID, else the group is created
      Empty (and stored).
  R4  group.max.size. PreparingRebalance accepts a joiner already waiting in the join, or any while
      fewer than max members wait; CompletingRebalance/Stable accept members, or anyone while the
      group has fewer than max. Otherwise GROUP_MAX_SIZE_REACHED, and a known member is removed.

JoinGroup
  J1  The protocol type must be non-empty with at least one protocol if the group is Empty, else
      equal the group's and name a protocol every member supports: else INCONSISTENT_GROUP_PROTOCOL.
  J2  A new dynamic member on JoinGroup v4+ gets MEMBER_ID_REQUIRED with a generated id
      "<client id>-<uuid>", pending for one session timeout; joining with that id adds it (J3).
  J3  A new member (JoinGroup v0-3, a pending id, or a static member with an unknown instance id) is
      added and the rebalance starts or continues. New members are removed if the join phase has
      not completed 5 minutes later.
  J4  A static member (group.instance.id) with an empty member id and a known instance id replaces
      the old member id: the old id's parked Join/Sync get FENCED_INSTANCE_ID, later requests with
      it too. Stable, selected protocol unchanged: no rebalance; the group is stored and the member
      gets the current generation (v9+: a leader gets the member list and SkipAssignment; before
      v9 the previous leader id is returned so that a restarted leader does not reassign).
      CompletingRebalance: rebalance. PreparingRebalance: waits in the join like the others.
  J5  An existing member: PreparingRebalance -> updated, waits. CompletingRebalance -> same
      protocols: the current generation at once (the leader with the members), else rebalance.
      Stable -> the leader, or a member with changed protocols, triggers a rebalance; others get
      the current generation at once.
  J6  A rebalance of an Empty group waits group.initial.rebalance.delay.ms, extended by that delay
      (within the rebalance timeout) while new members keep arriving; it never completes earlier.
  J7  Any other rebalance completes as soon as every member has rejoined and no pending member is
      left, or at the rebalance timeout (the largest of the members'). Dynamic members that did
      not rejoin are then removed, static ones kept. If nobody rejoined, the deadline is renewed.
  J8  Completing the join phase bumps the generation, picks the protocol with most votes among
      those all members support (each votes for its first supported one), keeps the leader if it
      rejoined or elects a joined member, answers every waiting member (the leader with every
      member's metadata), restarts session timers and awaits SyncGroup for one rebalance timeout;
      members that have not synced by then are removed and a rebalance starts. With nobody left
      the group becomes Empty (stored).

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
  H3  A member whose session expires is removed, unless it waits in a Join or Sync of the ongoing
      rebalance (new members are never excused). A pending id is dropped. The group then
      rebalances (Stable/CompletingRebalance) or completes its join phase if it only waited for
      that member.

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

import logging
import uuid
from typing import Any, Callable

from kbroker.groups.classic_model import (
    COMPLETING, DEAD, EMPTY, PREPARING, STABLE, VALID_PREVIOUS, ClassicGroup, GroupSettings,
    GroupSnapshot, JoinRequest, JoinResult, Member, Outcome, SyncResult,
)
from kbroker.groups.timers import Timers
from kbroker.protocol.errors import ErrorCode

log = logging.getLogger("kbroker.groups")

def _join_error(error: ErrorCode, member_id: str) -> JoinResult:
    return JoinResult(error=error, member_id=member_id)


class ClassicGroups:
    """Every classic group of the coordinator, and the timers that drive them."""

    def __init__(self, settings: GroupSettings, new_uuid: Callable[[], uuid.UUID] = uuid.uuid4):
        self.settings = settings
        self.groups: dict[str, ClassicGroup] = {}
        self.timers = Timers()
        self._new_uuid = new_uuid
        self._out = Outcome()

    def _take(self) -> Outcome:
        outcome, self._out = self._out, Outcome()
        return outcome

    def _reply(self, waiter: Any, result: JoinResult | SyncResult) -> None:
        self._out.replies.append((waiter, result))

    def next_deadline(self) -> int | None:
        return self.timers.next_deadline()

    def expire(self, now_ms: int) -> Outcome:
        """Run every timer due at now_ms."""
        while (due := self.timers.pop_due(now_ms)) is not None:
            deadline, action = due
            action(deadline)
        return self._take()

    # -- timers --------------------------------------------------------------------------------

    def _schedule_heartbeat(self, group: ClassicGroup, member_id: str, timeout_ms: int,
                            now_ms: int) -> None:
        self.timers.schedule(("heartbeat", group.group_id, member_id), now_ms + timeout_ms,
                             lambda at: self._expire_heartbeat(group, member_id, at))

    def _cancel_heartbeat(self, group: ClassicGroup, member_id: str) -> None:
        self.timers.cancel(("heartbeat", group.group_id, member_id))

    def _schedule_join(self, group: ClassicGroup, delay_ms: int, now_ms: int, action) -> None:
        self.timers.schedule(("join", group.group_id), now_ms + delay_ms, action)

    def _expire_heartbeat(self, group: ClassicGroup, member_id: str, now_ms: int) -> None:
        """H3."""
        if self.groups.get(group.group_id) is not group:
            return
        if member_id in group.pending_members:
            group.remove(member_id)
            if group.state == PREPARING and group.all_members_joined():
                self._complete_join(group, now_ms)
            return
        member = group.members.get(member_id)
        if member is not None and not member.heartbeat_satisfied():
            log.debug("group %s: member %s removed, no heartbeat for its session of %d ms",
                      group.group_id, member_id, member.session_timeout_ms)
            self._remove_member_and_rebalance(group, member, now_ms)

    # -- JoinGroup -----------------------------------------------------------------------------

    def join(self, waiter: Any, request: JoinRequest, now_ms: int) -> Outcome:
        """Handle a JoinGroup; its answer is among the replies, now or from a later operation."""
        settings = self.settings
        member_id = request.member_id
        if not request.group_id:
            self._reply(waiter, _join_error(ErrorCode.INVALID_GROUP_ID, member_id))  # R1
            return self._take()
        if not settings.min_session_timeout_ms <= request.session_timeout_ms <= \
                settings.max_session_timeout_ms:
            self._reply(waiter, _join_error(ErrorCode.INVALID_SESSION_TIMEOUT, member_id))  # R2
            return self._take()
        group = self.groups.get(request.group_id)
        if group is None:
            if member_id:  # R3
                self._reply(waiter, _join_error(ErrorCode.UNKNOWN_MEMBER_ID, member_id))
                return self._take()
            group = self.groups[request.group_id] = ClassicGroup(request.group_id, now_ms)
            self._out.stored.append(group.snapshot(with_members=False))
        if not self._accepts_joining_member(group, member_id):  # R4
            if member_id in group.members:
                self._remove_member(group, group.members[member_id])
            self._reply(waiter, _join_error(ErrorCode.GROUP_MAX_SIZE_REACHED, ""))
        elif not member_id:
            self._join_new_member(waiter, group, request, now_ms)
        else:
            self._join_existing_member(waiter, group, request, now_ms)
        return self._take()

    def _accepts_joining_member(self, group: ClassicGroup, member_id: str) -> bool:
        max_size = self.settings.max_size
        if group.state == EMPTY:
            return True
        member = group.members.get(member_id)
        if group.state == PREPARING:
            return (member is not None and member.awaiting_join is not None) or \
                group.awaiting_join_count() < max_size
        return member is not None or len(group.members) < max_size

    def _join_new_member(self, waiter, group: ClassicGroup, request: JoinRequest, now_ms: int) -> None:
        names = {name for name, _ in request.protocols}
        if not group.supports_protocols(request.protocol_type, names):  # J1
            self._reply(waiter, _join_error(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, ""))
        else:
            instance_id = request.group_instance_id
            new_id = f"{instance_id if instance_id is not None else request.client_id}-{self._new_uuid()}"
            if instance_id is not None and instance_id in group.static_members:
                self._replace_static_member(waiter, group, request, new_id, now_ms)  # J4
            elif instance_id is None and request.require_known_member_id:  # J2
                group.pending_members.add(new_id)
                self._schedule_heartbeat(group, new_id, request.session_timeout_ms, now_ms)
                self._reply(waiter, _join_error(ErrorCode.MEMBER_ID_REQUIRED, new_id))
            else:
                self._add_member_and_rebalance(waiter, group, request, new_id, now_ms)  # J3

    def _join_existing_member(self, waiter, group: ClassicGroup, request: JoinRequest,
                              now_ms: int) -> None:
        member_id = request.member_id
        names = {name for name, _ in request.protocols}
        if not group.supports_protocols(request.protocol_type, names):  # J1
            self._reply(waiter, _join_error(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, member_id))
        elif member_id in group.pending_members:
            self._add_member_and_rebalance(waiter, group, request, member_id, now_ms)  # J3
        elif (error := group.validate_member(member_id, request.group_instance_id)) != ErrorCode.NONE:
            self._reply(waiter, _join_error(error, member_id))
        else:  # J5
            member = group.members[member_id]
            unchanged = member.protocols == request.protocols
            if group.state == PREPARING:
                self._update_member_and_rebalance(waiter, group, member, request, now_ms)
            elif group.state == COMPLETING and unchanged:
                self._reply(waiter, self._current_generation(group, member_id,
                                                             with_members=group.is_leader(member_id)))
            elif group.state == COMPLETING or (group.state == STABLE and (
                    group.is_leader(member_id) or not unchanged)):
                self._update_member_and_rebalance(waiter, group, member, request, now_ms)
            elif group.state == STABLE:
                self._reply(waiter, self._current_generation(group, member_id, with_members=False))
            else:  # a member of an Empty group cannot exist; Kafka answers the same
                self._reply(waiter, _join_error(ErrorCode.UNKNOWN_MEMBER_ID, member_id))

    def _current_generation(self, group: ClassicGroup, member_id: str, *, with_members: bool,
                            leader: str | None = None, skip_assignment: bool = False) -> JoinResult:
        return JoinResult(
            error=ErrorCode.NONE, member_id=member_id, generation_id=group.generation_id,
            protocol_type=group.protocol_type, protocol_name=group.protocol_name,
            leader=(group.leader_id or "") if leader is None else leader,
            skip_assignment=skip_assignment,
            members=group.member_list() if with_members else [],
        )

    def _add_member_and_rebalance(self, waiter, group: ClassicGroup, request: JoinRequest,
                                  member_id: str, now_ms: int) -> None:
        member = Member(member_id, request.group_instance_id, request.client_id, request.client_host,
                        request.rebalance_timeout_ms, request.session_timeout_ms,
                        request.protocol_type, request.protocols)
        member.is_new = True
        if group.state == PREPARING and group.previous_state == EMPTY:
            group.new_member_added = True  # J6: extends the initial delay
        group.add(member, waiter)
        self._schedule_heartbeat(group, member_id, self.settings.new_member_join_timeout_ms, now_ms)
        self._rebalance_or_complete_join(group, now_ms)

    def _update_member(self, group: ClassicGroup, member: Member, request: JoinRequest,
                       waiter) -> None:
        member.protocols = request.protocols
        member.rebalance_timeout_ms = request.rebalance_timeout_ms
        member.session_timeout_ms = request.session_timeout_ms
        if member.awaiting_join is not None and member.awaiting_join is not waiter:
            # A retried join replaces the parked one; answer the old request so nothing hangs.
            self._reply(member.awaiting_join, _join_error(ErrorCode.REBALANCE_IN_PROGRESS,
                                                          member.member_id))
        member.awaiting_join = waiter

    def _update_member_and_rebalance(self, waiter, group: ClassicGroup, member: Member,
                                     request: JoinRequest, now_ms: int) -> None:
        self._update_member(group, member, request, waiter)
        self._rebalance_or_complete_join(group, now_ms)

    def _replace_static_member(self, waiter, group: ClassicGroup, request: JoinRequest,
                               new_id: str, now_ms: int) -> None:
        """J4."""
        instance_id = request.group_instance_id
        assert instance_id is not None  # a static member's join
        old_id = group.static_members[instance_id]
        previous_leader = group.leader_id or ""
        old = group.members.pop(old_id)
        if old.awaiting_join is not None:
            self._reply(old.awaiting_join, JoinResult(ErrorCode.FENCED_INSTANCE_ID, old_id))
        if old.awaiting_sync is not None:
            self._reply(old.awaiting_sync, SyncResult(ErrorCode.FENCED_INSTANCE_ID))
        member = Member(new_id, instance_id, old.client_id, old.client_host, old.rebalance_timeout_ms,
                        old.session_timeout_ms, old.protocol_type, old.protocols, old.assignment)
        group.members[new_id] = member
        group.static_members[instance_id] = new_id
        if group.leader_id == old_id:
            group.leader_id = new_id
        if old_id in group.pending_sync:
            group.pending_sync.discard(old_id)
            group.pending_sync.add(new_id)
        self._cancel_heartbeat(group, old_id)
        self._schedule_heartbeat(group, new_id, member.session_timeout_ms, now_ms)
        self._update_member(group, member, request, waiter)
        if group.state == STABLE:
            if group.protocol_name == group.select_protocol():
                self._out.stored.append(group.snapshot())
                member.awaiting_join = None
                if request.supports_skip_assignment:
                    leader = group.is_leader(new_id)
                    self._reply(waiter, self._current_generation(
                        group, new_id, with_members=leader, skip_assignment=leader))
                else:
                    self._reply(waiter, self._current_generation(
                        group, new_id, with_members=False, leader=previous_leader))
            else:
                self._rebalance_or_complete_join(group, now_ms)
        elif group.state == COMPLETING:
            self._prepare_rebalance(group, now_ms)
        else:
            self._maybe_complete_join(group, now_ms)

    # -- rebalancing ---------------------------------------------------------------------------

    def _rebalance_or_complete_join(self, group: ClassicGroup, now_ms: int) -> None:
        if group.state in VALID_PREVIOUS[PREPARING]:
            self._prepare_rebalance(group, now_ms)
        else:
            self._maybe_complete_join(group, now_ms)

    def _prepare_rebalance(self, group: ClassicGroup, now_ms: int) -> None:
        if group.state == COMPLETING:
            for member in group.members.values():
                member.assignment = b""
            self._propagate_assignment(group, ErrorCode.REBALANCE_IN_PROGRESS, now_ms)
        group.pending_sync.clear()
        self.timers.cancel(("sync", group.group_id))
        initial = group.state == EMPTY
        group.transition(PREPARING, now_ms)
        if initial:  # J6
            delay = self.settings.initial_rebalance_delay_ms
            remaining = max(group.rebalance_timeout_ms() - delay, 0)
            self._schedule_join(group, delay, now_ms,
                                lambda at: self._initial_join_due(group, delay, remaining, at))
        elif group.all_members_joined():  # J7
            self._complete_join(group, now_ms)
        else:
            self._schedule_join(group, group.rebalance_timeout_ms(), now_ms,
                                lambda at: self._complete_join(group, at))

    def _initial_join_due(self, group: ClassicGroup, delay: int, remaining: int, now_ms: int) -> None:
        if group.new_member_added and remaining != 0:
            group.new_member_added = False
            next_delay = min(self.settings.initial_rebalance_delay_ms, remaining)
            next_remaining = max(remaining - delay, 0)
            self._schedule_join(group, next_delay, now_ms,
                                lambda at: self._initial_join_due(group, next_delay, next_remaining, at))
        else:
            self._complete_join(group, now_ms)

    def _maybe_complete_join(self, group: ClassicGroup, now_ms: int) -> None:
        if group.state == PREPARING and group.previous_state != EMPTY and group.all_members_joined():
            self._complete_join(group, now_ms)

    def _elect_joined_leader(self, group: ClassicGroup) -> bool:
        """Keep the leader if it rejoined, else pick a joined member; False if nobody joined."""
        leader = group.members.get(group.leader_id) if group.leader_id is not None else None
        if leader is None:
            return False
        if leader.awaiting_join is not None:
            return True
        for member in group.members.values():
            if member.awaiting_join is not None:
                group.leader_id = member.member_id
                return True
        return False

    def _complete_join(self, group: ClassicGroup, now_ms: int) -> None:
        """J7/J8."""
        if self.groups.get(group.group_id) is not group or group.state != PREPARING:
            return
        self.timers.cancel(("join", group.group_id))
        for member in list(group.members.values()):
            if member.awaiting_join is None and member.instance_id is None:
                self._remove_member(group, member)
        if not self._elect_joined_leader(group) and group.members:
            self._schedule_join(group, group.rebalance_timeout_ms(), now_ms,
                                lambda at: self._complete_join(group, at))
            return
        group.generation_id += 1
        group.pending_sync.clear()
        if not group.members:
            group.protocol_name = None
            group.transition(EMPTY, now_ms)
            self._out.stored.append(group.snapshot())
            return
        group.protocol_name = group.select_protocol()
        group.transition(COMPLETING, now_ms)
        for member in group.members.values():
            if member.awaiting_join is not None:
                self._reply(member.awaiting_join, self._current_generation(
                    group, member.member_id, with_members=group.is_leader(member.member_id)))
                member.awaiting_join = None
            self._schedule_heartbeat(group, member.member_id, member.session_timeout_ms, now_ms)
            member.is_new = False
            group.pending_sync.add(member.member_id)
        generation = group.generation_id
        self.timers.schedule(("sync", group.group_id), now_ms + group.rebalance_timeout_ms(),
                             lambda at: self._expire_pending_sync(group, generation, at))

    def _expire_pending_sync(self, group: ClassicGroup, generation: int, now_ms: int) -> None:
        if self.groups.get(group.group_id) is not group or generation != group.generation_id:
            return
        if group.state in (COMPLETING, STABLE) and group.pending_sync:
            for member_id in list(group.pending_sync):
                self._remove_member(group, group.members[member_id])
            self._prepare_rebalance(group, now_ms)

    def _remove_member(self, group: ClassicGroup, member: Member) -> None:
        """Drop a member, answering whatever it has parked."""
        if member.awaiting_join is not None:
            self._reply(member.awaiting_join, _join_error(ErrorCode.UNKNOWN_MEMBER_ID, ""))
            member.awaiting_join = None
        if member.awaiting_sync is not None:
            self._reply(member.awaiting_sync, SyncResult(ErrorCode.UNKNOWN_MEMBER_ID))
            member.awaiting_sync = None
        self._cancel_heartbeat(group, member.member_id)
        group.remove(member.member_id)

    def _remove_member_and_rebalance(self, group: ClassicGroup, member: Member, now_ms: int) -> None:
        self._remove_member(group, member)
        if group.state in (STABLE, COMPLETING):
            self._rebalance_or_complete_join(group, now_ms)
        elif group.state == PREPARING and group.all_members_joined():
            self._complete_join(group, now_ms)

    def _propagate_assignment(self, group: ClassicGroup, error: ErrorCode, now_ms: int) -> None:
        ok = error == ErrorCode.NONE
        for member in group.members.values():
            if member.awaiting_sync is not None:
                self._reply(member.awaiting_sync, SyncResult(
                    error, group.protocol_type if ok else None, group.protocol_name if ok else None,
                    member.assignment))
                member.awaiting_sync = None
                self._schedule_heartbeat(group, member.member_id, member.session_timeout_ms, now_ms)

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
        elif (error := group.validate_member(member_id, instance_id)) != ErrorCode.NONE:
            pass
        elif generation_id != group.generation_id:
            error = ErrorCode.ILLEGAL_GENERATION
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
        error = group.validate_member(member_id, instance_id)
        if error != ErrorCode.NONE:
            return error
        if generation_id != group.generation_id:
            return ErrorCode.ILLEGAL_GENERATION
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
            error = group.validate_member(member_id, instance_id)
            if error != ErrorCode.NONE:
                return error
            if generation_id != group.generation_id:
                return ErrorCode.ILLEGAL_GENERATION
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
                    self._reply(member.awaiting_join, _join_error(ErrorCode.REBALANCE_IN_PROGRESS,
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
