"""The checks of kafkajs's own suite that need its test cluster (docker-compose.2_4.yml: three
brokers, node ids 0, 1 and 2, each with PLAINTEXT, SSL and SASL_SSL listeners; SASL PLAIN user
`test`, SCRAM user `testscram` with one password per mechanism, OAUTHBEARER with unsecured JWTs;
an ACL authorizer allowing everyone when no ACL is found; default.replication.factor=2):
src/producer's SSL/SASL tests, src/admin's createTopics with replicas on [0, 1], deleteTopicRecords
and alterConfigs of broker 1. Run with kafkajs itself against `kbroker serve --brokers 3
--node-id 0`; docs/CLIENT_SUITES.md runs the suite."""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion,
)

from kbroker.certs import make_certificates
from kbroker.protocol.errors import ErrorCode
from kbroker.testing import running_broker

KAFKAJS = Path(__file__).resolve().parent.parent / "compat" / "node" / "node_modules" / "kafkajs"
LISTENERS = {"PLAINTEXT_HOST": "PLAINTEXT", "SSL_HOST": "SSL", "SASL_SSL_HOST": "SASL_SSL"}
# ScramSaslServer's refusals are SaslExceptions: the client gets Kafka's generic message.
SCRAM_REFUSED = "Authentication failed during authentication due to invalid credentials with SASL mechanism "
SCRAM_PASSWORDS = {ScramMechanism.SCRAM_SHA_256: "testtestscram=256", ScramMechanism.SCRAM_SHA_512: "testtestscram=512"}

pytestmark = pytest.mark.skipif(not KAFKAJS.exists(), reason="kafkajs is installed by scripts/install_test_tools.sh")


def _overrides(listeners: dict[str, int], certs: Path) -> list[str]:
    settings = {
        "listeners": ",".join(f"{name}://127.0.0.1:{port}" for name, port in listeners.items()),
        "listener.security.protocol.map": ",".join(f"{name}:{LISTENERS[name]}" for name in listeners),
        "ssl.keystore.type": "PEM", "ssl.keystore.location": str(certs / "broker.pem"),
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER",
        "authorizer.class.name": "kafka.security.authorizer.AclAuthorizer",
        "allow.everyone.if.no.acl.found": "true",
        "default.replication.factor": "2", "num.partitions": "2", "group.initial.rebalance.delay.ms": "0",
    }
    return ["--node-id", "0", "--sasl-user", "test:testtest",
            *[arg for name, value in settings.items() for arg in ("--override", f"{name}={value}")]]


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("kafkajs-certs")
    make_certificates(directory)
    return directory


@pytest.fixture(scope="module")
def kafkajs_cluster(certs, tmp_path_factory):
    with running_broker(*_overrides(dict.fromkeys(LISTENERS, 0), certs), brokers=3,
                        data_dir=tmp_path_factory.mktemp("kafkajs-cluster")) as started:
        admin = AdminClient({"bootstrap.servers": started.bootstrap})
        # scripts/createScramCredentials.sh's user; Kafka takes one alteration per user and request.
        for mechanism, password in SCRAM_PASSWORDS.items():
            upsertion = UserScramCredentialUpsertion("testscram", ScramCredentialInfo(mechanism, 8192),
                                                     password.encode())
            assert admin.alter_user_scram_credentials([upsertion])["testscram"].result() is None
        yield started


def test_scram_user_altered_twice_in_one_request_is_refused_as_by_kafka(kafkajs_cluster):
    """createScramCredentials.sh sets both passwords in one kafka-configs call (ZooKeeper era);
    a KRaft controller refuses the same user twice in one AlterUserScramCredentials."""
    admin = AdminClient({"bootstrap.servers": kafkajs_cluster.bootstrap})
    both = [UserScramCredentialUpsertion("twice", ScramCredentialInfo(mechanism, 8192), password.encode())
            for mechanism, password in SCRAM_PASSWORDS.items()]
    with pytest.raises(KafkaException) as refused:
        admin.alter_user_scram_credentials(both)["twice"].result()
    assert refused.value.args[0].code() == ErrorCode.DUPLICATE_RESOURCE


