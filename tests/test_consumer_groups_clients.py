"""KIP-848 consumer groups with confluent-kafka (librdkafka, `group.protocol=consumer`).

Members run in threads (or a process, when one is to be killed) and commit what they consume,
so that the group as a whole must see every record exactly once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from tests.cli_brokers import kbroker_command
from tests.broker_fixtures import broker_fixtures
from tests.polling import wait_for
from tests.test_groups_clients import ConfluentMember, assert_exactly_once, exclusive_cover, produce

SESSION_MS = 3000
PARTITIONS = 4
ALL = frozenset(range(PARTITIONS))
BROKER_ARGS = (
    "--num-partitions", str(PARTITIONS),
    "--override", f"group.consumer.session.timeout.ms={SESSION_MS}",
    "--override", "group.consumer.min.session.timeout.ms=1000",
    "--override", "group.consumer.heartbeat.interval.ms=300",
    "--override", "group.consumer.min.heartbeat.interval.ms=100",
)


broker, restartable_broker = broker_fixtures(*BROKER_ARGS, name="kip848")


class NewProtocolMember(ConfluentMember):
    """A confluent-kafka consumer speaking ConsumerGroupHeartbeat; `topic` may be a regex."""

    def __init__(self, bootstrap: str, topic: str, group: str, **config):
        super().__init__(bootstrap, topic, group, **{"group.protocol": "consumer",
                                                     "topic.metadata.refresh.interval.ms": 500, **config})


def describe(bootstrap: str, group: str):
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    return admin.describe_consumer_groups([group])[group].result(10)


def test_members_join_share_and_leave_exactly_once(broker, topic_name):
    total = 400
    produce(broker.bootstrap, topic_name, total // 2)
    group = f"{topic_name}-group"
    a = NewProtocolMember(broker.bootstrap, topic_name, group)
    a.start()
    wait_for(lambda: a.assigned == ALL, what="the first member owning every partition")
    b = NewProtocolMember(broker.bootstrap, topic_name, group)
    b.start()
    wait_for(lambda: exclusive_cover([a, b]), what="two members sharing the partitions")
    c = NewProtocolMember(broker.bootstrap, topic_name, group)
    c.start()
    wait_for(lambda: exclusive_cover([a, b, c]), what="three members sharing the partitions")
    described = describe(broker.bootstrap, group)
    assert described.type.name == "CONSUMER" and described.state.name == "STABLE"
    assert len(described.members) == 3
    produce(broker.bootstrap, topic_name, total // 2, start=total // 2)
    b.stop()
    wait_for(lambda: exclusive_cover([a, c]), what="the remaining members taking over")
    assert_exactly_once([a, b, c], total)
    a.stop()
    c.stop()


MEMBER_SCRIPT = """
import sys
from confluent_kafka import Consumer
bootstrap, topic, group = sys.argv[1:4]
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "group.protocol": "consumer",
                     "auto.offset.reset": "earliest"})
consumer.subscribe([topic])
while True:
    consumer.poll(0.1)
    print("owns", *sorted(p.partition for p in consumer.assignment()), flush=True)
