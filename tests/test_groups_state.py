"""The classic group state machine on a fake clock (no broker, no sockets)."""

from __future__ import annotations

import pytest

from kbroker.groups.classic import ClassicGroups
from kbroker.groups.classic_model import GroupSettings, GroupState, JoinRequest, JoinResult, SyncResult
from kbroker.protocol.errors import ErrorCode

SESSION = 10_000
REBALANCE = 30_000


class Harness:
    """Drives ClassicGroups like the coordinator does: run due timers after every operation."""

    def __init__(self, **settings):
        self.groups = ClassicGroups(GroupSettings(min_session_timeout_ms=1000, **settings))
        self.now = 1_000_000
        self.replies: dict[object, JoinResult | SyncResult] = {}
        self.stored = []
        self._waiters = 0

    def _absorb(self, outcome) -> None:
        for waiter, result in outcome.replies:
            assert waiter not in self.replies, "a request was answered twice"
            self.replies[waiter] = result
        self.stored.extend(outcome.stored)
        self.advance(0)

    def advance(self, ms: int) -> None:
        self.now += ms
        outcome = self.groups.expire(self.now)
        for waiter, result in outcome.replies:
            self.replies[waiter] = result
        self.stored.extend(outcome.stored)

    def join(self, member_id="", *, group="g", instance=None, protocols=(("range", b"meta"),),
             protocol_type="consumer", session=SESSION, rebalance=REBALANCE, version=9,
             client="client") -> str:
        """Send a JoinGroup; returns the waiter to look its answer up with `answer`."""
        self._waiters += 1
        waiter = f"join-{self._waiters}"
        request = JoinRequest(
            group_id=group, member_id=member_id, protocol_type=protocol_type,
            protocols=list(protocols), session_timeout_ms=session, rebalance_timeout_ms=rebalance,
            group_instance_id=instance, client_id=client, client_host="/127.0.0.1",
            require_known_member_id=version >= 4, supports_skip_assignment=version >= 9,
        )
        self._absorb(self.groups.join(waiter, request, self.now))
        return waiter

    def sync(self, member_id, generation, *, group="g", instance=None, assignments=None,
             protocol_type=None, protocol_name=None) -> str:
        self._waiters += 1
        waiter = f"sync-{self._waiters}"
        self._absorb(self.groups.sync(waiter, group, member_id, instance, generation, protocol_type,
                                      protocol_name, assignments or {}, self.now))
        return waiter

    def heartbeat(self, member_id, generation, *, group="g", instance=None) -> ErrorCode:
        return self.groups.heartbeat(group, member_id, instance, generation, self.now)

    def leave(self, *members, group="g"):
        error, errors, outcome = self.groups.leave(group, list(members), self.now)
        self._absorb(outcome)
        return error, errors

    def answer(self, waiter):
        return self.replies.get(waiter)

    def new_member(self, **kwargs) -> str:
        """A dynamic member through MEMBER_ID_REQUIRED; returns the waiter of its real join."""
        first = self.answer(self.join(**kwargs))
        assert first.error == ErrorCode.MEMBER_ID_REQUIRED
        return self.join(first.member_id, **kwargs)

    def state(self, group="g") -> GroupState:
        return self.groups.groups[group].state


def stable_group(h: Harness, count: int, **kwargs) -> list[str]:
    """Members joined one after another and synced; returns member ids, leader first."""
    members = []
    for _ in range(count):
        waiter = h.new_member(**kwargs)
        for member_id in members:  # existing members learn of the rebalance and rejoin
            assert h.heartbeat(member_id, h.groups.groups["g"].generation_id) == \
                ErrorCode.REBALANCE_IN_PROGRESS
            h.join(member_id, **kwargs)
        result = h.answer(waiter)
        assert result is not None and result.error == ErrorCode.NONE
        members.append(result.member_id)
    generation = h.groups.groups["g"].generation_id
    leader = h.groups.groups["g"].leader_id
    ordered = [leader] + [m for m in members if m != leader]
    for member_id in reversed(ordered):
        h.sync(member_id, generation, assignments={m: m.encode() for m in ordered}
               if member_id == leader else None)
    assert h.state() == GroupState.STABLE
    return ordered


