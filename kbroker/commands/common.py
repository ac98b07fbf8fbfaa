"""What every tool shares: the bootstrap option, running against a cluster, errors, output."""

from __future__ import annotations

import dataclasses
import json
import os
import ssl
import sys
import time
from typing import NoReturn

import trio

from kbroker.client import ClientError, Cluster
from kbroker.client.connection import client_tls_context
from kbroker.client.consumer import timestamp_from_iso
from kbroker.client.sasl import MECHANISMS, SaslCredentials
from kbroker.protocol.errors import KafkaError
from kbroker.protocol.exceptions import ProtocolError

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
PASSWORD_VARIABLE = "KBROKER_SASL_PASSWORD"
PROGRESS_INTERVAL_S = 5.0
MiB = 1024 * 1024


def add_bootstrap(parser) -> None:
    """-b/--bootstrap and the SASL and TLS options every command takes."""
    parser.add_argument("-b", "--bootstrap", default=DEFAULT_BOOTSTRAP, metavar="HOST:PORT",
                        help=f"a broker of the cluster (default {DEFAULT_BOOTSTRAP})")
    parser.add_argument("--sasl-username", metavar="NAME", help="authenticate with SASL as NAME")
    parser.add_argument("--sasl-password", metavar="PASSWORD",
                        default=os.environ.get(PASSWORD_VARIABLE),
                        help=f"the SASL password (default: ${PASSWORD_VARIABLE})")
    parser.add_argument("--sasl-mechanism", choices=MECHANISMS, default="PLAIN")
    add_tls_options(parser)


def add_tls_options(parser) -> None:
    """--ssl-cafile (TLS, trusting these CAs), --ssl-certfile/--ssl-keyfile (mTLS)."""
    parser.add_argument("--ssl-cafile", metavar="PEM", help="connect with TLS (an SSL or SASL_SSL "
                        "listener), trusting these CA certificates")
    parser.add_argument("--ssl-certfile", metavar="PEM", help="client certificate, for mTLS")
    parser.add_argument("--ssl-keyfile", metavar="PEM", help="its private key")


def tls_context(args) -> ssl.SSLContext | None:
    return client_tls_context(args.ssl_cafile, args.ssl_certfile, args.ssl_keyfile)


def sasl_credentials(args) -> SaslCredentials | None:
    if not args.sasl_username:
        return None
    if args.sasl_password is None:
        fail(f"--sasl-username needs --sasl-password or ${PASSWORD_VARIABLE}")
    return SaslCredentials(args.sasl_mechanism, args.sasl_username, args.sasl_password)


def add_json(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def cluster_command(commands, name: str, help: str):
    """Add `kbroker NAME ACTION ...`, whose actions run against a cluster. Returns
    add_action(action, handler, help, json=False): the action's parser, with the connection
    options (and --json if asked); choosing it runs `handler(cluster, args)` through run()."""
    parser = commands.add_parser(name, help=help)
    actions = parser.add_subparsers(dest=f"{name}_command", required=True)
    parser.set_defaults(handler=lambda args: run(args.action_handler, args))

    def add_action(action: str, handler, help: str, *, json: bool = False):
        action_parser = actions.add_parser(action, help=help)
        action_parser.set_defaults(action_handler=handler)
        if json:
            add_json(action_parser)
        add_bootstrap(action_parser)
        return action_parser

    return add_action


def run(command, args) -> int:
    """Run `command(cluster, args)` against the cluster; a Kafka error or a broken conversation
    is printed as `kbroker: ERROR_NAME: message` and gives exit code 1."""
    credentials = sasl_credentials(args)
    try:
        tls = tls_context(args)
    except OSError as exc:
        fail(f"cannot load the TLS files: {exc}")

    async def with_cluster():
        cluster = await Cluster.open(args.bootstrap, sasl=credentials, tls=tls)
        try:
            return await command(cluster, args)
        finally:
            await cluster.close()

    try:
        return trio.run(with_cluster) or 0
    except KafkaError as exc:
        print(f"kbroker: {exc.code.name}: {exc.message or exc.code.name}", file=sys.stderr)
    except ClientError as exc:
        print(f"kbroker: {exc}", file=sys.stderr)
    except ProtocolError as exc:
        print(f"kbroker: the broker's answer could not be decoded: {exc}", file=sys.stderr)
    except OSError as exc:  # a file to produce that cannot be read
        print(f"kbroker: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 1


def fail(message: str) -> NoReturn:
    """A usage mistake found after parsing: exits like argparse does."""
    print(f"kbroker: {message}", file=sys.stderr)
    raise SystemExit(2)


def print_json(value) -> None:
    print(json.dumps(as_plain(value), indent=1))


def as_plain(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, list):
        return [as_plain(v) for v in value]
    return value


def print_table(rows: list[dict], columns: list[str]) -> None:
    """Left-aligned columns headed by their names in capitals, as kafka-topics.sh prints."""
    texts = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(t[i]) for t in texts]) for i, c in enumerate(columns)]
    for line in [[c.upper() for c in columns]] + texts:
        print("  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip())


def key_values(texts: list[str], what: str = "key=value") -> dict[str, str]:
    pairs = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep or not key:
            fail(f"expected {what}, got {text!r}")
        pairs[key] = value
    return pairs


def timestamp_ms(text: str) -> int:
    try:
        return timestamp_from_iso(text)
    except ValueError:
        fail(f"not an ISO 8601 time: {text!r}")


class Progress:
    """A progress line on stderr every few seconds and a summary line at the end."""

    def __init__(self, verb: str, interval_s: float = PROGRESS_INTERVAL_S):
        self.verb = verb
        self.start = self.last_report = time.monotonic()
        self.interval_s = interval_s
        self.records = self.bytes = 0

    def add(self, records: int, nbytes: int) -> None:
        self.records += records
        self.bytes += nbytes
        now = time.monotonic()
        if now - self.last_report >= self.interval_s:
            self.last_report = now
            print(f"... {self.records} records {self.verb} so far", file=sys.stderr, flush=True)

    def summary(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        return (f"{self.records} records {self.verb} in {elapsed:.2f} s "
                f"({self.records / elapsed:.1f} records/sec, {self.bytes / elapsed / MiB:.2f} MB/sec)")
