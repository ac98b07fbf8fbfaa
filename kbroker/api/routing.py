"""Which simulated broker answers what, with `--brokers N` (kbroker/cluster.py holds the model).

Rules (Kafka's ReplicaManager, Partition, KafkaApis, MetadataCache):
  R1  A partition request (Produce, Fetch from a consumer, ListOffsets, OffsetForLeaderEpoch,
      DeleteRecords, DescribeProducers, WriteTxnMarkers) sent to a node that does not lead the
      partition -> NOT_LEADER_OR_FOLLOWER for it (a leaderless partition too). Consumers fetch from
      leaders only (no rack-aware follower fetching, KIP-392).
  R2  Where the client sends the leader epoch it knows: older than the partition's ->
      FENCED_LEADER_EPOCH, newer -> UNKNOWN_LEADER_EPOCH (-1: not checked).
  R3  Produce v10+ and Fetch v12+ name the current leader of a partition answered
      NOT_LEADER_OR_FOLLOWER (or FENCED_LEADER_EPOCH) and list that leader's endpoint, so the
      client moves without a metadata round trip (KIP-951).
  R4  acks=all (-1): an ISR smaller than min.insync.replicas -> NOT_ENOUGH_REPLICAS, nothing
      appended. The ISR cannot shrink during an append here (nothing is copied), so
      NOT_ENOUGH_REPLICAS_AFTER_APPEND is answered only when a broker stops while the request
      waits to be flushed.
  R5  A group or transactional request sent to a node that does not lead the key's
      __consumer_offsets / __transaction_state partition -> NOT_COORDINATOR.
  R6  Metadata, DescribeCluster and FindCoordinator name live brokers by the address of the
      listener the client came in on.
With one broker every answer is the one node's; handlers skip these checks (several_brokers).
"""

from __future__ import annotations

from typing import Any, Callable

from kbroker.cluster import NO_LEADER, PartitionState
from kbroker.groups.offsets_topic import OFFSETS_TOPIC
from kbroker.protocol import messages
from kbroker.protocol.errors import ErrorCode
from kbroker.txn.coordinator import TRANSACTION_STATE_TOPIC


def partition_state(broker, topic: str, index: int) -> PartitionState | None:
    """The model's state of a partition the logs hold (placed now if the model missed it)."""
    state = broker.cluster.partition(topic, index)
    if state is None and topic in broker.logs.topics:
        broker.place_topic(topic)
        state = broker.cluster.partition(topic, index)
    return state


def leader_error(ctx, topic: str, index: int, current_leader_epoch: int = -1) -> ErrorCode:
    """R1 and R2 for one partition the logs hold; NONE when this node may answer it."""
    state = partition_state(ctx.broker, topic, index)
    if state is None:
        return ErrorCode.NONE  # the caller answers the unknown partition
    error = epoch_error(state.leader_epoch, current_leader_epoch)  # Kafka checks the epoch first
    if error == ErrorCode.NONE and state.leader != ctx.session.node_id:
        return ErrorCode.NOT_LEADER_OR_FOLLOWER
    return error


def epoch_error(leader_epoch: int, current_leader_epoch: int) -> ErrorCode:
    """R2."""
    if current_leader_epoch == -1 or current_leader_epoch == leader_epoch:
        return ErrorCode.NONE
    if current_leader_epoch < leader_epoch:
        return ErrorCode.FENCED_LEADER_EPOCH
    return ErrorCode.UNKNOWN_LEADER_EPOCH


def current_leader_epoch(broker, topic: str, index: int) -> int:
    """The partition's leader epoch (0 with one broker, whose leadership never changes)."""
    state = broker.cluster.partition(topic, index)
    return 0 if state is None else state.leader_epoch


def current_leader(broker, topic: str, index: int, leader_type) -> Any:
    """R3: the LeaderIdAndEpoch of a response type, for a partition answered not-leader."""
    state = broker.cluster.partition(topic, index)
    if state is None:
        return leader_type(leader_id=NO_LEADER, leader_epoch=-1)
    return leader_type(leader_id=state.leader, leader_epoch=state.leader_epoch)


def moved_leaders(topics, partitions_attr: str) -> set[int]:
    """R3: the leaders named by a response's partitions answered NOT_LEADER_OR_FOLLOWER or
    FENCED_LEADER_EPOCH (their `current_leader`)."""
    return {answer.current_leader.leader_id for topic in topics
            for answer in getattr(topic, partitions_attr)
            if answer.error_code in (ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.FENCED_LEADER_EPOCH)}