def joined_pair(h: Harness) -> tuple[str, str]:
    """Leader a and follower b, both answered for generation 2 and not synced yet."""
    a_join = h.new_member()
    a = h.answer(a_join).member_id
    b_join = h.new_member()
    h.join(a)
    return a, h.answer(b_join).member_id


def test_first_join_requires_member_id_then_completes_at_once():
    h = Harness()
    first = h.answer(h.join(client="app"))
    assert first.error == ErrorCode.MEMBER_ID_REQUIRED
    assert first.member_id.startswith("app-")
    result = h.answer(h.join(first.member_id, client="app"))
    assert result.error == ErrorCode.NONE
    assert result.generation_id == 1
    assert result.leader == first.member_id
    assert result.protocol_name == "range" and result.protocol_type == "consumer"
    assert result.members == [(first.member_id, None, b"meta")]
    assert h.state() == GroupState.COMPLETING_REBALANCE


def test_old_join_versions_get_a_member_id_without_a_second_round():
    h = Harness()
    result = h.answer(h.join(version=3, client="old"))
    assert result.error == ErrorCode.NONE and result.member_id.startswith("old-")


def test_rebalance_completes_as_soon_as_every_member_rejoined():
    h = Harness()
    a = stable_group(h, 1)[0]
    b_join = h.new_member()
    assert h.answer(b_join) is None
    assert h.state() == GroupState.PREPARING_REBALANCE
    assert h.heartbeat(a, 1) == ErrorCode.REBALANCE_IN_PROGRESS
    a_join = h.join(a)
    # no time passed: the join phase completed because everyone rejoined
    a_result, b_result = h.answer(a_join), h.answer(b_join)
    assert a_result.generation_id == b_result.generation_id == 2
    assert a_result.leader == a and len(a_result.members) == 2
    assert b_result.members == []