KAFKAJS_SUITE_CHECKS = r"""
const { Kafka, logLevel } = require(process.argv[1]);
const { brokers, ca, topic } = JSON.parse(process.argv[2]);
const b64 = object => Buffer.from(JSON.stringify(object)).toString("base64url");
const unsecuredJwt = sub => {
  const now = Math.floor(Date.now() / 1000);
  return `${b64({ alg: "none" })}.${b64({ sub, iat: now, exp: now + 3600 })}.`;
};
const ssl = { servername: "localhost", rejectUnauthorized: false, ca: [ca] };
const client = (listener, sasl) =>
  new Kafka({ clientId: `suite-${listener}`, brokers: brokers[listener],
              ssl: listener === "PLAINTEXT_HOST" ? undefined : ssl,
              sasl, logLevel: logLevel.NOTHING, retry: { retries: 2 } });
const produce = async (kafka, messages, options = {}) => {
  const producer = kafka.producer(options);
  await producer.connect();
  try { return await producer.send({ topic, acks: -1, messages }); } finally { await producer.disconnect(); }
};
const outcome = promise => promise.then(() => "ok", error => `${error.name}: ${error.message}`);
(async () => {
  const result = { produce: {}, wrong: {} };
  const logins = {
    ssl: [ "SSL_HOST", undefined ],
    plain: [ "SASL_SSL_HOST", { mechanism: "plain", username: "test", password: "testtest" } ],
    "scram-sha-256": [ "SASL_SSL_HOST",
                       { mechanism: "scram-sha-256", username: "testscram", password: "testtestscram=256" } ],
    "scram-sha-512": [ "SASL_SSL_HOST",
                       { mechanism: "scram-sha-512", username: "testscram", password: "testtestscram=512" } ],
    oauthbearer: [ "SASL_SSL_HOST",
                   { mechanism: "oauthbearer", oauthBearerProvider: async () => ({ value: unsecuredJwt("test") }) } ],
  };
  for (const [name, [listener, sasl]] of Object.entries(logins)) {
    result.produce[name] = await outcome(produce(client(listener, sasl), [{ key: name, value: "over " + name }],
                                                 { idempotent: name === "plain", maxInFlightRequests: 1 }));
  }
  for (const mechanism of ["plain", "scram-sha-256", "scram-sha-512"]) {
    const producer = client("SASL_SSL_HOST", { mechanism, username: "wrong", password: "wrong" }).producer();
    result.wrong[mechanism] = await outcome(producer.connect());
  }

  const admin = client("PLAINTEXT_HOST").admin();
  await admin.connect();
  try {
    const assigned = `${topic}-assigned`;
    result.createdWithAssignment = await admin.createTopics({ waitForLeaders: true,
      topics: [{ topic: assigned, replicaAssignment: [{ partition: 0, replicas: [0, 1] }] }] });
    const { topics: [ described ] } = await admin.fetchTopicMetadata({ topics: [assigned] });
    result.assignedReplicas = described.partitions[0].replicas;

    const spread = `${topic}-spread`;
    await admin.createTopics({ waitForLeaders: true, topics: [{ topic: spread, numPartitions: 3 }] });
    const { topics: [ spreadMetadata ] } = await admin.fetchTopicMetadata({ topics: [spread] });
    result.spread = spreadMetadata.partitions.map(p => ({ leader: p.leader, replicas: p.replicas.length }));

    const records = `${topic}-records`;
    await admin.createTopics({ waitForLeaders: true, topics: [{ topic: records, numPartitions: 2 }] });
    const producer = client("PLAINTEXT_HOST").producer();
    await producer.connect();
    const messages = Array.from({ length: 20 }, (_, i) => ({ partition: i % 2, value: `value-${i}` }));
    await producer.send({ topic: records, acks: -1, messages });
    await producer.disconnect();
    await admin.fetchTopicMetadata({ topics: [records] });  // the admin's cluster now tracks the topic's leaders
    await admin.deleteTopicRecords({ topic: records, partitions: [{ partition: 0, offset: "7" }] });
    result.afterDelete = (await admin.fetchTopicOffsets(records))
      .map(({ partition, low, high }) => ({ partition, low, high }))
      .sort((a, b) => a.partition - b.partition);

    const { brokers: nodes } = await admin.describeCluster();
    const altered = await admin.alterConfigs({ resources: [
      { type: 2, name: records, configEntries: [{ name: "cleanup.policy", value: "compact" }] },
      { type: 4, name: String(nodes[1].nodeId), configEntries: [{ name: "cleanup.policy", value: "delete" }] },
    ] });
    result.nodes = nodes.map(node => node.nodeId).sort();
    result.altered = altered.resources
      .map(({ resourceType, resourceName, errorCode }) => ({ resourceType, resourceName, errorCode }));
  } finally {
    await admin.disconnect();
  }
  process.stdout.write(JSON.stringify(result));
})().catch(error => { console.error(error); process.exit(1); });
"""


