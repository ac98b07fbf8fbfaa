"""`kbroker serve --http-port`: GET /metrics parsed with prometheus_client's own parser, and the
HTTP server's handling of keep-alive, unknown paths and garbage."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError
from prometheus_client.parser import text_string_to_metric_families

from kbroker.testing import running_broker

RECORDS = 30


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with running_broker("--http-port", "0", data_dir=tmp_path_factory.mktemp("http")) as broker:
        assert broker.http and broker.http.startswith("http://127.0.0.1:")
        yield broker


def scrape(broker) -> dict[str, list]:
    with urllib.request.urlopen(broker.http + "/metrics", timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(samples, name: str, **labels) -> float:
    found = [s.value for s in samples if s.name == name and
             all(s.labels.get(k) == str(v) for k, v in labels.items())]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


def test_metrics_follow_traffic(served, topic_name):
    admin = KafkaAdminClient(bootstrap_servers=served.bootstrap)
    admin.create_topics([NewTopic(topic_name, 2, 1)])
    with pytest.raises(TopicAlreadyExistsError):
        admin.create_topics([NewTopic(topic_name, 2, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=served.bootstrap)
    for i in range(RECORDS):
        producer.send(topic_name, value=b"v" * 100, partition=i % 2)
    producer.flush()
    group = f"g-{topic_name}"
    consumer = KafkaConsumer(bootstrap_servers=served.bootstrap, group_id=group,
                             enable_auto_commit=False, auto_offset_reset="earliest")
    partitions = [TopicPartition(topic_name, 0), TopicPartition(topic_name, 1)]
    consumer.assign(partitions)
    fetched = 0
    while fetched < RECORDS:
        fetched += sum(len(batch) for batch in consumer.poll(timeout_ms=1000).values())
    consumer.commit({partitions[0]: OffsetAndMetadata(5, None, -1),  # partition 0 lags by 10
                     partitions[1]: OffsetAndMetadata(RECORDS // 2, None, -1)})

    metrics = scrape(served)  # producer and consumer still connected
    assert value(metrics["kafka_server_brokertopicmetrics_messagesin"],
                 "kafka_server_brokertopicmetrics_messagesin_total", topic=topic_name) == RECORDS
    bytes_in = value(metrics["kafka_server_brokertopicmetrics_bytesin"],
                     "kafka_server_brokertopicmetrics_bytesin_total", topic=topic_name)
    assert bytes_in > RECORDS * 100
    assert value(metrics["kafka_server_brokertopicmetrics_bytesout"],
                 "kafka_server_brokertopicmetrics_bytesout_total", topic=topic_name) >= bytes_in
    for partition in (0, 1):
        assert value(metrics["kafka_log_log_logendoffset"], "kafka_log_log_logendoffset",
                     topic=topic_name, partition=partition) == RECORDS // 2
        assert value(metrics["kafka_log_log_size"], "kafka_log_log_size",
                     topic=topic_name, partition=partition) > RECORDS // 2 * 100
    lag = metrics["kafka_consumergroup_lag"]
    assert value(lag, "kafka_consumergroup_lag", consumergroup=group, topic=topic_name,
                 partition=0) == RECORDS // 2 - 5
    assert value(lag, "kafka_consumergroup_lag", consumergroup=group, topic=topic_name,
                 partition=1) == 0

    requests = metrics["kafka_network_requestmetrics_requests"]
    produce_requests = sum(s.value for s in requests if s.labels["request"] == "Produce")
    assert produce_requests >= 1
    latency = metrics["kafka_network_requestmetrics_totaltimems"]
    assert value(latency, "kafka_network_requestmetrics_totaltimems_count",
                 request="Produce") == produce_requests
    assert value(latency, "kafka_network_requestmetrics_totaltimems_bucket", request="Produce",
                 le="+Inf") == produce_requests
    assert value(metrics["kafka_network_requestmetrics_errors"],
                 "kafka_network_requestmetrics_errors_total", request="CreateTopics",
                 error="TOPIC_ALREADY_EXISTS") >= 1

    connections = metrics["kafka_server_socket_server_metrics_connections"]
    assert value(connections, "kafka_server_socket_server_metrics_connections",
                 listener="PLAINTEXT", clientSoftwareName="kafka-python",
                 clientSoftwareVersion="3.0.12") >= 2
    assert value(metrics["kafka_server_socket_server_metrics_connection_count"],
                 "kafka_server_socket_server_metrics_connection_count", listener="PLAINTEXT") >= 3
    assert value(metrics["process_cpu_seconds"], "process_cpu_seconds_total") > 0
    assert value(metrics["process_resident_memory_bytes"], "process_resident_memory_bytes") > 1e6
    consumer.close()
    producer.close()


def test_keep_alive_not_found_and_head(served):
    host, port = served.http.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    for _ in range(2):  # two requests on one connection
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 200 and b"kafka_log_log_size" in response.read()
    connection.request("GET", "/no-such-page")
    response = connection.getresponse()
    assert response.status == 404
    response.read()
    connection.request("HEAD", "/metrics")
    response = connection.getresponse()
    assert response.status == 200 and int(response.headers["Content-Length"]) > 0
    assert response.read() == b""
    connection.request("POST", "/metrics", body=b"x")
    response = connection.getresponse()
    assert response.status == 405
    connection.close()


def test_garbage_gets_400_and_the_broker_keeps_serving(served):
    host, port = served.http.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"\x00\x01 nonsense\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 400 ")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 413 ")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(served.http + "/metrics?x", data=b"", timeout=30)
    assert refused.value.code == 405
    assert "kafka_log_log_size" in urllib.request.urlopen(served.http + "/metrics", timeout=30).read().decode()


def test_a_taken_http_port_is_a_clear_startup_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "kbroker", "serve", "--port", "0", "--http-port", str(port),
             "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert f"kbroker: cannot listen on 127.0.0.1:{port} (--http-port)" in result.stderr
    assert "Traceback" not in result.stderr


def test_pages_of_a_sasl_broker_log_in_as_its_configured_user(tmp_path):
    with running_broker("--http-port", "0", "--sasl-user", "alice:secret",
                        data_dir=tmp_path) as broker:
        metrics = scrape(broker)
        assert "kafka_log_log_logendoffset" in metrics  # read through an authenticated client
        with urllib.request.urlopen(broker.http + "/groups", timeout=30) as page:
            assert page.status == 200
