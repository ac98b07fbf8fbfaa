"""Variable-length integers shared by the generated codecs and record batches.

uvarint is unsigned LEB128 (compact lengths, tag numbers); varint/varlong are the
zig-zag forms used inside records. Readers take ``(buf, pos)`` and return
``(value, new_pos)`` so callers keep a plain integer cursor.
"""

from kbroker.protocol.exceptions import CorruptFrame

INT32_MAX = (1 << 31) - 1  # Kafka's Integer.MAX_VALUE: offset deltas, sequences, int settings


def read_uvarint(buf, pos: int, max_bytes: int = 5) -> tuple[int, int]:
    """Read an unsigned LEB128 of at most ``max_bytes`` bytes (5 for 32 bits, 10 for 64)."""
    value = 0
    shift = 0
    for _ in range(max_bytes):
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise CorruptFrame("varint is too long")


def write_uvarint(value: int) -> bytes:
    """Encode a non-negative integer as unsigned LEB128."""
    if value < 0x4000:  # one or two bytes: every length below 16 KiB
        if value < 0:
            raise ValueError(f"uvarint cannot be negative: {value}")
        return bytes((value,)) if value < 0x80 else bytes(((value & 0x7F) | 0x80, value >> 7))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(buf, pos: int, max_bytes: int = 5) -> tuple[int, int]:
    """Read a zig-zag signed varint (max_bytes=10 for a varlong)."""
    raw, pos = read_uvarint(buf, pos, max_bytes)
    return (raw >> 1) ^ -(raw & 1), pos


def write_varint(value: int) -> bytes:
    """Encode a signed integer with zig-zag then LEB128 (valid for varint and varlong)."""
    return write_uvarint((value << 1) ^ (value >> 63))
