"""Records as they cross process boundaries (JSON lines between cells and agents, any language).

Bytes travel base64-encoded so keys, values and header values round-trip exactly, including the
difference between a null and an empty value, which is one of the things the scenarios check.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field, replace


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


@dataclass(frozen=True)
class Rec:
    """One Kafka record; fields left None are "not given" (to produce) or "absent" (consumed)."""

    key: bytes | None = None
    value: bytes | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp: int | None = None
    partition: int | None = None
    offset: int | None = None
    arrived: float | None = None  # wall-clock time a consumer saw it (latency checks)

    def to_json(self) -> dict:
        out = {"k": b64(self.key), "v": b64(self.value), "h": [[k, b64(v)] for k, v in self.headers]}
        for name in ("timestamp", "partition", "offset", "arrived"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    @classmethod
    def from_json(cls, obj: dict) -> "Rec":
        return cls(
            key=unb64(obj.get("k")),
            value=unb64(obj.get("v")),
            headers=tuple((k, unb64(v)) for k, v in obj.get("h") or ()),
            timestamp=obj.get("timestamp"),
            partition=obj.get("partition"),
            offset=obj.get("offset"),
            arrived=obj.get("arrived"),
        )

    def content(self) -> tuple:
        """What a scenario compares: everything a producer chose (not arrival time)."""
        return (self.partition, self.offset, self.key, self.value, self.headers, self.timestamp)

    def without(self, *names: str) -> "Rec":
        return replace(self, **{name: None if name != "headers" else () for name in names})

    def short(self) -> str:
        def cut(data: bytes | None) -> str:
            if data is None:
                return "null"
            return repr(data[:20]) + (f"..({len(data)}B)" if len(data) > 20 else "")

        return (f"p{self.partition}@{self.offset} k={cut(self.key)} v={cut(self.value)} "
                f"h={[(k, cut(v)) for k, v in self.headers]} ts={self.timestamp}")


def encode_records(records) -> list[dict]:
    return [r.to_json() for r in records]


def decode_records(items) -> list[Rec]:
    return [Rec.from_json(item) for item in items]


@dataclass
class MemberSnapshot:
    """A group member's state as its agent reports it."""

    assigned: list[tuple[str, int]] = field(default_factory=list)
    records: list[Rec] = field(default_factory=list)
    error: str | None = None
