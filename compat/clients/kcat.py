"""kcat driver: each operation is a kcat command line (kcat has no admin API and no transactions).

kcat takes records as delimited text on stdin, so records are sent in runs that share what its
flags fix per invocation: the partition (-p), the headers (-H), whether there is a key (-K) and
whether an empty value means null (-Z).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time

from compat.agent import Unsupported, serve, spawn
from compat.security import from_env, librdkafka_settings
from compat.wire import Rec

KCAT = os.environ.get("KCAT", "kcat")
MESSAGE_DELIM, KEY_DELIM = b"\x1e", b"\x1f"
ASSIGNED = re.compile(r"rebalanced.*?: assigned: (.*)$")
PARTITION = re.compile(r"(\S+) \[(\d+)\]")


def version() -> tuple[str, str]:
    out = subprocess.run([KCAT, "-V"], capture_output=True, text=True, timeout=10).stdout
    kcat = re.search(r"kcat - .*?\n.*?\n.*?\n.*?Version ([\w.\-]+)", out, re.S) or re.search(r"Version ([\w.\-]+)", out)
    lib = re.search(r"librdkafka (?:version )?([\w.\-]+)", out)
    return (kcat.group(1) if kcat else "?"), (lib.group(1) if lib else "?")


def parse_record(line: str) -> Rec | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    headers = obj.get("headers") or []

    def encode(s):
        return None if s is None else s.encode()

    return Rec(key=encode(obj.get("key")), value=encode(obj.get("payload")),
               headers=tuple((headers[i], encode(headers[i + 1])) for i in range(0, len(headers), 2)),
               timestamp=obj.get("ts"), partition=obj.get("partition"), offset=obj.get("offset"))


class Running:
    """A long-running kcat consumer whose JSON records (stdout) and rebalances (stderr) we collect."""

    def __init__(self, command: list[str]):
        self.proc = spawn(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lock = threading.Lock()
        self.records: list[Rec] = []
        self.assigned: list = []
        self.ready = False
        self.stderr: list[str] = []
        threading.Thread(target=self._stdout, daemon=True).start()
        threading.Thread(target=self._stderr, daemon=True).start()

    def _stdout(self):
        for line in self.proc.stdout:
            record = parse_record(line.decode(errors="replace"))
            if record is not None:
                from dataclasses import replace
                with self.lock:
                    self.records.append(replace(record, arrived=time.time()))
                    self.ready = True

    def _stderr(self):
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").strip()
            self.stderr = (self.stderr + [line])[-20:]
            found = ASSIGNED.search(line)
            with self.lock:
                if found:
                    self.assigned = sorted((t, int(p)) for t, p in PARTITION.findall(found.group(1)))
                elif "revoked" in line:
                    self.assigned = []
                if "Reached end" in line:
                    self.ready = True

    def take(self) -> dict:
        with self.lock:
            records, self.records = self.records, []
            error = None
            if self.proc.poll() not in (None, 0):
                error = f"kcat exited {self.proc.returncode}: {' | '.join(self.stderr[-3:])}"
            return {"assigned": [list(tp) for tp in self.assigned], "records": [r.to_json() for r in records],
                    "error": error, "ready": self.ready}

    def stop(self) -> None:
        """SIGTERM: kcat closes its consumer cleanly (leaving the group, committing if auto-commit)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise RuntimeError("kcat did not exit on SIGTERM within 20 s") from None


