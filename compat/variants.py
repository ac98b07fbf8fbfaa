"""The matrix's variants: every scenario x client runs once per variant.

`--security plaintext,sasl_ssl --as-version latest,2.8,3.9` gives the variants plaintext/latest,
plaintext/2.8, plaintext/3.9 and sasl_ssl/latest (see variants()). Each has brokers of its own,
started with that listener (compat/security.py) and `kbroker serve --as-version X.Y`, and a table
of its own in the report. "latest" is the broker's own protocol (no --as-version). The releases
other than the latest run the current clients only (not --wide's older ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compat import security as sec

LATEST = "latest"


@dataclass(frozen=True)
class Variant:
    security: str = "plaintext"
    as_version: str = LATEST

    @property
    def name(self) -> str:
        return f"{self.security}/{self.as_version}"

    @property
    def title(self) -> str:
        listener = "SASL_SSL" if self.security == "sasl_ssl" else "PLAINTEXT"
        release = "the broker's latest protocol" if self.as_version == LATEST else f"--as-version {self.as_version}"
        return f"{listener}, {release}"

    @property
    def slug(self) -> str:
        return self.name.replace("/", "-")

    def release_allows(self, since: str) -> bool:
        """Whether the Kafka release this variant imitates has what a scenario needs (`since`)."""
        if not since or self.as_version == LATEST:
            return True
        return version_tuple(self.as_version) >= version_tuple(since)

    def broker(self, mechanism: str, work: Path) -> tuple[sec.Security, list[str]]:
        """The clients' security settings and the `kbroker serve` arguments of this variant."""
        security, args = sec.setup(self.security, mechanism, work / self.slug)
        if self.as_version != LATEST:
            args += ["--as-version", self.as_version]
        return security, args


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def variants(securities: str, versions: str) -> list[Variant]:
    """The first security with every release, and every other security with the first release
    (columns, not a product: SASL_SSL against 2.8 adds little to either)."""
    first_security, *other_securities = securities.split(",")
    first_version, *_ = releases = versions.split(",")
    return [Variant(first_security, v) for v in releases] + [Variant(s, first_version) for s in other_securities]
