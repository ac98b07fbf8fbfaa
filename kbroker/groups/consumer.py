"""Consumer groups of the KIP-848 protocol (ConsumerGroupHeartbeat) as a plain state machine.

No trio, no sockets, no clock: calls take `now_ms`. The machine decides in records, as Kafka's
GroupMetadataManager does: `heartbeat` computes the records a request produces without changing
anything; the caller writes them to __consumer_offsets and then `replay`s them, which is also
how a restart rebuilds every group. Deadlines live in `self.timers`; `expire(now_ms)` runs the
due ones, replays their records at once and returns them for writing. The groups' data, and what
each record does to it, are in consumer_model.py.

Group: a group epoch (bumped when a member joins, leaves or changes its subscription, or when the
partitions of the subscribed topics change), a target assignment computed for one group epoch
(its assignment epoch), and members each with a member epoch and the partitions it owns.
States: Empty (no members), Assigning (group epoch > assignment epoch), Reconciling (a member
is not yet at the assignment epoch or not Stable), Stable.

Validation (before any group, Kafka's GroupCoordinatorService; INVALID_REQUEST with its messages)
  V1  v1+, or epoch > 0 or -1: the member id may not be empty. Group, instance and rack ids may
      not be blank. Epoch 0 needs a rebalance timeout, empty TopicPartitions and topic names or a
      regex; epoch -2 an instance id; epochs below -2 are invalid.
  V2  A ServerAssignor not in group.consumer.assignors -> UNSUPPORTED_ASSIGNOR. A regex that
      does not compile -> INVALID_REGULAR_EXPRESSION. Kafka uses RE2/J syntax; kbroker matches
      with Python's `re.fullmatch`, which agrees for the usual prefix/suffix patterns.
Heartbeat (epoch >= 0)
  H1  Unknown group: epoch 0 creates it, else GROUP_ID_NOT_FOUND. A classic group of that id:
      an Empty one is replaced (its metadata deleted, offsets kept), one with members converted
      (M1 of kbroker/groups/consumer_classic.py, which also has the classic members' rules).
  H2  group.consumer.max.size: a new member of a full group -> GROUP_MAX_SIZE_REACHED.
  H3  Dynamic members: epoch 0 with an unknown id joins (v0: an empty id is given a uuid); an
      unknown id otherwise -> UNKNOWN_MEMBER_ID. Static members (InstanceId): epoch 0 takes over
      the instance only if its previous member left with epoch -2 (else UNRELEASED_INSTANCE_ID),
      inheriting its assignment; later an unknown instance -> UNKNOWN_MEMBER_ID, an instance held
      by another member id -> FENCED_INSTANCE_ID.
  H4  Epoch check (FENCED_MEMBER_EPOCH): an epoch above the member's, or below it unless it is
      the previous epoch and the owned partitions are a subset of the assigned ones (the answer
      with the new epoch was lost).
  H5  A changed subscription (names or regex) bumps the group epoch; so does a change of the
      subscribed topics' ids or partition counts, or of the topics a regex matches (looked at on
      every heartbeat, as Kafka does when its metadata image changes).
  H6  Group epoch > assignment epoch: a new target assignment by the assignor most members name
      as ServerAssignor, else the first of group.consumer.assignors.
  H7  Reconciliation (Kafka's CurrentAssignmentBuilder): partitions leaving the member's target
      are revoked first (state UnrevokedPartitions, epoch unchanged) until the member no longer
      reports them; then the member moves to the assignment epoch and gets the target partitions
      no other member still owns; the others are UnreleasedPartitions, given on a later heartbeat
      once released. A member that does not revoke within its rebalance timeout is removed.
  H8  Every heartbeat renews the session (group.consumer.session.timeout.ms, or the group's
      consumer.session.timeout.ms; likewise the heartbeat interval); a member whose
      session expires is removed. The answer carries the assignment when the request was full
      (epoch 0, or rebalance timeout, names and owned partitions all given) or it changed.
Leaving
  L1  Epoch -1: the member is removed (UNKNOWN_MEMBER_ID if unknown; static members checked as in
      H3) and the group epoch bumped. Epoch -2 (static): the member keeps its assignment with epoch
      -2 until its session expires or a new member takes its instance over.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from typing import Any, Callable, Mapping

from kbroker.groups.assignors import ASSIGNORS, Assignment
from kbroker.groups.consumer_classic import ClassicMembers
from kbroker.groups.consumer_member import (
    LEAVE_EPOCH, LEAVE_STATIC_EPOCH, Member, MemberState, TopicMeta, check_epoch, reconcile,
)
from kbroker.groups.consumer_model import (
    ConsumerGroup, ConsumerSettings, Heartbeat, HeartbeatResult, apply_record, preferred_assignor,
)
from kbroker.groups.consumer_records import (
    CurrentAssignmentRecord, GroupEpochRecord, MemberRecord, RegexRecord,
    SubscriptionMetadataRecord, TargetEpochRecord, TargetMemberRecord,
)
from kbroker.groups.timers import Timers
from kbroker.protocol.errors import ErrorCode, KafkaError

MEMBER_ID_REQUIRED_VERSION = 1  # ConsumerGroupHeartbeat v1: clients generate member ids


def _invalid(message: str) -> KafkaError:
    return KafkaError(ErrorCode.INVALID_REQUEST, message)


def _blank(value: str | None) -> bool:
    return value is not None and not value.strip()


class ConsumerGroups(ClassicMembers):
    def __init__(self, settings: ConsumerSettings, new_member_id: Callable[[], str] = lambda: str(uuid.uuid4())):
        self.settings = settings
        self.groups: dict[str, ConsumerGroup] = {}
        self.timers = Timers()
        self._new_member_id = new_member_id
        self._expired: list = []

    # -- validation --------------------------------------------------------------------------

    def validate(self, hb: Heartbeat) -> None:
        """V1-V2; raises KafkaError."""
        if (hb.version >= MEMBER_ID_REQUIRED_VERSION or hb.member_epoch > 0
                or hb.member_epoch == LEAVE_EPOCH) and _blank(hb.member_id):
            raise _invalid("MemberId can't be empty.")
        if _blank(hb.group_id):
            raise _invalid("GroupId can't be empty.")
        if _blank(hb.instance_id):
            raise _invalid("InstanceId can't be empty.")
        if _blank(hb.rack_id):
            raise _invalid("RackId can't be empty.")
        if hb.member_epoch == 0:
            if hb.rebalance_timeout_ms == -1:
                raise _invalid("RebalanceTimeoutMs must be provided in first request.")
            if hb.owned is None or hb.owned:
                raise _invalid("TopicPartitions must be empty when (re-)joining.")
            if hb.topic_names is None and hb.topic_regex is None:
                raise _invalid("Either SubscribedTopicNames or SubscribedTopicRegex must be "
                               "non-null when (re-)joining.")
        elif hb.member_epoch == LEAVE_STATIC_EPOCH:
            if hb.instance_id is None:
                raise _invalid("InstanceId can't be null.")
        elif hb.member_epoch < LEAVE_STATIC_EPOCH:
            raise _invalid("MemberEpoch is invalid.")
        if hb.server_assignor is not None and hb.server_assignor not in self.settings.assignors:
            raise KafkaError(ErrorCode.UNSUPPORTED_ASSIGNOR,
                             f"ServerAssignor {hb.server_assignor} is not supported. Supported "
                             f"assignors: {', '.join(self.settings.assignors)}.")
        if hb.topic_regex:
            try:
                re.compile(hb.topic_regex)
            except re.error as exc:
                raise KafkaError(ErrorCode.INVALID_REGULAR_EXPRESSION,
                                 f"SubscribedTopicRegex `{hb.topic_regex}` is not a valid "
                                 f"regular expression: {exc}.") from None

    # -- the heartbeat -------------------------------------------------------------------------

    def heartbeat(self, hb: Heartbeat, topics: Mapping[str, Any], now_ms: int,
                  classic_group: Any = None) -> HeartbeatResult:
        """Handle one request; `topics`: name -> an object with topic_id and partitions;
        `classic_group`: the classic group of this id, if any (M1 of consumer_classic.py).
        Nothing changes until the caller replays the result's records."""
        try:
            self.validate(hb)
            if hb.member_epoch in (LEAVE_EPOCH, LEAVE_STATIC_EPOCH):
                return self._leave(hb, now_ms)
            return self._heartbeat(hb, topics, now_ms, classic_group)
        except KafkaError as exc:
            return HeartbeatResult(error=exc.code, message=exc.message)

    def _group_for_join(self, hb: Heartbeat, classic_group, topics, now_ms: int,
                        result: HeartbeatResult) -> ConsumerGroup:
        group = self.groups.get(hb.group_id)
        if group is not None:
            return group
        if classic_group is not None:
            if hb.member_epoch != 0:
                raise KafkaError(ErrorCode.GROUP_ID_NOT_FOUND,
                                 f"Group {hb.group_id} is not a consumer group.")
            result.replaces_classic_group = True
            if classic_group.members:  # M1: an online upgrade
                result.records.extend(self.upgrade(classic_group, topics, now_ms))
                scratch = ConsumerGroups(self.settings)
                for record in result.records:
                    scratch.replay(record)
                for member in scratch.groups[hb.group_id].members.values():
                    self.schedule_session(hb.group_id, member, now_ms)
                return scratch.groups[hb.group_id]
        elif hb.member_epoch != 0:
            raise KafkaError(ErrorCode.GROUP_ID_NOT_FOUND, f"Consumer group {hb.group_id} not found.")
        return ConsumerGroup(hb.group_id)

    def _heartbeat(self, hb: Heartbeat, topics, now_ms: int, classic_group) -> HeartbeatResult:
        result = HeartbeatResult()
        records = result.records
        group = self._group_for_join(hb, classic_group, topics, now_ms, result)
        if len(group.members) >= self.settings.max_size and (
                not hb.member_id or hb.member_id not in group.members):
            raise KafkaError(ErrorCode.GROUP_MAX_SIZE_REACHED, "The consumer group has reached its "
                             f"maximum capacity of {self.settings.max_size} members.")
        member_id = hb.member_id or self._new_member_id()
        members = dict(group.members)
        targets = dict(group.target)
        member = self._member(group, hb, member_id, members, targets, records)

        updated = dataclasses.replace(
            member, client_id=hb.client_id, client_host=hb.client_host,
            instance_id=hb.instance_id if hb.instance_id is not None else member.instance_id,
            rack_id=hb.rack_id if hb.rack_id is not None else member.rack_id,
            rebalance_timeout_ms=hb.rebalance_timeout_ms if hb.rebalance_timeout_ms != -1
            else member.rebalance_timeout_ms,
            server_assignor=hb.server_assignor if hb.server_assignor is not None
            else member.server_assignor,
            topic_names=tuple(hb.topic_names) if hb.topic_names is not None else member.topic_names,
            topic_regex=(hb.topic_regex or None) if hb.topic_regex is not None else member.topic_regex,
            classic=None,
        )
        reconciled = self._advance(group, member, updated, members, targets, topics, now_ms, hb.owned,
                                   records)
        result.member_id = member_id
        result.member_epoch = reconciled.member_epoch
        result.heartbeat_interval_ms = self.settings.heartbeat_interval(group.group_id)
        full = hb.member_epoch == 0 or (hb.rebalance_timeout_ms != -1 and hb.topic_names is not None
                                        and hb.owned is not None)
        if full or reconciled.assigned != member.assigned:
            result.assignment = reconciled.assigned
        return result

    def _advance(self, group: ConsumerGroup, member: Member, updated: Member, members: dict,
                 targets: dict, topics, now_ms: int, owned, records: list) -> Member:
        """Steps 1-4 of a heartbeat (or of a classic member's JoinGroup) for a member whose fields
        are now `updated`: records for its subscription, the group epoch, the target assignment
        and its reconciliation; returns the reconciled member."""
        gid, member_id = group.group_id, updated.member_id
        # 1. The member's subscription; a change bumps the group epoch (H5).
        bump = False
        if updated.subscription_fields() != member.subscription_fields() or member_id not in group.members:
            records.append(MemberRecord(gid, member_id, updated))
            bump = (updated.topic_names != member.topic_names or updated.topic_regex != member.topic_regex
                    or member_id not in group.members)
        members[member_id] = updated

        # 2. The topics the group subscribes to, regexes resolved against the current topics.
        regexes = self._resolve_regexes(group, members, topics, now_ms, records)
        metadata = _subscription_metadata(members, regexes, topics)
        if metadata != group.subscription_metadata:
            records.append(SubscriptionMetadataRecord(gid, metadata))
            bump = True
        group_epoch = group.group_epoch + 1 if bump else group.group_epoch
        if bump:
            records.append(GroupEpochRecord(gid, group_epoch))

        # 3. A new target assignment for a new group epoch (H6).
        if group_epoch > group.assignment_epoch:
            new_targets = self._assign(group, members, regexes, metadata, targets)
            for mid in sorted(new_targets):
                if new_targets[mid] != targets.get(mid, {}):
                    records.append(TargetMemberRecord(gid, mid, new_targets[mid]))
            records.append(TargetEpochRecord(gid, group_epoch, now_ms))
            target_epoch, target = group_epoch, new_targets.get(member_id, {})
        else:
            target_epoch, target = group.assignment_epoch, targets.get(member_id, {})

        # 4. Reconciliation (H7).
        reconciled = reconcile(updated, target_epoch, target, group.partition_epoch, owned)
        if reconciled != updated:
            records.append(CurrentAssignmentRecord(gid, member_id, reconciled))
            if reconciled.state == MemberState.UNREVOKED_PARTITIONS and reconciled.classic is None:
                epoch = reconciled.member_epoch
                self.timers.schedule(("rebalance", gid, member_id),
                                     now_ms + reconciled.rebalance_timeout_ms,
                                     lambda now: self._revocation_due(gid, member_id, epoch, now))
            else:
                self.timers.cancel(("rebalance", gid, member_id))
        self.schedule_session(gid, reconciled, now_ms)
        return reconciled

    def _member(self, group: ConsumerGroup, hb: Heartbeat, member_id: str, members: dict,
                targets: dict, records: list) -> Member:
        """H3-H4: the member the request speaks for (new, replacing, or existing)."""
        if hb.instance_id is None:
            member = group.members.get(member_id)
            if member is None:
                if hb.member_epoch != 0:
                    raise KafkaError(ErrorCode.UNKNOWN_MEMBER_ID,
                                     f"Member {member_id} is not a member of group {group.group_id}.")
                return Member(member_id)
            check_epoch(member, hb.member_epoch, hb.owned)
            return member
        existing_id = group.static_members.get(hb.instance_id)
        existing = group.members.get(existing_id) if existing_id is not None else None
        if hb.member_epoch == 0:
            if existing is None:
                return group.members.get(member_id) or Member(member_id)
            if existing.member_epoch != LEAVE_STATIC_EPOCH:
                raise KafkaError(ErrorCode.UNRELEASED_INSTANCE_ID,
                                 f"Static member {member_id} with instance id {hb.instance_id} cannot "
                                 f"join the group because the instance id is owned by "
                                 f"{existing.member_id} member.")
            member = dataclasses.replace(existing, member_id=member_id, member_epoch=0,
                                         previous_member_epoch=0)
            records.extend(self._replacement_records(group, existing, member, members, targets))
            return member
        if existing is None:
            raise KafkaError(ErrorCode.UNKNOWN_MEMBER_ID, f"Instance id {hb.instance_id} is unknown.")
        if existing.member_id != member_id:
            raise KafkaError(ErrorCode.FENCED_INSTANCE_ID,
                             f"Static member {member_id} with instance id {hb.instance_id} was "
                             f"fenced by member {existing.member_id}.")
        check_epoch(existing, hb.member_epoch, hb.owned)
        return existing

    def _resolve_regexes(self, group: ConsumerGroup, members: Mapping[str, Member], topics,
                         now_ms: int, records: list) -> dict[str, frozenset[str]]:
        resolved = {}
        for regex in {m.topic_regex for m in members.values() if m.topic_regex}:
            pattern = re.compile(regex)
            resolved[regex] = frozenset(name for name in topics
                                        if not name.startswith("__") and pattern.fullmatch(name))
            if group.regexes.get(regex) != resolved[regex]:
                records.append(RegexRecord(group.group_id, regex, resolved[regex], now_ms))
        for regex in group.regexes.keys() - resolved.keys():
            records.append(RegexRecord(group.group_id, regex, None))
        return resolved

    def _assign(self, group: ConsumerGroup, members: Mapping[str, Member],
                regexes: Mapping[str, frozenset[str]], metadata: Mapping[str, TopicMeta],
                targets: Mapping[str, Assignment]) -> dict[str, Assignment]:
        name = preferred_assignor(members) or self.settings.assignors[0]
        subscriptions = {mid: _subscribed(m, regexes) for mid, m in members.items()}
        sizes = {n: (meta.topic_id, meta.partitions) for n, meta in metadata.items()}
        return ASSIGNORS[name](subscriptions, sizes, targets)

    # -- leaving, fencing, timers ------------------------------------------------------------------

    def _leave(self, hb: Heartbeat, now_ms: int) -> HeartbeatResult:
        group = self.groups.get(hb.group_id)
        if group is None:
            raise KafkaError(ErrorCode.GROUP_ID_NOT_FOUND, f"Group {hb.group_id} not found.")
        if hb.instance_id is None:
            member = group.members.get(hb.member_id)
            if member is None:
                raise KafkaError(ErrorCode.UNKNOWN_MEMBER_ID,
                                 f"Member {hb.member_id} is not a member of group {group.group_id}.")
        else:
            member = group.members.get(group.static_members.get(hb.instance_id, ""))
            if member is None:
                raise KafkaError(ErrorCode.UNKNOWN_MEMBER_ID, f"Instance id {hb.instance_id} is unknown.")
            if member.member_id != hb.member_id:
                raise KafkaError(ErrorCode.FENCED_INSTANCE_ID,
                                 f"Static member {hb.member_id} with instance id {hb.instance_id} "
                                 f"was fenced by member {member.member_id}.")
            if hb.member_epoch == LEAVE_STATIC_EPOCH:
                leaving = dataclasses.replace(member, member_epoch=LEAVE_STATIC_EPOCH,
                                              pending_revocation={})
                return HeartbeatResult(member_id=member.member_id, member_epoch=LEAVE_STATIC_EPOCH,
                                       records=[CurrentAssignmentRecord(group.group_id, member.member_id,
                                                                        leaving)])
        return HeartbeatResult(member_id=hb.member_id, member_epoch=hb.member_epoch,
                               records=self.fence(group, member.member_id, now_ms))

    def fence(self, group: ConsumerGroup, member_id: str, now_ms: int) -> list:
        """The records removing a member: its tombstones, the subscription without it, and a new
        group epoch; or those turning the group classic (M5). Its timers stop."""
        converted = self.downgrade(group, member_id, now_ms)
        if converted is not None:
            for mid in group.members:
                self._cancel_timers(group.group_id, mid)
            return converted
        records = _removal(group.group_id, member_id)
        remaining = {mid: m for mid, m in group.members.items() if mid != member_id}
        regexes = {r: t for r, t in group.regexes.items()
                   if any(m.topic_regex == r for m in remaining.values())}
        for regex in group.regexes.keys() - regexes.keys():
            records.append(RegexRecord(group.group_id, regex, None))
        names = {n for m in remaining.values() for n in _subscribed(m, regexes)}
        metadata = {n: meta for n, meta in group.subscription_metadata.items() if n in names}
        if metadata != group.subscription_metadata:
            records.append(SubscriptionMetadataRecord(group.group_id, metadata))
        records.append(GroupEpochRecord(group.group_id, group.group_epoch + 1))
        self._cancel_timers(group.group_id, member_id)
        return records

    def schedule_session(self, group_id: str, member: Member, now_ms: int) -> None:
        """H8: the group's session timeout; a classic member's own (from its JoinGroup)."""
        timeout = self.settings.session_timeout(group_id) if member.classic is None \
            else member.classic.session_timeout_ms
        self.timers.schedule(("session", group_id, member.member_id), now_ms + timeout,
                             lambda now: self._fence_due(group_id, member.member_id, now))

    def _cancel_timers(self, group_id: str, member_id: str) -> None:
        for kind in ("session", "rebalance", "join"):
            self.timers.cancel((kind, group_id, member_id))

    def _fence_due(self, group_id: str, member_id: str, now_ms: int) -> None:
        group = self.groups.get(group_id)
        if group is not None and member_id in group.members:
            self._expired.extend(self._replayed(self.fence(group, member_id, now_ms)))

    def _revocation_due(self, group_id: str, member_id: str, epoch: int, now_ms: int) -> None:
        group = self.groups.get(group_id)
        member = group.members.get(member_id) if group is not None else None
        if member is not None and member.member_epoch == epoch and \
                member.state == MemberState.UNREVOKED_PARTITIONS:
            self._fence_due(group_id, member_id, now_ms)

    def _replayed(self, records: list) -> list:
        for record in records:
            self.replay(record)
        return records

    def next_deadline(self) -> int | None:
        return self.timers.next_deadline()

    def expire(self, now_ms: int) -> list:
        """Run the due timers (members whose session or revocation time ran out); returns the
        records they produced, already replayed, for the caller to write."""
        while (due := self.timers.pop_due(now_ms)) is not None:
            deadline, action = due
            action(deadline)
        expired, self._expired = self._expired, []
        return expired

    def start_sessions(self, now_ms: int) -> None:
        """After a restart: every member gets a full session to come back."""
        for group in self.groups.values():
            for member in group.members.values():
                self.schedule_session(group.group_id, member, now_ms)
    # -- replay: records -> state (consumer_model.py) ----------------------------------------

    def replay(self, record) -> None:
        apply_record(self.groups, record)

    # -- questions of other parts of the coordinator ------------------------------------------------

    def deletion_records(self, group: ConsumerGroup, with_members: bool = False) -> list:
        """Tombstones of every record of the group (Kafka's order): DeleteGroups of an empty
        group, or a conversion (with its members)."""
        gid = group.group_id
        members = list(group.members) if with_members else []
        return [*(CurrentAssignmentRecord(gid, m, None) for m in members),
                *(TargetMemberRecord(gid, m, None) for m in dict.fromkeys([*members, *group.target])),
                TargetEpochRecord(gid, None),
                *(RegexRecord(gid, r, None) for r in group.regexes),
                *(MemberRecord(gid, m, None) for m in members),
                SubscriptionMetadataRecord(gid, None), GroupEpochRecord(gid, None)]



def _removal(group_id: str, member_id: str) -> list:
    return [CurrentAssignmentRecord(group_id, member_id, None),
            TargetMemberRecord(group_id, member_id, None), MemberRecord(group_id, member_id, None)]


def _subscribed(member: Member, regexes: Mapping[str, frozenset[str]]) -> frozenset[str]:
    names = frozenset(member.topic_names)
    return names | regexes.get(member.topic_regex, frozenset()) if member.topic_regex else names


def _subscription_metadata(members: Mapping[str, Member], regexes, topics) -> dict[str, TopicMeta]:
    names = {n for m in members.values() for n in _subscribed(m, regexes)}
    return {n: TopicMeta(topics[n].topic_id, topics[n].partitions) for n in sorted(names) if n in topics}
