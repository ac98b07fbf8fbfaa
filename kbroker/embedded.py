"""A kbroker inside the current process: in a thread of its own, or in the caller's trio nursery.

No subprocess, no signal handlers: the broker starts in a few tens of milliseconds and stops
when the block ends. Its data directory is a fresh temporary one unless given.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import threading
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from kbroker.client import Cluster, admin, run_sync
from kbroker.client.consumer import ConsumedRecord, read_range
from kbroker.control import Control


def topic_configs(configs: dict) -> dict[str, str]:
    """Keyword arguments to Kafka topic config names: retention_ms=1000 -> retention.ms=1000."""
    return {name.replace("_", "."): str(value).lower() if isinstance(value, bool) else str(value)
            for name, value in configs.items()}


async def create_topic(bootstrap: str, name: str, partitions: int = 1, **configs) -> None:
    cluster = await Cluster.open(bootstrap, "kbroker-testing")
    try:
        # -1: the broker's default.replication.factor (min(3, N) with --brokers N)
        await admin.create_topic(cluster, name, partitions, -1, topic_configs(configs))
    finally:
        await cluster.close()


async def stored_records(bootstrap: str, topic: str) -> list[ConsumedRecord]:
    """Every record the topic holds now, partition by partition, in offset order."""
    cluster = await Cluster.open(bootstrap, "kbroker-testing")
    try:
        partitions = sorted(await cluster.leaders(topic))
        ends = await admin.list_offsets(cluster, topic, dict.fromkeys(partitions, admin.LATEST))
        starts = await admin.list_offsets(cluster, topic, dict.fromkeys(partitions, admin.EARLIEST))
        return await read_range(cluster, topic, starts, ends)
    finally:
        await cluster.close()


def control(http: str | None) -> Control:
    if http is None:
        raise RuntimeError("this broker serves no HTTP port: start it with --http-port 0")
    return Control(http)


class BrokerConveniences:
    """What tests want of a running broker at `self.bootstrap`, as blocking calls."""

    bootstrap: str
    http: str | None

    def control(self) -> Control:
        """The broker's HTTP control API (it must serve an HTTP port: `--http-port 0`)."""
        return control(self.http)

    def add_fault(self, api: str, error: str | None = None, *, times: int | None = None,
                  client_id: str | None = None, broker: int | None = None, delay_ms: int = 0,
                  disconnect: bool = False) -> str:
        """Make the broker answer `api` requests with `error`, late or by disconnecting
        (kbroker/faults.py); returns the fault's id."""
        return self.control().add_fault(api, error, times=times, client_id=client_id,
                                        broker=broker, delay_ms=delay_ms, disconnect=disconnect)

    def faults(self) -> list[dict]:
        """Every fault with how many requests it hit ("hits")."""
        return self.control().faults()

    def delete_fault(self, fault_id: str) -> None:
        self.control().delete_fault(fault_id)

    def cluster(self) -> dict:
        """The brokers and each partition's leader, epoch, replicas and ISR (`GET /api/cluster`)."""
        return self.control().cluster()

    def stop_broker(self, node_id: int) -> dict:
        """Stop one broker of `--brokers N`: listener closed, connections dropped, leaders moved."""
        return self.control().stop_broker(node_id)

    def start_broker(self, node_id: int) -> dict:
        """Start a stopped broker again on its port; it rejoins the ISRs."""
        return self.control().start_broker(node_id)

    def move_leader(self, topic: str, partition: int, node_id: int) -> dict:
        """Move the partition's leadership to `node_id` (in its ISR), bumping the leader epoch."""
        return self.control().move_leader(topic, partition, node_id)

    def create_topic(self, name: str, partitions: int = 1, **configs) -> None:
        """Create a topic; configs by Kafka name with dots as underscores (retention_ms=1000)."""
        run_sync(lambda: create_topic(self.bootstrap, name, partitions, **configs))

    def records(self, topic: str) -> list[ConsumedRecord]:
        """Every record the topic holds (topic, partition, offset, timestamp, key, value, headers)."""
        return run_sync(stored_records, self.bootstrap, topic)


@dataclass
class BrokerHandle(BrokerConveniences):
    """How to reach an embedded broker."""

    bootstrap: str
    http: str | None = None  # base URL of the HTTP port (metrics, console), if served


