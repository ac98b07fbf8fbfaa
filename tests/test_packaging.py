"""The built wheel works on its own: build it, install it into a fresh venv, serve from there and
produce and consume with a real client. (It used to fail at import: protocol_specs/ lay outside
the package, so only source checkouts and editable installs found it.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import trio
from confluent_kafka import Consumer

from kbroker.testing import READY_MARKER
from tests.kafka_clients import confluent_producer

ROOT = Path(__file__).resolve().parents[1]
# Without PYTHONPATH, which may point at a source checkout that would pass for an installed kbroker.
ENVIRONMENT = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
SOURCES = ("kbroker", "protocol_specs", "pyproject.toml", "setup.py", "MANIFEST.in", "README.md")


def _build_wheel(tmp_path: Path) -> Path:
    """`pip wheel` of a clean copy of the sources (an in-tree build would write build/ here)."""
    source = tmp_path / "source"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                    str(source)], check=True, timeout=300, env=ENVIRONMENT)
    [wheel] = (tmp_path / "dist").glob("kbroker-*.whl")
    return wheel


def _fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    """A venv holding the wheel; its dependencies (trio, crc32c, cramjam) are taken from this
    environment's site-packages through a .pth file, whose own .pth files (an editable kbroker)
    are not read, so `import kbroker` can only find the wheel."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                    str(wheel)], check=True, timeout=300, env=ENVIRONMENT)
    site_packages = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                   check=True, capture_output=True, text=True).stdout.strip()
    dependencies = Path(trio.__file__).resolve().parents[1]
    assert dependencies == Path(sysconfig.get_path("purelib")).resolve()
    (Path(site_packages) / "kbroker-test-dependencies.pth").write_text(f"{dependencies}\n")
    return venv


def test_the_wheel_serves_real_clients_from_a_fresh_venv(tmp_path, topic_name):
    wheel = _build_wheel(tmp_path)
    venv = _fresh_venv(tmp_path, wheel)
    broker = subprocess.Popen([venv / "bin" / "kbroker", "serve", "--port", "0", "--data-dir",
                               str(tmp_path / "data")], cwd=tmp_path, env=ENVIRONMENT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output = []
        for line in broker.stdout:
            output.append(line)
            if READY_MARKER in line:
                bootstrap = line.split(READY_MARKER, 1)[1].split()[0]
                break
        else:
            raise AssertionError("the installed kbroker did not start:\n" + "".join(output))
        located = subprocess.run([venv / "bin" / "python", "-c", "import kbroker; print(kbroker.__file__)"],
                                 env=ENVIRONMENT, cwd=tmp_path, capture_output=True, text=True, check=True)
        assert located.stdout.startswith(str(venv))
        producer = confluent_producer(bootstrap)
        for i in range(10):
            producer.produce(topic_name, key=b"%d" % i, value=b"from the wheel %d" % i)
        assert producer.flush(15) == 0
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic_name}-group",
                             "auto.offset.reset": "earliest"})
        consumer.subscribe([topic_name])
        values = []
        for _ in range(60):
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                values.append(message.value())
            if len(values) == 10:
                break
        consumer.close()
        assert values == [b"from the wheel %d" % i for i in range(10)]
    finally:
        broker.terminate()
        broker.wait(20)
    assert broker.returncode == 0
