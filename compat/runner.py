"""`python -m compat`: start brokers, run every (scenario, client) cell in parallel, report.

Each cell is a child process with a hard timeout (its process group is killed), so one hung client
cannot stall the run. Topics and groups are unique per cell, so cells share one broker.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from compat import report, security
from compat.agent import ROOT, Agent, describe
from compat.expected_failures import expected_failure
from compat.registry import CURRENT, ClientSpec, current_clients, partner_for
from compat.scenarios import SCENARIOS, Scenario
from compat.variants import LATEST, Variant, variants

HERE = Path(__file__).resolve().parent


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m compat", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", help="comma-separated clients (default: all current; with --wide, all)")
    parser.add_argument("--scenarios", help="comma-separated scenarios (default: all)")
    parser.add_argument("--wide", action="store_true", help="also older client releases (installed on demand)")
    parser.add_argument("--bootstrap", help="use this broker (HOST:PORT) instead of starting a kbroker")
    parser.add_argument("--strict-bootstrap", help="a broker with topic auto-creation off, for error scenarios "
                                                   "(with --bootstrap; without it, one is started)")
    parser.add_argument("--security", default="plaintext",
                        help="comma-separated: plaintext, sasl_ssl (a SASL_SSL listener with a throwaway CA; "
                             "clients verify it and authenticate); each one is a variant of the matrix")
    parser.add_argument("--sasl-mechanism", default="SCRAM-SHA-512", choices=security.MECHANISMS,
                        help="the clients' SASL mechanism with --security sasl_ssl (default SCRAM-SHA-512)")
    parser.add_argument("--as-version", default=LATEST, help="comma-separated Kafka releases the brokers imitate "
                        "(kbroker serve --as-version), e.g. latest,2.8,3.9; each one is a variant of the matrix")
    parser.add_argument("--timeout", type=float, help="hard timeout per cell in seconds (default: per scenario)")
    parser.add_argument("--jobs", type=int, default=4, help="cells run in parallel (default 4)")
    parser.add_argument("--retries", type=int, default=0, help="run a failed cell again up to N times; one that "
                                                               "then passes counts as passed but shows as FLAKY")
    parser.add_argument("--report-dir", default=str(HERE), help="where REPORT.md/.json go (default compat/)")
    parser.add_argument("--no-report", action="store_true", help="print the matrix only")
    parser.add_argument("--log-dir", help="keep the agents' and brokers' logs here (default: a temp dir, removed)")
    parser.add_argument("--strict", action="store_true", help="an XPASS (listed expected failure that passed) "
                                                              "fails the run")
    parser.add_argument("--cache-dir", default=os.environ.get("KBROKER_COMPAT_CACHE",
                                                              str(Path.home() / ".cache" / "kbroker-compat")))
    parser.add_argument("--list", action="store_true", help="list scenarios and clients, then exit")
    return parser.parse_args(argv)


class Brokers:
    """The kbroker(s) this run started (normal and auto-create off), and what they recorded."""

    def __init__(self, work: Path):
        self.work = work
        self.names: list[str] = []
        self.processes = []
        self.usage_files: list[Path] = []
        self.version = ""

    def start(self, name: str, *args: str):
        from kbroker.testing import BrokerProcess
        usage = self.work / f"api-usage-{name}.json"
        broker = BrokerProcess(self.work / f"data-{name}", [*args, "--api-usage-file", str(usage)])
        try:
            broker.start()
        except RuntimeError as exc:
            if "api-usage-file" not in str(exc):
                raise
            broker = BrokerProcess(self.work / f"data-{name}", list(args)).start()  # broker without the option
        else:
            self.usage_files.append(usage)
        self.processes.append(broker)
        self.names.append(name)
        return broker.bootstrap

    def named(self):
        return zip(self.names, self.processes)

    def stop(self) -> None:
        for broker in self.processes:
            broker.stop()

    def api_usage(self) -> dict:
        merged: dict = {}
        for path in self.usage_files:
            with contextlib.suppress(OSError, ValueError):
                for client, apis in json.loads(path.read_text()).items():
                    for api, versions in apis.items():
                        merged.setdefault(client, {}).setdefault(api, set()).update(versions)
        return {c: {a: sorted(v) for a, v in apis.items()} for c, apis in merged.items()}


# KIP-848 members' sessions are the broker's: 6 s, as the classic scenarios ask for theirs.
KIP848_SESSIONS = ("--override", "group.consumer.session.timeout.ms=6000",
                   "--override", "group.consumer.min.session.timeout.ms=1000",
                   "--override", "group.consumer.heartbeat.interval.ms=1000",
                   "--override", "group.consumer.min.heartbeat.interval.ms=500")


def kbroker_version() -> str:
    from importlib import metadata
    try:
        version = metadata.version("kbroker")
    except metadata.PackageNotFoundError:
        version = ""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    described = f"(git {commit.stdout.strip()})" if commit.returncode == 0 else ""
    return " ".join(filter(None, ["kbroker", version, described]))


def hello(spec: ClientSpec, bootstrap: str, log_dir: Path, settings: security.Security) -> dict:
    """What the client is and can do; over a secured listener also whether it can connect at all
    (a client that cannot authenticate is unusable in that variant, rather than slow in every cell)."""
    agent = Agent(spec.name, spec.agent_command(bootstrap), {**spec.env, **settings.env()},
                  log_dir / f"hello.{spec.name}.{settings.protocol}.log")
    info: dict = {}
    try:
        info = agent.call("hello", timeout=60)
        if settings.protocol != "PLAINTEXT":
            agent.call("metadata", timeout=40)
        return info
    except Exception as exc:  # noqa: BLE001
        if info:
            return {**info, "error": f"cannot connect over {settings.protocol}: {describe(exc)}"}
        return {"client": spec.name, "version": "?", "detail": "", "features": [], "error": describe(exc)}
    finally:
        agent.close(timeout=5)


def run_cell(job: dict, timeout: float) -> dict:
    process = subprocess.Popen([sys.executable, "-m", "compat.cell", json.dumps(job)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, text=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.communicate(timeout=3)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
        return {"status": "FAIL", "reason": f"timed out after {timeout:.0f}s (killed)", "notes": [],
                "seconds": timeout}
    with contextlib.suppress(OSError):
        os.killpg(process.pid, signal.SIGKILL)  # anything the cell left behind
    lines = out.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        return {"status": "FAIL", "reason": f"cell crashed: {err.strip()[-300:]}", "notes": [], "seconds": 0}


def judge(result: dict, expected_reason: str | None) -> dict:
    if expected_reason is not None:
        result = {**result, "expected": expected_reason}
        if result["status"] == "FAIL":
            result["status"] = "XFAIL"
        elif result["status"] in ("PASS", "FLAKY"):
            result["status"] = "XPASS"
    return result


def variant_clients(variant: Variant, clients: list[str]) -> list[str]:
    """An --as-version release other than the latest runs the current clients only."""
    return [c for c in clients if variant.as_version == LATEST or c in CURRENT]


def not_runnable(scenario: Scenario, variant: Variant, info: dict, strict: str | None,
                 own_brokers: bool) -> str | None:
    """Why a cell is N/A before it starts (None: it runs)."""
    missing = [n for n in scenario.needs if n not in info["features"]]
    if missing:
        return f"no {', '.join(missing)}"
    if scenario.strict_broker and not strict:
        return "needs --strict-bootstrap"
    if scenario.broker is not None and not own_brokers:
        return "needs a kbroker of its own (not with --bootstrap)"
    if not variant.release_allows(scenario.since):
        return f"Kafka {variant.as_version} has no such feature (it came with {scenario.since})"
    return None


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    clients = current_clients()
    if args.wide:
        from compat import wide
        clients.update(wide.clients(Path(args.cache_dir), set(args.clients.split(",")) if args.clients else None))
    chosen_clients = args.clients.split(",") if args.clients else list(clients)
    chosen_scenarios = args.scenarios.split(",") if args.scenarios else list(SCENARIOS)
    chosen_variants = variants(args.security, args.as_version)
    if args.list:
        print("scenarios:\n" + "\n".join(f"  {s.name:28} {s.summary}" for s in SCENARIOS.values()))
        print("clients: " + ", ".join(clients) + "  (--wide adds older releases)")
        return 0
    unknown = [c for c in chosen_clients if c not in clients] + [s for s in chosen_scenarios if s not in SCENARIOS]
    unknown += [v.security for v in chosen_variants if v.security not in security.PROTOCOLS]
    if unknown:
        print(f"unknown clients/scenarios/security: {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    if args.bootstrap and chosen_variants != [Variant()]:
        print("--security and --as-version start brokers: not with --bootstrap", file=sys.stderr)
        return 2
    run_id = uuid.uuid4().hex[:6]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kbroker-compat-") as tmp:
        work = Path(tmp)
        logs = Path(args.log_dir) if args.log_dir else work / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        brokers = Brokers(work)
        try:
            targets = {}  # variant -> (security, broker args, bootstrap, strict bootstrap)
            needs_strict = any(SCENARIOS[s].strict_broker for s in chosen_scenarios)
            for variant in chosen_variants:
                if args.bootstrap:
                    targets[variant] = (security.Security(), [], args.bootstrap, args.strict_bootstrap)
                    continue
                settings, broker_args = variant.broker(args.sasl_mechanism, work)
                bootstrap = brokers.start(f"{variant.slug}-main", *broker_args, *KIP848_SESSIONS)
                strict = brokers.start(f"{variant.slug}-strict", *broker_args, "--no-auto-create-topics") \
                    if needs_strict else None
                targets[variant] = (settings, broker_args, bootstrap, strict)
            broker_name = f"broker at {args.bootstrap}" if args.bootstrap else kbroker_version()
            for variant, (_, _, bootstrap, strict) in targets.items():
                print(f"broker ({variant.title}): {broker_name} on {bootstrap}"
                      + (f", auto-create off on {strict}" if strict else ""), flush=True)
            with ThreadPoolExecutor(max(1, args.jobs)) as pool:
                by_security = {v.security: (settings, bootstrap) for v, (settings, _, bootstrap, _) in targets.items()}
                asked = [(sec_name, c) for sec_name in by_security for c in chosen_clients]
                said = dict(zip(asked, pool.map(lambda key: hello(clients[key[1]], by_security[key[0]][1], logs,
                                                                  by_security[key[0]][0]), asked)))
                hellos = {c: said[chosen_variants[0].security, c] for c in chosen_clients}
                jobs, results = [], {}
                for variant, (settings, broker_args, bootstrap, strict) in targets.items():
                    for s in chosen_scenarios:
                        scenario = SCENARIOS[s]
                        for c in variant_clients(variant, chosen_clients):
                            info = said[variant.security, c]
                            expected = expected_failure(s, c, variant, args.sasl_mechanism)
                            why_not = not_runnable(scenario, variant, info, strict, not args.bootstrap)
                            if info.get("error") and not (why_not and info["features"]):
                                results[variant.name, s, c] = judge({
                                    "status": "FAIL", "reason": f"client unusable: {info['error']}", "notes": [],
                                    "seconds": 0}, expected)
                            elif why_not:
                                results[variant.name, s, c] = {"status": "N/A", "reason": why_not, "notes": [],
                                                               "seconds": 0}
                            else:
                                partner = clients.get(partner_for(c)) or current_clients()[partner_for(c)]
                                jobs.append((variant, scenario, c, {
                                    "client": clients[c].to_json(), "partner": partner.to_json(), "scenario": s,
                                    "features": info["features"], "bootstrap": bootstrap, "strict_bootstrap": strict,
                                    "security_env": settings.env(), "broker_args": broker_args,
                                    "prefix": f"compat-{run_id}-{variant.slug}-{s}-{c}".replace("@", "-").replace(
                                        "_", "-").replace(".", "-"),
                                    "log_dir": str(logs), "work_dir": str(work)}))
                jobs.sort(key=lambda job: -job[1].timeout)  # long cells first: better packing

                def run(job):
                    variant, scenario, c, spec = job
                    result = run_cell(spec, args.timeout or scenario.timeout)
                    for _ in range(args.retries if result["status"] == "FAIL" else 0):
                        again = run_cell(spec, args.timeout or scenario.timeout)
                        if again["status"] == "PASS":
                            result = {**again, "status": "FLAKY", "reason": f"failed once: {result['reason']}"}
                            break
                    result = judge(result, expected_failure(scenario.name, c, variant, args.sasl_mechanism))
                    where = f" [{variant.name}]" if len(targets) > 1 else ""
                    print(f"  {result['status']:5} {scenario.name} / {c}{where} ({result['seconds']}s)"
                          + (f": {result['reason'][:120]}" if result["status"] != "PASS" else ""), flush=True)
                    return (variant.name, scenario.name, c), result

                results.update(pool.map(run, jobs))
        finally:
            brokers.stop()
            for name, broker in brokers.named():
                (logs / f"broker-{name}.log").write_text("".join(broker.output))
        usage = brokers.api_usage()
    elapsed = time.monotonic() - started
    matrix = report.Matrix(scenarios=chosen_scenarios, clients=chosen_clients, results=results, hellos=hellos,
                           broker=broker_name, api_usage=usage, seconds=elapsed,
                           variants={v.name: v.title for v in chosen_variants})
    print(matrix.text())
    if not args.no_report:
        matrix.write(Path(args.report_dir))
    counts = matrix.counts()
    print(f"{counts['XFAIL']} xfailed, {counts['XPASS']} xpassed, {counts['FLAKY']} flaky, {counts['N/A']} n/a, "
          f"{elapsed:.0f}s")
    print(f"{counts['PASS'] + counts['FLAKY'] + counts['XPASS']} passed, {counts['FAIL']} failed")
    return 1 if counts["FAIL"] or (args.strict and counts["XPASS"]) else 0
