"""SSL, mTLS, SASL_SSL and SASL_PLAINTEXT listeners in one broker, with real clients; startup
errors of listeners that cannot be set up."""

from __future__ import annotations

import json
import socket
import ssl
import struct
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer, KafkaProducer

from kbroker.certs import make_certificates
from kbroker.testing import running_broker
from tests.polling import wait_for

KAFKAJS = Path(__file__).resolve().parent.parent / "compat" / "node" / "node_modules" / "kafkajs"
LISTENERS = {"PLAINTEXT": "PLAINTEXT", "SSL": "SSL", "MTLS": "SSL", "SASL_SSL": "SASL_SSL",
             "SASL_PLAINTEXT": "SASL_PLAINTEXT"}
CLIENT_DN = "CN=alice,OU=dev,O=kbroker"


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    make_certificates(directory, client=CLIENT_DN)
    return directory


@pytest.fixture(scope="module")
def secure_broker(certs, tmp_path_factory):
    """One listener per security protocol (MTLS: SSL requiring a client certificate)."""
    overrides = {
        "listeners": ",".join(f"{name}://127.0.0.1:0" for name in LISTENERS),
        "listener.security.protocol.map": ",".join(f"{n}:{p}" for n, p in LISTENERS.items()),
        "inter.broker.listener.name": "PLAINTEXT",
        "ssl.keystore.type": "PEM", "ssl.keystore.location": str(certs / "broker.pem"),
        "ssl.truststore.type": "PEM", "ssl.truststore.location": str(certs / "ca.pem"),
        "listener.name.mtls.ssl.client.auth": "required",
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER",
    }
    args = ["--sasl-user", "alice:alice-secret", "--http-port", "0"]
    for name, value in overrides.items():
        args += ["--override", f"{name}={value}"]
    with running_broker(*args, data_dir=tmp_path_factory.mktemp("secure")) as started:
        assert set(started.listeners) == set(LISTENERS)
        yield started


def confluent_config(broker, certs: Path, listener: str, mechanism: str | None = None) -> dict:
    config = {"bootstrap.servers": broker.listeners[listener],
              "security.protocol": LISTENERS[listener]}
    if LISTENERS[listener] in ("SSL", "SASL_SSL"):
        config["ssl.ca.location"] = str(certs / "ca.pem")
    if listener == "MTLS":
        config.update({"ssl.certificate.location": str(certs / "client.crt"),
                       "ssl.key.location": str(certs / "client.key")})
    if mechanism == "OAUTHBEARER":
        config.update({"sasl.mechanism": mechanism, "sasl.oauthbearer.config": "principal=alice",
                       "enable.sasl.oauthbearer.unsecure.jwt": True})
    elif listener.startswith("SASL"):
        config.update({"sasl.mechanism": mechanism or "PLAIN", "sasl.username": "alice",
                       "sasl.password": "alice-secret"})
    return config


def produce_with_confluent(config: dict, topic: str, value: bytes) -> None:
    producer = Producer(config)
    delivered = []
    producer.produce(topic, value=value, on_delivery=lambda error, message: delivered.append(error))
    assert producer.flush(20) == 0
    assert delivered == [None]


@pytest.mark.parametrize("listener", list(LISTENERS))
def test_metadata_gives_each_client_its_own_listener(secure_broker, certs, listener):
    admin = AdminClient(confluent_config(secure_broker, certs, listener))
    metadata = admin.list_topics(timeout=15)
    (only,) = metadata.brokers.values()
    assert f"{only.host}:{only.port}" == secure_broker.listeners[listener]


@pytest.mark.parametrize("listener,mechanism", [
    ("SSL", None), ("MTLS", None), ("SASL_SSL", "PLAIN"), ("SASL_SSL", "SCRAM-SHA-512"),
    ("SASL_SSL", "OAUTHBEARER"), ("SASL_PLAINTEXT", "OAUTHBEARER"), ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
])
def test_confluent_kafka_produces_and_consumes(secure_broker, certs, listener, mechanism):
    from confluent_kafka import Consumer

    topic = f"tls-confluent-{listener}-{mechanism}".lower()
    config = confluent_config(secure_broker, certs, listener, mechanism)
    produce_with_confluent(config, topic, b"over " + listener.encode())
    consumer = Consumer({**config, "group.id": topic, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])  # a group: FindCoordinator answers with this listener too
    try:
        for _ in range(30):
            message = consumer.poll(1)
            if message is not None and message.error() is None:
                assert message.value() == b"over " + listener.encode()
                break
        else:
            pytest.fail("no record consumed")
    finally:
        consumer.close()