def test_kafkajs_suite_checks_on_its_three_broker_cluster(kafkajs_cluster, certs):
    topic = f"kafkajs-suite-{uuid.uuid4().hex[:8]}"
    brokers = {name: kafkajs_cluster.listeners[name].split(",") for name in LISTENERS}
    assert [len(addresses) for addresses in brokers.values()] == [3, 3, 3]
    spec = {"brokers": brokers, "ca": (certs / "ca.pem").read_text(), "topic": topic}
    done = subprocess.run(["node", "-e", KAFKAJS_SUITE_CHECKS, str(KAFKAJS), json.dumps(spec)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["produce"] == dict.fromkeys(["ssl", "plain", "scram-sha-256", "scram-sha-512", "oauthbearer"], "ok")
    assert result["wrong"] == {
        "plain": "KafkaJSSASLAuthenticationError: SASL PLAIN authentication failed: "
                 "Authentication failed: Invalid username or password",
        "scram-sha-256": "KafkaJSSASLAuthenticationError: SASL SCRAM SHA256 authentication failed: "
                         f"{SCRAM_REFUSED}SCRAM-SHA-256",
        "scram-sha-512": "KafkaJSSASLAuthenticationError: SASL SCRAM SHA512 authentication failed: "
                         f"{SCRAM_REFUSED}SCRAM-SHA-512",
    }
    assert result["createdWithAssignment"] is True and result["assignedReplicas"] == [0, 1]
    assert sorted(p["leader"] for p in result["spread"]) == [0, 1, 2]
    assert {p["replicas"] for p in result["spread"]} == {2}  # default.replication.factor
    assert result["afterDelete"] == [{"partition": 0, "low": "7", "high": "10"},
                                     {"partition": 1, "low": "0", "high": "10"}]
    assert result["nodes"] == [0, 1, 2]
    assert result["altered"] == [
        {"resourceType": 2, "resourceName": f"{topic}-records", "errorCode": 0},
        {"resourceType": 4, "resourceName": "1", "errorCode": 0}]


def _free_port_block(count: int) -> int:
    """A first port of `count` consecutive ports nothing listens on, below the ephemeral range."""
    for base in range(21000, 32000, 97):
        probes = []
        try:
            for port in range(base, base + count):
                probe = socket.socket()
                probes.append(probe)
                probe.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise RuntimeError("no free block of ports")


def test_each_simulated_node_takes_the_next_block_of_listener_ports(certs, tmp_path):
    """kafkajs's layout: node 0 on 9092-9094, node 1 on 9095-9097, node 2 on 9098-9100."""
    base = _free_port_block(9)
    ports = {name: base + index for index, name in enumerate(LISTENERS)}
    with running_broker(*_overrides(ports, certs), brokers=3, data_dir=tmp_path) as started:
        assert started.listeners == {
            name: ",".join(f"127.0.0.1:{port + 3 * node}" for node in range(3)) for name, port in ports.items()}
