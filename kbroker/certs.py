"""`kbroker certs DIR`: a throwaway CA, a broker certificate and a client certificate for
trying SSL and mTLS listeners locally, made with the `openssl` command-line tool (no Python
dependency). Never use them beyond a development machine: the CA key lies beside them.

Files: ca.pem (the CA certificate: the truststore of clients and, for mTLS, of the broker),
broker.pem (the broker's key and certificate, for ssl.keystore.location), client.pem (the
client's key and certificate) and each key and certificate alone (*.key, *.crt).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def add_parser(commands) -> None:
    certs = commands.add_parser("certs", help="make a throwaway CA and broker/client certificates "
                                "for local TLS (needs the openssl tool)")
    certs.add_argument("directory", type=Path)
    certs.add_argument("--host", action="append", default=[], metavar="NAME",
                       help="another host name or address of the broker (always: localhost, 127.0.0.1)")
    certs.add_argument("--client", default="CN=alice,OU=dev,O=kbroker",
                       help="the client certificate's subject, as Kafka prints it (RFC 2253)")
    certs.add_argument("--days", type=int, default=365)
    certs.set_defaults(handler=main)


def _subject(rfc2253: str) -> str:
    """openssl's /O=x/OU=y/CN=z form, least specific first."""
    return "".join(f"/{part.strip()}" for part in reversed(rfc2253.split(",")))


def _alt_name(host: str) -> str:
    return f"IP:{host}" if host.replace(".", "").isdigit() or ":" in host else f"DNS:{host}"


def make_certificates(directory: Path, hosts: Sequence[str] = (), client: str = "CN=alice,OU=dev,O=kbroker",
                      days: int = 365) -> None:
    """Write the files; RuntimeError with openssl's message when it fails."""
    directory.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        done = subprocess.run(["openssl", *args], cwd=directory, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip().splitlines()[-1:]}")

    openssl("req", "-x509", *_KEY, "-keyout", "ca.key", "-out", "ca.pem", "-days", str(days),
            "-subj", "/O=kbroker/CN=kbroker throwaway CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    names = ",".join(_alt_name(host) for host in dict.fromkeys(["localhost", "127.0.0.1", "::1", *hosts]))
    for name, subject, extensions in (
            ("broker", "/O=kbroker/CN=localhost",
             f"subjectAltName={names}\nextendedKeyUsage=serverAuth,clientAuth\n"),
            ("client", _subject(client), "extendedKeyUsage=clientAuth\n")):
        (directory / f"{name}.ext").write_text(extensions)
        openssl("req", *_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", str(days), "-extfile", f"{name}.ext")
        (directory / f"{name}.pem").write_text((directory / f"{name}.key").read_text()
                                               + (directory / f"{name}.crt").read_text())
        for leftover in (f"{name}.csr", f"{name}.ext"):
            (directory / leftover).unlink()
    (directory / "ca.srl").unlink(missing_ok=True)


def main(args: argparse.Namespace) -> int:
    if shutil.which("openssl") is None:
        print("kbroker: certs needs the openssl command (Debian: apt-get install openssl)", file=sys.stderr)
        return 1
    try:
        make_certificates(args.directory, args.host, args.client, args.days)
    except RuntimeError as exc:
        print(f"kbroker: {exc}", file=sys.stderr)
        return 1
    d = args.directory
    print(f"kbroker: wrote {d}/ca.pem, broker.pem, client.pem (and .key/.crt of each). Serve with\n"
          f"  kbroker serve --override listeners=SSL://127.0.0.1:9093 --override ssl.keystore.type=PEM"
          f" --override ssl.keystore.location={d}/broker.pem\n"
          f"and connect with security.protocol=SSL, ssl.ca.location={d}/ca.pem")
    return 0
