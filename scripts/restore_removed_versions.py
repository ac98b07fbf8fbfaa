"""Put back the API versions Kafka 4.0 removed (KIP-896) into protocol_specs/.

kbroker serves them only when `--as-version` names a release before 4.0. Kafka's current
schemas no longer describe them, so they come from the project's own 2024 copy of the specs
(git history, before the 2026-08 regeneration). Run after scripts/gen_specs.py:
widens `valid_versions` of request and response to the old minimum, marks the old versions
as `removed_versions` in the request, and re-inserts fields that only those versions had
(ListOffsets v0 MaxNumOffsets/OldStyleOffsets, OffsetCommit v1 CommitTimestamp, DescribeConfigs
v0 IsDefault) at their old place in wire order.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "protocol_specs"
# The last commit with the 2024-10 specs (apache/kafka 1eb7644349), which still had them.
OLD_SPECS_COMMIT = "1fb3719^"


def old_spec(name: str) -> dict | None:
    try:
        text = subprocess.run(["git", "show", f"{OLD_SPECS_COMMIT}:protocol_specs/{name}"],
                              cwd=ROOT, check=True, capture_output=True, text=True).stdout
    except subprocess.CalledProcessError:
        return None
    return json.loads(text)


def merge_fields(old: list[dict], new: list[dict], below: int) -> list[dict]:
    """`new` in its order, plus each field of `old` that only versions before `below` had,
    placed after the field that preceded it in `old`."""
    old_by_name = {field["name"]: field for field in old}
    merged: list[dict] = []
    previous = None
    for field in old:
        if field["name"] not in {f["name"] for f in new} and field["versions"] \
                and field["versions"][0] < below:
            merged.append(("after", previous, field))
        previous = field["name"]
    out = []
    for field in new:
        if field["name"] in old_by_name and field.get("fields") and old_by_name[field["name"]].get("fields"):
            field = dict(field, fields=merge_fields(old_by_name[field["name"]]["fields"],
                                                    field["fields"], below))
        out.append(field)
    for _, after, field in merged:
        index = next((i + 1 for i, f in enumerate(out) if f["name"] == after), 0)
        out.insert(index, field)
    return out


def restore(path: Path) -> bool:
    spec = json.loads(path.read_text(encoding="utf-8"))
    old = old_spec(path.name)
    if "request" not in spec or old is None or "request" not in old:
        return False
    old_min = old["request"]["valid_versions"][0]
    deprecated = old["request"].get("deprecated_versions")
    if not deprecated or deprecated[0] != old_min:  # not removed for age (e.g. early-access v0)
        return False
    removed = spec["request"].get("removed_versions")
    new_min = removed[1] + 1 if removed else spec["request"]["valid_versions"][0]
    if old_min >= new_min:
        return False
    for side in ("request", "response"):
        message = spec[side]
        message["valid_versions"] = [old_min, message["valid_versions"][1]]
        message["fields"] = merge_fields(old[side]["fields"], message["fields"], new_min)
    request = spec["request"]
    request["removed_versions"] = [old_min, new_min - 1]
    spec["request"] = {key: request[key] for key in (
        "name", "type", "valid_versions", "flexible_versions", "deprecated_versions",
        "removed_versions", "latest_version_unstable", "fields")}
    path.write_text(json.dumps(spec, indent=1), encoding="utf-8")
    return True


def main() -> None:
    for path in sorted(SPECS.glob("*.json")):
        if restore(path):
            print(f"restored the versions before KIP-896 in {path.name}")


if __name__ == "__main__":
    main()
