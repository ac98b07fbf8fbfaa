"""The fault injection API on the HTTP port (kbroker/faults.py says what a fault does):

    POST   /api/faults       {"api": "Produce", "error": "NOT_LEADER_OR_FOLLOWER", "times": 3}
                             -> {"id": "1"}
    GET    /api/faults       -> [{"id": "1", "api": "Produce", ..., "hits": 2}, ...]
    DELETE /api/faults/{id}  -> {"id": "1"}

A body that is not a fault (unknown API or error name, bad field) gets 400 and an unknown id
404, each with {"error": "..."}.
"""

from __future__ import annotations

import json
from http import HTTPStatus

from kbroker.faults import FaultInjector, InvalidFault
from kbroker.http.server import Request, Response, Routes


def json_response(value, status: int = HTTPStatus.OK) -> Response:
    return Response(json.dumps(value) + "\n", int(status), "application/json")


def add_routes(routes: Routes, faults: FaultInjector) -> None:
    async def add(request: Request) -> Response:
        try:
            fault = faults.add(json.loads(request.body or b"null"))
        except (ValueError, InvalidFault) as exc:  # json.JSONDecodeError is a ValueError
            message = str(exc) if isinstance(exc, InvalidFault) else f"the body is not JSON: {exc}"
            return json_response({"error": message}, HTTPStatus.BAD_REQUEST)
        return json_response({"id": fault.id}, HTTPStatus.CREATED)

    async def listing(request: Request) -> Response:
        return json_response([fault.describe() for fault in faults.list()])

    async def delete(request: Request) -> Response:
        fault_id = request.params["id"]
        if not faults.delete(fault_id):
            return json_response({"error": f"no fault {fault_id}"}, HTTPStatus.NOT_FOUND)
        return json_response({"id": fault_id})

    routes.add("POST", "/api/faults", add)
    routes.add("GET", "/api/faults", listing)
    routes.add("DELETE", "/api/faults/{id}", delete)
