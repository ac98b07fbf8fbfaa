"""Scenarios of KIP-848 consumer groups (group.protocol=consumer, ConsumerGroupHeartbeat).

Clients without the protocol lack the `consumer_protocol` feature and show N/A. The matrix broker
gives these members a 6 s session (group.consumer.session.timeout.ms, see compat/runner.py).
"""

from __future__ import annotations

import re

from compat.scenarios import (
    Ctx, Member, expect, expect_each_gets_its_own, leave_and_crash, scenario, wait_balanced, wait_until,
)

KIP848 = {"protocol": "consumer"}


@scenario("kip848_join_leave_crash", "group.protocol=consumer: 3 members share 6 partitions; one leaves, "
          "one crashes (broker session 6 s), the last owns all", needs=("consumer_protocol",), since="4.0", timeout=120)
def kip848_join_leave_crash(ctx: Ctx):
    topic, group = ctx.create_topic(ctx.name("g"), 6), ctx.name("grp")
    first = Member(ctx, "m1", group, [topic], **KIP848)
    wait_balanced([first], topic, 6, 30, "alone")
    leave_and_crash(ctx, [first, *(Member(ctx, f"m{i}", group, [topic], **KIP848) for i in (2, 3))],
                    topic)


@scenario("kip848_range_and_growth", "group.protocol=consumer, remote assignor range: 2 members split 4 "
          "partitions; after CreatePartitions to 6 the new ones are assigned too",
          needs=("consumer_protocol", "admin"), since="4.0", timeout=90)
def kip848_range_and_growth(ctx: Ctx):
    topic, group = ctx.create_topic(ctx.name("g"), 4), ctx.name("grp")
    members = [Member(ctx, f"m{i}", group, [topic], remote_assignor="range", **KIP848) for i in (1, 2)]
    wait_balanced(members, topic, 4, 40, "2 members")
    ranges = sorted(sorted(p for _, p in m.assigned) for m in members)
    expect(ranges == [[0, 1], [2, 3]], f"range assignor gave {ranges}, expected [[0, 1], [2, 3]]")
    ctx.helper.call("create_partitions", topic=topic, count=6)
    wait_balanced(members, topic, 6, 40, "after growing to 6 partitions")
    expect_each_gets_its_own(ctx, members, topic, 6, 1)
    for m in members:
        m.close()


@scenario("kip848_regex", "group.protocol=consumer subscribed to ^prefix.*: matching topics, and one "
          "created later, are assigned; others are not", needs=("consumer_protocol",), since="4.0", timeout=90)
def kip848_regex(ctx: Ctx):
    prefix = ctx.name("rx")
    first = ctx.create_topic(f"{prefix}-a", 2)
    ctx.create_topic(ctx.name("other"), 1)
    member = Member(ctx, "m1", ctx.name("grp"), [f"^{re.escape(prefix)}.*"], **KIP848)
    wait_balanced([member], first, 2, 30, "the first matching topic")
    later = ctx.create_topic(f"{prefix}-b", 1)
    want = {(first, 0), (first, 1), (later, 0)}
    wait_until(lambda: member.refresh().assigned == want, 40,
               lambda: f"assigned {sorted(member.assigned)}, expected {sorted(want)}")
    member.close()


@scenario("kip848_mixed_protocols", "a classic member, then a group.protocol=consumer one: the group "
          "converts and both share 4 partitions; the consumer-protocol member leaves, the group turns "
          "classic and the first owns all", needs=("consumer_protocol",), since="4.0", timeout=90)
def kip848_mixed_protocols(ctx: Ctx):
    topic, group = ctx.create_topic(ctx.name("g"), 4), ctx.name("grp")
    classic = Member(ctx, "classic", group, [topic])
    wait_balanced([classic], topic, 4, 30, "the classic member alone")
    modern = Member(ctx, "consumer", group, [topic], **KIP848)
    wait_balanced([classic, modern], topic, 4, 40, "after the consumer-protocol member joined")
    expect_each_gets_its_own(ctx, [classic, modern], topic, 4, 1)
    modern.close()
    wait_balanced([classic], topic, 4, 40, "after the consumer-protocol member left")
    expect_each_gets_its_own(ctx, [classic], topic, 4, 2)
    classic.close()
