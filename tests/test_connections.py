"""Connection limits and framing over real sockets: idle closing, max.connections, pipelining."""

from __future__ import annotations

import time

import pytest

from kbroker.protocol import codec, messages
from kbroker.testing import running_broker
from tests.polling import wait_for
from tests.wire import WireClient

IDLE_MS = 400


@pytest.fixture(scope="module")
def limited_broker(tmp_path_factory):
    with running_broker(
        "--override", f"connections.max.idle.ms={IDLE_MS}",
        "--override", "max.connections=3",
        data_dir=tmp_path_factory.mktemp("limited"),
    ) as started:
        yield started


def _api_versions(client: WireClient):
    return client.request("ApiVersions", 3, client_software_name="test",
                          client_software_version="1")


def test_an_idle_connection_is_closed_and_a_busy_one_is_not(limited_broker):
    with WireClient(limited_broker.bootstrap) as idle, WireClient(limited_broker.bootstrap) as busy:
        _api_versions(idle)
        started = time.monotonic()
        while time.monotonic() - started < 3 * IDLE_MS / 1000:
            _api_versions(busy)  # fails if the busy connection were closed
            time.sleep(IDLE_MS / 4000)
        assert idle.is_closed_by_peer()
        assert _api_versions(busy).error_code == 0


def test_connections_over_max_connections_are_closed(limited_broker):
    clients = [WireClient(limited_broker.bootstrap) for _ in range(3)]
    try:
        for client in clients:
            _api_versions(client)
        with WireClient(limited_broker.bootstrap) as extra:
            assert extra.is_closed_by_peer()
        clients.pop().close()
        # The freed slot is usable once the broker has seen the close.
        wait_for(lambda: _opens(limited_broker.bootstrap), timeout_s=5)
    finally:
        for client in clients:
            client.close()
    # Every slot free again before the next test of this broker (the closes are seen a bit later).
    wait_for(lambda: _all_open(limited_broker.bootstrap, 3), timeout_s=5)


def _opens(bootstrap: str) -> bool:
    return _all_open(bootstrap, 1)


def _all_open(bootstrap: str, count: int) -> bool:
    """Whether `count` connections at once are all answered."""
    clients = [WireClient(bootstrap) for _ in range(count)]
    try:
        return all(_api_versions(client).error_code == 0 for client in clients)
    except ConnectionError:
        return False
    finally:
        for client in clients:
            client.close()


def test_pipelined_requests_are_answered_in_order(broker):
    # A broker without max.connections: the closes of the limit tests above reach the limited
    # broker a little after their clients go, which could refuse these two connections.
    api = messages.API_KEYS["ApiVersions"]
    body = messages.request_class(api)(client_software_name="test", client_software_version="1")
    count = 300
    with WireClient(broker.bootstrap) as pipelining, WireClient(broker.bootstrap) as other:
        pipelining.send_raw(b"".join(
            bytes(codec.encode_request(api, 3, correlation_id, "pipe", body))
            for correlation_id in range(count)))
        assert _api_versions(other).error_code == 0
        for expected in range(count):
            correlation_id, response = codec.decode_response(api, 3, pipelining.receive_frame())
            assert (correlation_id, response.error_code) == (expected, 0)
