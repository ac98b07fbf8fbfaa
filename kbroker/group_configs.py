"""Group configs: per-group settings of the GROUP config resource (type 32), as Kafka's GroupConfig.

Rules:
1. A group config overrides, for one group id, the broker setting named as its synonym
   (share.record.lock.duration.ms -> group.share.record.lock.duration.ms); without an override
   the broker setting is in effect. Configs may be set before the group exists.
2. Values are checked as Kafka checks them: the type and choices of the setting, and durations
   within the broker's min/max settings (group.share.min.record.lock.duration.ms, ...), else
   INVALID_CONFIG. An unknown name is INVALID_CONFIG.
3. The overrides are kept in the data dir (Kafka keeps them in its metadata log) and survive
   restarts; deleting a group deletes its configs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import NamedTuple

from kbroker.config import Config
from kbroker.log.config import Setting, invalid
from kbroker.log.files import write_atomically
from kbroker.protocol.errors import ErrorCode, KafkaError

GROUP_CONFIGS_FILE = "group-configs.json"
_DURATION = re.compile(r"P(?!$)(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$")


def _check_offset_reset(value: str) -> None:
    if value in ("latest", "earliest"):
        return
    if value.startswith("by_duration:") and _DURATION.match(value.removeprefix("by_duration:")):
        return
    raise invalid("share.auto.offset.reset", value,
                  "String must be one of: latest, earliest, by_duration:PnDTnHnMn.nS")


class GroupSetting(NamedTuple):
    setting: Setting
    broker_name: str | None  # the broker setting giving its default
    bounds: tuple[str, str] | None  # broker settings bounding it (min, max)


GROUP_SETTINGS: dict[str, GroupSetting] = {g.setting.name: g for g in (
    GroupSetting(Setting("consumer.session.timeout.ms", "int", 45000, "The timeout to detect client "
                         "failures when using the consumer group protocol.", low=1),
                 "group.consumer.session.timeout.ms",
                 ("group.consumer.min.session.timeout.ms", "group.consumer.max.session.timeout.ms")),
    GroupSetting(Setting("consumer.heartbeat.interval.ms", "int", 5000, "The heartbeat interval given "
                         "to the members of a consumer group.", low=1), "group.consumer.heartbeat.interval.ms",
                 ("group.consumer.min.heartbeat.interval.ms", "group.consumer.max.heartbeat.interval.ms")),
    GroupSetting(Setting("share.auto.offset.reset", "string", "latest", "Where a share partition "
                         "starts when the group has no state for it: latest, earliest or "
                         "by_duration:<ISO8601 duration>.", validator=_check_offset_reset), None, None),
    GroupSetting(Setting("share.isolation.level", "string", "read_uncommitted", "Whether the share "
                         "group delivers only committed transactional records (read_committed).",
                         choices=("read_committed", "read_uncommitted")), None, None),
    GroupSetting(Setting("share.record.lock.duration.ms", "int", 30000, "The record acquisition "
                         "lock duration of the share group.", low=1000),
                 "group.share.record.lock.duration.ms",
                 ("group.share.min.record.lock.duration.ms", "group.share.max.record.lock.duration.ms")),
    GroupSetting(Setting("share.session.timeout.ms", "int", 45000, "The timeout to detect share "
                         "consumer failures.", low=1), "group.share.session.timeout.ms",
                 ("group.share.min.session.timeout.ms", "group.share.max.session.timeout.ms")),
    GroupSetting(Setting("share.heartbeat.interval.ms", "int", 5000, "The heartbeat interval given "
                         "to the members of a share group.", low=1), "group.share.heartbeat.interval.ms",
                 ("group.share.min.heartbeat.interval.ms", "group.share.max.heartbeat.interval.ms")),
)}


class GroupConfigs:
    """Every group's overrides, by group id, with the broker's settings as defaults."""

    def __init__(self, config: Config, data_dir: Path):
        self.config = config
        self._path = Path(data_dir) / GROUP_CONFIGS_FILE
        self._texts: dict[str, dict[str, str]] = json.loads(self._path.read_text()) \
            if self._path.exists() else {}
        self._values = {group: self._parse(texts) for group, texts in self._texts.items()}

    def groups(self) -> list[str]:
        """The groups with overrides (ListConfigResources)."""
        return sorted(self._texts)

    def overrides(self, group_id: str) -> dict[str, str]:
        return dict(self._texts.get(group_id, {}))

    def get(self, group_id: str, name: str):
        """The value in effect for one group (rule 1)."""
        values = self._values.get(group_id)
        if values is not None and name in values:
            return values[name]
        group_setting = GROUP_SETTINGS[name]
        if group_setting.broker_name is not None:
            return self.config[group_setting.broker_name]
        return group_setting.setting.default

    def default_text(self, name: str) -> tuple[str | None, bool]:
        """(text of the value a group without override has, whether a broker setting gives it)."""
        group_setting = GROUP_SETTINGS[name]
        if group_setting.broker_name is None:
            return group_setting.setting.render(group_setting.setting.default), False
        return group_setting.setting.render(self.config[group_setting.broker_name]), True

    def replace(self, group_id: str, texts: dict[str, str], validate_only: bool = False) -> None:
        """Make `texts` the overrides of a group (rule 2), persisted (rule 3)."""
        values = self._parse(texts)
        if validate_only:
            return
        if texts:
            self._texts[group_id], self._values[group_id] = dict(texts), values
        else:
            self._texts.pop(group_id, None)
            self._values.pop(group_id, None)
        self._save()

    def delete(self, group_id: str) -> None:
        if group_id in self._texts:
            self.replace(group_id, {})

    def _parse(self, texts: dict[str, str]) -> dict:
        values = {}
        for name, text in texts.items():
            group_setting = GROUP_SETTINGS.get(name)
            if group_setting is None:
                raise KafkaError(ErrorCode.INVALID_CONFIG, f"Unknown group config name: {name}")
            value = group_setting.setting.parse(text)
            if group_setting.bounds is not None:
                low, high = (self.config[bound] for bound in group_setting.bounds)
                if not low <= value <= high:
                    raise KafkaError(ErrorCode.INVALID_CONFIG, f"{name} must be greater than or equal "
                                     f"to {group_setting.bounds[0]} ({low}) and less than or equal to "
                                     f"{group_setting.bounds[1]} ({high})")
            values[name] = value
        return values

    def _save(self) -> None:
        write_atomically(str(self._path), json.dumps(self._texts, indent=1, sort_keys=True).encode())
