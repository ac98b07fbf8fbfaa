"""The cluster features of KIP-584: which levels this broker supports and which are finalized.

One table, read by ApiVersions (SupportedFeatures, FinalizedFeatures), UpdateFeatures, and any
part whose behaviour follows a feature level (transactions v2 follow `transaction.version`).
Names, levels and dependencies are Kafka 4.2's; a feature's `max_level` is the highest level
kbroker implements, raised by whoever implements the next level.

Rules, as Kafka's controller (FeatureControlManager) applies them:
1. A feature nobody finalized explicitly is finalized at its `default_level` (a fresh cluster
   formats at the latest production levels); UpdateFeatures records explicit levels.
2. A level outside the supported range is refused; level 0 removes a feature (it is then
   absent from FinalizedFeatures, as Kafka omits level-0 features).
3. Going down needs a SAFE or UNSAFE downgrade type, going up needs UPGRADE.
4. metadata.version cannot go below a level whose metadata format changed unless unsafe, and
   unsafe metadata downgrades are refused altogether, as in Kafka 4.
5. An updated feature's dependencies at its new level (eligible.leader.replicas.version 1 needs
   metadata.version 24) must hold among the levels after the whole request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from kbroker.log.files import read_if_exists, write_atomically
from kbroker.protocol.errors import ErrorCode, KafkaError

METADATA_VERSION = "metadata.version"
TRANSACTION_VERSION = "transaction.version"
GROUP_VERSION = "group.version"
KRAFT_VERSION = "kraft.version"
ELIGIBLE_LEADER_REPLICAS_VERSION = "eligible.leader.replicas.version"
SHARE_VERSION = "share.version"

FEATURES_FILE = "finalized-features.json"

# UpdateFeatures' UpgradeType (v1+); v0's AllowDowngrade maps to SAFE_DOWNGRADE.
UPGRADE, SAFE_DOWNGRADE, UNSAFE_DOWNGRADE = 1, 2, 3

# metadata.version levels whose metadata format changed (Kafka's MetadataVersion.didMetadataChange),
# between the oldest level Kafka 4 supports (7, 3.3-IV3) and 4.2-IV1 (29).
_METADATA_CHANGED_AT = frozenset({7, 8, 11, 13, 14, 15, 17, 23})


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    min_level: int  # the supported range
    max_level: int
    default_level: int  # the level a fresh broker finalizes (rule 1)
    # level -> {feature: lowest level it needs} (rule 5)
    dependencies: dict[int, dict[str, int]] = field(default_factory=dict)


FEATURES: dict[str, Feature] = {feature.name: feature for feature in (
    Feature(METADATA_VERSION, 7, 29, 29),  # 3.3-IV3 .. 4.2-IV1
    Feature(KRAFT_VERSION, 0, 0, 0),  # a static quorum: no directory ids (KIP-853)
    Feature(TRANSACTION_VERSION, 0, 2, 2),  # 2: transactions v2 (KIP-890), Kafka 4.2's default
    Feature(GROUP_VERSION, 0, 1, 1, {1: {METADATA_VERSION: 22}}),  # 1: KIP-848 consumer groups
    Feature(SHARE_VERSION, 0, 1, 1, {1: {METADATA_VERSION: 27}}),  # 1: share groups (KIP-932)
    Feature(ELIGIBLE_LEADER_REPLICAS_VERSION, 0, 1, 1, {1: {METADATA_VERSION: 24}}),
)}


def supported_features() -> list[Feature]:
    """The features ApiVersions advertises as supported: those with a level above 0, as Kafka."""
    return [feature for feature in FEATURES.values() if feature.max_level > 0]


class FinalizedFeatures:
    """The finalized level of each feature, kept in the data dir (Kafka keeps FeatureLevelRecords
    in its metadata log). Levels beyond what this kbroker supports (a newer kbroker wrote them)
    fall back to the supported maximum."""

    def __init__(self, data_dir: Path, node_id: int):
        self._path = data_dir / FEATURES_FILE
        self._controller = f"Local controller {node_id}"  # as Kafka's messages name it
        stored = read_if_exists(str(self._path))
        self._explicit: dict[str, int] = json.loads(stored) if stored else {}

    def levels(self) -> dict[str, int]:
        """Every known feature's finalized level, level 0 included."""
        levels = {}
        for name, feature in FEATURES.items():
            level = self._explicit.get(name, feature.default_level)
            levels[name] = min(max(level, feature.min_level), feature.max_level)
        return levels

    def level(self, name: str) -> int:
        return self.levels()[name]

    def finalized(self) -> dict[str, int]:
        """The features ApiVersions lists as finalized: those above level 0."""
        return {name: level for name, level in self.levels().items() if level > 0}

    def update(self, updates: dict[str, tuple[int, int]], validate_only: bool) -> None:
        """Apply {feature: (level, upgrade type)} all or nothing; raises KafkaError
        (INVALID_UPDATE_VERSION) with Kafka's message for the first update refused."""
        levels = self.levels()
        for name, (level, upgrade_type) in updates.items():
            _check_update(name, level, upgrade_type, levels.get(name, 0), self._controller)
        after = {**levels, **{name: level for name, (level, _) in updates.items()}}
        for name in updates:
            _check_dependencies(name, after)
        if validate_only:
            return
        self._explicit.update({name: level for name, (level, _) in updates.items()})
        write_atomically(str(self._path), json.dumps(self._explicit, sort_keys=True).encode())


