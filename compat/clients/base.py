"""What the Python drivers share: consumers owned by one background thread, and the member/watch ops.

Kafka consumers are not thread-safe and must keep polling to stay in their group, so each long-lived
consumer (a group member, a latency watcher) lives in its own thread that polls in a loop; the agent's
main thread hands it work (a commit) through a queue and reads what it collected under a lock.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import replace

from compat.agent import Unsupported, describe
from compat.wire import Rec, decode_records, encode_records

MAX_FETCH = 8 * 1024 * 1024  # fetch limits above the 1 MiB values some scenarios send


class Poller:
    """One consumer in its own thread. `consumer` has poll(timeout_s) -> [Rec], assigned(), close()."""

    def __init__(self, make_consumer):
        self._lock = threading.Lock()
        self._records: list[Rec] = []
        self._assigned: list = []
        self._tasks: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self.ready = False
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, args=(make_consumer,), daemon=True)
        self._thread.start()

    def _run(self, make_consumer) -> None:
        consumer = None
        try:
            consumer = make_consumer()
            while not self._stop.is_set():
                records = consumer.poll(0.1)
                now = time.time()
                with self._lock:
                    self._records.extend(replace(r, arrived=now) for r in records)
                    self._assigned = sorted(consumer.assigned())
                    self.ready = True
                while not self._tasks.empty():
                    work, answer = self._tasks.get()
                    try:
                        answer.put((True, work(consumer)))
                    except Exception as exc:  # noqa: BLE001
                        answer.put((False, exc))
        except Exception as exc:  # noqa: BLE001
            self.error = describe(exc)
        finally:
            if consumer is not None:
                try:
                    consumer.close()
                except Exception as exc:  # noqa: BLE001
                    self.error = self.error or describe(exc)

    def submit(self, work, timeout: float = 30.0):
        """Run work(consumer) on the polling thread."""
        answer: queue.Queue = queue.Queue()
        self._tasks.put((work, answer))
        ok, value = answer.get(timeout=timeout)
        if not ok:
            raise value
        return value

    def take(self) -> dict:
        with self._lock:
            records, self._records = self._records, []
            return {"assigned": [list(tp) for tp in self._assigned], "records": encode_records(records),
                    "error": self.error, "ready": self.ready}

    def stop(self, timeout: float = 20.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        if self.error:
            raise RuntimeError(self.error)


class PyDriver:
    """Base of the Python drivers: generic member/watch/consume ops on top of two hooks.

    make_member(group, topics, options) and make_assigned(topic, partition, offset, options) return
    consumers with poll(timeout_s) -> [Rec], assigned() -> [(topic, partition)], close(), and for
    members commit(offsets).
    """

    name = ""

    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap
        self.member: Poller | None = None
        self.watch: Poller | None = None

    def client_id(self) -> str:
        return f"compat-{self.name}-{self.op_hello()['version']}"

    # --- hooks -------------------------------------------------------------------------------
    def make_member(self, group: str, topics: list[str], options: dict):
        raise Unsupported(f"{self.name} has no group consumer")

    def make_assigned(self, topic: str, partition: int, offset, options: dict):
        raise Unsupported(f"{self.name} has no assign-mode consumer")

    # --- generic ops ---------------------------------------------------------------------------
    def op_consume(self, topic, partition, offset, count, timeout_ms=20000, options=None):
        consumer = self.make_assigned(topic, partition, offset, options or {})
        records: list[Rec] = []
        deadline = time.monotonic() + timeout_ms / 1000
        try:
            while len(records) < count and time.monotonic() < deadline:
                records.extend(consumer.poll(0.2))
        finally:
            consumer.close()
        return encode_records(records[:count])

    def op_member_start(self, group, topics, options=None):
        self.member = Poller(lambda: self.make_member(group, topics, options or {}))

    def op_member_state(self):
        return self.member.take()

    def op_member_commit(self, offsets):
        self.member.submit(lambda consumer: consumer.commit([tuple(o) for o in offsets]))

    def op_member_close(self):
        member, self.member = self.member, None
        member.stop()

    def op_watch_start(self, topic, partition, offset, options=None):
        self.watch = Poller(lambda: self.make_assigned(topic, partition, offset, options or {}))

    def op_watch_state(self):
        return self.watch.take()


def producer_settings(common: dict, options: dict, extra: dict) -> dict:
    """Producer settings under kafka-python's names, which aiokafka shares."""
    config = {**common, "acks": "all", "linger_ms": 5, "max_request_size": options.get("max_request_size", 1048576),
              "compression_type": options.get("compression"), **extra}
    if options.get("idempotent"):
        config["enable_idempotence"] = True
    return config


def records_arg(records: list[dict]) -> list[Rec]:
    return decode_records(records)
