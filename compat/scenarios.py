"""The scenarios, each written once for every client: calls to agent operations and exact checks.

A scenario gets a Ctx (its client's agent, a setup helper, unique topic/group names, the brokers) and
either returns (PASS), raises Fail (FAIL with a short reason) or Unsupported (N/A). `needs` lists
client features; a client without one is N/A before anything runs.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Callable

from compat.agent import ClientError, Unsupported
from compat.wire import Rec, decode_records, encode_records


class Fail(Exception):
    """The scenario's check failed; the message is the short reason shown in the matrix."""


@dataclass
class Scenario:
    name: str
    run: Callable
    summary: str
    needs: tuple[str, ...] = ()
    timeout: float = 60.0
    strict_broker: bool = False  # needs a broker started with --no-auto-create-topics
    broker: tuple[str, ...] | None = None  # `kbroker serve` arguments of a broker of the cell's own
    since: str = ""  # the Kafka release that brought what the scenario needs (for --as-version)


SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str, summary: str, **kwargs):
    def register(fn):
        SCENARIOS[name] = Scenario(name, fn, summary, **kwargs)
        return fn
    return register


# --- checks ----------------------------------------------------------------------------------

def expect(condition: bool, reason: str) -> None:
    if not condition:
        raise Fail(reason)


def expect_records(got: list[Rec], want: list[Rec], what: str) -> None:
    """Exact comparison of every field a producer chose, in order."""
    for index, (g, w) in enumerate(zip(got, want)):
        if g.content() != w.content():
            raise Fail(f"{what}: record #{index} is {g.short()}, expected {w.short()}")
    expect(len(got) == len(want), f"{what}: {len(got)} records, expected {len(want)}")


def expect_error(call: Callable, pattern: str, what: str, within: float = 30.0) -> str:
    """The client must report an error matching pattern (its documented error), and not hang."""
    started = time.monotonic()
    try:
        call()
    except ClientError as exc:
        elapsed = time.monotonic() - started
        expect(re.search(pattern, str(exc), re.I) is not None, f"{what}: unexpected error {str(exc)[:160]}")
        expect(elapsed <= within, f"{what}: error came after {elapsed:.0f}s (limit {within:.0f}s)")
        return str(exc)
    raise Fail(f"{what}: no error")