def _invalid(name: str, level: int, reason: str) -> KafkaError:
    return KafkaError(ErrorCode.INVALID_UPDATE_VERSION,
                      f"Invalid update version {level} for feature {name}. {reason}")


def _invalid_metadata_version(level: int, reason: str) -> KafkaError:
    """Kafka's own wording for the checks only metadata.version has."""
    return KafkaError(ErrorCode.INVALID_UPDATE_VERSION, f"Invalid metadata.version {level}. {reason}")


def _check_update(name: str, level: int, upgrade_type: int, current: int, controller: str) -> None:
    if upgrade_type not in (UPGRADE, SAFE_DOWNGRADE, UNSAFE_DOWNGRADE):
        raise _invalid(name, level, "The controller does not support the given upgrade type.")
    if level < 0:
        raise _invalid(name, level, "A feature version cannot be less than 0.")
    feature = FEATURES.get(name)
    if feature is None or feature.max_level == 0:
        if level > 0:
            raise _invalid(name, level, f"{controller} does not support this feature.")
    elif not feature.min_level <= level <= feature.max_level:
        span = (f"{feature.min_level}" if feature.min_level == feature.max_level
                else f"{feature.min_level}-{feature.max_level}")
        raise _invalid(name, level, f"{controller} only supports versions {span}")
    if level < current and upgrade_type == UPGRADE:
        raise _invalid(name, level, "Can't downgrade the version of this feature without setting "
                                    "the upgrade type to either safe or unsafe downgrade.")
    if level > current and upgrade_type != UPGRADE:
        raise _invalid(name, level, "Can't downgrade to a newer version.")
    metadata_lost = name == METADATA_VERSION and any(
        current >= changed > level for changed in _METADATA_CHANGED_AT)
    if metadata_lost and upgrade_type == UNSAFE_DOWNGRADE:
        raise _invalid_metadata_version(level, "Unsafe metadata downgrade is not supported in this version.")
    if metadata_lost:
        raise _invalid_metadata_version(level, "Refusing to perform the requested downgrade "
                                        "because it might delete metadata information. Retry "
                                        "using UNSAFE_DOWNGRADE if you want to force the "
                                        "downgrade to proceed.")


def _check_dependencies(name: str, levels: dict[str, int]) -> None:
    level = levels[name]
    feature = FEATURES.get(name)
    for needed_name, needed in (feature.dependencies.get(level, {}) if feature else {}).items():
        if levels.get(needed_name, 0) < needed:
            raise _invalid(name, level, f"{name} could not be set to {level} because it depends "
                                        f"on {needed_name} level {needed}")

