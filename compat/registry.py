"""Which clients exist and how to start an agent for each: current ones, and --wide older releases.

Older releases live in their own virtualenvs / npm prefixes under a cache directory (see wide.py);
the same driver code runs in them, and hello() reports what that release can do.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field

CURRENT = ("kafka-python", "aiokafka", "confluent-kafka", "kafkajs", "kcat")
DRIVER_MODULES = {"kafka-python": "compat.clients.kafka_python", "aiokafka": "compat.clients.aiokafka",
                  "confluent-kafka": "compat.clients.confluent", "kcat": "compat.clients.kcat"}


@dataclass
class ClientSpec:
    """A matrix column: `name` is the client ("kafka-python") or client@release for --wide ones."""

    name: str
    command: list[str]
    env: dict = field(default_factory=dict)

    @property
    def family(self) -> str:
        return self.name.split("@")[0]

    def agent_command(self, bootstrap: str) -> list[str]:
        return [*self.command, bootstrap]

    def to_json(self) -> dict:
        return {"name": self.name, "command": self.command, "env": self.env}

    @classmethod
    def from_json(cls, obj: dict) -> "ClientSpec":
        return cls(obj["name"], obj["command"], obj.get("env") or {})


def python_client(name: str, python: str = sys.executable, release: str = "") -> ClientSpec:
    return ClientSpec(f"{name}@{release}" if release else name, [python, "-m", DRIVER_MODULES[name]])


def kafkajs_client(kafkajs_dir: str = "", release: str = "") -> ClientSpec:
    env = {"KAFKAJS_DIR": kafkajs_dir} if kafkajs_dir else {}
    return ClientSpec(f"kafkajs@{release}" if release else "kafkajs", ["node", "compat/node/agent.js"], env)


def kcat_client(path: str = "") -> ClientSpec:
    return ClientSpec("kcat", [sys.executable, "-m", DRIVER_MODULES["kcat"]],
                      {"KCAT": path or shutil.which("kcat") or "kcat"})


def current_clients() -> dict[str, ClientSpec]:
    specs = [python_client(name) for name in ("kafka-python", "aiokafka", "confluent-kafka")]
    specs += [kafkajs_client(), kcat_client()]
    return {spec.name: spec for spec in specs}


def partner_for(client: str) -> str:
    """The other client in mixed groups, and the setup helper for clients without an admin API."""
    return "confluent-kafka" if client.split("@")[0] == "kafka-python" else "kafka-python"


def node_available() -> bool:
    return shutil.which("node") is not None and os.path.isdir(os.path.join(
        os.path.dirname(__file__), "node", "node_modules", "kafkajs"))
