"""GET /metrics: the Prometheus text format (version 0.0.4).

Names follow Kafka's JMX names the way Prometheus' JMX exporter spells them
(kafka.server:type=BrokerTopicMetrics,name=BytesInPerSec,topic=T ->
kafka_server_brokertopicmetrics_bytesin_total{topic="T"}), so dashboards made for Kafka fit;
consumer lag uses kafka_exporter's kafka_consumergroup_lag. Counters come from the broker's
Metrics object; offsets, sizes and lag are read when the scrape comes, through the Kafka
protocol like any client would.
"""

from __future__ import annotations

import math
import os
import resource

from kbroker.client import ClientError, admin
from kbroker.metrics import LATENCY_BUCKETS_MS
from kbroker.protocol.errors import ErrorCode, KafkaError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in labels.items()) + "}"


class Page:
    """Metric families in the text format: each family's HELP and TYPE, then its samples."""

    def __init__(self):
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        self.lines += [f"{name}{suffix}{_labels(labels)} {_number(value)}"
                       for suffix, labels, value in samples]

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _number(value) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(value)


def _error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return str(code)


def _request_families(page: Page, metrics) -> None:
    page.family("kafka_network_requestmetrics_requests_total", "counter",
                "Requests handled, by API and version (RequestsPerSec).",
                [("", {"request": api, "version": version}, count)
                 for (api, version), count in sorted(metrics.requests.items())])
    page.family("kafka_network_requestmetrics_errors_total", "counter",
                "Error codes in responses, by API and error (ErrorsPerSec; NONE not counted).",
                [("", {"request": api, "error": _error_name(code)}, count)
                 for (api, code), count in sorted(metrics.errors.items())])
    samples = []
    for api, histogram in sorted(metrics.latency.items()):
        cumulative = 0
        for bound, count in zip((*LATENCY_BUCKETS_MS, float("inf")), histogram.buckets):
            cumulative += count
            samples.append(("_bucket", {"request": api, "le": _number(float(bound))}, cumulative))
        samples.append(("_sum", {"request": api}, histogram.sum_ms))
        samples.append(("_count", {"request": api}, histogram.count))
    page.family("kafka_network_requestmetrics_totaltimems", "histogram",
                "Time from a request's arrival to its response sent, in ms (TotalTimeMs).", samples)


def _topic_families(page: Page, metrics) -> None:
    for name, counts, help_text in (
            ("bytesin", metrics.bytes_in, "Bytes of record batches appended (BytesInPerSec)."),
            ("messagesin", metrics.messages_in, "Records appended (MessagesInPerSec)."),
            ("bytesout", metrics.bytes_out, "Bytes of records sent to fetchers (BytesOutPerSec).")):
        page.family(f"kafka_server_brokertopicmetrics_{name}_total", "counter", help_text,
                    [("", {"topic": topic}, value) for topic, value in sorted(counts.items())])


async def _log_families(page: Page, cluster) -> dict[tuple[str, int], int]:
    """Log start and end offsets and sizes per partition; returns the end offsets."""
    metadata = await cluster.metadata(None)
    partitions = [(t.name, p.partition_index) for t in metadata.topics if not t.error_code
                  for p in t.partitions]
    ends = await admin.list_offsets_of(cluster, dict.fromkeys(partitions, admin.LATEST))
    starts = await admin.list_offsets_of(cluster, dict.fromkeys(partitions, admin.EARLIEST))
    sizes = await admin.log_sizes(cluster)
    for name, values, help_text in (
            ("logendoffset", ends, "The offset the next record appended will get."),
            ("logstartoffset", starts, "The first offset still in the log."),
            ("size", sizes, "Bytes of the partition's log on disk.")):
        page.family(f"kafka_log_log_{name}", "gauge", help_text,
                    [("", {"topic": t, "partition": p}, v) for (t, p), v in sorted(values.items())])
    return ends


async def _lag_family(page: Page, cluster, ends: dict[tuple[str, int], int]) -> None:
    committed = []
    for group in await admin.list_groups(cluster):
        offsets = await admin.committed_offsets(cluster, group["group"])
        committed += [(group["group"], t, p, o) for (t, p), o in sorted(offsets.items())]
    page.family("kafka_consumergroup_current_offset", "gauge", "A group's committed offset.",
                [("", {"consumergroup": g, "topic": t, "partition": p}, o)
                 for g, t, p, o in committed])
    page.family("kafka_consumergroup_lag", "gauge",
                "Records between a group's committed offset and the log end.",
                [("", {"consumergroup": g, "topic": t, "partition": p}, max(ends[(t, p)] - o, 0))
                 for g, t, p, o in committed if (t, p) in ends])


def _connection_families(page: Page, clients: list[dict]) -> None:
    by_listener: dict[str, int] = {}
    by_software: dict[tuple[str, str, str], int] = {}
    for client in clients:
        by_listener[client["listener"]] = by_listener.get(client["listener"], 0) + 1
        key = (client["listener"], client["software_name"], client["software_version"])
        by_software[key] = by_software.get(key, 0) + 1
    page.family("kafka_server_socket_server_metrics_connection_count", "gauge",
                "Open client connections, by listener.",
                [("", {"listener": listener}, count) for listener, count in sorted(by_listener.items())])
    page.family("kafka_server_socket_server_metrics_connections", "gauge",
                "Open client connections, by listener and client software (KIP-511).",
                [("", {"listener": listener, "clientSoftwareName": name,
                       "clientSoftwareVersion": version}, count)
                 for (listener, name, version), count in sorted(by_software.items())])


def _process_families(page: Page, started: float) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    page.family("process_cpu_seconds_total", "counter", "User and system CPU time spent.",
                [("", {}, usage.ru_utime + usage.ru_stime)])
    try:
        with open("/proc/self/statm") as statm:
            rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the peak is what is known
        rss = usage.ru_maxrss * 1024
    page.family("process_resident_memory_bytes", "gauge", "Resident memory size.", [("", {}, rss)])
    page.family("process_start_time_seconds", "gauge", "Start time since the epoch.",
                [("", {}, started)])
    if os.path.isdir("/proc/self/fd"):
        page.family("process_open_fds", "gauge", "Open file descriptors.",
                    [("", {}, len(os.listdir("/proc/self/fd")))])


async def render(metrics, clients: list[dict], open_cluster) -> str:
    """The whole page. `clients` describes the open connections (see app.HttpApp.clients);
    `open_cluster()` connects to the broker for offsets, sizes and lag. When that fails the
    page still has every other family, and a comment saying why those are missing."""
    page = Page()
    _request_families(page, metrics)
    _topic_families(page, metrics)
    try:
        async with open_cluster() as cluster:
            ends = await _log_families(page, cluster)
            await _lag_family(page, cluster, ends)
    except (KafkaError, ClientError) as exc:
        page.lines.append(f"# kbroker: log and consumer group metrics unavailable: {exc}")
    _connection_families(page, clients)
    _process_families(page, metrics.started)
    return page.text()