def kafka_python_config(broker, certs: Path, listener: str, mechanism: str | None = None) -> dict:
    config = {"bootstrap_servers": broker.listeners[listener], "security_protocol": LISTENERS[listener]}
    if "SSL" in LISTENERS[listener]:
        config["ssl_cafile"] = str(certs / "ca.pem")
    if listener == "MTLS":
        config.update(ssl_certfile=str(certs / "client.crt"), ssl_keyfile=str(certs / "client.key"))
    if mechanism:
        config.update(sasl_mechanism=mechanism, sasl_plain_username="alice",
                      sasl_plain_password="alice-secret")
    return config


@pytest.mark.parametrize("listener,mechanism", [("SSL", None), ("MTLS", None), ("SASL_SSL", "SCRAM-SHA-256")])
def test_kafka_python_over_tls(secure_broker, certs, listener, mechanism):
    topic = f"tls-kafka-python-{listener}".lower()
    config = kafka_python_config(secure_broker, certs, listener, mechanism)
    producer = KafkaProducer(**config)
    large = bytes(range(256)) * 3600  # 900 KiB: sent and fetched in several TLS chunks
    producer.send(topic, value=large).get(15)
    producer.close()
    consumer = KafkaConsumer(topic, auto_offset_reset="earliest", consumer_timeout_ms=15000,
                             fetch_max_bytes=4 << 20, max_partition_fetch_bytes=4 << 20, **config)
    assert next(consumer).value == large
    consumer.close()


def test_aiokafka_over_sasl_ssl(secure_broker, certs):
    import asyncio

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.helpers import create_ssl_context

    topic = "tls-aiokafka"
    config = {"bootstrap_servers": secure_broker.listeners["SASL_SSL"], "security_protocol": "SASL_SSL",
              "ssl_context": create_ssl_context(cafile=str(certs / "ca.pem")),
              "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "alice",
              "sasl_plain_password": "alice-secret"}

    async def run() -> bytes:
        producer = AIOKafkaProducer(**config)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"aio over tls")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, auto_offset_reset="earliest", **config)
        await consumer.start()
        try:
            return (await asyncio.wait_for(consumer.getone(), 15)).value
        finally:
            await consumer.stop()

    assert asyncio.run(run()) == b"aio over tls"


KAFKAJS_ROUND_TRIP = """
const fs = require("fs");
const { Kafka, logLevel } = require(process.argv[1]);
const [bootstrap, ca, mechanism, topic] = process.argv.slice(2);
const sasl = mechanism === "none" ? undefined : { mechanism, username: "alice", password: "alice-secret" };
const kafka = new Kafka({ brokers: [bootstrap], ssl: { ca: [fs.readFileSync(ca, "utf-8")] }, sasl,
                          logLevel: logLevel.NOTHING });
(async () => {
  const producer = kafka.producer();
  await producer.connect();
  await producer.send({ topic, messages: [{ value: "kafkajs over tls" }] });
  await producer.disconnect();
  const consumer = kafka.consumer({ groupId: topic, maxWaitTimeInMs: 100 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({ eachMessage: async ({ message }) => {
    process.stdout.write(message.value.toString() + "\\n");
    setImmediate(() => consumer.disconnect().then(() => process.exit(0)));
  } });
})().catch(error => { console.error(error); process.exit(1); });
"""


@pytest.mark.skipif(not KAFKAJS.exists(), reason="kafkajs is installed by scripts/install_test_tools.sh")
@pytest.mark.parametrize("listener,mechanism", [("SSL", "none"), ("SASL_SSL", "plain"),
                                                ("SASL_SSL", "scram-sha-256")])
