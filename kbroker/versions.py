"""Older Kafka releases as their clients saw them (`kbroker serve --as-version X.Y`).

protocol_specs/releases.json holds each release's ApiVersions ranges (facts); this module adds
the little else a client can tell apart: broker defaults that changed, and whether the release
still had the versions Kafka 4.0 removed (KIP-896). The api layer turns a Release into the
versions it serves and advertises (kbroker/api/registry.py). No Release means the latest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache

from kbroker.protocol.specs_path import SPECS_DIR

# Broker defaults a release had that a later one changed: (changed in, setting, older default).
_OLDER_DEFAULTS = (
    ((4, 0), "log.message.timestamp.after.max.ms", "9223372036854775807"),  # KIP-1030: 1 hour
)


def _number(name: str) -> tuple[int, int]:
    major, minor = name.split(".")
    return int(major), int(minor)


@dataclass(frozen=True, slots=True)
class Release:
    name: str  # "2.8"
    api_versions: dict[str, tuple[int, int]]  # what its ApiVersions advertised, by API name

    @property
    def number(self) -> tuple[int, int]:
        return _number(self.name)

    @property
    def has_removed_versions(self) -> bool:
        """Whether it still served the versions Kafka 4.0 removed (KIP-896)."""
        return self.number < (4, 0)

    @property
    def has_features(self) -> bool:
        """Whether its ApiVersions names cluster features: a ZooKeeper-mode broker (before
        4.0) finalizes none, so its SupportedFeatures and FinalizedFeatures are empty."""
        return self.number >= (4, 0)

    def config_defaults(self) -> dict[str, str]:
        """Broker settings whose default in this release differs from the latest's."""
        return {setting: text for changed_in, setting, text in _OLDER_DEFAULTS
                if self.number < changed_in}


@cache
def _table() -> dict[str, dict[str, tuple[int, int]]]:
    with open(SPECS_DIR / "releases.json", encoding="utf-8") as f:
        releases = json.load(f)["releases"]
    return {name: {api: (low, high) for api, (low, high) in apis.items()}
            for name, apis in releases.items()}


def release_names() -> list[str]:
    return sorted(_table(), key=_number)


def release(name: str) -> Release:
    """The release `name` ("2.8"); ValueError naming the supported ones otherwise."""
    table = _table()
    if name not in table:
        raise ValueError(f"--as-version {name}: not a Kafka release kbroker can act as; "
                         f"supported: {', '.join(release_names())}")
    return Release(name, table[name])
