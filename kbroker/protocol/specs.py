"""Read protocol_specs/ (written by scripts/gen_specs.py) into plain Python values."""

from __future__ import annotations

import json
from functools import cache

from kbroker.protocol.specs_path import SPECS_DIR

NON_API_FILES = {"RequestHeader", "ResponseHeader", "ConsumerProtocolSubscription", "ConsumerProtocolAssignment",
                 "errors", "releases"}


def in_range(versions: list | tuple | None, version: int) -> bool:
    """True if ``version`` lies in a spec range ``[min, max]`` (max None = open-ended; None = never)."""
    if versions is None:
        return False
    lo, hi = versions
    return version >= lo and (hi is None or version <= hi)


def load(name: str) -> dict:
    with open(SPECS_DIR / f"{name}.json", encoding="utf-8") as f:
        return json.load(f)


@cache
def api_specs() -> dict[int, dict]:
    """Every API spec by api key."""
    specs = {}
    for path in sorted(SPECS_DIR.glob("*.json")):
        if path.stem not in NON_API_FILES:
            spec = load(path.stem)
            specs[spec["api_key"]] = spec
    return specs
