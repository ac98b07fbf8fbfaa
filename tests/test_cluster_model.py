"""The simulated cluster's rules (kbroker/cluster.py), without sockets."""

import pytest

from kbroker.cluster import NO_LEADER, Cluster
from kbroker.groups.offsets_topic import java_string_hash, key_partition
from kbroker.protocol.errors import ErrorCode, KafkaError


def three(on_change=None) -> Cluster:
    return Cluster([1, 2, 3], on_change)


def test_placement_spreads_leaders_and_followers():
    cluster = three()
    cluster.add_topic("t", cluster.plan(6, 3))
    replicas = [state.replicas for state in cluster.topics["t"]]
    assert replicas[:3] == [[1, 2, 3], [2, 3, 1], [3, 1, 2]]
    assert replicas[3:] == [[1, 3, 2], [2, 1, 3], [3, 2, 1]]  # followers shift after n partitions
    assert [state.leader for state in cluster.topics["t"]] == [1, 2, 3, 1, 2, 3]
    assert all(state.isr == state.replicas for state in cluster.topics["t"])
    cluster.add_topic("u", cluster.plan(1, 2))  # the next topic starts on the next broker (P1)
    assert cluster.topics["u"][0].replicas == [2, 3]
    assert cluster.default_replication_factor == 3
    assert Cluster([0]).default_replication_factor == 1


def test_replication_factor_above_live_brokers():
    cluster = three()
    cluster.stop_broker(3)
    with pytest.raises(KafkaError) as error:
        cluster.plan(1, 3)
    assert error.value.code == ErrorCode.INVALID_REPLICATION_FACTOR
    assert {tuple(r) for r in cluster.plan(2, 2)} <= {(1, 2), (2, 1)}


@pytest.mark.parametrize("replicas, expected, index, message", [
    ([], None, 0, "empty replica list"),
    ([1, 9], None, 0, "broker 9, but no such broker is registered"),
    ([1, 1], None, 0, "more than once"),
    ([1, 2], 3, 0, "not consistent with previous partitions"),
])
def test_manual_assignment_errors(replicas, expected, index, message):
    with pytest.raises(KafkaError) as error:
        three().check_assignment(replicas, expected, index)
    assert error.value.code == ErrorCode.INVALID_REPLICA_ASSIGNMENT
    assert message in error.value.message


def test_manual_assignment_with_only_stopped_brokers():
    cluster = three()
    cluster.stop_broker(2)
    cluster.check_assignment([2, 1], 2, 0)  # a stopped broker is still registered
    with pytest.raises(KafkaError) as error:
        cluster.check_assignment([2], 1, 4)
    assert "partition 4 are fenced" in error.value.message
    cluster.add_topic("t", [[2, 1]])
    state = cluster.topics["t"][0]
    assert (state.leader, state.isr) == (1, [1])


def test_stopping_the_leader_moves_leadership_and_bumps_epochs():
    cluster = three()
    cluster.add_topic("t", [[1, 2, 3]])
    state = cluster.topics["t"][0]
    cluster.stop_broker(1)
    assert (state.leader, state.isr, state.leader_epoch, state.partition_epoch) == (2, [2, 3], 1, 1)
    assert cluster.offline_replicas(state) == [1]
    cluster.stop_broker(3)  # a follower leaves the ISR: partition epoch only
    assert (state.leader, state.isr, state.leader_epoch, state.partition_epoch) == (2, [2], 1, 2)


def test_last_isr_member_stays_and_the_partition_goes_offline():
    cluster = three()
    cluster.add_topic("t", [[1, 2]])
    state = cluster.topics["t"][0]
    cluster.stop_broker(2)
    cluster.stop_broker(1)
    assert (state.leader, state.isr) == (NO_LEADER, [1])
    cluster.start_broker(2)  # not in the ISR: no unclean election, still offline
    assert (state.leader, state.isr) == (NO_LEADER, [1])
    cluster.start_broker(1)  # the last ISR member leads again and 2 catches up
    assert (state.leader, state.isr) == (1, [1, 2])


def test_restart_rejoins_isr_and_rebalance_restores_preferred_leaders():
    cluster = three()
    cluster.add_topic("t", cluster.plan(3, 3))
    cluster.stop_broker(1)
    cluster.start_broker(1)
    first = cluster.topics["t"][0]
    assert first.isr == [1, 2, 3] and first.leader == 2  # not moved back at once (B3)
    assert cluster.rebalance_leaders() == [("t", 0)]
    assert (first.leader, first.leader_epoch) == (1, 2)
    assert cluster.rebalance_leaders() == []


def test_elections():
    cluster = three()
    cluster.add_topic("t", [[1, 2, 3]])
    with pytest.raises(KafkaError) as error:
        cluster.elect_preferred("t", 0)
    assert error.value.code == ErrorCode.ELECTION_NOT_NEEDED
    cluster.move_leader("t", 0, 3)
    assert cluster.leader("t", 0) == 3 and cluster.topics["t"][0].leader_epoch == 1
    cluster.stop_broker(2)
    with pytest.raises(KafkaError) as error:
        cluster.move_leader("t", 0, 2)
    assert error.value.code == ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE
    cluster.elect_preferred("t", 0)
    assert cluster.leader("t", 0) == 1
    with pytest.raises(KafkaError) as error:
        cluster.elect_unclean("t", 0)
    assert error.value.code == ErrorCode.ELECTION_NOT_NEEDED
    with pytest.raises(KafkaError) as error:
        cluster.move_leader("t", 1, 1)
    assert error.value.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def test_unclean_election_takes_a_live_replica_outside_the_isr():
    cluster = three()
    cluster.add_topic("t", [[1, 2]])
    cluster.stop_broker(2)
    cluster.stop_broker(1)
    with pytest.raises(KafkaError) as error:
        cluster.elect_unclean("t", 0)
    assert error.value.code == ErrorCode.ELIGIBLE_LEADERS_NOT_AVAILABLE
    cluster.start_broker(2)
    cluster.elect_unclean("t", 0)
    state = cluster.topics["t"][0]
    assert (state.leader, state.isr) == (2, [2])


