"""`--security`: how the matrix's brokers listen and how every agent connects to them.

The cell hands an agent its settings in the COMPAT_SECURITY environment variable (JSON), so that
drivers in any language read them the same way:
{"protocol": "SASL_SSL", "mechanism": "SCRAM-SHA-512", "username": ..., "password": ..., "ca": path}.
Unset (or protocol PLAINTEXT) means a plain connection. Clients verify the broker's certificate
against the throwaway CA (kbroker/certs.py) and its host name (the certificate names 127.0.0.1).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

ENV = "COMPAT_SECURITY"
PROTOCOLS = ("plaintext", "sasl_ssl")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
USER, PASSWORD = "compat", "compat-secret"


@dataclass(frozen=True)
class Security:
    protocol: str = "PLAINTEXT"
    mechanism: str = ""
    username: str = ""
    password: str = ""
    ca: str = ""

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL")

    def env(self) -> dict[str, str]:
        return {ENV: json.dumps(asdict(self))} if self.protocol != "PLAINTEXT" else {}


def from_env() -> Security:
    """The agent side: this process's settings (plain when the variable is unset)."""
    text = os.environ.get(ENV)
    return Security(**json.loads(text)) if text else Security()


def librdkafka_settings(security: Security) -> dict[str, str]:
    """librdkafka's settings (confluent-kafka and kcat); it verifies the broker's certificate, and
    its host name as asked here, against the CA."""
    if security.protocol == "PLAINTEXT":
        return {}
    return {"security.protocol": security.protocol, "ssl.ca.location": security.ca,
            "ssl.endpoint.identification.algorithm": "https", "sasl.mechanism": security.mechanism,
            "sasl.username": security.username, "sasl.password": security.password}


def setup(protocol: str, mechanism: str, work: Path) -> tuple[Security, list[str]]:
    """The clients' settings and the `kbroker serve` arguments of a broker with that one listener."""
    if protocol == "plaintext":
        return Security(), []
    from kbroker.certs import make_certificates
    certs = work / "certs"
    if not (certs / "ca.pem").exists():
        make_certificates(certs)
    security = Security("SASL_SSL", mechanism, USER, PASSWORD, str(certs / "ca.pem"))
    overrides = {"listeners": "SASL_SSL://127.0.0.1:0", "ssl.keystore.type": "PEM",
                 "ssl.keystore.location": str(certs / "broker.pem"),
                 "sasl.enabled.mechanisms": ",".join(MECHANISMS)}
    args = ["--sasl-user", f"{USER}:{PASSWORD}"]
    for name, value in overrides.items():
        args += ["--override", f"{name}={value}"]
    return security, args
