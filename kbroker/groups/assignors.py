"""Kafka's server-side assignors for consumer groups (KIP-848): `uniform` and `range`.

An assignor maps each member, given the topics it subscribes to, to the partitions it should own
(the group's target assignment). Both spread partitions as Kafka's do; the exact placement may
differ from Kafka's, which clients cannot rely on either.

uniform  Balanced over all members (counts differ by at most one when every member subscribes to
         the same topics), sticky: a member keeps the partitions of its previous target
         assignment as long as that keeps the balance, so a rebalance moves as few partitions
         as it can. Unassigned partitions go to the least loaded member that subscribes to them.
range    Per topic, the members subscribing to it in member id order get consecutive ranges of
         partitions, the first (partitions % members) one partition more.
"""

from __future__ import annotations

import math
import uuid
from typing import Callable, Mapping

Assignment = dict[uuid.UUID, frozenset[int]]
# member id -> topic names it subscribes to; topic name -> (topic id, partition count)
Subscriptions = Mapping[str, frozenset[str]]
TopicSizes = Mapping[str, tuple[uuid.UUID, int]]

# Kafka accepts the assignors' class names in group.consumer.assignors as well.
CLASS_NAMES = {
    "org.apache.kafka.coordinator.group.assignor.UniformAssignor": "uniform",
    "org.apache.kafka.coordinator.group.assignor.RangeAssignor": "range",
}


def _freeze(owned: Mapping[str, set[tuple[uuid.UUID, int]]]) -> dict[str, Assignment]:
    result: dict[str, Assignment] = {}
    for member_id, partitions in owned.items():
        by_topic: dict[uuid.UUID, set[int]] = {}
        for topic_id, partition in partitions:
            by_topic.setdefault(topic_id, set()).add(partition)
        result[member_id] = {topic_id: frozenset(p) for topic_id, p in by_topic.items()}
    return result


def uniform(subscriptions: Subscriptions, topics: TopicSizes,
            previous: Mapping[str, Assignment]) -> dict[str, Assignment]:
    members = sorted(subscriptions)
    subscribers: dict[str, list[str]] = {}
    for member_id in members:
        for name in subscriptions[member_id]:
            if name in topics:
                subscribers.setdefault(name, []).append(member_id)
    eligible: dict[tuple[uuid.UUID, int], set[str]] = {}
    for name in sorted(subscribers):
        topic_id, count = topics[name]
        for partition in range(count):
            eligible[(topic_id, partition)] = set(subscribers[name])
    # Each member's fair share: its part of every topic it subscribes to, rounded up.
    cap = {m: math.ceil(sum(topics[n][1] / len(subscribers[n])
                            for n in subscriptions[m] if n in subscribers)) for m in members}
    homogeneous = len({subscriptions[m] for m in members}) <= 1
    extra_left = len(eligible) % len(members) if members and homogeneous else len(members)
    owned: dict[str, set[tuple[uuid.UUID, int]]] = {m: set() for m in members}
    taken: set[tuple[uuid.UUID, int]] = set()
    base = len(eligible) // len(members) if members and homogeneous else None
    # Sticky pass: members that owned most keep first, up to their share.
    by_previous = sorted(members, key=lambda m: (-_size(previous.get(m, {})), m))
    for member_id in by_previous:
        kept = sorted(tp for topic_id, parts in previous.get(member_id, {}).items()
                      for tp in ((topic_id, p) for p in parts)
                      if member_id in eligible.get(tp, ()) and tp not in taken)
        limit = cap[member_id]
        if base is not None:
            limit = base + 1 if extra_left > 0 and len(kept) > base else base
            if limit > base:
                extra_left -= 1
        for tp in kept[:limit]:
            owned[member_id].add(tp)
            taken.add(tp)
    for tp in eligible:
        if tp not in taken:
            least = min(sorted(eligible[tp]), key=lambda m: len(owned[m]))
            owned[least].add(tp)
    return _freeze(owned)


def range_assignor(subscriptions: Subscriptions, topics: TopicSizes,
                   previous: Mapping[str, Assignment]) -> dict[str, Assignment]:
    owned: dict[str, set[tuple[uuid.UUID, int]]] = {m: set() for m in subscriptions}
    for name in sorted({n for names in subscriptions.values() for n in names}):
        if name not in topics:
            continue
        topic_id, count = topics[name]
        members = sorted(m for m, names in subscriptions.items() if name in names)
        share, extra = divmod(count, len(members))
        start = 0
        for index, member_id in enumerate(members):
            length = share + (1 if index < extra else 0)
            owned[member_id].update((topic_id, p) for p in range(start, start + length))
            start += length
    return _freeze(owned)


def _size(assignment: Assignment) -> int:
    return sum(len(p) for p in assignment.values())


ASSIGNORS: dict[str, Callable[..., dict[str, Assignment]]] = {
    "uniform": uniform, "range": range_assignor,
}


def assignor_names(configured: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """group.consumer.assignors as assignor names (short names or Kafka's class names)."""
    return tuple(CLASS_NAMES.get(name, name) for name in configured)
