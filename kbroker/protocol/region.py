"""FileRegion: bytes that stay in a file until the server sends them with os.sendfile."""


class FileRegion:
    """``size`` bytes of the open file ``fd`` starting at ``position``.

    The codec only needs ``size`` (for length prefixes); the server sends the bytes.
    ``owner``, when given, is an object that keeps ``fd`` open for as long as it is referenced.
    """

    __slots__ = ("fd", "position", "size", "owner")

    def __init__(self, fd: int, position: int, size: int, owner: object = None):
        self.fd = fd
        self.position = position
        self.size = size
        self.owner = owner

    def __eq__(self, other):  # defining __eq__ alone leaves instances unhashable, as intended
        if type(other) is not FileRegion:
            return NotImplemented
        return (self.fd, self.position, self.size) == (other.fd, other.position, other.size)

    def __repr__(self):
        return f"FileRegion(fd={self.fd}, position={self.position}, size={self.size})"