def test_member_not_rejoining_is_removed_at_the_rebalance_timeout():
    h = Harness()
    a, b = stable_group(h, 2)
    a_join = h.join(a)
    for _ in range(REBALANCE // (SESSION // 2)):  # b stays alive but never rejoins
        assert h.answer(a_join) is None
        assert h.heartbeat(b, 2) == ErrorCode.REBALANCE_IN_PROGRESS
        h.advance(SESSION // 2)
    assert h.answer(a_join).generation_id == 3
    assert h.state() == GroupState.COMPLETING_REBALANCE
    assert list(h.groups.groups["g"].members) == [a]


def test_session_timeout_removes_a_silent_member_and_others_rebalance():
    h = Harness()
    a, b = stable_group(h, 2)
    h.advance(SESSION // 2)
    assert h.heartbeat(a, 2) == ErrorCode.NONE
    h.advance(SESSION // 2)
    # b never heartbeat: it expired after one session timeout and a rebalance began
    assert b not in h.groups.groups["g"].members
    assert h.heartbeat(a, 2) == ErrorCode.REBALANCE_IN_PROGRESS
    assert h.heartbeat(b, 2) == ErrorCode.UNKNOWN_MEMBER_ID
    result = h.answer(h.join(a))
    assert result.generation_id == 3 and result.leader == a


def test_initial_rebalance_delay_gathers_members():
    h = Harness(initial_rebalance_delay_ms=3000)
    a_join = h.new_member()
    h.advance(2000)
    b_join = h.new_member()
    h.advance(3000)  # at 3 s the delay was extended by another 3 s for the second member
    assert h.answer(a_join) is None
    h.advance(1000)
    a, b = h.answer(a_join), h.answer(b_join)
    assert a.generation_id == b.generation_id == 1
    assert {a.leader} == {b.leader}


def test_protocol_type_and_names_must_match():
    h = Harness()
    stable_group(h, 1, protocols=[("range", b"x"), ("roundrobin", b"y")])
    other_type = h.answer(h.join(protocol_type="connect"))
    assert other_type.error == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    assert other_type.member_id == ""
    no_common = h.answer(h.join(protocols=[("sticky", b"")]))
    assert no_common.error == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    empty_type = Harness()
    assert empty_type.answer(empty_type.join(protocol_type="")).error == \
        ErrorCode.INCONSISTENT_GROUP_PROTOCOL


def test_protocol_selection_by_votes_among_common_protocols():
    h = Harness()
    a = h.new_member(protocols=[("cooperative-sticky", b"1"), ("range", b"2")])
    b = h.new_member(protocols=[("range", b"3"), ("cooperative-sticky", b"4")])
    a_id = h.answer(a).member_id
    h.join(a_id, protocols=[("cooperative-sticky", b"1"), ("range", b"2")])
    c = h.new_member(protocols=[("range", b"5")])
    for member_id in (a_id, h.answer(b).member_id):
        h.join(member_id, protocols=h.groups.groups["g"].members[member_id].protocols)
    assert h.answer(c).protocol_name == "range"


def test_sync_followers_wait_for_the_leader():
    h = Harness()
    a, b = joined_pair(h)
    follower = h.sync(b, 2)
    assert h.answer(follower) is None
    leader = h.sync(a, 2, assignments={a: b"A", b: b"B"}, protocol_type="consumer",
                    protocol_name="range")
    assert h.answer(leader) == SyncResult(ErrorCode.NONE, "consumer", "range", b"A")
    assert h.answer(follower).assignment == b"B"
    assert h.state() == GroupState.STABLE
    late = h.answer(h.sync(b, 2))
    assert late.assignment == b"B"
    assert h.stored[-1].members[0].assignment in (b"A", b"B")


def test_sync_errors():
    h = Harness()
    a, b = stable_group(h, 2)
    assert h.answer(h.sync(a, 1)).error == ErrorCode.ILLEGAL_GENERATION
    assert h.answer(h.sync("nobody", 2)).error == ErrorCode.UNKNOWN_MEMBER_ID
    assert h.answer(h.sync(a, 2, protocol_name="roundrobin")).error == \
        ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    assert h.answer(h.sync(a, 2, group="other")).error == ErrorCode.UNKNOWN_MEMBER_ID
    h.join(a)  # the leader rejoining starts a rebalance
    assert h.answer(h.sync(b, 2)).error == ErrorCode.REBALANCE_IN_PROGRESS


def test_a_rebalance_during_sync_answers_parked_syncs_with_rebalance_in_progress():
    h = Harness()
    a, b = joined_pair(h)
    parked = h.sync(b, 2)
    h.new_member()  # a third member arrives before the leader synced
    assert h.answer(parked).error == ErrorCode.REBALANCE_IN_PROGRESS


def test_members_that_never_sync_are_removed():
    h = Harness()
    a, b = joined_pair(h)
    h.sync(a, 2, assignments={})
    assert h.state() == GroupState.STABLE
    for _ in range(REBALANCE // (SESSION // 2)):  # b heartbeats but never syncs
        assert h.heartbeat(a, 2) == h.heartbeat(b, 2) == ErrorCode.NONE
        h.advance(SESSION // 2)
    assert h.state() == GroupState.PREPARING_REBALANCE
    assert list(h.groups.groups["g"].members) == [a]


def test_follower_rejoin_without_changes_gets_current_generation():
    h = Harness()
    a, b = stable_group(h, 2)
    result = h.answer(h.join(b))
    assert result.error == ErrorCode.NONE and result.generation_id == 2 and result.members == []
    assert h.state() == GroupState.STABLE
    changed = h.join(b, protocols=[("range", b"new")])
    assert h.answer(changed) is None and h.state() == GroupState.PREPARING_REBALANCE


def test_group_max_size():
    h = Harness(max_size=2)
    stable_group(h, 2)
    assert h.answer(h.join()).error == ErrorCode.GROUP_MAX_SIZE_REACHED


def test_request_checks():
    h = Harness()
    assert h.answer(h.join(group="")).error == ErrorCode.INVALID_GROUP_ID
    assert h.answer(h.join(session=500)).error == ErrorCode.INVALID_SESSION_TIMEOUT
    assert h.answer(h.join(session=2_000_000)).error == ErrorCode.INVALID_SESSION_TIMEOUT
    assert h.answer(h.join("someone")).error == ErrorCode.UNKNOWN_MEMBER_ID
    assert h.heartbeat("x", 0, group="") == ErrorCode.INVALID_GROUP_ID
    assert h.heartbeat("x", 0, group="missing") == ErrorCode.UNKNOWN_MEMBER_ID


def test_pending_member_that_never_rejoins_delays_the_rebalance_one_session():
    h = Harness()
    a = stable_group(h, 1)[0]
    h.answer(h.join())  # MEMBER_ID_REQUIRED, never followed up
    h.join(a)  # the leader rejoins: a rebalance, which waits for the pending member
    waiter = h.join(a)
    assert h.answer(waiter) is None
    h.advance(SESSION)
    assert h.answer(waiter).generation_id == 2


def test_leave_batch_and_static_removal():
    h = Harness()
    a, b = stable_group(h, 2)
    c_join = h.join(instance="static-c")
    h.join(a)
    h.join(b)
    c = h.answer(c_join).member_id
    assert c.startswith("static-c-")
    error, errors = h.leave((b, None), ("", "static-c"), ("", "unknown"), ("ghost", None))
    assert error == ErrorCode.NONE
    assert errors == [ErrorCode.NONE, ErrorCode.NONE, ErrorCode.UNKNOWN_MEMBER_ID,
                      ErrorCode.UNKNOWN_MEMBER_ID]
    assert list(h.groups.groups["g"].members) == [a]
    assert h.state() == GroupState.PREPARING_REBALANCE
    assert h.leave((a, None), group="missing")[0] == ErrorCode.UNKNOWN_MEMBER_ID


def test_last_member_leaving_empties_the_group():
    h = Harness()
    a = stable_group(h, 1)[0]
    h.leave((a, None))
    assert h.state() == GroupState.EMPTY
    assert h.groups.groups["g"].generation_id == 2
    assert h.stored[-1].members == ()


def test_static_member_restart_without_rebalance():
    h = Harness()
    a_join = h.join(instance="i-a")
    a = h.answer(a_join).member_id
    h.sync(a, 1, assignments={a: b"mine"})
    replaced = h.answer(h.join(instance="i-a", version=9))
    assert replaced.error == ErrorCode.NONE
    assert replaced.member_id != a and replaced.generation_id == 1
    assert replaced.skip_assignment and replaced.leader == replaced.member_id
    assert h.state() == GroupState.STABLE
    assert h.heartbeat(a, 1, instance="i-a") == ErrorCode.FENCED_INSTANCE_ID
    assert h.heartbeat(replaced.member_id, 1, instance="i-a") == ErrorCode.NONE
    assert h.answer(h.sync(replaced.member_id, 1, instance="i-a")).assignment == b"mine"
    old_client = h.answer(h.join(instance="i-a", version=5))
    assert not old_client.skip_assignment and old_client.leader == replaced.member_id
    assert old_client.members == []


def test_static_member_keeps_its_place_when_it_misses_the_rebalance():
    h = Harness()
    s = h.answer(h.join(instance="i-s")).member_id
    h.sync(s, 1, assignments={})
    d_join = h.new_member()
    for _ in range(REBALANCE // (SESSION // 2)):  # it heartbeats but does not rejoin in time
        assert h.heartbeat(s, 1, instance="i-s") == ErrorCode.REBALANCE_IN_PROGRESS
        h.advance(SESSION // 2)
    assert h.answer(d_join).generation_id == 2
    assert s in h.groups.groups["g"].members


def test_offset_commit_validation():
    h = Harness()
    groups = h.groups
    assert groups.validate_offset_commit("simple", "", None, -1, h.now) == ErrorCode.NONE
    assert groups.groups["simple"].state == GroupState.EMPTY
    assert groups.validate_offset_commit("nope", "m", None, 3, h.now) == ErrorCode.ILLEGAL_GENERATION
    assert groups.validate_offset_commit(
        "nope", "m", None, 3, h.now, unknown_group_error=ErrorCode.GROUP_ID_NOT_FOUND
    ) == ErrorCode.GROUP_ID_NOT_FOUND
    a_join = h.new_member()
    a = h.answer(a_join).member_id
    assert groups.validate_offset_commit("g", a, None, 1, h.now) == ErrorCode.REBALANCE_IN_PROGRESS
    assert groups.validate_offset_commit("g", a, None, 1, h.now, transactional=True) == ErrorCode.NONE
    h.sync(a, 1)
    assert groups.validate_offset_commit("g", a, None, 1, h.now) == ErrorCode.NONE
    assert groups.validate_offset_commit("g", a, None, 0, h.now) == ErrorCode.ILLEGAL_GENERATION
    assert groups.validate_offset_commit("g", "", None, -1, h.now) == ErrorCode.UNKNOWN_MEMBER_ID
    assert groups.validate_offset_commit("g", "x", None, 1, h.now) == ErrorCode.UNKNOWN_MEMBER_ID
    h.new_member()  # a rebalance: the current generation may still commit
    assert groups.validate_offset_commit("g", a, None, 1, h.now) == ErrorCode.NONE


def test_commit_keeps_the_session_alive():
    h = Harness()
    a = stable_group(h, 1)[0]
    for _ in range(3):
        h.advance(SESSION - 1)
        assert h.groups.validate_offset_commit("g", a, None, 1, h.now) == ErrorCode.NONE
    assert a in h.groups.groups["g"].members


def test_delete_only_empty_groups():
    h = Harness()
    a = stable_group(h, 1)[0]
    assert h.groups.deletable("g") == ErrorCode.NON_EMPTY_GROUP
    assert h.groups.deletable("missing") == ErrorCode.GROUP_ID_NOT_FOUND
    h.leave((a, None))
    assert h.groups.deletable("g") == ErrorCode.NONE
    h.groups.drop("g")
    assert "g" not in h.groups.groups


def test_loaded_group_is_stable_and_its_silent_members_expire():
    h = Harness()
    a, b = stable_group(h, 2)
    snapshot = h.stored[-1]
    assert len(snapshot.members) == 2
    restarted = Harness()
    restarted.groups.load(snapshot)
    restarted.groups.start_sessions(restarted.now)
    assert restarted.state() == GroupState.STABLE
    assert restarted.heartbeat(a, 2) == ErrorCode.NONE
    assert restarted.answer(restarted.sync(b, 2)).assignment == b.encode()
    restarted.advance(SESSION // 2)
    assert restarted.heartbeat(a, 2) == ErrorCode.NONE
    restarted.advance(SESSION // 2)
    assert restarted.heartbeat(a, 2) == ErrorCode.REBALANCE_IN_PROGRESS  # b expired


def test_duplicate_join_answers_the_superseded_request():
    h = Harness()
    a, b = stable_group(h, 2)
    first = h.join(a)
    second = h.join(a)
    assert h.answer(first).error == ErrorCode.REBALANCE_IN_PROGRESS
    h.join(b)
    assert h.answer(second).generation_id == 3


@pytest.mark.parametrize("topics", [["t1", "t2"], []])
def test_subscribed_topics_from_consumer_metadata(topics):
    import struct

    metadata = struct.pack(">hi", 1, len(topics)) + b"".join(
        struct.pack(">h", len(t)) + t.encode() for t in topics) + b"\x00\x00\x00\x00"
    h = Harness()
    stable_group(h, 1, protocols=[("range", metadata)])
    group = h.groups.groups["g"]
    assert group.subscribed_topics() == set(topics)
    assert group.is_subscribed_to("t1") == bool(topics)