class Driver:
    name = "kcat"

    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap
        self.security = librdkafka_settings(from_env())
        self.kcat_version, self.librdkafka = version()
        self.member: Running | None = None
        self.watch: Running | None = None

    def base(self, *args: str, **config) -> list[str]:
        command = [KCAT, "-b", self.bootstrap, "-X", "broker.address.family=v4",
                   "-X", f"client.id=compat-kcat-{self.kcat_version}", *args]
        for name, value in self.security.items():
            command += ["-X", f"{name}={value}"]
        for name, value in config.items():
            command += ["-X", f"{name.replace('_', '.')}={value}"]
        return command

    def run(self, command: list[str], stdin: bytes = b"", timeout: float = 30) -> str:
        done = subprocess.run(command, input=stdin, capture_output=True, timeout=timeout)
        errors = [line for line in done.stderr.decode(errors="replace").splitlines()
                  if "ERROR" in line or "fail" in line.lower()]
        if done.returncode != 0 or errors:
            raise RuntimeError(f"kcat exit {done.returncode}: {' | '.join(errors[-3:]) or done.stderr[-300:]}")
        return done.stdout.decode(errors="replace")

    def run_paced(self, command: list[str], bodies: list[bytes], pace_s: float, timeout: float) -> None:
        """One kcat producer fed a record every pace_s, so that each goes in a request of its own."""
        proc = spawn(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for body in bodies:
            proc.stdin.write(body)
            proc.stdin.flush()
            time.sleep(pace_s)
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise RuntimeError("kcat did not finish producing in time") from None
        if proc.returncode != 0:  # not every "% ERROR" line: a cluster change logs some it recovers from
            errors = [line for line in stderr.decode(errors="replace").splitlines() if "ERROR" in line]
            raise RuntimeError(f"kcat exit {proc.returncode}: {' | '.join(errors[-3:])}")

    def op_hello(self):
        return {"client": self.name, "version": self.kcat_version, "detail": f"librdkafka {self.librdkafka}",
                "features": ["idempotence", "repeated_headers"]
                + [f"compression:{c}" for c in ("gzip", "snappy", "lz4", "zstd")]}

    def op_metadata(self):
        meta = json.loads(self.run(self.base("-L", "-J")))
        return {"brokers": [[b["name"].rsplit(":", 1)[0], int(b["name"].rsplit(":", 1)[1])] for b in meta["brokers"]],
                "topics": {t["topic"]: len(t["partitions"]) for t in meta["topics"]}}

    def op_produce(self, topic, records, options=None):
        options = options or {}
        config = {"message.max.bytes": options.get("max_request_size", 1000000)}
        if options.get("idempotent"):
            config["enable.idempotence"] = "true"
        if "timeout_ms" in options:  # give up sooner, and on a missing topic well before that
            config["message.timeout.ms"] = options["timeout_ms"]
            config["topic.metadata.propagation.max.ms"] = options["timeout_ms"] // 3
        runs: list[tuple[tuple, list[Rec]]] = []
        for r in (Rec.from_json(item) for item in records):
            if r.timestamp is not None:
                raise Unsupported("kcat cannot set a record timestamp")
            shape = (r.partition, r.headers, r.key is not None, r.value is None)
            if runs and runs[-1][0] == shape:
                runs[-1][1].append(r)
            else:
                runs.append((shape, [r]))
        for (partition, headers, keyed, null_value), run in runs:
            args = ["-P", "-t", topic, "-D", MESSAGE_DELIM.decode()]
            if options.get("compression"):
                args += ["-z", options["compression"]]
            if partition is not None:
                args += ["-p", str(partition)]
            if keyed:
                args += ["-K", KEY_DELIM.decode()]
            if null_value:
                args += ["-Z"]
            for name, value in headers:
                args += ["-H", f"{name}={value.decode()}"]
            bodies = [(r.key + KEY_DELIM if keyed else b"") + (r.value or b"") + MESSAGE_DELIM for r in run]
            command = self.base(*args, **{k: str(v) for k, v in config.items()})
            timeout = options.get("timeout_ms", 30000) / 1000 + 10
            if options.get("pace_ms"):
                self.run_paced(command, bodies, options["pace_ms"] / 1000, timeout)
            else:
                self.run(command, b"".join(bodies), timeout=timeout)
        return [None] * len(records)

    def consumer_args(self, topic, partition, offset, options) -> list[str]:
        start = {"earliest": "beginning", "latest": "end"}.get(offset, str(offset))
        return self.base("-C", "-J", "-u", "-t", topic, "-p", str(partition), "-o", start,
                         **{"auto.offset.reset": options.get("reset", "earliest"),
                            "isolation.level": options.get("isolation", "read_uncommitted"),
                            "fetch.wait.max.ms": options.get("fetch_max_wait_ms", 500),
                            "fetch.message.max.bytes": 8 * 1024 * 1024})

    def op_consume(self, topic, partition, offset, count, timeout_ms=20000, options=None):
        command = self.consumer_args(topic, partition, offset, options or {}) + ["-c", str(count)]
        try:
            out = subprocess.run(command, capture_output=True, timeout=timeout_ms / 1000).stdout
        except subprocess.TimeoutExpired as timed_out:
            out = timed_out.stdout or b""
        records = [parse_record(line) for line in out.decode(errors="replace").splitlines()]
        return [r.to_json() for r in records if r is not None][:count]

    def op_list_offsets(self, topic, partition, spec):
        timestamp = {"earliest": -2, "latest": -1}.get(spec, spec)
        out = self.run(self.base("-Q", "-J", "-t", f"{topic}:{partition}:{timestamp}"))
        entry = json.loads(out).get(topic, {}).get(str(partition))  # {topic: {"<p>": {partition, offset}}}
        if not entry or entry.get("error"):
            raise RuntimeError(f"no offset for {topic}:{partition}: {out[:200]}")
        return None if entry["offset"] < 0 else entry["offset"]

    def op_watch_start(self, topic, partition, offset, options=None):
        self.watch = Running(self.consumer_args(topic, partition, offset, options or {}))

    def op_watch_state(self):
        return self.watch.take()

    def op_member_start(self, group, topics, options=None):
        options = options or {}
        config = {"auto.offset.reset": options.get("reset", "earliest"),
                  "enable.auto.commit": str(options.get("auto_commit", False)).lower(),
                  "session.timeout.ms": options.get("session_timeout_ms", 10000), "heartbeat.interval.ms": 1000,
                  "fetch.message.max.bytes": 8 * 1024 * 1024}
        if options.get("assignor") == "roundrobin":
            config["partition.assignment.strategy"] = "roundrobin"
        self.member = Running(self.base("-G", group, "-J", "-u", *topics, **config))

    def op_member_state(self):
        return self.member.take()

    def op_member_close(self):
        member, self.member = self.member, None
        member.stop()


if __name__ == "__main__":
    serve(Driver)
