"""The brokers of a cluster as the tools see them: metadata, leaders, group coordinators."""

from __future__ import annotations

import threading

import ssl
import trio

from kbroker.client.connection import ClientError, Connection
from kbroker.client.sasl import SaslCredentials
from kbroker.protocol import messages
from kbroker.protocol.errors import ErrorCode, KafkaError

GROUP_KEY_TYPE = 0
# Errors worth another try a moment later: a topic just created, a coordinator still loading.
RETRIABLE = frozenset({
    ErrorCode.LEADER_NOT_AVAILABLE, ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
    ErrorCode.COORDINATOR_NOT_AVAILABLE, ErrorCode.NOT_COORDINATOR, ErrorCode.NOT_LEADER_OR_FOLLOWER,
})
RETRIES, RETRY_BACKOFF_S = 50, 0.1


def error(code: int, message: str | None = None, subject: str = "") -> KafkaError:
    """A KafkaError for a code the broker returned (codes this codec does not know stay numeric)."""
    try:
        known = ErrorCode(code)
    except ValueError:
        return KafkaError(ErrorCode.UNKNOWN_SERVER_ERROR, f"{subject}: error code {code}")
    text = f"{subject}: {message}" if subject and message else subject or message
    return KafkaError(known, text or None)


def check(code: int, message: str | None = None, subject: str = "") -> None:
    """Raise the KafkaError of a non-zero error code."""
    if code:
        raise error(code, message, subject)


def run_sync(async_fn, *args):
    """Run a trio function to completion from synchronous code, even code inside a trio run
    (a test of a trio project): it runs in a thread of its own."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = trio.run(async_fn, *args)
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="kbroker-client")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class Cluster:
    """One connection per broker, the bootstrap's first, the others opened when needed."""

    def __init__(self, bootstrap: Connection, client_id: str, single_node: bool = False,
                 sasl: SaslCredentials | None = None, tls: ssl.SSLContext | None = None):
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.sasl = sasl
        self.tls = tls
        self.single_node = single_node  # every broker is reached through the bootstrap connection
        self._connections: dict[int, Connection] = {}
        self._addresses: dict[int, str] = {}

    @classmethod
    async def open(cls, bootstrap: str, client_id: str = "kbroker-cli", single_node: bool = False,
                   sasl: SaslCredentials | None = None, tls: ssl.SSLContext | None = None) -> Cluster:
        """Connect to the first reachable of comma-separated `host:port`s (over TLS with `tls`).
        `single_node` is for a client of the one broker it runs in, which reaches it whatever
        it advertises."""
        failures = []
        for address in bootstrap.split(","):
            try:
                connection = await Connection.open(address.strip(), client_id, sasl, tls)
                return cls(connection, client_id, single_node, sasl, tls)
            except ClientError as exc:
                failures.append(str(exc))
        raise ClientError("; ".join(failures))

    async def metadata(self, topics: list[str] | None = None, auto_create: bool = False):
        """A MetadataResponse for these topics (all topics when None); brokers are remembered."""
        request = messages.MetadataRequest(
            topics=None if topics is None else [
                messages.MetadataRequest.MetadataRequestTopic(name=name) for name in topics],
            allow_auto_topic_creation=auto_create)
        response = await self.bootstrap.request("Metadata", request)
        self._addresses.update({b.node_id: f"{b.host}:{b.port}" for b in response.brokers})
        return response

    async def topic_metadata(self, topic: str, auto_create: bool = False):
        """One topic's metadata once every partition has a leader (a new topic may need a moment)."""
        for _ in range(RETRIES):
            (info,) = (await self.metadata([topic], auto_create)).topics
            if info.error_code not in RETRIABLE and all(
                    p.error_code not in RETRIABLE and p.leader_id >= 0 for p in info.partitions):
                check(info.error_code, None, f"topic {topic}")
                return info
            await trio.sleep(RETRY_BACKOFF_S)
        check(info.error_code or ErrorCode.LEADER_NOT_AVAILABLE, None, f"topic {topic}")

    async def node(self, node_id: int) -> Connection:
        """The connection to one broker."""
        if self.single_node:
            return self.bootstrap
        connection = self._connections.get(node_id)
        if connection is None:
            if node_id not in self._addresses:
                await self.metadata([])
            address = self._addresses.get(node_id)
            if address is None:
                raise ClientError(f"broker {node_id} is not in the cluster's metadata")
            connection = await Connection.open(address, self.client_id, self.sasl, self.tls)
            self._connections[node_id] = connection
        return connection

    async def leaders(self, topic: str) -> dict[int, int]:
        """partition -> leader node id."""
        info = await self.topic_metadata(topic)
        return {p.partition_index: p.leader_id for p in info.partitions}

    async def coordinator(self, group: str) -> Connection:
        """The connection to a group's coordinator."""
        for _ in range(RETRIES):
            response = await self.bootstrap.request("FindCoordinator", messages.FindCoordinatorRequest(
                key=group, key_type=GROUP_KEY_TYPE))
            if response.error_code not in RETRIABLE:
                check(response.error_code, response.error_message, f"group {group}")
                self._addresses[response.node_id] = f"{response.host}:{response.port}"
                return await self.node(response.node_id)
            await trio.sleep(RETRY_BACKOFF_S)
        raise error(response.error_code, response.error_message, f"group {group}")

    async def close(self) -> None:
        self.bootstrap.close()
        for connection in self._connections.values():
            connection.close()
