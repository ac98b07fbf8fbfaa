"""What the broker's HTTP port serves: the routing table and what its pages may read.

Pages read topics, offsets, groups and configs through the Kafka protocol, as a client of the
broker they run in (a connection per page, to the broker's own listener); only what the
protocol cannot tell (open connections, client software, API versions used, counters) comes
from the broker's objects. On a SASL listener they authenticate as its first configured user;
on a TLS listener they trust only the listener's own certificate, and present it when the
listener requires client certificates (kbroker/tls.py's own_client_context). Nothing is granted
to them that the same credentials would not get from any client.
"""

from __future__ import annotations

import contextlib

from kbroker.client import ClientError, Cluster
from kbroker.client.sasl import SaslCredentials
from kbroker.config import SASL_JAAS_SETTING
from kbroker.http import cluster_control, console, faults, prometheus
from kbroker.http.server import Request, Response, Routes
from kbroker.sasl import users_from_jaas
from kbroker.tls import own_client_context

CLIENT_ID = "kbroker-console"


def _console_credentials(config, listener) -> SaslCredentials | None:
    """On a SASL listener the pages log in as the first user it is configured with."""
    if not listener.uses_sasl:
        return None
    users = users_from_jaas(config.for_listener(listener, SASL_JAAS_SETTING, "PLAIN") or "")
    mechanisms = [m for m in config.for_listener(listener, "sasl.enabled.mechanisms") if m != "OAUTHBEARER"]
    if not users or not mechanisms:
        return None
    name, password = next(iter(users.items()))
    return SaslCredentials(mechanisms[0], name, password)


class HttpApp:
    """The broker, its open connections and how to reach its listener, for the pages."""

    def __init__(self, broker, sessions, bootstrap: str, listener):
        self.broker = broker
        self._sessions = sessions  # () -> the ClientSession of each open connection
        self.bootstrap = bootstrap  # of `listener` (a ListenerConfig)
        self._credentials = _console_credentials(broker.config, listener)
        self._no_login = (f"the console cannot log in to listener {listener.name}: it needs a PLAIN "
                          "or SCRAM user in its sasl.jaas.config (kbroker serve --sasl-user NAME:PASSWORD)"
                          if listener.uses_sasl and self._credentials is None else None)
        self._tls = own_client_context(broker.config, listener) if listener.uses_tls else None

    @contextlib.asynccontextmanager
    async def cluster(self):
        if self._no_login is not None:
            raise ClientError(self._no_login)
        cluster = await Cluster.open(self.bootstrap, CLIENT_ID, single_node=True,
                                     sasl=self._credentials, tls=self._tls)
        try:
            yield cluster
        finally:
            await cluster.close()

    def clients(self) -> list[dict]:
        """One entry per open connection: peer, listener and client software (KIP-511)."""
        found = []
        for session in self._sessions():
            name, _, version = (session.client_software or "unknown").partition(" ")
            found.append({"peer": session.peer, "listener": session.listener,
                          "software_name": name, "software_version": version or "unknown",
                          "principal": session.principal})
        return found

    def routes(self) -> Routes:
        routes = Routes()
        routes.add("GET", "/metrics", self.metrics_page)
        console.add_routes(routes, self)
        faults.add_routes(routes, self.broker.faults)
        cluster_control.add_routes(routes, self.broker.cluster, lambda: self.broker.node_switch)
        return routes

    async def metrics_page(self, request: Request) -> Response:
        text = await prometheus.render(self.broker.metrics, self.clients(), self.cluster)
        return Response(text, content_type=prometheus.CONTENT_TYPE)
