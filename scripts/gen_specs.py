#!/usr/bin/env python3
"""Turn Apache Kafka's message schemas into kbroker's own protocol_specs/.

Usage: scripts/gen_specs.py REFERENCE_DIR [OUTPUT_DIR]

REFERENCE_DIR holds ``messages/*.json`` (Kafka's schema files), ``errors.tsv`` and
``coordinator-records/<coordinator>/*.json`` (the record formats Kafka writes to its internal
topics, written to ``records/<coordinator>/``).
The output keeps only wire facts (names, types, version ranges, defaults) in a
normalized form so the runtime never parses Kafka's loose syntax and never needs
the reference directory:

* a version range is ``[min, max]`` (``max`` null when open-ended) or null for "none";
* every field carries ``name``, ``type`` (a primitive name or ``"struct"``),
  ``array``, ``versions``, ``nullable_versions`` and its effective ``default``;
  struct fields add ``struct`` (the type name) and ``fields`` (inlined, with
  commonStructs resolved); tagged fields add ``tag`` and ``tagged_versions``;
  a per-field override of flexible encoding adds ``flexible_versions``.
* defaults are typed JSON values: numbers, booleans, strings (also for bytes,
  where only "" occurs), null, ``[]`` for arrays and ``{}`` for "a struct
  with all its own defaults".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PRIMITIVES = {
    "bool", "int8", "int16", "uint16", "int32", "uint32", "int64", "float64",
    "string", "bytes", "records", "uuid",
}
INTEGERS = {"int8", "int16", "uint16", "int32", "uint32", "int64"}
ZERO_UUID = "00000000-0000-0000-0000-000000000000"
# The embedded formats besides the RPCs that the broker needs.
DATA_FORMATS = ("ConsumerProtocolSubscription", "ConsumerProtocolAssignment")
HEADERS = ("RequestHeader", "ResponseHeader")


def strip_comments(text: str) -> str:
    """Drop ``//`` comments outside of string literals (the schemas are JSON plus comments)."""
    out = []
    i, n = 0, len(text)
    in_string = False
    while i < n:
        c = text[i]
        if in_string:
            out.append(c)
            if c == "\\":
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
            out.append(c)
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def load_schema(path: Path) -> dict:
    return json.loads(strip_comments(path.read_text(encoding="utf-8")))


def version_range(text: str | None) -> list | None:
    """'3+' -> [3, None], '0-5' -> [0, 5], '2' -> [2, 2], 'none'/absent -> None."""
    if text is None or text == "none":
        return None
    text = str(text).strip()
    if text.endswith("+"):
        return [int(text[:-1]), None]
    lo, _, hi = text.partition("-")
    return [int(lo), int(hi or lo)]


def effective_default(field: dict, element: str, is_array: bool, nullable: bool):
    """The value a reader assumes when the field is absent, typed for JSON."""
    raw = field.get("default")
    if raw == "null" or ("default" in field and raw is None):
        if not nullable:
            raise ValueError(f"{field['name']}: null default on a non-nullable field")
        return None
    if is_array:
        return []
    if element not in PRIMITIVES:
        return {}
    if element == "bool":
        if raw is None:
            return False
        return raw if isinstance(raw, bool) else raw.lower() == "true"
    if element in INTEGERS:
        return int(raw, 0) if isinstance(raw, str) else int(raw or 0)
    if element == "float64":
        return float(raw or 0)
    if element == "string":
        return "" if raw is None else str(raw)
    if element == "bytes":
        if raw not in (None, ""):
            raise ValueError(f"{field['name']}: unsupported bytes default {raw!r}")
        return ""
    if element == "records":
        return None
    if element == "uuid":
        if raw not in (None, "", ZERO_UUID):
            raise ValueError(f"{field['name']}: unsupported uuid default {raw!r}")
        return ZERO_UUID
    raise ValueError(f"{field['name']}: unknown type {element}")


class CommonStructs:
    """The file's commonStructs, normalized on first use (they may refer to ones defined later)."""

    def __init__(self, schema: dict):
        self.raw = {s["name"]: s["fields"] for s in schema.get("commonStructs", [])}
        self.done: dict[str, list] = {}

    def get(self, name: str) -> list | None:
        if name not in self.done and name in self.raw:
            self.done[name] = normalize_fields(self.raw[name], self)
        return self.done.get(name)


def normalize_fields(fields: list, common: CommonStructs) -> list:
    return [normalize_field(f, common) for f in fields]


