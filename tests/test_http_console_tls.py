"""The web console of a broker whose only listener is SASL_SSL or SSL with client certificates
required: its pages reach the broker over TLS (trusting the listener's own certificate) and log in
with the broker's configured credentials, shown in a real headless chromium."""

from __future__ import annotations

import re
import ssl
import urllib.error
import urllib.request

import pytest
from confluent_kafka import Producer

from kbroker.certs import make_certificates
from kbroker.config import Config
from kbroker.testing import running_broker
from kbroker.tls import own_client_context, server_context
from tests.test_acls_clients import AUTHORIZER
from tests.test_http_console import CHROMIUM, render, text

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("console-certs")
    make_certificates(directory)
    return directory


def _serve(certs, data_dir, *args: str, **overrides: str):
    settings = {"ssl.keystore.type": "PEM", "ssl.keystore.location": str(certs / "broker.pem"),
                **overrides}
    arguments = ["--http-port", "0", *args]
    for name, value in settings.items():
        arguments += ["--override", f"{name}={value}"]
    return running_broker(*arguments, data_dir=data_dir)


def _produce(config: dict, topic: str, count: int) -> None:
    producer = Producer(config)
    for index in range(count):
        producer.produce(topic, value=b"%d" % index)
    assert producer.flush(20) == 0


def test_console_of_an_all_sasl_ssl_broker_with_acls(certs, tmp_path):
    """The console logs in as the first configured user (here the super user); alice, without
    ACLs, is refused what the console shows."""
    with _serve(certs, tmp_path / "data", "--sasl-user", "admin:admin-secret",
                "--sasl-user", "alice:alice-secret",
                listeners="SASL_SSL://127.0.0.1:0", **{"sasl.enabled.mechanisms": "SCRAM-SHA-512",
                                                      "authorizer.class.name": AUTHORIZER,
                                                      "super.users": "User:admin"}) as broker:
        client = {"bootstrap.servers": broker.bootstrap, "security.protocol": "SASL_SSL",
                  "ssl.ca.location": str(certs / "ca.pem"), "sasl.mechanism": "SCRAM-SHA-512",
                  "sasl.username": "admin", "sasl.password": "admin-secret"}
        _produce(client, "payments", 3)
        page = text(render(broker.http + "/", tmp_path, "sasl-ssl-topics"))
        assert re.search(r"payments\s+1\s+3\s+\d+", page), page
        clients = text(render(broker.http + "/clients", tmp_path, "sasl-ssl-clients"))
        assert re.search(r"SASL_SSL\s+kbroker-console\s+\S+\s+User:admin", clients), clients


def test_console_of_an_all_ssl_broker_requiring_client_certificates(certs, tmp_path):
    """The console presents the broker's own certificate; its principal is that certificate's."""
    with _serve(certs, tmp_path / "data", listeners="SSL://127.0.0.1:0",
                **{"ssl.client.auth": "required", "ssl.truststore.type": "PEM",
                   "ssl.truststore.location": str(certs / "ca.pem")}) as broker:
        _produce({"bootstrap.servers": broker.bootstrap, "security.protocol": "SSL",
                  "ssl.ca.location": str(certs / "ca.pem"),
                  "ssl.certificate.location": str(certs / "client.crt"),
                  "ssl.key.location": str(certs / "client.key")}, "audit", 2)
        page = text(render(broker.http + "/topic?name=audit", tmp_path, "mtls-topic"))
        assert re.search(r"\b0\s+1\s+1\s+1\s+0\s+2\s+2\b", page), page  # leader 1, offsets 0..2
        clients = text(render(broker.http + "/clients", tmp_path, "mtls-clients"))
        assert "User:CN=localhost,O=kbroker" in clients, clients


def _handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> None:
    """A TLS handshake between the two contexts in memory; raises ssl.SSLError when refused."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_end = client.wrap_bio(to_client, to_server)
    server_end = server.wrap_bio(to_server, to_client, server_side=True)
    for _ in range(10):
        done = 0
        for end in (client_end, server_end):
            try:
                end.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        if done == 2:
            return
    raise AssertionError("the handshake did not finish")


def test_the_console_trusts_only_its_own_listeners_certificate(certs, tmp_path):
    """A certificate signed by the same CA, or another broker's, fails the handshake."""
    own = Config({"listeners": "SSL://127.0.0.1:0", "ssl.keystore.type": "PEM",
                  "ssl.keystore.location": str(certs / "broker.pem")})
    (listener,) = own.listeners()
    pinned = own_client_context(own, listener)
    _handshake(pinned, server_context(own, listener))
    make_certificates(tmp_path / "other")
    (tmp_path / "same-ca.pem").write_text((certs / "client.key").read_text()
                                          + (certs / "client.crt").read_text())
    for keystore in (tmp_path / "same-ca.pem", tmp_path / "other" / "broker.pem"):
        impostor = Config({"listeners": "SSL://127.0.0.1:0", "ssl.keystore.type": "PEM",
                           "ssl.keystore.location": str(keystore)})
        with pytest.raises(ssl.SSLCertVerificationError):
            _handshake(pinned, server_context(impostor, impostor.listeners()[0]))


def test_console_says_why_it_cannot_log_in(certs, tmp_path):
    """A SASL listener with no PLAIN or SCRAM user the console could log in as: the pages say so
    (and /metrics keeps its other families)."""
    with _serve(certs, tmp_path / "data", listeners="SASL_SSL://127.0.0.1:0",
                **{"sasl.enabled.mechanisms": "OAUTHBEARER"}) as broker:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(broker.http + "/", timeout=10)
        assert "the console cannot log in to listener SASL_SSL" in refused.value.read().decode()
        metrics = urllib.request.urlopen(broker.http + "/metrics", timeout=10).read().decode()
        assert "kafka_network_requestmetrics" in metrics and "cannot log in" in metrics
