"""Segment indexes kept in compact in-memory arrays and mirrored to append-only files.

Files hold only written entries (no preallocation), big-endian like Kafka's:
  .index      relative offset int32, file position int32        (sparse offset index)
  .timeindex  timestamp int64, relative offset int32             (sparse time index)
  .txnindex   version int16, producerId, firstOffset, lastOffset, lastStableOffset int64
"""

from __future__ import annotations

import os
import struct
from array import array
from bisect import bisect_right
from typing import NamedTuple

from kbroker.log.files import read_if_exists, write_file
from kbroker.log.handles import FileHandle, OpenFiles


class SparseIndex:
    """Sorted (key, value) pairs; `floor(key)` finds the last entry with key <= a target.

    Offset index: key = relative offset, value = position. Time index: key = timestamp,
    value = relative offset.
    """

    __slots__ = ("path", "keys", "values", "_entry", "_files", "_handle")

    def __init__(self, path: str, key_code: str, value_code: str, entry: struct.Struct,
                 files: OpenFiles):
        self.path = path
        self.keys = array(key_code)
        self.values = array(value_code)
        self._entry = entry
        self._files = files
        self._handle: FileHandle | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def load(self) -> bool:
        """Read the file; False (and empty) when missing, torn or out of order."""
        data = read_if_exists(self.path)
        if data is None or len(data) % self._entry.size:
            return False
        keys, values = self.keys, self.values
        for key, value in self._entry.iter_unpack(data):
            if keys and (key <= keys[-1] or value < values[-1]):
                del keys[:], values[:]
                return False
            keys.append(key)
            values.append(value)
        return True

    def append(self, key: int, value: int, persist: bool = True) -> None:
        """Add an entry; persist=False defers the file write to `save` (bulk rebuilds)."""
        if persist:
            os.write(self.handle().fd, self._entry.pack(key, value))
        self.keys.append(key)
        self.values.append(value)

    def truncate(self, count: int) -> None:
        """Forget the entries after the first `count` in memory (the file is checked on load)."""
        del self.keys[count:], self.values[count:]

    def floor(self, key: int) -> int:
        """Index of the last entry whose key <= key, or -1."""
        return bisect_right(self.keys, key) - 1

    def save(self) -> None:
        """Rewrite the file from memory."""
        self.close()
        write_file(self.path, b"".join(self._entry.pack(k, v) for k, v in zip(self.keys, self.values)))

    def reset(self) -> None:
        del self.keys[:], self.values[:]
        self.save()

    def handle(self) -> FileHandle:
        """The index file, opened for appending (again, if the open-file set let it go)."""
        handle = self._handle
        if handle is None:
            handle = self._handle = FileHandle.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self._files.use(self)
        return handle

    def release_handle(self) -> None:
        self._handle = None

    def close(self) -> None:
        self._files.forget(self)
        self._handle = None


OFFSET_ENTRY = struct.Struct(">ii")
TIME_ENTRY = struct.Struct(">qi")


def offset_index(path: str, files: OpenFiles) -> SparseIndex:
    return SparseIndex(path, "i", "i", OFFSET_ENTRY, files)


def time_index(path: str, files: OpenFiles) -> SparseIndex:
    return SparseIndex(path, "q", "i", TIME_ENTRY, files)


class AbortedTxn(NamedTuple):
    producer_id: int
    first_offset: int
    last_offset: int
    last_stable_offset: int


_TXN_ENTRY = struct.Struct(">hqqqq")
TXN_ENTRY_SIZE = _TXN_ENTRY.size  # 34, as Kafka's AbortedTxn


class TxnIndex:
    """The aborted transactions whose ABORT marker lies in one segment."""

    __slots__ = ("path", "entries")

    def __init__(self, path: str):
        self.path = path
        self.entries: list[AbortedTxn] = []

    def load(self) -> bool:
        """Read the file; False (and empty) when missing or torn."""
        data = read_if_exists(self.path)
        if data is None or len(data) % TXN_ENTRY_SIZE:
            return False
        self.entries = [AbortedTxn(*fields[1:]) for fields in _TXN_ENTRY.iter_unpack(data)]
        return True

    def append(self, txn: AbortedTxn) -> None:
        self.entries.append(txn)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, _TXN_ENTRY.pack(0, *txn))
        finally:
            os.close(fd)

    def rewrite(self, entries: list[AbortedTxn]) -> None:
        self.entries = list(entries)
        write_file(self.path, b"".join(_TXN_ENTRY.pack(0, *txn) for txn in entries))

    def collect(self, start_offset: int, upper_offset: int, out: list[AbortedTxn]) -> bool:
        """Add entries overlapping [start_offset, upper_offset); True once the search is complete.

        Complete means an entry's lastStableOffset reached upper_offset: no later segment can hold
        an aborted transaction that started below upper_offset (Kafka's TxnIndexSearchResult).
        """
        for txn in self.entries:
            if txn.last_offset >= start_offset and txn.first_offset < upper_offset:
                out.append(txn)
            if txn.last_stable_offset >= upper_offset:
                return True
        return False