"""


def test_killed_member_partitions_move_after_the_session_timeout(broker, topic_name):
    group = f"{topic_name}-group"
    produce(broker.bootstrap, topic_name, 8)
    survivor = NewProtocolMember(broker.bootstrap, topic_name, group)
    survivor.start()
    wait_for(lambda: set(survivor.values) == set(range(8)), what="the first member reading all")
    victim = subprocess.Popen([sys.executable, "-c", MEMBER_SCRIPT, broker.bootstrap, topic_name, group],
                              stdout=subprocess.PIPE, text=True)
    try:
        for line in victim.stdout:
            if line.split()[1:]:  # the victim owns partitions
                break
        wait_for(lambda: survivor.assigned and survivor.assigned != ALL, what="a shared group")
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        wait_for(lambda: survivor.assigned == ALL, 5 * SESSION_MS / 1000,
                 "the survivor taking the partitions over")
        assert len(describe(broker.bootstrap, group).members) == 1
        produce(broker.bootstrap, topic_name, 8, start=8)
        wait_for(lambda: set(survivor.values) >= set(range(8, 16)), 20, "the records that followed")
    finally:
        victim.kill()
        victim.wait()
        survivor.stop()


def test_new_partitions_are_assigned(broker, topic_name):
    from confluent_kafka.admin import AdminClient, NewPartitions

    group = f"{topic_name}-group"
    produce(broker.bootstrap, topic_name, 4)
    a = NewProtocolMember(broker.bootstrap, topic_name, group)
    a.start()
    wait_for(lambda: a.assigned == ALL, what="every partition assigned")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_partitions([NewPartitions(topic_name, 6)])[topic_name].result(10)
    wait_for(lambda: a.assigned == frozenset(range(6)), 20, "the new partitions assigned")
    a.stop()


def test_regex_subscription_picks_up_new_topics(broker, topic_name):
    from confluent_kafka.admin import AdminClient, NewTopic

    group = f"{topic_name}-group"
    prefix = f"{topic_name}-rx"
    produce(broker.bootstrap, f"{prefix}-a", 4)
    member = NewProtocolMember(broker.bootstrap, f"^{prefix}.*", group)
    member.start()
    wait_for(lambda: len(member.values) == 4, 20, "the matching topic's records")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(f"{prefix}-b", 2), NewTopic(f"{topic_name}-other", 1)])
    produce(broker.bootstrap, f"{prefix}-b", 2, start=4)  # waits for the topic, then writes
    wait_for(lambda: len(member.values) == 6, 30, "the new matching topic's records too")
    described = describe(broker.bootstrap, group)
    topics = {tp.topic for tp in described.members[0].assignment.topic_partitions}
    assert topics == {f"{prefix}-a", f"{prefix}-b"}
    member.stop()


def test_range_assignor_chosen_by_the_members(broker, topic_name):
    group = f"{topic_name}-group"
    produce(broker.bootstrap, topic_name, 4)
    members = [NewProtocolMember(broker.bootstrap, topic_name, group, **{"group.remote.assignor": "range"})
               for _ in range(2)]
    for m in members:
        m.start()
    wait_for(lambda: exclusive_cover(members), what="two members sharing the partitions")
    assert sorted(map(sorted, (m.assigned for m in members))) == [[0, 1], [2, 3]]
    assert describe(broker.bootstrap, group).partition_assignor == "range"
    for m in members:
        m.stop()


def test_groups_are_listed_described_and_deleted(broker, topic_name):
    from confluent_kafka import ConsumerGroupType
    from confluent_kafka.admin import AdminClient

    group = f"{topic_name}-group"
    produce(broker.bootstrap, topic_name, 4)
    member = NewProtocolMember(broker.bootstrap, topic_name, group)
    member.start()
    wait_for(lambda: member.assigned == ALL, what="every partition assigned")
    wait_for(lambda: len(member.values) == 4, what="the records")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    listed = admin.list_consumer_groups(types={ConsumerGroupType.CONSUMER}).result(10)
    assert group in {g.group_id for g in listed.valid}
    assert all(g.type == ConsumerGroupType.CONSUMER for g in listed.valid)
    classic = admin.list_consumer_groups(types={ConsumerGroupType.CLASSIC}).result(10)
    assert group not in {g.group_id for g in classic.valid}
    # kbroker's own tool describes it through ConsumerGroupDescribe (DescribeGroups calls it Dead).
    shown = json.loads(kbroker_command(broker.bootstrap, "group", "describe", group, "--json").stdout)
    assert shown["state"] == "Stable" and shown["protocol_type"] == "consumer"
    assert [sorted(m["assignment"][topic_name]) for m in shown["members"]] == [sorted(ALL)]
    with pytest.raises(Exception, match="NON_EMPTY_GROUP"):
        admin.delete_consumer_groups([group])[group].result(10)
    member.stop()
    admin.delete_consumer_groups([group])[group].result(10)
    remaining = admin.list_consumer_groups().result(10)
    assert group not in {g.group_id for g in remaining.valid}


def test_groups_and_offsets_survive_a_restart(restartable_broker, topic_name):
    broker = restartable_broker
    group = f"{topic_name}-group"
    produce(broker.bootstrap, topic_name, 8)
    member = NewProtocolMember(broker.bootstrap, topic_name, group)
    member.start()
    wait_for(lambda: len(member.values) == 8, what="the first records")
    member.stop()  # leaves; its commits stay
    member = NewProtocolMember(broker.bootstrap, topic_name, group, **{"group.instance.id": "i1"})
    member.start()
    wait_for(lambda: member.assigned == ALL, what="a static member owning every partition")
    joined = describe(broker.bootstrap, group).members[0]
    broker.restart()
    after = describe(broker.bootstrap, group)
    assert after.state.name == "STABLE" and after.members[0].member_id == joined.member_id
    assert after.members[0].group_instance_id == "i1"
    assert {tp.partition for tp in after.members[0].assignment.topic_partitions} == ALL
    produce(broker.bootstrap, topic_name, 4, start=8)
    wait_for(lambda: len(member.values) >= 4, 30, "records after the restart")
    member.stop()
    assert sorted(member.values) == [8, 9, 10, 11]  # resumed from the committed offsets


def test_mixed_classic_and_consumer_members_upgrade_and_downgrade(broker, topic_name):
    group = f"{topic_name}-group"
    produce(broker.bootstrap, topic_name, 8)
    classic = ConfluentMember(broker.bootstrap, topic_name, group)
    classic.start()
    wait_for(lambda: classic.assigned == ALL, what="the classic member owning every partition")
    modern = NewProtocolMember(broker.bootstrap, topic_name, group)
    modern.start()  # the classic group becomes a consumer group with both members
    wait_for(lambda: exclusive_cover([classic, modern]), 30, "both protocols sharing the partitions")
    described = describe(broker.bootstrap, group)
    assert described.type.name == "CONSUMER" and len(described.members) == 2
    produce(broker.bootstrap, topic_name, 8, start=8)
    modern.stop()  # the last consumer-protocol member leaves: the group turns classic again
    wait_for(lambda: classic.assigned == ALL, 30, "the classic member owning every partition again")
    assert_exactly_once([classic, modern], 16)
    classic.stop()
