"""Stand-in for kbroker.protocol.FileRegion until the protocol layer provides it."""

from __future__ import annotations


class FileRegion:
    """Bytes of an open file to be sent with os.sendfile: no copy passes through Python."""

    __slots__ = ("fd", "position", "size")

    def __init__(self, fd: int, position: int, size: int):
        self.fd = fd
        self.position = position
        self.size = size

    def __repr__(self) -> str:
        return f"FileRegion(fd={self.fd}, position={self.position}, size={self.size})"
