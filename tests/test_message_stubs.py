"""kbroker/protocol/messages.pyi: up to date with protocol_specs/, true to the classes built at
run time, and what a type checker uses to check code that builds messages."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from kbroker.protocol import messages

ROOT = Path(__file__).resolve().parents[1]
STUB = ROOT / "kbroker" / "protocol" / "messages.pyi"


def test_stub_is_up_to_date():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_message_stubs.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _declared() -> dict[str, tuple[list[str], dict[str, list[str]]]]:
    """Each top-level class of the stub: its annotated fields and its nested classes' fields."""
    def fields(node: ast.ClassDef) -> list[str]:
        return [item.target.id for item in node.body if isinstance(item, ast.AnnAssign)]

    classes = {}
    for node in ast.parse(STUB.read_text()).body:
        if isinstance(node, ast.ClassDef):
            nested = {item.name: fields(item) for item in node.body if isinstance(item, ast.ClassDef)}
            classes[node.name] = (fields(node), nested)
    return classes


def test_stub_declares_the_runtime_classes():
    declared = _declared()
    runtime = [messages.RequestHeader, messages.ResponseHeader, messages.ConsumerProtocolSubscription,
               messages.ConsumerProtocolAssignment]
    for api_key in messages.API_INFO:
        runtime += [messages.request_class(api_key), messages.response_class(api_key)]
    for cls in runtime:
        fields, nested = declared[cls.__name__]
        extra = ["api_key", "api_version"] if cls is messages.RequestHeader else []
        assert fields == list(cls.__slots__) + extra, cls.__name__
        structs = {name: value for name, value in vars(cls).items()
                   if isinstance(value, type) and issubclass(value, messages.Struct)}
        assert {name: list(struct.__slots__) for name, struct in structs.items()} == nested, cls.__name__


def test_type_checker_sees_fields_and_their_types(tmp_path, monkeypatch):
    mypy_api = pytest.importorskip("mypy.api")
    monkeypatch.chdir(ROOT)  # this checkout's kbroker, whichever one is installed
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from kbroker.protocol.messages import ProduceRequest, ProduceResponse\n"
        "ok = ProduceResponse(responses=[ProduceResponse.TopicProduceResponse(name='t')])\n"
        "count: int = ok.responses[0].partition_responses[0].base_offset\n"
        "bad = ProduceRequest(acks='all')\n"
        "ok.responses[0].no_such_field\n")
    stdout, _, status = mypy_api.run([
        str(sample), "--follow-imports=silent", "--no-error-summary",
        "--cache-dir", str(tmp_path / "cache")])
    errors = [line for line in stdout.splitlines() if "error:" in line]
    assert status == 1
    assert len(errors) == 2, stdout
    assert 'sample.py:4: error: Argument "acks" to "ProduceRequest" has incompatible type "str"' in errors[0]
    assert "sample.py:5: error:" in errors[1] and "no_such_field" in errors[1]
