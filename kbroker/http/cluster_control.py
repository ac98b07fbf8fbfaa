"""The simulated cluster's control API on the HTTP port (`serve --brokers N`; the rules are in
kbroker/cluster.py, the listeners in kbroker/server.py):

    GET  /api/cluster                   -> {"brokers": [{"id": 1, "host": .., "port": .., "up": true,
                                                         "listeners": {"PLAINTEXT": "HOST:PORT"}}, ..],
                                            "topics": {"t": [{"partition": 0, "leader": 1,
                                                              "leader_epoch": 0, "replicas": [1, 2, 3],
                                                              "isr": [1, 2, 3], ...}, ..]}}
    POST /api/brokers/{id}/stop         -> the broker's entry; its leaderships move to other ISR
                                           members, it leaves the ISRs, then its listeners close
                                           and its connections drop (the server's stop_node)
    POST /api/brokers/{id}/start        -> the broker's entry; it listens again on the same
                                           ports, then rejoins the ISRs (start_node)
    POST /api/partitions/{topic}/{partition}/leader  {"node": 2}
                                        -> the partition's entry, led by node 2 (a live ISR
                                           member) with a new leader epoch

Stopping a stopped broker, starting a running one or moving a leadership to its leader changes
nothing and answers as usual. An unknown broker or partition gets 404, a bad body 400, a node
that cannot lead (not a live ISR member) or a broker whose port was taken while it was stopped
409, each with {"error": "..."}.
"""

from __future__ import annotations

import json
from functools import partial
from http import HTTPStatus
from typing import Callable

from kbroker.cluster import Cluster, NodeSwitch, PartitionState
from kbroker.http.faults import json_response
from kbroker.http.server import Request, Response, Routes
from kbroker.listeners import CannotListen, host_port
from kbroker.protocol.errors import ErrorCode, KafkaError

_STATUS = {ErrorCode.BROKER_NOT_AVAILABLE: HTTPStatus.NOT_FOUND,
           ErrorCode.UNKNOWN_TOPIC_OR_PARTITION: HTTPStatus.NOT_FOUND,
           ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE: HTTPStatus.CONFLICT}


def describe_partition(index: int, state: PartitionState) -> dict:
    return {"partition": index, "leader": state.leader, "leader_epoch": state.leader_epoch,
            "replicas": list(state.replicas), "isr": list(state.isr),
            "adding_replicas": list(state.adding), "removing_replicas": list(state.removing)}


def describe_cluster(cluster: Cluster) -> dict:
    brokers = []
    for node_id, broker in sorted(cluster.brokers.items()):
        host, port = next(iter(broker.endpoints.values()), (None, None))  # the first listener's
        listeners = {name: host_port(*endpoint) for name, endpoint in broker.endpoints.items()}
        brokers.append({"id": node_id, "host": host, "port": port, "up": broker.up, "listeners": listeners})
    return {"brokers": brokers, "topics": {
        topic: [describe_partition(index, state) for index, state in enumerate(partitions)]
        for topic, partitions in sorted(cluster.topics.items())}}


def _error(exc: KafkaError) -> Response:
    return json_response({"error": exc.message or exc.code.name},
                         _STATUS.get(exc.code, HTTPStatus.BAD_REQUEST))


def add_routes(routes: Routes, cluster: Cluster, node_switch: Callable[[], NodeSwitch]) -> None:
    """`node_switch` gives the server's NodeSwitch (set once its listeners are open)."""
    def broker_entry(node_id: int) -> dict:
        return next(b for b in describe_cluster(cluster)["brokers"] if b["id"] == node_id)

    def node_param(request: Request) -> int:
        text = request.params["id"]
        if not text.lstrip("-").isdigit() or int(text) not in cluster.brokers:
            raise KafkaError(ErrorCode.BROKER_NOT_AVAILABLE, f"no broker {text}")
        return int(text)

    async def switch(request: Request, stop: bool) -> Response:
        try:
            node_id = node_param(request)
            await (node_switch().stop_node if stop else node_switch().start_node)(node_id)
        except KafkaError as exc:
            return _error(exc)
        except CannotListen as exc:  # its port was taken while it was stopped: it stays stopped
            return json_response({"error": str(exc)}, HTTPStatus.CONFLICT)
        return json_response(broker_entry(node_id))

    async def show(request: Request) -> Response:
        return json_response(describe_cluster(cluster))

    async def move_leader(request: Request) -> Response:
        topic, text = request.params["topic"], request.params["partition"]
        try:
            body = json.loads(request.body or b"null")
        except ValueError as exc:
            return json_response({"error": f"the body is not JSON: {exc}"}, HTTPStatus.BAD_REQUEST)
        node = body.get("node") if isinstance(body, dict) else None
        if type(node) is not int:
            return json_response({"error": 'the body must be {"node": NODE_ID}'}, HTTPStatus.BAD_REQUEST)
        state = cluster.partition(topic, int(text)) if text.isdigit() else None
        if state is None:
            return json_response({"error": f"no partition {topic}-{text}"}, HTTPStatus.NOT_FOUND)
        if state.leader != node:
            try:
                cluster.move_leader(topic, int(text), node)
            except KafkaError as exc:
                return _error(exc)
        return json_response(describe_partition(int(text), state))

    routes.add("GET", "/api/cluster", show)
    routes.add("POST", "/api/brokers/{id}/stop", partial(switch, stop=True))
    routes.add("POST", "/api/brokers/{id}/start", partial(switch, stop=False))
    routes.add("POST", "/api/partitions/{topic}/{partition}/leader", move_leader)
