"""JoinGroup and the rebalance it drives: the first half of the classic group state machine.

ClassicGroups (classic.py) builds on ClassicJoins. This half admits members (static ones
replacing their old member ids), starts, delays and completes join phases, elects the leader and
runs the timers that end them (session expiry, the join and sync deadlines). It is separate
because it is the only part that moves a group through a rebalance; SyncGroup, Heartbeat,
LeaveGroup and commits only trigger or await one. Same contract as classic.py: every call takes
`now_ms` and its answers go into the Outcome. The states and rule V (member validation) are
described in classic.py.

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

Session expiry (H1-H2, the Heartbeat request, are in classic.py)
  H3  A member whose session expires is removed, unless it waits in a Join or Sync of the ongoing
      rebalance (new members are never excused). A pending id is dropped. The group then
      rebalances (Stable/CompletingRebalance) or completes its join phase if it only waited for
      that member.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Callable

from kbroker.groups.classic_model import (
    COMPLETING, EMPTY, PREPARING, STABLE, VALID_PREVIOUS, ClassicGroup, GroupSettings,
    JoinRequest, JoinResult, Member, Outcome, SyncResult,
)
from kbroker.groups.timers import Timers
from kbroker.protocol.errors import ErrorCode

log = logging.getLogger("kbroker.groups")


def join_error(error: ErrorCode, member_id: str) -> JoinResult:
    return JoinResult(error=error, member_id=member_id)


class ClassicJoins:
    """Every classic group of the coordinator, the timers that drive them and the join phase."""

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
            self._reply(waiter, join_error(ErrorCode.INVALID_GROUP_ID, member_id))  # R1
            return self._take()
        if not settings.min_session_timeout_ms <= request.session_timeout_ms <= \
                settings.max_session_timeout_ms:
            self._reply(waiter, join_error(ErrorCode.INVALID_SESSION_TIMEOUT, member_id))  # R2
            return self._take()
        group = self.groups.get(request.group_id)
        if group is None:
            if member_id:  # R3
                self._reply(waiter, join_error(ErrorCode.UNKNOWN_MEMBER_ID, member_id))
                return self._take()
            group = self.groups[request.group_id] = ClassicGroup(request.group_id, now_ms)
            self._out.stored.append(group.snapshot(with_members=False))
        if not self._accepts_joining_member(group, member_id):  # R4
            if member_id in group.members:
                self._remove_member(group, group.members[member_id])
            self._reply(waiter, join_error(ErrorCode.GROUP_MAX_SIZE_REACHED, ""))
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
            self._reply(waiter, join_error(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, ""))
        else:
            instance_id = request.group_instance_id
            new_id = f"{instance_id if instance_id is not None else request.client_id}-{self._new_uuid()}"
            if instance_id is not None and instance_id in group.static_members:
                self._replace_static_member(waiter, group, request, new_id, now_ms)  # J4
            elif instance_id is None and request.require_known_member_id:  # J2
                group.pending_members.add(new_id)
                self._schedule_heartbeat(group, new_id, request.session_timeout_ms, now_ms)
                self._reply(waiter, join_error(ErrorCode.MEMBER_ID_REQUIRED, new_id))
            else:
                self._add_member_and_rebalance(waiter, group, request, new_id, now_ms)  # J3

    def _join_existing_member(self, waiter, group: ClassicGroup, request: JoinRequest,
                              now_ms: int) -> None:
        member_id = request.member_id
        names = {name for name, _ in request.protocols}
        if not group.supports_protocols(request.protocol_type, names):  # J1
            self._reply(waiter, join_error(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, member_id))
        elif member_id in group.pending_members:
            self._add_member_and_rebalance(waiter, group, request, member_id, now_ms)  # J3
        elif (error := group.validate_member(member_id, request.group_instance_id)) != ErrorCode.NONE:
            self._reply(waiter, join_error(error, member_id))
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
                self._reply(waiter, join_error(ErrorCode.UNKNOWN_MEMBER_ID, member_id))

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
            self._reply(member.awaiting_join, join_error(ErrorCode.REBALANCE_IN_PROGRESS,
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
            self._reply(member.awaiting_join, join_error(ErrorCode.UNKNOWN_MEMBER_ID, ""))
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
