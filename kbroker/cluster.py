"""The simulated cluster of `kbroker serve --brokers N`: brokers, replicas, ISRs, leaders, epochs.

A plain state machine: no trio, no sockets, no files. One kbroker process plays N brokers; the
data is stored once, so "replication" is only this bookkeeping: a replica on a live broker is
always caught up. The rules are Apache Kafka's KRaft controller's (ReplicationControlManager,
PartitionChangeBuilder, StripedReplicaPlacer's predecessor AdminUtils for placement), with
unclean.leader.election.enable=false and no eligible leader replicas (KIP-966).

Brokers
  B1  Node ids are consecutive from the first; each broker is up or down (stopped). A stopped
      broker stays registered (Kafka: fenced), so it still counts for manual assignments'
      "is this broker known" check, but not for placement or replication factors.
  B2  stop_broker(id): every partition it leads elects a new leader among the live ISR members in
      replica order; it leaves every ISR, except that an ISR is never emptied: when it was the last
      member, the ISR keeps it and the leader becomes -1 (offline, LEADER_NOT_AVAILABLE).
  B3  start_broker(id): it rejoins the ISR of every partition it replicates that has a leader
      (data is shared, so it is caught up at once), and leads a leaderless partition whose ISR
      kept it as last member (the other live replicas then rejoin as well). A leaderless partition
      whose last ISR member is still stopped stays offline (no unclean election). Leadership is
      not moved back at once: as Kafka with auto.leader.rebalance.enable=true, preferred leaders
      are restored by rebalance_leaders(), which the server runs every
      leader.imbalance.check.interval.seconds.

Partitions
  P1  Placement (Kafka's AdminUtils without racks): the topic's start broker rotates round-robin
      over the live brokers from topic to topic; partition p's first replica is broker
      (start + p) % n, the others follow on the next brokers, shifted by one more broker for
      every n partitions so that followers spread too.
  P2  The preferred leader is the first replica. A new partition's ISR is its live replicas and
      its leader the first of them.
  P3  Every leader change bumps leader_epoch and partition_epoch; an ISR or replica change without
      a leader change bumps partition_epoch only.
  P4  A replication factor above the live brokers -> INVALID_REPLICATION_FACTOR; a manual
      assignment with an empty list, a broker twice, an unknown broker, lists of different
      lengths, or (new partitions) only stopped brokers -> INVALID_REPLICA_ASSIGNMENT.
  P5  move_leader / elect_preferred: the new leader must be a live ISR member
      (else PREFERRED_LEADER_NOT_AVAILABLE); already leading -> ELECTION_NOT_NEEDED.
      elect_unclean: only for a partition without a leader: the first live replica leads, the ISR
      becomes just it; a partition with a leader -> ELECTION_NOT_NEEDED, none live ->
      ELIGIBLE_LEADERS_NOT_AVAILABLE.
  P6  reassign(replicas): valid as P4. If every target broker is live the reassignment completes
      at once: replicas = target, ISR = its live members, and the leader stays if it is in the
      target, else the first target replica in the ISR leads. With a stopped target broker it stays
      ongoing (replicas = target + the removed ones, adding/removing listed) until that broker
      starts. reassign(None) cancels an ongoing one (none -> NO_REASSIGNMENT_IN_PROGRESS) and
      restores the replicas from before it.

Coordinators
  C1  The group (transaction, share) coordinator of a key is the leader of its partition of
      __consumer_offsets (__transaction_state, __share_group_state); the coordinators compute the
      partition. Internal topics are placed as any topic, with replication factor min(3, N).

Persistence: snapshot() gives a JSON-able dict; Cluster.restore() takes it back, dropping brokers
that no longer exist. Every mutation calls `on_change` (the broker saves the snapshot).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol, Sequence

from kbroker.protocol.errors import ErrorCode, KafkaError

NO_LEADER = -1
MAX_DEFAULT_REPLICATION = 3  # default.replication.factor and the internal topics' factor: min(3, N)


class NodeSwitch(Protocol):
    """What the server offers to stop and start one simulated broker: stop_node closes its
    listeners and connections and applies B2, start_node listens on the same ports again and
    applies B3 (both raise KafkaError BROKER_NOT_AVAILABLE for an unknown node id)."""

    async def stop_node(self, node_id: int) -> None: ...

    async def start_node(self, node_id: int) -> None: ...


@dataclass(slots=True)
class BrokerState:
    """One simulated broker. `endpoints` (listener name -> (host, port)) is set by the server."""

    node_id: int
    up: bool = True
    rack: str | None = None
    endpoints: dict[str, tuple[str, int]] = field(default_factory=dict)


@dataclass(slots=True)
class PartitionState:
    """What Kafka's controller keeps per partition (PartitionRegistration)."""

    replicas: list[int]
    isr: list[int]
    leader: int
    leader_epoch: int = 0
    partition_epoch: int = 0
    adding: list[int] = field(default_factory=list)    # an ongoing reassignment's new replicas
    removing: list[int] = field(default_factory=list)  # ... and the replicas it will drop

    @property
    def preferred_leader(self) -> int:
        return self.replicas[0]

    def _set_leader(self, leader: int) -> None:
        if leader != self.leader:
            self.leader = leader
            self.leader_epoch += 1
        self.partition_epoch += 1