def normalize_field(field: dict, common: CommonStructs) -> dict:
    type_name = field["type"]
    is_array = type_name.startswith("[]")
    element = type_name[2:] if is_array else type_name
    nullable = version_range(field.get("nullableVersions"))
    out = {
        "name": field["name"],
        "type": element if element in PRIMITIVES else "struct",
        "array": is_array,
        # A tagged field may leave out "versions": it exists wherever it may be tagged.
        "versions": version_range(field.get("versions", field.get("taggedVersions"))),
        "nullable_versions": nullable,
        "default": effective_default(field, element, is_array, nullable is not None),
    }
    if "tag" in field:
        out["tag"] = int(field["tag"])
        out["tagged_versions"] = version_range(field["taggedVersions"])
    if "flexibleVersions" in field:
        out["flexible_versions"] = version_range(field["flexibleVersions"])
    if element not in PRIMITIVES:
        out["struct"] = element
        fields = normalize_fields(field["fields"], common) if "fields" in field else common.get(element)
        if fields is None:
            raise ValueError(f"{field['name']}: struct {element} is not defined")
        out["fields"] = fields
    return out


def normalize_message(schema: dict) -> dict:
    common = CommonStructs(schema)
    out = {
        "name": schema["name"],
        "type": schema["type"],
        "valid_versions": version_range(schema["validVersions"]),
        "flexible_versions": version_range(schema["flexibleVersions"]),
    }
    if schema["type"].startswith("coordinator-"):
        out["record_type"] = schema["apiKey"]
    if schema["type"] == "request":
        out["deprecated_versions"] = version_range(schema.get("deprecatedVersions"))
        out["latest_version_unstable"] = bool(schema.get("latestVersionUnstable", False))
    out["fields"] = normalize_fields(schema["fields"], common)
    return out


def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=1), encoding="utf-8")


def convert_errors(tsv: Path) -> list[dict]:
    rows = tsv.read_text(encoding="utf-8").splitlines()
    header = rows[0].split("\t")
    errors = []
    for line in rows[1:]:
        if not line.strip():
            continue
        row = dict(zip(header, line.split("\t")))
        errors.append({"code": int(row["code"]), "name": row["name"], "retriable": row["retriable"] == "yes"})
    return errors


def generate_records(reference: Path, out_dir: Path) -> list[str]:
    """The coordinators' record formats: records/<coordinator>/<Name>.json."""
    written = []
    for path in sorted((reference / "coordinator-records").glob("*/*.json")):
        target = out_dir / "records" / path.parent.name
        target.mkdir(parents=True, exist_ok=True)
        write_json(target / path.name, normalize_message(load_schema(path)))
        written.append(f"{path.parent.name}/{path.stem}")
    return written


def remove_stale(out_dir: Path, written: list[str]) -> None:
    """Drop spec files of messages the reference no longer has (e.g. a renamed API)."""
    keep = {f"{name}.json" for name in written} | {"errors.json", "releases.json"}
    for path in out_dir.rglob("*.json"):
        if path.relative_to(out_dir).as_posix().removeprefix("records/") not in keep:
            path.unlink()


def generate(reference: Path, out_dir: Path) -> list[str]:
    messages = reference / "messages"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for request_path in sorted(messages.glob("*Request.json")):
        request = load_schema(request_path)
        if request.get("type") != "request" or "broker" not in request.get("listeners", []):
            continue
        api_name = request["name"].removesuffix("Request")
        response = load_schema(messages / f"{api_name}Response.json")
        if response["apiKey"] != request["apiKey"]:
            raise ValueError(f"{api_name}: request and response api keys differ")
        spec = {
            "api_key": request["apiKey"],
            "name": api_name,
            "listeners": sorted(request["listeners"]),
            "request": normalize_message(request),
            "response": normalize_message(response),
        }
        write_json(out_dir / f"{api_name}.json", spec)
        written.append(api_name)
    for name in HEADERS + DATA_FORMATS:
        write_json(out_dir / f"{name}.json", normalize_message(load_schema(messages / f"{name}.json")))
        written.append(name)
    write_json(out_dir / "errors.json", convert_errors(reference / "errors.tsv"))
    written += generate_records(reference, out_dir)
    remove_stale(out_dir, written)
    return written


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    out_dir = Path(argv[2]) if len(argv) == 3 else Path(__file__).resolve().parents[1] / "protocol_specs"
    written = generate(Path(argv[1]), out_dir)
    print(f"wrote {len(written)} specs and errors.json to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