def node_endpoints(ctx, node_ids, endpoint_type) -> list:
    """R3: the endpoints of the given nodes on the client's listener."""
    return [endpoint_type(node_id=node, host=host, port=port, rack=None)
            for node, host, port in live_brokers(ctx) if node in node_ids]


def isr_error(broker, topic: str, index: int, required: int) -> tuple[ErrorCode, str | None]:
    """R4 for an acks=all append."""
    state = broker.cluster.partition(topic, index)
    size = 1 if state is None else len([n for n in state.isr if broker.cluster.is_up(n)])
    if size >= required:
        return ErrorCode.NONE, None
    return ErrorCode.NOT_ENOUGH_REPLICAS, (
        f"The size of the current ISR {size} is insufficient to satisfy the min.isr requirement "
        f"of {required} for partition {topic}-{index}")


def coordinator_node(broker, internal_topic: str, index: int) -> int:
    """R5: the node coordinating one partition of an internal topic (placed if need be); before
    the topic exists, the controller (a live node: the first node may be stopped)."""
    state = partition_state(broker, internal_topic, index)
    return controller_id(broker) if state is None else state.leader


def group_coordinator(broker, group_id: str) -> int:
    return coordinator_node(broker, OFFSETS_TOPIC, broker.groups.partition_for(group_id))


def transaction_coordinator(broker, transactional_id: str) -> int:
    return coordinator_node(broker, TRANSACTION_STATE_TOPIC,
                            broker.transactions.partition_for(transactional_id))


def live_brokers(ctx) -> list[tuple[int, str, int]]:
    """R6: (node id, host, port) of every live broker on the client's listener."""
    broker = ctx.broker
    if not broker.several_brokers:
        return [(broker.node_id, *ctx.session.advertised)]
    listener = ctx.session.listener
    return [(node, *state.endpoints[listener]) for node, state in broker.cluster.brokers.items()
            if state.up and listener in state.endpoints]


def node_address(ctx, node_id: int) -> tuple[str, int] | None:
    """R6: one live node's (host, port) on the client's listener."""
    return next(((host, port) for node, host, port in live_brokers(ctx) if node == node_id), None)


def controller_id(broker) -> int:
    """The node named controller: the first live one (KRaft names any live broker)."""
    return next(iter(broker.cluster.live_nodes()), broker.node_id)


def _group_keys(request) -> list[str]:
    return [request.group_id]


# R5: the APIs a coordinator answers, with the keys of a request (groups, transactional ids).
_GROUP_APIS = {
    **dict.fromkeys(("JoinGroup", "SyncGroup", "Heartbeat", "LeaveGroup", "OffsetCommit",
                     "TxnOffsetCommit", "OffsetDelete", "ConsumerGroupHeartbeat",
                     "ShareGroupHeartbeat"), _group_keys),
    "OffsetFetch": lambda r: [g.group_id for g in r.groups] if r.groups else [r.group_id],
    "DescribeGroups": lambda r: r.groups,
    "DeleteGroups": lambda r: r.groups_names,
    "ConsumerGroupDescribe": lambda r: r.group_ids,
    "ShareGroupDescribe": lambda r: r.group_ids,
}
_TRANSACTION_APIS = {
    "InitProducerId": lambda r: [] if r.transactional_id is None else [r.transactional_id],
    "AddOffsetsToTxn": lambda r: [r.transactional_id],
    "EndTxn": lambda r: [r.transactional_id],
    "AddPartitionsToTxn": lambda r: ([t.transactional_id for t in r.transactions] if r.transactions
                                     else [r.v3_and_below_transactional_id]),
    "DescribeTransactions": lambda r: r.transactional_ids,
}
COORDINATOR_APIS: dict[int, tuple[Callable[[Any, str], int], Callable[[Any], list]]] = {
    messages.API_KEYS[name]: (group_coordinator, keys) for name, keys in _GROUP_APIS.items()}
COORDINATOR_APIS.update((messages.API_KEYS[name], (transaction_coordinator, keys))
                        for name, keys in _TRANSACTION_APIS.items())


def misdirected(api_key: int, request, ctx) -> bool:
    """R5 at dispatch (only with several brokers): whether a coordinator request names a key
    this node does not coordinate. The server then answers the whole request NOT_COORDINATOR:
    clients send the keys of one coordinator together, so a mixed request is not split."""
    entry = COORDINATOR_APIS.get(api_key)
    if entry is None:
        return False
    coordinator, keys = entry
    node = ctx.session.node_id
    return any(coordinator(ctx.broker, key) != node for key in keys(request) if key is not None)