class Cluster:
    """The cluster's brokers and every topic's partitions (see the rules above).

    Reads: `brokers`, `topics[name][index]` (a PartitionState), leader(), live_nodes(),
    offline_replicas(), coordinator_node(), reassignments(). Changes: sync_topic(), add_topic(),
    remove_topics(), stop_broker(), start_broker(), move_leader(), elect_preferred(),
    elect_unclean(), reassign(), rebalance_leaders(). Errors are KafkaError with Kafka's code.
    """

    def __init__(self, node_ids: Sequence[int], on_change: Callable[[], None] | None = None):
        if not node_ids:
            raise ValueError("a cluster needs at least one broker")
        self.brokers: dict[int, BrokerState] = {node: BrokerState(node) for node in node_ids}
        self.topics: dict[str, list[PartitionState]] = {}
        self.next_start = 0  # P1's round-robin start for the next topic
        self.on_change = on_change

    # -- reads ------------------------------------------------------------------------------

    @property
    def default_replication_factor(self) -> int:
        return min(MAX_DEFAULT_REPLICATION, len(self.brokers))

    def live_nodes(self) -> list[int]:
        return [node for node, state in self.brokers.items() if state.up]

    def is_up(self, node_id: int) -> bool:
        state = self.brokers.get(node_id)
        return state is not None and state.up

    def partition(self, topic: str, index: int) -> PartitionState | None:
        partitions = self.topics.get(topic)
        if partitions is None or not 0 <= index < len(partitions):
            return None
        return partitions[index]

    def leader(self, topic: str, index: int) -> int:
        """The partition's leader, -1 if it has none or is unknown."""
        state = self.partition(topic, index)
        return NO_LEADER if state is None else state.leader

    def offline_replicas(self, state: PartitionState) -> list[int]:
        return [node for node in state.replicas if not self.is_up(node)]

    def coordinator_node(self, internal_topic: str, partition: int) -> int:
        """C1: the node coordinating the keys of this internal-topic partition (-1: none)."""
        return self.leader(internal_topic, partition)

    def reassignments(self) -> dict[tuple[str, int], PartitionState]:
        return {(topic, index): state for topic, partitions in self.topics.items()
                for index, state in enumerate(partitions) if state.adding or state.removing}

    # -- placement (P1, P4) -------------------------------------------------------------------

    def plan(self, partitions: int, replication_factor: int, first_partition: int = 0) -> list[list[int]]:
        """P1: replica lists for `partitions` new partitions; raises INVALID_REPLICATION_FACTOR."""
        live = self.live_nodes()
        if replication_factor > len(live):
            raise KafkaError(ErrorCode.INVALID_REPLICATION_FACTOR,
                             f"Unable to replicate the partition {replication_factor} time(s): The "
                             f"target replication factor of {replication_factor} cannot be reached "
                             f"because only {len(live)} broker(s) are registered.")
        count = len(live)
        start = self.next_start % count
        lists = []
        for index in range(first_partition, first_partition + partitions):
            first = (start + index) % count
            shift = index // count
            replicas = [live[first]]
            for j in range(replication_factor - 1):
                step = 1 + (shift + j) % (count - 1)
                replicas.append(live[(first + step) % count])
            lists.append(replicas)
        return lists

    def check_assignment(self, replicas: list[int], expected: int | None = None,
                         index: int | None = None) -> None:
        """P4 for one manual replica list (of partition `index` of a new topic, which needs a
        live broker); raises INVALID_REPLICA_ASSIGNMENT."""
        if not replicas:
            raise KafkaError(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                             "The manual partition assignment includes an empty replica list.")
        seen: set[int] = set()
        for node in replicas:
            if node not in self.brokers:
                raise KafkaError(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                                 f"The manual partition assignment includes broker {node}, but no "
                                 "such broker is registered.")
            if node in seen:
                raise KafkaError(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                                 f"The manual partition assignment includes the broker {node} more "
                                 "than once.")
            seen.add(node)
        if expected is not None and len(replicas) != expected:
            raise KafkaError(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                             f"The manual partition assignment includes a partition with "
                             f"{len(replicas)} replica(s), but this is not consistent with previous "
                             f"partitions, which have {expected} replica(s).")
        if index is not None and not any(self.is_up(node) for node in replicas):
            raise KafkaError(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                             "All brokers specified in the manual partition assignment for partition "
                             f"{index} are fenced or in controlled shutdown.")

    def _new_partition(self, replicas: list[int]) -> PartitionState:
        isr = [node for node in replicas if self.is_up(node)] or replicas[:1]
        return PartitionState(list(replicas), isr, isr[0] if self.is_up(isr[0]) else NO_LEADER)

    # -- topic changes ------------------------------------------------------------------------

    def add_topic(self, topic: str, replica_lists: Iterable[list[int]]) -> None:
        """Place a topic's partitions as given (a checked manual assignment or a plan())."""
        self.topics[topic] = [self._new_partition(replicas) for replicas in replica_lists]
        self.next_start += 1
        self._changed()

    def add_partitions(self, topic: str, replica_lists: Iterable[list[int]]) -> None:
        self.topics.setdefault(topic, []).extend(self._new_partition(r) for r in replica_lists)
        self._changed()

    def sync_topic(self, topic: str, partitions: int, replication_factor: int | None = None) -> None:
        """Make sure the model knows `partitions` partitions of a topic the logs hold, placing
        unknown ones by plan() (at most as many replicas as live brokers)."""
        known = len(self.topics.get(topic, ()))
        if known >= partitions:
            return
        factor = min(replication_factor or self.default_replication_factor, len(self.live_nodes()))
        if factor:
            lists = self.plan(partitions - known, factor, known)
        else:  # every broker is stopped: the new partitions are offline until one starts
            lists = [[min(self.brokers)]] * (partitions - known)
        if known:
            self.add_partitions(topic, lists)
        else:
            self.add_topic(topic, lists)

    def remove_topics(self, topics: Iterable[str]) -> None:
        removed = [self.topics.pop(topic, None) for topic in topics]
        if any(partitions is not None for partitions in removed):
            self._changed()

    # -- broker changes (B2, B3) --------------------------------------------------------------

    def stop_broker(self, node_id: int) -> None:
        broker = self._broker(node_id)
        if not broker.up:
            return
        broker.up = False
        for state in self._all_partitions():
            if node_id not in state.isr:
                continue
            if len(state.isr) > 1:
                state.isr.remove(node_id)
            if state.leader == node_id:
                state._set_leader(self._first_live_isr(state, state.replicas))
            else:
                state.partition_epoch += 1
        self._changed()

    def start_broker(self, node_id: int) -> None:
        broker = self._broker(node_id)
        if broker.up:
            return
        broker.up = True
        for state in self._all_partitions():
            if node_id not in state.replicas:
                continue
            if state.leader == NO_LEADER and node_id in state.isr:
                state._set_leader(node_id)
            self._catch_up(state)
            if state.adding and all(self.is_up(node) for node in state.adding):
                self._complete_reassignment(state)
        self._changed()

    def rebalance_leaders(self) -> list[tuple[str, int]]:
        """B3: elect the preferred leader wherever it is a live ISR member but does not lead."""
        moved = [(topic, index) for topic, partitions in self.topics.items()
                 for index, state in enumerate(partitions)
                 if state.leader != state.preferred_leader and self._eligible(state, state.preferred_leader)]
        for topic, index in moved:
            self.topics[topic][index]._set_leader(self.topics[topic][index].preferred_leader)
        if moved:
            self._changed()
        return moved

    # -- elections (P5) -----------------------------------------------------------------------

    def move_leader(self, topic: str, index: int, node_id: int) -> None:
        """Make a live ISR member the leader; raises KafkaError (P5)."""
        state = self._partition(topic, index)
        if state.leader == node_id:
            raise KafkaError(ErrorCode.ELECTION_NOT_NEEDED,
                             "Leader election not needed for topic partition.")
        if not self._eligible(state, node_id):
            raise KafkaError(ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE,
                             f"Broker {node_id} is not a live in-sync replica of {topic}-{index}.")
        state._set_leader(node_id)
        self._changed()

    def elect_preferred(self, topic: str, index: int) -> None:
        """ElectLeaders PREFERRED for one partition; raises KafkaError (P5)."""
        state = self._partition(topic, index)
        self.move_leader(topic, index, state.preferred_leader)

    def elect_unclean(self, topic: str, index: int) -> None:
        """ElectLeaders UNCLEAN for one partition; raises KafkaError (P5)."""
        state = self._partition(topic, index)
        if state.leader != NO_LEADER:
            raise KafkaError(ErrorCode.ELECTION_NOT_NEEDED,
                             "Leader election not needed for topic partition.")
        live = [node for node in state.replicas if self.is_up(node)]
        if not live:
            raise KafkaError(ErrorCode.ELIGIBLE_LEADERS_NOT_AVAILABLE,
                             f"No live replica of {topic}-{index} can become its leader.")
        state.isr = [live[0]]
        state._set_leader(live[0])
        self._catch_up(state)
        self._changed()

    # -- reassignments (P6) -------------------------------------------------------------------

    def reassign(self, topic: str, index: int, replicas: list[int] | None) -> None:
        """AlterPartitionReassignments for one partition (None cancels); raises KafkaError."""
        state = self._partition(topic, index)
        if replicas is None:
            if not (state.adding or state.removing):
                raise KafkaError(ErrorCode.NO_REASSIGNMENT_IN_PROGRESS,
                                 "No partition reassignment is in progress.")
            self._apply_replicas(state, [n for n in state.replicas if n not in state.adding])
            self._changed()
            return
        self.check_assignment(replicas)
        if state.adding or state.removing:  # a new target replaces the ongoing one
            self._apply_replicas(state, [n for n in state.replicas if n not in state.adding])
        if all(self.is_up(node) for node in replicas):
            self._apply_replicas(state, replicas)
        else:
            state.adding = [n for n in replicas if n not in state.replicas]
            state.removing = [n for n in state.replicas if n not in replicas]
            state.replicas = list(replicas) + state.removing
            state.partition_epoch += 1
        self._changed()

    def _complete_reassignment(self, state: PartitionState) -> None:
        self._apply_replicas(state, [n for n in state.replicas if n not in state.removing])

    def _apply_replicas(self, state: PartitionState, replicas: list[int]) -> None:
        state.replicas = list(replicas)
        state.adding, state.removing = [], []
        live = [node for node in replicas if self.is_up(node)]
        state.isr = live or [node for node in state.isr if node in replicas] or replicas[:1]
        if state.leader in live:
            state.partition_epoch += 1
        else:
            state._set_leader(live[0] if live else NO_LEADER)

    # -- persistence --------------------------------------------------------------------------

    def snapshot(self) -> dict:
        return {"next_start": self.next_start, "topics": {
            topic: [[s.replicas, s.isr, s.leader, s.leader_epoch, s.partition_epoch, s.adding, s.removing]
                    for s in partitions] for topic, partitions in self.topics.items()}}

    @classmethod
    def restore(cls, data: dict, node_ids: Sequence[int],
                on_change: Callable[[], None] | None = None) -> "Cluster":
        """A cluster from snapshot(): every broker up; replicas on brokers that no longer exist
        are dropped and a partition left without any is placed anew (by sync_topic)."""
        cluster = cls(node_ids)
        cluster.next_start = int(data.get("next_start", 0))
        for topic, partitions in data.get("topics", {}).items():
            states = []
            for replicas, isr, leader, leader_epoch, partition_epoch, adding, removing in partitions:
                replicas = [n for n in replicas if n in cluster.brokers]
                if not replicas:
                    break
                state = PartitionState(replicas, [n for n in isr if n in replicas] or replicas[:1],
                                       leader, leader_epoch, partition_epoch,
                                       [n for n in adding if n in replicas],
                                       [n for n in removing if n in replicas])
                if state.leader not in state.isr:
                    state._set_leader(state.isr[0])
                for node in replicas:  # all brokers start up with the process (B3)
                    if node not in state.isr:
                        state.isr.append(node)
                state.isr.sort(key=state.replicas.index)
                if state.adding:  # every broker is up again, so it completes
                    cluster._complete_reassignment(state)
                states.append(state)
            cluster.topics[topic] = states
        cluster.on_change = on_change
        return cluster

    # -- helpers ------------------------------------------------------------------------------

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _broker(self, node_id: int) -> BrokerState:
        broker = self.brokers.get(node_id)
        if broker is None:
            raise KafkaError(ErrorCode.BROKER_NOT_AVAILABLE, f"Broker {node_id} is not in the cluster.")
        return broker

    def _partition(self, topic: str, index: int) -> PartitionState:
        state = self.partition(topic, index)
        if state is None:
            raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                             "This server does not host this topic-partition.")
        return state

    def _all_partitions(self) -> Iterable[PartitionState]:
        for partitions in self.topics.values():
            yield from partitions

    def _catch_up(self, state: PartitionState) -> None:
        """B3: with a leader, every live replica fetches from it and is in the ISR at once (the
        data is shared); without one nobody can catch up and the ISR stays."""
        if state.leader == NO_LEADER:
            return
        isr = [node for node in state.replicas if self.is_up(node)]
        if isr != state.isr:
            state.isr = isr
            state.partition_epoch += 1

    def _eligible(self, state: PartitionState, node_id: int) -> bool:
        return node_id in state.isr and self.is_up(node_id)

    def _first_live_isr(self, state: PartitionState, order: list[int]) -> int:
        return next((node for node in order if self._eligible(state, node)), NO_LEADER)
