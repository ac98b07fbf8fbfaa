"""Small pieces several API families share."""

from __future__ import annotations

# Kafka's ACL operation numbers; with no authorizer every operation on a resource is allowed,
# so the "authorized operations" bit sets are fixed: the operations Kafka's
# AclEntry.supportedOperations gives each resource type (a group's configs since Kafka 4.0).
_READ, _WRITE, _CREATE, _DELETE, _ALTER, _DESCRIBE = 3, 4, 5, 6, 7, 8
_CLUSTER_ACTION, _DESCRIBE_CONFIGS, _ALTER_CONFIGS, _IDEMPOTENT_WRITE = 9, 10, 11, 12


def _bits(*operations: int) -> int:
    return sum(1 << operation for operation in operations)


TOPIC_OPERATIONS = _bits(_READ, _WRITE, _CREATE, _DELETE, _ALTER, _DESCRIBE, _DESCRIBE_CONFIGS,
                         _ALTER_CONFIGS)
CLUSTER_OPERATIONS = _bits(_CREATE, _ALTER, _DESCRIBE, _CLUSTER_ACTION, _DESCRIBE_CONFIGS,
                           _ALTER_CONFIGS, _IDEMPOTENT_WRITE)
GROUP_OPERATIONS = _bits(_READ, _DELETE, _DESCRIBE, _DESCRIBE_CONFIGS, _ALTER_CONFIGS)
GROUP_OPERATIONS_BEFORE_4_0 = _bits(_READ, _DELETE, _DESCRIBE)  # a group had no configs yet
# Sent when the client did not ask for authorized operations (Integer.MIN_VALUE).
OPERATIONS_NOT_REQUESTED = -(2**31)


def topic_names(broker, topics, use_ids: bool) -> list[str | None]:
    """The topic each request entry names: from v10 of OffsetCommit/OffsetFetch (and v6 of
    TxnOffsetCommit) by id, None for an id not known (answered with UNKNOWN_TOPIC_ID)."""
    if not use_ids:
        return [topic.name for topic in topics]
    found = [broker.logs.topic_by_id(topic.topic_id) for topic in topics]
    return [None if info is None else info.name for info in found]
