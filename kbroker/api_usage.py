"""Which API versions each client software used, for the compatibility report (`--api-usage-file`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import trio

from kbroker.log.files import write_atomically

SAVE_INTERVAL_S = 2.0
log = logging.getLogger("kbroker.api_usage")


@dataclass
class ApiUsage:
    """Client software -> API name -> versions seen; saved every SAVE_INTERVAL_S and at close."""

    path: Path | None
    seen: dict[str, dict[str, set[int]]] = field(default_factory=dict)
    dirty: bool = False

    def record(self, client: str, api_name: str, version: int) -> None:
        versions = self.seen.setdefault(client, {}).setdefault(api_name, set())
        if version not in versions:
            versions.add(version)
            self.dirty = True

    def record_unsupported(self, client: str, api_name: str, version: int) -> None:
        """A request refused because this broker does not serve its version: recorded as
        "<API> (unsupported)", so that the report shows which clients still send it."""
        self.record(client, f"{api_name} (unsupported)", version)

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        report = {
            client: {api: sorted(versions) for api, versions in sorted(apis.items())}
            for client, apis in sorted(self.seen.items())
        }
        try:
            write_atomically(str(self.path), json.dumps(report, indent=1).encode())
        except OSError as exc:  # a report must never stop the broker; tried again next time
            log.warning("cannot write --api-usage-file %s: %s", self.path, exc.strerror)
            return
        self.dirty = False

    async def run(self) -> None:
        while True:
            await trio.sleep(SAVE_INTERVAL_S)
            self.save()