@dataclass
class NurseryBroker:
    """A broker served in the caller's trio nursery: its conveniences are coroutines, since a
    blocking call would stop the very loop that serves it."""

    bootstrap: str
    http: str | None = None

    async def create_topic(self, name: str, partitions: int = 1, **configs) -> None:
        await create_topic(self.bootstrap, name, partitions, **configs)

    async def records(self, topic: str) -> list[ConsumedRecord]:
        return await stored_records(self.bootstrap, topic)

    async def add_fault(self, api: str, error: str | None = None, **options) -> str:
        """BrokerConveniences.add_fault, in a worker thread."""
        return await trio.to_thread.run_sync(partial(control(self.http).add_fault, api, error, **options))

    async def faults(self) -> list[dict]:
        return await trio.to_thread.run_sync(control(self.http).faults)

    async def delete_fault(self, fault_id: str) -> None:
        await trio.to_thread.run_sync(control(self.http).delete_fault, fault_id)

    async def cluster(self) -> dict:
        return await trio.to_thread.run_sync(control(self.http).cluster)

    async def stop_broker(self, node_id: int) -> dict:
        """BrokerConveniences.stop_broker, in a worker thread (as start_broker, move_leader)."""
        return await trio.to_thread.run_sync(control(self.http).stop_broker, node_id)

    async def start_broker(self, node_id: int) -> dict:
        return await trio.to_thread.run_sync(control(self.http).start_broker, node_id)

    async def move_leader(self, topic: str, partition: int, node_id: int) -> dict:
        return await trio.to_thread.run_sync(control(self.http).move_leader, topic, partition, node_id)


def _release(as_version: str | None):
    """The release an embedded broker acts as; ValueError naming the supported ones."""
    from kbroker import versions

    return versions.release(as_version) if as_version else None


def _broker(data_dir: str | os.PathLike, overrides: dict[str, str] | None, release):
    from kbroker.broker import Broker
    from kbroker.config import Config

    settings = {"listeners": "PLAINTEXT://127.0.0.1:0", "log.dirs": str(data_dir)}
    settings.update(overrides or {})
    return Broker(Config(settings, release))


async def _serve_until_cancelled(broker, http_port, task_status) -> None:
    from kbroker.server import serve

    try:
        await serve(broker, http_port=http_port, task_status=task_status)
    finally:
        broker.close()


def _http_url(host: str, port: int | None) -> str | None:
    return None if port is None else f"http://{host}:{port}"


@contextlib.contextmanager
def _data_dir(data_dir):
    if data_dir is not None:
        yield Path(data_dir)
        return
    with tempfile.TemporaryDirectory(prefix="kbroker-") as temporary:
        yield Path(temporary)


@contextlib.contextmanager
def embedded_broker(overrides: dict[str, str] | None = None, *, data_dir=None,
                    http_port: int | None = 0, as_version: str | None = None):
    """Run a broker in a thread of this process; yields a BrokerHandle.

    `overrides` are broker settings by their Kafka names ({"num.partitions": "3"}); the HTTP
    port (metrics, console) is a free one unless given, None for none; `as_version` ("2.8")
    makes it act as that Kafka release, as `kbroker serve --as-version` does.
    """
    release = _release(as_version)
    with _data_dir(data_dir) as directory:
        started = threading.Event()
        state: dict = {}

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                host, port, http = await nursery.start(
                    _serve_until_cancelled, _broker(directory, overrides, release), http_port)
                state.update(address=f"{host}:{port}", http=_http_url(host, http),
                             cancel=nursery.cancel_scope.cancel,
                             token=trio.lowlevel.current_trio_token())
                started.set()

        def run() -> None:
            try:
                trio.run(main)
            except BaseException as exc:  # reported to the thread that waits for the start
                state["error"] = exc
            finally:
                started.set()

        thread = threading.Thread(target=run, name="kbroker-embedded", daemon=True)
        thread.start()
        started.wait()
        if "error" in state:
            thread.join()
            raise state["error"]
        try:
            yield BrokerHandle(state["address"], state["http"])
        finally:
            trio.from_thread.run_sync(state["cancel"], trio_token=state["token"])
            thread.join()


@contextlib.asynccontextmanager
async def serve_in_nursery(nursery: trio.Nursery, overrides: dict[str, str] | None = None, *,
                           data_dir=None, http_port: int | None = 0, as_version: str | None = None):
    """Serve a broker as a task of the caller's trio nursery; yields a NurseryBroker."""
    release = _release(as_version)
    with _data_dir(data_dir) as directory:
        scope = trio.CancelScope()
        stopped = trio.Event()

        async def run(task_status=trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await _serve_until_cancelled(_broker(directory, overrides, release), http_port,
                                                 task_status)
            finally:
                stopped.set()

        host, port, http = await nursery.start(run)
        try:
            yield NurseryBroker(f"{host}:{port}", _http_url(host, http))
        finally:
            scope.cancel()
            with trio.CancelScope(shield=True):
                await stopped.wait()


@contextlib.asynccontextmanager
async def asyncio_broker(overrides: dict[str, str] | None = None, *, data_dir=None,
                         http_port: int | None = 0, as_version: str | None = None):
    """For asyncio programs: an embedded_broker started and stopped without blocking the loop."""
    context = embedded_broker(overrides, data_dir=data_dir, http_port=http_port, as_version=as_version)
    handle = await asyncio.to_thread(context.__enter__)
    try:
        yield handle
    finally:
        await asyncio.to_thread(context.__exit__, None, None, None)