def wait_until(probe: Callable[[], bool], timeout: float, what: Callable[[], str] | str, step: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise Fail(what() if callable(what) else what)
        time.sleep(step)


# --- context ---------------------------------------------------------------------------------

@dataclass
class Ctx:
    """What a scenario works with; agents are started on first use and stopped by the cell."""

    client: str
    features: set
    start_agent: Callable  # (role, client_or_None, bootstrap_or_None) -> Agent
    bootstrap: str
    strict_bootstrap: str | None
    prefix: str
    partner: str
    broker: object = None  # the cell's own BrokerProcess, for scenarios that have one
    notes: list = field(default_factory=list)
    started_ms: int = field(default_factory=lambda: now_ms())
    _main: object = None
    _helper: object = None

    @property
    def main(self):
        if self._main is None:
            self._main = self.start_agent("main", None, None)
        return self._main

    @property
    def helper(self):
        """Sets up topics and data: the client itself when it has an admin API, else the partner."""
        if "admin" in self.features:
            return self.main
        if self._helper is None:
            self._helper = self.start_agent("helper", self.partner, None)
        return self._helper

    def name(self, suffix: str) -> str:
        return f"{self.prefix}-{suffix}"

    def create_topic(self, name: str, partitions: int, config: dict | None = None, via=None, replicas: int = 1) -> str:
        (via or self.helper).call("create_topics", topics=[{"name": name, "partitions": partitions,
                                                            "config": config or {}, "replicas": replicas}])
        return name

    def produce(self, topic: str, records: list[Rec], via=None, timeout: float = 60, **options) -> list:
        return (via or self.main).call("produce", timeout=timeout, topic=topic, records=encode_records(records),
                                       options=options)

    def consume(self, topic: str, partition: int, offset, count: int, via=None, timeout_ms: int = 20000,
                **options) -> list[Rec]:
        return decode_records((via or self.main).call(
            "consume", timeout=timeout_ms / 1000 + 30, topic=topic, partition=partition, offset=offset,
            count=count, timeout_ms=timeout_ms, options=options))

    def producible(self, records: list[Rec]) -> list[Rec]:
        """Records as this client can produce them: kcat chooses no timestamps; kafkajs 1.x sends
        one header per key."""
        if "timestamps" not in self.features:
            records = [replace(r, timestamp=None) for r in records]
        if "repeated_headers" not in self.features:
            records = [replace(r, headers=first_per_key(r.headers)) for r in records]
        return records


def first_per_key(headers: tuple) -> tuple:
    seen: set = set()
    return tuple(h for h in headers if not (h[0] in seen or seen.add(h[0])))


def now_ms() -> int:
    return int(time.time() * 1000)


def texts(prefix: str, count: int, partition: int | None = None) -> list[Rec]:
    return [Rec(key=f"{prefix}-k{i}".encode(), value=f"{prefix}-v{i}".encode(), partition=partition)
            for i in range(count)]


def expect_stored(ctx: Ctx, topic: str, partition: int, sent: list[Rec], start: int = 0, what: str = "",
                  **options) -> None:
    """Consume `sent` back from `start` and compare exactly, in order."""
    got = ctx.consume(topic, partition, start, len(sent), **options)
    want = [replace(r, partition=partition, offset=start + i) for i, r in enumerate(sent)]
    expect_records([unchosen_timestamp(ctx, g, w) for g, w in zip(got, want)] + got[len(want):], want,
                   what or f"partition {partition}")


def unchosen_timestamp(ctx: Ctx, got: Rec, want: Rec) -> Rec:
    """A timestamp the producer did not choose is its create time: it must be from this scenario."""
    if want.timestamp is not None:
        return got
    expect(got.timestamp is not None and ctx.started_ms - 5000 <= got.timestamp <= now_ms() + 5000,
           f"offset {got.offset}: timestamp {got.timestamp} is not the time it was produced")
    return replace(got, timestamp=None)


# --- metadata and admin ----------------------------------------------------------------------

@scenario("metadata", "the broker's advertised address is the one dialled; topic partition counts")
def metadata(ctx: Ctx):
    topic = ctx.create_topic(ctx.name("md"), 3)
    result = ctx.main.call("metadata")
    host, port = ctx.bootstrap.rsplit(":", 1)
    expect(result["brokers"] == [[host, int(port)]], f"brokers {result['brokers']}, expected [[{host}, {port}]]")
    expect(result["topics"].get(topic) == 3, f"{topic} has {result['topics'].get(topic)} partitions, expected 3")


@scenario("admin_topics", "create (with config), describe, alter config, create again, delete",
          needs=("admin",))
def admin_topics(ctx: Ctx):
    first, second = ctx.name("a1"), ctx.name("a2")
    ctx.main.call("create_topics", topics=[
        {"name": first, "partitions": 3, "config": {"retention.ms": "86400000", "cleanup.policy": "delete"}},
        {"name": second, "partitions": 1, "config": {}}])
    topics = ctx.main.call("metadata")["topics"]
    expect((topics.get(first), topics.get(second)) == (3, 1),
           f"partitions after create {topics.get(first)}, {topics.get(second)}, expected 3, 1")
    configs = ctx.main.call("describe_configs", topic=first, keys=["retention.ms", "cleanup.policy"])
    expect(configs == {"retention.ms": "86400000", "cleanup.policy": "delete"}, f"describe gave {configs}")
    ctx.main.call("alter_configs", topic=first, config={"retention.ms": "3600000"})
    configs = ctx.main.call("describe_configs", topic=first, keys=["retention.ms"])
    expect(configs == {"retention.ms": "3600000"}, f"after alter, describe gave {configs}")
    expect_error(lambda: ctx.main.call("create_topics", topics=[{"name": first, "partitions": 1, "config": {}}]),
                 r"already.?exists", "creating an existing topic")
    ctx.main.call("create_partitions", topic=second, count=3)
    wait_until(lambda: ctx.main.call("metadata")["topics"].get(second) == 3, 10,
               lambda: f"{second} has {ctx.main.call('metadata')['topics'].get(second)} partitions after growing to 3")
    ctx.main.call("delete_topics", topics=[first, second])
    wait_until(lambda: not {first, second} & set(ctx.main.call("metadata")["topics"]), 10,
               "deleted topics still listed after 10 s")


# --- produce and consume ---------------------------------------------------------------------

MIB = 1024 * 1024


def varied_records(base_ts: int) -> dict[int, list[Rec]]:
    """Per partition: keys, no key, headers (repeated, empty), null and empty values, one 1 MiB value."""
    out: dict[int, list[Rec]] = {}
    for p in range(3):
        ts = base_ts + p * 1000
        out[p] = [
            Rec(key=f"key-{p}-0".encode(), value=f"value-{p}-0".encode(), timestamp=ts,
                headers=(("trace", f"t-{p}".encode()), ("trace", b"second"), ("empty", b""))),
            Rec(key=None, value=f"no key {p}".encode(), timestamp=ts + 1),
            Rec(key=f"tombstone-{p}".encode(), value=None, timestamp=ts + 2),
            Rec(key=f"empty-{p}".encode(), value=b"", timestamp=ts + 3),
            Rec(key=f"ключ-{p}".encode(), value=f"ünïcødé ✓ {p}".encode(), timestamp=ts + 4,
                headers=(("ħeader", "välue".encode()),)),
        ]
        if p == 1:
            pattern = b"0123456789abcdef" * (MIB // 16)
            out[p].append(Rec(key=b"big", value=pattern, timestamp=ts + 5))
        out[p].append(Rec(key=f"last-{p}".encode(), value=f"last-{p}".encode(), timestamp=ts + 6))
    return out


@scenario("produce_consume", "keys, headers, timestamps, null/empty/1 MiB values on 3 partitions, exact order")
def produce_consume(ctx: Ctx):
    topic = ctx.create_topic(ctx.name("pc"), 3, {"max.message.bytes": str(4 * MIB)})
    per_partition = varied_records(now_ms() - 60_000)
    records = [replace(r, partition=p) for p, rs in per_partition.items() for r in ctx.producible(rs)]
    offsets = ctx.produce(topic, records, max_request_size=4 * MIB)
    for p in range(3):
        chosen = [o for r, o in zip(records, offsets) if r.partition == p and o is not None]
        expect(chosen in ([], list(range(len(per_partition[p])))), f"produce offsets on p{p}: {chosen}")
        expect_stored(ctx, topic, p, [replace(r, partition=None) for r in records if r.partition == p],
                      what=f"partition {p}")


def compression_scenario(codec: str):
    def run(ctx: Ctx):
        topic = ctx.create_topic(ctx.name(codec), 1)
        records = [Rec(key=f"k{i}".encode(), value=(f"{codec} record {i} " * 40).encode(), partition=0,
                       headers=(("n", str(i).encode()),)) for i in range(200)]
        ctx.produce(topic, records, compression=codec)
        expect_stored(ctx, topic, 0, [replace(r, partition=None) for r in records], what=f"{codec} records")

    scenario(f"compression_{codec}", f"{codec}-compressed batches round-trip exactly",
             needs=(f"compression:{codec}",))(run)


for _codec in ("gzip", "snappy", "lz4", "zstd"):
    compression_scenario(_codec)


@scenario("idempotent_producer", "idempotent producer: 3 sends on 2 partitions, no loss, no duplicates",
          needs=("idempotence",))
def idempotent_producer(ctx: Ctx):
    topic = ctx.create_topic(ctx.name("idem"), 2)
    sent = {0: [], 1: []}
    for round_ in range(3):
        records = [Rec(key=f"r{round_}-{i}".encode(), value=f"idempotent {round_}.{i}".encode(), partition=i % 2)
                   for i in range(10)]
        ctx.produce(topic, records, idempotent=True)
        for r in records:
            sent[r.partition].append(replace(r, partition=None))
    for p, records in sent.items():
        expect_stored(ctx, topic, p, records, what=f"partition {p}")


# --- offsets -----------------------------------------------------------------------------------

@scenario("list_offsets", "earliest, latest (high watermark) and offsets by timestamp")
def list_offsets(ctx: Ctx):
    topic = ctx.create_topic(ctx.name("lo"), 1)
    base = (now_ms() - 100_000) // 1000 * 1000
    records = [Rec(value=f"at {i}".encode(), timestamp=base + i * 1000, partition=0) for i in range(10)]
    ctx.produce(topic, records, via=ctx.main if "timestamps" in ctx.features else ctx.helper)

    def offset(spec):
        return ctx.main.call("list_offsets", topic=topic, partition=0, spec=spec)

    for spec, want in (("earliest", (0,)), ("latest", (10,)), (base, (0,)), (base + 3500, (4,)),
                       (base + 9000, (9,)), (base + 60_000, (None, 10))):
        got = offset(spec)
        expect(got in want, f"offset for {spec if isinstance(spec, str) else f'base+{spec - base}ms'}: "
                            f"{got}, expected {' or '.join(map(str, want))}")


@scenario("seek_and_reset", "seek to an offset; out-of-range offsets reset to earliest and to latest")
def seek_and_reset(ctx: Ctx):
    topic = ctx.create_topic(ctx.name("seek"), 1)
    records = texts("seek", 10, partition=0)
    ctx.produce(topic, records)
    expect_stored(ctx, topic, 0, [replace(r, partition=None) for r in records[5:8]], start=5, what="seek to 5")
    got = ctx.consume(topic, 0, 1000, 2, reset="earliest")
    expect([r.offset for r in got] == [0, 1], f"offset 1000 with reset=earliest gave offsets {[r.offset for r in got]}")
    ctx.main.call("watch_start", topic=topic, partition=0, offset=1000, options={"reset": "latest"})
    seen: list[Rec] = []
    produced = []
    for attempt in range(10):
        produced += ctx.produce(topic, [Rec(value=f"after reset {attempt}".encode(), partition=0)], via=ctx.helper)
        deadline = time.monotonic() + 1.0
        while not seen and time.monotonic() < deadline:
            seen = decode_records(ctx.main.call("watch_state")["records"])
            time.sleep(0.1)
        if seen:
            break
    expect(bool(seen), "offset 1000 with reset=latest: nothing delivered after 10 new records")
    expect(seen[0].offset >= 10, f"offset 1000 with reset=latest delivered offset {seen[0].offset} (before the end)")
    expect(seen[0].value.startswith(b"after reset"), f"reset=latest delivered {seen[0].short()}")


@scenario("long_poll_wakeup", "a consumer waiting in Fetch (max wait 5 s) gets a new record within 500 ms")
def long_poll_wakeup(ctx: Ctx):
    """A broker that answers a waiting Fetch only at its max wait delivers after 2.5 s on average:
    the median of 5 rounds under 500 ms tells the two apart and tolerates one slow round on a busy
    machine."""
    topic = ctx.create_topic(ctx.name("lp"), 1)
    ctx.produce(topic, [Rec(value=b"warm-up", partition=0)], via=ctx.helper)
    ctx.main.call("watch_start", topic=topic, partition=0, offset="latest", options={"fetch_max_wait_ms": 5000})
    wait_until(lambda: ctx.main.call("watch_state")["ready"], 30, "consumer never started fetching")
    time.sleep(1.0)
    latencies = []
    for round_ in range(5):
        ctx.produce(topic, [Rec(value=f"ping {round_}".encode(), partition=0)], via=ctx.helper)
        acked = time.time()
        got: list[Rec] = []
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            got = decode_records(ctx.main.call("watch_state")["records"])
            time.sleep(0.01)
        expect([r.value for r in got] == [f"ping {round_}".encode()],
               f"round {round_}: got {[r.short() for r in got]} within 10 s")
        latencies.append(max(0.0, got[0].arrived - acked) * 1000)
        time.sleep(0.7)  # let the consumer settle into its next long poll
    ctx.notes.append(f"latencies ms {[round(x) for x in latencies]}")
    median = sorted(latencies)[len(latencies) // 2]
    expect(median <= 500, f"median delivery {median:.0f} ms after the produce was acknowledged "
                          f"(rounds: {[round(x) for x in latencies]})")


# --- consumer groups -------------------------------------------------------------------------

class Member:
    """One group member in its own agent process (so it can be killed like a crashed consumer)."""

    def __init__(self, ctx: Ctx, label: str, group: str, topics: list[str], client: str | None = None, **options):
        self.label = label
        self.agent = ctx.start_agent(label, client, None)
        self.agent.call("member_start", group=group, topics=topics, options=options)
        self.assigned: set = set()
        self.records: list[Rec] = []

    def refresh(self) -> "Member":
        state = self.agent.call("member_state")
        if state["error"]:
            raise Fail(f"member {self.label}: {state['error'][:160]}")
        self.assigned = {tuple(tp) for tp in state["assigned"]}
        self.records += decode_records(state["records"])
        return self

    def close(self) -> None:
        self.agent.call("member_close", timeout=40)

    def crash(self) -> None:
        self.agent.crash()


def wait_balanced(members: list[Member], topic: str, partitions: int, timeout: float, when: str) -> None:
    """Every member owns something, nobody shares, and together they own every partition."""
    every = {(topic, p) for p in range(partitions)}

    def balanced() -> bool:
        owned = [m.refresh().assigned for m in members]
        return all(owned) and sum(map(len, owned)) == len(every) and set().union(*owned) == every

    wait_until(balanced, timeout, lambda: f"{when}: assignments " + ", ".join(
        f"{m.label}={sorted(p for _, p in m.assigned)}" for m in members) + f" after {timeout:.0f} s", step=0.3)


def wait_settled(members: list[Member], topic: str, partitions: int, timeout: float, when: str,
                 hold: float = 2.0) -> list[set]:
    """Balanced, with the same assignments for `hold` seconds: a group can pass through a balanced
    state on its way to its target (KIP-848 reconciles partition by partition; kafkajs restarts
    a crashed consumer while its last assignment still looks whole)."""
    deadline = time.monotonic() + timeout
    while True:
        wait_balanced(members, topic, partitions, max(1.0, deadline - time.monotonic()), when)
        settled = [m.assigned for m in members]
        time.sleep(hold)
        if [m.refresh().assigned for m in members] == settled:
            return settled
        expect(time.monotonic() < deadline, f"{when}: the assignments kept changing for {timeout:.0f} s")


def expect_each_gets_its_own(ctx: Ctx, members: list[Member], topic: str, partitions: int, round_: int) -> None:
    """Once the assignments settled, new records reach exactly the member that owns their
    partition, each exactly once.

    Records of earlier rounds may come again (a new owner re-reads what nobody committed): only
    this round's records are counted. A member may own a record's partition when the round starts
    or when it ends: on a loaded machine a late heartbeat can move a partition mid-round."""
    at_start = wait_settled(members, topic, partitions, 40, f"before round {round_}")
    tag = f"{ctx.prefix} round {round_} ".encode()
    records = [Rec(key=f"g{p}-{i}".encode(), value=tag + f"p{p} #{i}".encode(), partition=p)
               for p in range(partitions) for i in range(2)]
    for m in members:
        m.refresh().records.clear()

    def ours(m: Member) -> list[Rec]:
        return [r for r in m.records if r.value and r.value.startswith(tag)]

    ctx.produce(topic, records, via=ctx.helper)
    wait_until(lambda: sum(len(ours(m.refresh())) for m in members) >= len(records), 30,
               lambda: f"members received {sum(len(ours(m)) for m in members)} of {len(records)} records")
    time.sleep(0.5)
    for m, owned_at_start in zip(members, at_start):
        m.refresh()
        strays = [r.partition for r in ours(m) if (topic, r.partition) not in owned_at_start | m.assigned]
        expect(not strays, f"{m.label} got records of partitions {strays} it does not own")
    got = Counter(r.value for m in members for r in ours(m))
    expect(got == Counter(r.value for r in records), f"received {sum(got.values())} records, "
                                                     f"{len(got)} distinct, expected {len(records)} once each")


def share_and_close(ctx: Ctx, members: list[Member], topic: str, partitions: int, when: str) -> None:
    """The members split the partitions, each gets exactly its partitions' new records, all leave."""
    wait_balanced(members, topic, partitions, 40, when)
    expect_each_gets_its_own(ctx, members, topic, partitions, 1)
    for m in members:
        m.close()


@scenario("group_join", "2 members: the first owns all 4 partitions, a join splits them", timeout=90)
def group_join(ctx: Ctx):
    topic, group = ctx.create_topic(ctx.name("g"), 4), ctx.name("grp")
    first = Member(ctx, "m1", group, [topic])
    wait_balanced([first], topic, 4, 30, "alone")
    share_and_close(ctx, [first, Member(ctx, "m2", group, [topic])], topic, 4, "after a join")


@scenario("group_leave_crash", "3 members share 6 partitions; one leaves, one crashes, the last owns all",
          timeout=120)
def group_leave_crash(ctx: Ctx):
    topic, group = ctx.create_topic(ctx.name("g"), 6), ctx.name("grp")
    leave_and_crash(ctx, [Member(ctx, f"m{i}", group, [topic], session_timeout_ms=6000)
                          for i in range(1, 4)], topic)


def leave_and_crash(ctx: Ctx, members: list[Member], topic: str) -> None:
    """3 members share the topic's 6 partitions; one leaves, one crashes (a 6 s session)."""
    wait_balanced(members, topic, 6, 40, "3 members")
    expect_each_gets_its_own(ctx, members, topic, 6, 1)
    members[2].close()
    wait_balanced(members[:2], topic, 6, 30, "after a leave")
    members[1].crash()
    wait_balanced(members[:1], topic, 6, 40, "after a crash (session timeout 6 s)")
    expect_each_gets_its_own(ctx, members[:1], topic, 6, 2)
    members[0].close()


@scenario("group_mixed_clients", "a group of this client and another (roundrobin assignor) splits partitions",
          timeout=90)
def group_mixed_clients(ctx: Ctx):
    topic, group = ctx.create_topic(ctx.name("g"), 4), ctx.name("grp")
    members = [Member(ctx, ctx.client, group, [topic], assignor="roundrobin"),
               Member(ctx, ctx.partner, group, [topic], client=ctx.partner, assignor="roundrobin")]
    share_and_close(ctx, members, topic, 4, f"with {ctx.partner}")


@scenario("commit_and_resume", "a member commits offset 4 and leaves; the next one resumes exactly there",
          timeout=90)
def commit_and_resume(ctx: Ctx):
    topic, group = ctx.create_topic(ctx.name("cr"), 1), ctx.name("grp")
    records = texts("cr", 10, partition=0)
    ctx.produce(topic, records, via=ctx.helper)
    explicit = "commit_offsets" in ctx.features
    first = Member(ctx, "first", group, [topic], auto_commit=not explicit)
    wait_until(lambda: len(first.refresh().records) >= 10, 30, lambda: f"first member got {len(first.records)}/10")
    if explicit:
        first.agent.call("member_commit", offsets=[[topic, 0, 4]])
        resume = 4
    else:  # kcat: auto-commit of what it consumed, on a clean close, then new records
        resume = 10
    first.close()
    if not explicit:
        records += texts("cr-more", 5, partition=0)
        ctx.produce(topic, records[10:], via=ctx.helper)
    second = Member(ctx, "second", group, [topic], auto_commit=not explicit)
    wanted = [replace(r, offset=resume + i) for i, r in enumerate(records[resume:])]
    wait_until(lambda: len(second.refresh().records) >= len(wanted), 30,
               lambda: f"resumed member got {len(second.records)}/{len(wanted)} records")
    time.sleep(0.5)
    got = [r.without("timestamp", "headers") for r in second.refresh().records]
    expect_records(got, wanted, f"resumed at {resume}")
    second.close()


@scenario("admin_groups", "list and describe a live group, its committed offsets; empty after it leaves; delete",
          needs=("admin_groups",), timeout=90)
def admin_groups(ctx: Ctx):
    topic, group = ctx.create_topic(ctx.name("ag"), 2), ctx.name("grp")
    ctx.produce(topic, texts("ag", 4), via=ctx.helper)
    member = Member(ctx, "member", group, [topic])
    wait_balanced([member], topic, 2, 30, "alone")
    member.agent.call("member_commit", offsets=[[topic, 0, 2], [topic, 1, 1]])

    def described() -> dict:
        return ctx.main.call("describe_group", group=group)

    def state_is(state: str, members: int):
        return lambda: (lambda d: d["state"].lower() == state and d["members"] == members)(described())

    expect(group in ctx.main.call("list_groups"), f"{group} not listed while it has a member")
    wait_until(state_is("stable", 1), 15, lambda: f"described as {described()}, expected Stable with 1 member")
    offsets = ctx.main.call("group_offsets", group=group, topic=topic)
    expect(offsets == [[topic, 0, 2], [topic, 1, 1]], f"committed offsets {offsets}, expected p0=2 p1=1")
    member.close()
    wait_until(state_is("empty", 0), 15, lambda: f"after the member left: {described()}, expected Empty, 0 members")
    if "delete_groups" not in ctx.features:
        ctx.notes.append("no delete-groups API in this client: delete not checked")
        return
    ctx.main.call("delete_groups", groups=[group])
    expect(group not in ctx.main.call("list_groups"), f"{group} still listed after delete")
    offsets = ctx.main.call("group_offsets", group=group, topic=topic)
    expect(offsets == [], f"committed offsets {offsets} survived the delete")


# --- transactions ------------------------------------------------------------------------------

@scenario("transactions", "commit, abort, commit: read_committed sees only committed, in place",
          needs=("transactions",))
def transactions(ctx: Ctx):
    topic = ctx.create_topic(ctx.name("tx"), 1)
    batches = {name: texts(f"tx-{name}", count, partition=0) for name, count in (("A", 3), ("B", 2), ("C", 3))}
    ctx.main.call("transaction", timeout=90, topic=topic, txid=ctx.name("txid"), steps=[
        {"records": encode_records(batches["A"]), "end": "commit"},
        {"records": encode_records(batches["B"]), "end": "abort"},
        {"records": encode_records(batches["C"]), "end": "commit"}])

    def placed(records, offsets):
        return [replace(r, offset=o) for r, o in zip(records, offsets)]

    committed = placed(batches["A"], [0, 1, 2]) + placed(batches["C"], [7, 8, 9])
    everything = committed[:3] + placed(batches["B"], [4, 5]) + committed[3:]
    for isolation, want in (("read_committed", committed), ("read_uncommitted", everything)):
        got = ctx.consume(topic, 0, 0, len(want), isolation=isolation)
        expect_records([r.without("timestamp", "headers") for r in got], want, isolation)


@scenario("transactional_offsets", "consume-transform-produce: offsets committed in a transaction count only "
          "if it commits", needs=("transactions",), timeout=90)
def transactional_offsets(ctx: Ctx):
    source, sink, group = ctx.create_topic(ctx.name("src"), 1), ctx.create_topic(ctx.name("out"), 1), ctx.name("grp")
    inputs = texts("in", 10, partition=0)
    ctx.produce(source, inputs, via=ctx.helper)

    def step(end: str, upto: int) -> dict:
        return {"records": encode_records(texts(f"out-{end}-{upto}", 1, partition=0)), "end": end,
                "offsets": {"group": group, "offsets": [[source, 0, upto]]}}

    ctx.main.call("transaction", timeout=90, topic=sink, txid=ctx.name("txid"),
                  steps=[step("commit", 3), step("abort", 6)])
    member = Member(ctx, "resumer", group, [source])
    wanted = [replace(r, offset=3 + i) for i, r in enumerate(inputs[3:])]
    wait_until(lambda: len(member.refresh().records) >= len(wanted), 30,
               lambda: f"the group resumed with {len(member.records)} records, expected {len(wanted)} from offset 3")
    expect_records([r.without("timestamp", "headers") for r in member.refresh().records], wanted,
                   "resumed after committed offset 3 (aborted 6)")
    member.close()


# --- errors users meet -----------------------------------------------------------------------

UNKNOWN_TOPIC = r"unknown.?topic|UNKNOWN_TOPIC|does not host this topic"
INVALID_TOPIC = r"invalid.?topic|INVALID_TOPIC|illegal|not a valid topic|TOPIC_EXCEPTION"
ERRORS = {
    "unknown_topic": {"default": UNKNOWN_TOPIC,
                      # documented: send() raises KafkaTimeoutError when metadata never names the topic
                      "kafka-python": UNKNOWN_TOPIC + r"|KafkaTimeoutError.*metadata",
                      # sarama's text for ErrUnknownTopicOrPartition
                      "sarama": UNKNOWN_TOPIC + r"|topic or partition that does not exist"},
    "too_large": {"default": r"too.?large|MSG_SIZE_TOO_LARGE",
                  # Kafka's own text for MESSAGE_TOO_LARGE
                  "platformatic-kafka": r"message larger than the max message size"},
    "invalid_topic": {"default": INVALID_TOPIC,
                      # documented: send() raises UnknownTopicOrPartitionError when metadata has no
                      # partitions for the topic, whatever the topic's error code was
                      "aiokafka": INVALID_TOPIC + r"|UnknownTopicOrPartitionError",
                      # 2.0.x: send() raises KafkaTimeoutError when metadata never names the topic
                      "kafka-python@2.0.2": INVALID_TOPIC + r"|KafkaTimeoutError.*metadata"},
}


def error_pattern(ctx: Ctx, kind: str) -> str:
    """The pattern for this release ("kafka-python@2.0.2"), else for the client, else the default."""
    patterns = ERRORS[kind]
    return patterns.get(ctx.client, patterns.get(ctx.client.split("@")[0], patterns["default"]))


@scenario("error_unknown_topic", "producing to a missing topic, auto-create off: a clear error, no topic",
          strict_broker=True)
def error_unknown_topic(ctx: Ctx):
    agent = ctx.start_agent("strict", None, ctx.strict_bootstrap)
    topic = ctx.name("missing")
    expect_error(lambda: agent.call("produce", timeout=60, topic=topic, records=encode_records([Rec(value=b"x")]),
                                    options={"timeout_ms": 5000}),
                 error_pattern(ctx, "unknown_topic"), "produce to a missing topic")
    listed = agent.call("metadata")["topics"]
    expect(topic not in listed, "the topic was created although auto-create is off")


@scenario("error_record_too_large", "a record over the topic's max.message.bytes: MESSAGE_TOO_LARGE, nothing stored")
def error_record_too_large(ctx: Ctx):
    topic = ctx.create_topic(ctx.name("big"), 1, {"max.message.bytes": "10000"})
    expect_error(lambda: ctx.produce(topic, [Rec(value=b"z" * 50_000, partition=0)], timeout_ms=10000),
                 error_pattern(ctx, "too_large"), "50 kB record, limit 10 kB")
    latest = ctx.helper.call("list_offsets", topic=topic, partition=0, spec="latest")
    expect(latest == 0, f"high watermark {latest} after a rejected record")


@scenario("error_invalid_topic", "an invalid topic name: an invalid-topic error (produce; admin create)")
def error_invalid_topic(ctx: Ctx):
    bad = ctx.name("bad name!")
    expect_error(lambda: ctx.produce(bad, [Rec(value=b"x")], timeout_ms=5000),
                 error_pattern(ctx, "invalid_topic"), "produce to an invalid name")
    if "admin" in ctx.features:
        expect_error(lambda: ctx.main.call("create_topics", topics=[{"name": bad, "partitions": 1, "config": {}}]),
                     error_pattern(ctx, "invalid_topic"), "create an invalid name")


# --- share groups (KIP-932) -------------------------------------------------------------------

def share_group(ctx: Ctx, suffix: str, count: int) -> tuple[str, str]:
    """A topic holding `count` records and a share group reading it from the earliest offset."""
    topic, group = ctx.create_topic(ctx.name(suffix), 1), ctx.name(suffix + "-group")
    ctx.main.call("set_group_config", group=group, config={"share.auto.offset.reset": "earliest"})
    ctx.produce(topic, [Rec(value=f"{suffix}-{i}".encode(), partition=0) for i in range(count)])
    return topic, group


@scenario("share_accept", "a share consumer gets every record once and accepts it; none comes again",
          needs=("share_consumer",), since="4.1")
def share_accept(ctx: Ctx):
    topic, group = share_group(ctx, "share", 10)
    got = ctx.main.call("share_consume", timeout=60, group=group, topic=topic, count=10)
    expect(got == [[i, f"share-{i}", 1] for i in range(10)], f"share consumer got {got[:4]}...")
    again = ctx.main.call("share_consume", timeout=60, group=group, topic=topic, count=1, timeout_ms=3000)
    expect(again == [], f"accepted records delivered again: {again}")


@scenario("share_release_reject", "released records come back with delivery count 2; rejected ones never",
          needs=("share_consumer",), since="4.1")
def share_release_reject(ctx: Ctx):
    topic, group = share_group(ctx, "redeliver", 3)
    released = ctx.main.call("share_consume", timeout=60, group=group, topic=topic, count=3, ack="release")
    expect([r[2] for r in released] == [1, 1, 1], f"first delivery {released}")
    again = ctx.main.call("share_consume", timeout=60, group=group, topic=topic, count=3, ack="reject")
    expect(again == [[i, f"redeliver-{i}", 2] for i in range(3)], f"after release: {again}")
    gone = ctx.main.call("share_consume", timeout=60, group=group, topic=topic, count=1, timeout_ms=3000)
    expect(gone == [], f"rejected records delivered again: {gone}")


def run_scenario(ctx: Ctx, scenario_: Scenario) -> None:
    missing = [need for need in scenario_.needs if need not in ctx.features]
    if missing:
        raise Unsupported(f"no {', '.join(missing)}")
    scenario_.run(ctx)


# The KIP-848, fault and cluster scenarios live in their own modules; importing them registers them.
from compat import scenarios_cluster, scenarios_faults, scenarios_kip848  # noqa: E402, F401