def test_kafkajs_over_tls(secure_broker, certs, listener, mechanism):
    topic = f"tls-kafkajs-{listener}-{mechanism}".lower()
    done = subprocess.run(["node", "-e", KAFKAJS_ROUND_TRIP, str(KAFKAJS), secure_broker.listeners[listener],
                           str(certs / "ca.pem"), mechanism, topic],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["kafkajs over tls"]


def test_mtls_principal_is_the_certificate_name(secure_broker, certs):
    producer = Producer(confluent_config(secure_broker, certs, "MTLS"))
    producer.list_topics(timeout=15)  # keeps a connection open

    def clients_page() -> str:
        return urllib.request.urlopen(f"{secure_broker.http}/clients", timeout=10).read().decode()

    wait_for(lambda: f"User:{CLIENT_DN}" in clients_page(), what="the mTLS client's principal")
    producer.flush(1)


def test_principal_mapping_rules_rename_certificate_clients(tmp_path, certs):
    args = ["--override", "listeners=PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0", "--http-port", "0"]
    for setting in ("ssl.keystore.type=PEM", f"ssl.keystore.location={certs / 'broker.pem'}",
                    "ssl.client.auth=required", "ssl.truststore.type=PEM",
                    f"ssl.truststore.location={certs / 'ca.pem'}",
                    "ssl.principal.mapping.rules=RULE:^CN=(.*?),OU=(.*?),.*$/$1-$2/U,DEFAULT"):
        args += ["--override", setting]
    with running_broker(*args, data_dir=tmp_path / "data") as started:
        consumer = KafkaConsumer(bootstrap_servers=started.listeners["SSL"], security_protocol="SSL",
                                 ssl_cafile=str(certs / "ca.pem"), ssl_certfile=str(certs / "client.crt"),
                                 ssl_keyfile=str(certs / "client.key"))
        try:
            assert consumer.topics() is not None  # connected

            def clients_page() -> str:
                return urllib.request.urlopen(f"{started.http}/clients", timeout=10).read().decode()

            wait_for(lambda: "User:ALICE-DEV" in clients_page(), what="the mapped principal")
        finally:
            consumer.close()


def test_client_without_certificate_is_refused_by_mtls(secure_broker, certs):
    config = confluent_config(secure_broker, certs, "SSL")
    config["bootstrap.servers"] = secure_broker.listeners["MTLS"]
    with pytest.raises(KafkaException):
        AdminClient(config).list_topics(timeout=3)


def test_plaintext_client_on_a_tls_port_is_closed_not_left_hanging(secure_broker):
    host, port = secure_broker.listeners["SSL"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        request = struct.pack(">hhih", 18, 0, 1, 4) + b"test"  # ApiVersions v0
        sock.sendall(struct.pack(">i", len(request)) + request)
        assert sock.recv(100) == b""


def test_tls_client_on_a_plaintext_port_is_closed(secure_broker):
    host, port = secure_broker.listeners["PLAINTEXT"].rsplit(":", 1)
    context = ssl.create_default_context()
    with socket.create_connection((host, int(port)), timeout=10) as sock, \
            pytest.raises((ssl.SSLError, ConnectionError)):
        context.wrap_socket(sock, server_hostname="localhost")


def start_failure(tmp_path, *overrides: str) -> tuple[int, list[str]]:
    args = [sys.executable, "-m", "kbroker", "serve", "--port", "0", "--data-dir", str(tmp_path / "data")]
    for override in overrides:
        args += ["--override", override]
    done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    return done.returncode, [line for line in done.stderr.splitlines() if line.startswith("kbroker:")]


@pytest.mark.parametrize("settings,message", [
    (["listeners=SSL://127.0.0.1:0"], "needs a key store"),
    (["listeners=SSL://127.0.0.1:0", "ssl.keystore.type=PEM", "ssl.keystore.location=/nonexistent.pem"],
     "no such file"),
    (["listeners=SSL://127.0.0.1:0", "ssl.keystore.location=BROKER"], "ssl.keystore.type is JKS"),
    (["listeners=SSL://127.0.0.1:0", "ssl.keystore.type=PEM", "ssl.keystore.location=MISMATCH"],
     "key values mismatch"),
    (["listeners=SSL://127.0.0.1:0", "ssl.keystore.type=PEM", "ssl.keystore.location=BROKER",
      "ssl.cipher.suites=TLS_NOT_A_SUITE_WITH_NOTHING"], "unknown cipher suite"),
    (["listeners=EXTERNAL://127.0.0.1:0"], "not in listener.security.protocol.map"),
])
def test_a_listener_that_cannot_be_set_up_stops_the_start(tmp_path, certs, settings, message):
    (tmp_path / "mismatch.pem").write_text((certs / "client.key").read_text() + (certs / "broker.crt").read_text())
    settings = [s.replace("BROKER", str(certs / "broker.pem")).replace("MISMATCH", str(tmp_path / "mismatch.pem"))
                for s in settings]
    code, lines = start_failure(tmp_path, *settings)
    assert code in (1, 2) and len(lines) == 1 and message in lines[0], lines


def test_a_port_in_use_stops_the_start(tmp_path, secure_broker):
    taken = secure_broker.listeners["SASL_SSL"].rsplit(":", 1)[1]
    code, lines = start_failure(tmp_path, f"listeners=PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:{taken}")
    assert code == 1 and len(lines) == 1 and "cannot listen on 127.0.0.1:" + taken in lines[0], lines


def test_inline_pem_keystore_and_client_auth_requested(tmp_path, certs):
    """ssl.keystore.certificate.chain/key inline; `requested`: a client may come without a
    certificate (User:ANONYMOUS) or with one."""
    key, chain = (certs / "broker.key").read_text(), (certs / "broker.crt").read_text()
    args = ["--override", "listeners=SSL://127.0.0.1:0", "--override", "ssl.keystore.type=PEM",
            "--override", f"ssl.keystore.key={key}", "--override", f"ssl.keystore.certificate.chain={chain}",
            "--override", "ssl.client.auth=requested", "--override", "ssl.truststore.type=PEM",
            "--override", f"ssl.truststore.certificates={(certs / 'ca.pem').read_text()}"]
    with running_broker(*args, data_dir=tmp_path / "data") as started:
        for extra in ({}, {"ssl.certificate.location": str(certs / "client.crt"),
                           "ssl.key.location": str(certs / "client.key")}):
            config = {"bootstrap.servers": started.bootstrap, "security.protocol": "SSL",
                      "ssl.ca.location": str(certs / "ca.pem"), **extra}
            produce_with_confluent(config, "inline", json.dumps(extra).encode())


def test_kbroker_perf_over_ssl(secure_broker, certs):
    """`kbroker perf` speaks TLS with --ssl-cafile (and mTLS with a client certificate)."""
    for command, listener, extra in (("produce", "SSL", ["--record-size", "100"]),
                                     ("consume", "MTLS", ["--ssl-certfile", str(certs / "client.crt"),
                                                          "--ssl-keyfile", str(certs / "client.key")])):
        done = subprocess.run([sys.executable, "-m", "kbroker", "perf", command, "-b",
                               secure_broker.listeners[listener], "--topic", "tls-perf",
                               "--num-records", "2000", "--ssl-cafile", str(certs / "ca.pem"), *extra],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith(f"2000 records {'sent' if command == 'produce' else 'consumed'}"), done.stdout


def test_command_line_tools_over_sasl_ssl_and_mtls(secure_broker, certs):
    ca = ["--ssl-cafile", str(certs / "ca.pem")]
    sasl = ["-b", secure_broker.listeners["SASL_SSL"], *ca, "--sasl-username", "alice",
            "--sasl-password", "alice-secret", "--sasl-mechanism", "SCRAM-SHA-256"]
    mtls = ["-b", secure_broker.listeners["MTLS"], *ca, "--ssl-certfile", str(certs / "client.crt"),
            "--ssl-keyfile", str(certs / "client.key")]

    def kbroker(*args: str, stdin: str = "") -> str:
        done = subprocess.run([sys.executable, "-m", "kbroker", *args], input=stdin,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    kbroker("topic", "create", "tls-tools", "-p", "2", *sasl)
    assert "tls-tools" in kbroker("topic", "list", *mtls)
    kbroker("produce", "tls-tools", *mtls, stdin="one\ntwo\n")
    consumed = kbroker("consume", "tls-tools", "--from-beginning", "-n", "2", *sasl)
    assert sorted(consumed.split()) == ["one", "two"]