def test_reassignment_completes_at_once_with_live_brokers():
    cluster = three()
    cluster.add_topic("t", [[1, 2]])
    cluster.reassign("t", 0, [3, 2])
    state = cluster.topics["t"][0]
    assert (state.replicas, state.isr, state.leader, state.leader_epoch) == ([3, 2], [3, 2], 3, 1)
    cluster.reassign("t", 0, [2, 3, 1])  # the leader stays when it is in the target
    assert (state.replicas, state.leader) == ([2, 3, 1], 3)
    assert cluster.reassignments() == {}
    with pytest.raises(KafkaError) as error:
        cluster.reassign("t", 0, None)
    assert error.value.code == ErrorCode.NO_REASSIGNMENT_IN_PROGRESS
    with pytest.raises(KafkaError) as error:
        cluster.reassign("t", 0, [1, 7])
    assert error.value.code == ErrorCode.INVALID_REPLICA_ASSIGNMENT


def test_reassignment_to_a_stopped_broker_waits_for_it_or_is_cancelled():
    cluster = three()
    cluster.add_topic("t", [[1, 2]])
    cluster.add_topic("u", [[1, 2]])
    cluster.stop_broker(3)
    cluster.reassign("t", 0, [2, 3])
    cluster.reassign("u", 0, [2, 3])
    t, u = cluster.topics["t"][0], cluster.topics["u"][0]
    assert (t.replicas, t.adding, t.removing) == ([2, 3, 1], [3], [1])
    assert set(cluster.reassignments()) == {("t", 0), ("u", 0)}
    cluster.reassign("u", 0, None)  # Kafka's revert: the merged list without the added ones
    assert (u.replicas, u.adding, u.removing, u.leader) == ([2, 1], [], [], 1)
    cluster.start_broker(3)
    assert (t.replicas, t.isr, t.leader, t.adding) == ([2, 3], [2, 3], 2, [])
    assert cluster.reassignments() == {}


def test_coordinators_follow_internal_topic_leaders():
    cluster = three()
    cluster.sync_topic("__consumer_offsets", 3)
    assert [cluster.coordinator_node("__consumer_offsets", p) for p in range(3)] == [1, 2, 3]
    cluster.stop_broker(2)
    assert cluster.coordinator_node("__consumer_offsets", 1) == 3
    assert cluster.coordinator_node("__consumer_offsets", 7) == NO_LEADER


def test_sync_topic_places_only_what_is_missing():
    changes = []
    cluster = three(lambda: changes.append(1))
    cluster.sync_topic("t", 2)
    cluster.sync_topic("t", 2)
    assert len(changes) == 1
    cluster.sync_topic("t", 4, replication_factor=1)
    assert [len(state.replicas) for state in cluster.topics["t"]] == [3, 3, 1, 1]
    cluster.remove_topics(["t"])
    assert cluster.partition("t", 0) is None and cluster.leader("t", 0) == NO_LEADER


def test_sync_topic_with_every_broker_stopped_makes_offline_partitions():
    cluster = Cluster([1, 2])
    cluster.stop_broker(1)
    cluster.stop_broker(2)
    cluster.sync_topic("t", 1)
    assert cluster.leader("t", 0) == NO_LEADER
    cluster.start_broker(1)
    assert cluster.leader("t", 0) == 1


def test_snapshot_round_trip_keeps_leaders_and_epochs():
    cluster = three()
    cluster.add_topic("t", cluster.plan(3, 3))
    cluster.move_leader("t", 0, 3)
    cluster.stop_broker(2)
    restored = Cluster.restore(cluster.snapshot(), [1, 2, 3])
    state = restored.topics["t"][0]
    assert (state.replicas, state.leader, state.leader_epoch) == ([1, 2, 3], 3, 1)
    assert state.isr == [1, 2, 3]  # every broker is up after a restart
    assert restored.topics["t"][1].leader == 3  # it took over from the stopped 2
    assert restored.next_start == cluster.next_start


def test_restore_with_fewer_brokers_drops_their_replicas():
    cluster = three()
    cluster.add_topic("t", cluster.plan(3, 3))
    restored = Cluster.restore(cluster.snapshot(), [1])
    assert [(s.replicas, s.leader) for s in restored.topics["t"]] == [([1], 1)] * 3
    assert restored.topics["t"][1].leader_epoch == 1  # leadership moved from 2 to 1


def test_keys_are_placed_as_kafka_places_them():
    # Utils.abs(key.hashCode()) % partitions: "my-group" has a negative hash code and lands on 12
    # of 50 (Kafka's placement, not the hash's low 31 bits); Integer.MIN_VALUE goes to 0.
    assert java_string_hash("my-group") == -1906497762
    assert key_partition("my-group", 50) == 12
    assert java_string_hash("polygenelubricants") == -(1 << 31)
    assert key_partition("polygenelubricants", 50) == 0
