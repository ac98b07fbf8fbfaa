"""The server's limits as plain objects: request memory, connection quotas, repeated warnings."""

from __future__ import annotations

import logging

import trio
import trio.testing

from kbroker.config import Config
from kbroker.limits import ConnectionQuotas, RepeatedWarnings, RequestMemory


async def test_request_memory_lets_one_request_over_the_bound_then_waits():
    memory = RequestMemory(limit=100)
    await memory.reserve(150)  # something was left: taken, even though it goes over
    reserved = []

    async def reserve_later():
        await memory.reserve(10)
        reserved.append(10)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reserve_later)
        await trio.testing.wait_all_tasks_blocked()
        assert reserved == []  # over the bound: waits
        memory.release(150)
    assert (reserved, memory.used) == ([10], 10)


async def test_request_memory_is_unbounded_at_zero_or_less():
    memory = RequestMemory(limit=-1)
    for _ in range(3):
        await memory.reserve(1 << 30)
    assert memory.used == 3 << 30


def test_connection_quotas_count_in_total_and_by_address():
    quotas = ConnectionQuotas(Config({"max.connections": "3", "max.connections.per.ip": "1",
                                      "max.connections.per.ip.overrides": "10.0.0.7:2"}))
    quotas.opened("10.0.0.1")
    assert "max.connections.per.ip: 1" in quotas.refusal("10.0.0.1")
    quotas.opened("10.0.0.7")
    assert quotas.refusal("10.0.0.7") is None
    quotas.opened("10.0.0.7")
    assert "max.connections (3) reached" in quotas.refusal("10.0.0.9")
    quotas.closed("10.0.0.1")
    assert quotas.refusal("10.0.0.1") is None and quotas.by_ip == {"10.0.0.7": 2}


def test_repeated_warnings_are_logged_once_per_interval_with_a_count(caplog):
    now = [0.0]
    warnings = RepeatedWarnings(logging.getLogger("test.limits"), interval_s=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "test.limits"):
        for second in range(0, 130, 10):  # 13 warnings of one kind over 2 minutes
            now[0] = second
            warnings.warning("old client", "client %s sent a removed version", "a")
        warnings.warning("other", "another kind")
    assert [record.getMessage() for record in caplog.records] == [
        "client a sent a removed version",
        "client a sent a removed version (5 more like this in the last 60 s)",
        "client a sent a removed version (5 more like this in the last 60 s)",
        "another kind",
    ]
