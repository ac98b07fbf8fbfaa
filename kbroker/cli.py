"""The `kbroker` command line: serve, list what is supported, measure."""

from __future__ import annotations

import argparse
import logging
import resource
import sys
from functools import partial
from pathlib import Path

from kbroker import certs, perf, versions
from kbroker import commands as tools
from kbroker.config import SASL_JAAS_SETTING
from kbroker.listeners import parse_endpoints
from kbroker.protocol.errors import KafkaError


def _override(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value


def _port(text: str) -> int:
    port = int(text) if text.isdigit() else -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kbroker", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the broker")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=_port, default=9092, help="port to listen on; 0 picks a free one")
    serve.add_argument("--advertised-host", help="host name given to clients (default: --host)")
    serve.add_argument("--data-dir", default="./kbroker-data", help="where data is kept")
    serve.add_argument("--node-id", type=int, default=1)
    serve.add_argument("--brokers", type=int, default=1, metavar="N",
                       help="simulate a cluster of N brokers in this process: node ids --node-id.., "
                            "ports --port.. (--port 0: a free block of ports)")
    serve.add_argument("--num-partitions", type=int, default=1,
                       help="partitions of auto-created topics")
    serve.add_argument("--auto-create-topics", action=argparse.BooleanOptionalAction, default=True,
                       help="create unknown topics when clients ask for their metadata")
    serve.add_argument("--override", type=_override, action="append", default=[],
                       metavar="NAME=VALUE", help="any broker setting by its Kafka config name")
    serve.add_argument("--sasl-user", action="append", default=[], metavar="NAME:PASSWORD",
                       help="require SASL (PLAIN, SCRAM-SHA-256/512) and accept this user")
    serve.add_argument("--http-port", type=_port, metavar="PORT",
                       help="serve /metrics (Prometheus) and the web console on this port; 0 picks one")
    serve.add_argument("--api-usage-file", type=Path,
                       help="record which API versions each client used, as JSON, here")
    serve.add_argument("--as-version", metavar="X.Y",
                       help="act as that Apache Kafka release (2.1 ... 4.2): its API versions, "
                            "including those Kafka 4.0 removed, and its defaults")
    serve.add_argument("--log-level", default="INFO")

    apis = commands.add_parser("apis", help="print the supported APIs and versions as Markdown")
    apis.add_argument("--update-readme", type=Path, metavar="README",
                      help="rewrite the table between the apis markers of this file instead")
    commands.add_parser("configs", help="print the broker settings as a Markdown table")
    perf.add_parser(commands)
    certs.add_parser(commands)
    tools.add_parsers(commands)
    return parser


def serve_overrides(args: argparse.Namespace) -> dict[str, str]:
    """The broker settings implied by the command line flags, then the explicit --overrides."""
    host = f"[{args.host}]" if ":" in args.host else args.host
    settings = {
        "listeners": f"PLAINTEXT://{host}:{args.port}",
        "log.dirs": args.data_dir,
        "node.id": str(args.node_id),
        "simulated.brokers": str(args.brokers),
        "num.partitions": str(args.num_partitions),
        "auto.create.topics.enable": "true" if args.auto_create_topics else "false",
    }
    if args.sasl_user:
        settings["listeners"] = f"SASL_PLAINTEXT://{host}:{args.port}"
        users = [user.partition(":") for user in args.sasl_user]
        settings[SASL_JAAS_SETTING] = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            + " ".join(f'user_{name}="{password}"' for name, _, password in users) + ";")
    settings.update(dict(args.override))
    if args.advertised_host and "advertised.listeners" not in settings:
        try:
            names = [name for name, _, _ in parse_endpoints(settings["listeners"])]
        except ValueError:
            names = []  # Config reports the bad listeners setting
        settings["advertised.listeners"] = ",".join(f"{name}://{args.advertised_host}:0" for name in names)
    return settings


def _serve(args: argparse.Namespace) -> int:
    import trio

    from kbroker.broker import Broker
    from kbroker.config import Config
    from kbroker.server import CannotListen, run_broker

    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        release = versions.release(args.as_version) if args.as_version else None
    except ValueError as exc:
        print(f"kbroker: {exc}", file=sys.stderr)
        return 2
    try:
        config = Config(serve_overrides(args), release)
    except KafkaError as exc:
        print(f"kbroker: {exc.message}", file=sys.stderr)
        return 2
    usage_dir = args.api_usage_file and args.api_usage_file.resolve().parent
    if usage_dir and not usage_dir.is_dir():
        print(f"kbroker: --api-usage-file: no directory {usage_dir}", file=sys.stderr)
        return 2
    _raise_open_file_limit()
    try:
        broker = Broker(config, api_usage_path=args.api_usage_file)
    except OSError as exc:
        print(f"kbroker: cannot open the data: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return 1
    try:
        trio.run(partial(run_broker, broker, http_port=args.http_port))
    except BaseExceptionGroup as group:  # what trio's nurseries raise, nested
        cannot_listen, rest = group.split(CannotListen)
        if cannot_listen is None or rest is not None:
            raise
        first: BaseException = cannot_listen
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        print(f"kbroker: {first}", file=sys.stderr)
        return 1
    finally:
        broker.close()
    return 0


def _raise_open_file_limit() -> None:
    """Every partition and connection holds file descriptors: take the soft limit up to the hard
    one (as Kafka's start scripts expect of the operator), so `ulimit -n 1024` is no ceiling."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # an unlimited hard limit may be above nr_open
            logging.getLogger("kbroker").info("open file limit stays at %d: %s", soft, exc)


README_APIS_START, README_APIS_END = "<!-- apis:start -->\n", "<!-- apis:end -->"


def apis_table() -> str:
    """The Markdown table of served APIs, from the handler registry."""
    import kbroker.api  # noqa: F401  (registers every handler)
    from kbroker.api.registry import supported_apis

    rows = ["| API | key | versions | with --as-version before 4.0 |", "|---|---|---|---|"]
    rows += [f"| {e.name} | {e.api_key} | {e.min_version}-{e.max_version} | "
             f"{f'from v{e.oldest_version}' if e.oldest_version < e.min_version else ''} |"
             for e in supported_apis()]
    return "\n".join(rows) + "\n"


def _apis(args: argparse.Namespace) -> int:
    table = apis_table()
    if args.update_readme is None:
        print(table, end="")
        return 0
    text = args.update_readme.read_text()
    start = text.index(README_APIS_START) + len(README_APIS_START)
    args.update_readme.write_text(text[:start] + table + text[text.index(README_APIS_END):])
    return 0


def _print_configs() -> int:
    from kbroker.config import SETTINGS

    print("| setting | default | topic setting | meaning |")
    print("|---|---|---|---|")
    for setting in SETTINGS:
        print(f"| `{setting.name}` | {setting.render(setting.default)} | "
              f"{setting.topic_name or ''} | {setting.doc} |")
    return 0


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    commands = {"serve": _serve, "apis": _apis, "configs": lambda _: _print_configs(),
                "perf": perf.main}
    try:
        sys.exit((commands.get(args.command) or args.handler)(args))
    except BrokenPipeError:  # `kbroker configs | head` is fine
        sys.exit(0)
