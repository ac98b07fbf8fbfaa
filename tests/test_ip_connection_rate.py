"""Per-address connection_creation_rate quotas (KIP-612): `ip` entities set with
AlterClientQuotas, the default ip entity for every other address, enforced on accept by closing
the connections over the rate after a delay, as Kafka's acceptor does."""

from __future__ import annotations

import time

from kbroker.config import Config
from kbroker.limits import CONNECTION_CREATION_RATE, ConnectionQuotas
from kbroker.quotas import MATCH_SPECIFIED, ClientQuotas
from kbroker.testing import running_broker
from tests.test_client_quotas import alter, alteration, describe
from tests.wire import WireClient


def test_each_address_is_held_to_its_own_or_the_default_rate(tmp_path):
    store = ClientQuotas(tmp_path)
    store.quotas = {(("ip", None),): {CONNECTION_CREATION_RATE: 2.0},
                    (("ip", "10.0.0.7"),): {CONNECTION_CREATION_RATE: 100.0},
                    (("ip", "localhost"),): {CONNECTION_CREATION_RATE: 1.0}}
    quotas = ConnectionQuotas(Config({"quota.window.num": "2"}), store)
    # Two connections within the first second are 2/s: at the quota; a third is 3/s, half as much
    # again, so it waits half the 1 s window and is not counted.
    assert [quotas.ip_throttle_ms("10.0.0.1", now_ms=0) for _ in range(4)] == [0, 0, 500, 500]
    assert quotas.ip_throttle_ms("10.0.0.1", now_ms=1500) == 0  # the rate came down
    assert all(quotas.ip_throttle_ms("10.0.0.7", now_ms=0) == 0 for _ in range(50))
    assert [quotas.ip_throttle_ms("127.0.0.1", now_ms=0) for _ in range(2)] == [0, 1000]  # a host name
    assert ConnectionQuotas(Config({}), ClientQuotas(tmp_path / "none")).ip_throttle_ms("10.0.0.1", 0) == 0


def _answered(bootstrap: str, source: str) -> bool:
    """Whether a connection from `source` gets an ApiVersions answer (False: closed unanswered)."""
    with WireClient(bootstrap, source_address=(source, 0)) as client:
        try:
            return client.request("ApiVersions", 3, client_software_name="t",
                                  client_software_version="1").error_code == 0
        except ConnectionError:
            return False


def test_connections_over_an_ip_rate_are_closed_after_a_delay(tmp_path):
    """1 connection a second measured over at least 2 s (3 windows): the third connection within
    3 s is over the rate and held up to a second before it is closed."""
    with running_broker("--override", "quota.window.num=3", data_dir=tmp_path) as broker:
        with WireClient(broker.bootstrap) as client:
            assert alter(client, alteration({"ip": None}, connection_creation_rate=1.0),
                         alteration({"ip": "127.0.0.2"}, connection_creation_rate=1000.0)
                         ) == [(0, None), (0, None)]
            assert describe(client, ("ip", MATCH_SPECIFIED, None)) == {
                (("ip", None),): {CONNECTION_CREATION_RATE: 1.0},
                (("ip", "127.0.0.2"),): {CONNECTION_CREATION_RATE: 1000.0}}
        # Connections opened before the quota was set do not count: two are let in.
        assert _answered(broker.bootstrap, "127.0.0.1") and _answered(broker.bootstrap, "127.0.0.1")
        started = time.monotonic()
        assert not _answered(broker.bootstrap, "127.0.0.1")
        assert time.monotonic() - started >= 0.3  # held open unanswered, then closed
        # Another address has a quota of its own.
        assert all(_answered(broker.bootstrap, "127.0.0.2") for _ in range(10))
        deadline = time.monotonic() + 15
        while not _answered(broker.bootstrap, "127.0.0.1"):  # until the rate comes down
            assert time.monotonic() < deadline
        with WireClient(broker.bootstrap, source_address=("127.0.0.2", 0)) as client:
            # The default quota removed: no limit.
            assert alter(client, alteration({"ip": None}, connection_creation_rate=None)) == [(0, None)]
        assert all(_answered(broker.bootstrap, "127.0.0.1") for _ in range(10))
