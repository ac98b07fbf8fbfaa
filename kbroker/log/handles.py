"""Open files of the log, bounded: a partition count never becomes an open-file count.

Every segment file and index file is opened on demand and kept in one least-recently-used set
of at most `log.open.files.max` files per log dir; the least recently used one is let go when
another is opened. A `FileHandle` closes its fd when the last holder drops it, so a read whose
FileRegion is still being sent, or a flush job in a worker thread, keeps its file open however
the set changes meanwhile (an fd is never closed under, or reused by, someone still using it).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Protocol

log = logging.getLogger("kbroker.log")

DEFAULT_OPEN_FILES = 512
# Appends that fail in a row before the log dir is taken offline (Kafka takes it offline at the
# first IOException; a few retries let a briefly full disk recover without a restart).
OFFLINE_AFTER_FAILURES = 3


class FileHandle:
    """An open file descriptor, closed when nothing holds the handle any more."""

    __slots__ = ("fd",)

    def __init__(self, fd: int):
        self.fd = fd

    @classmethod
    def open(cls, path: str, flags: int) -> FileHandle:
        return cls(os.open(path, flags, 0o644))

    def __del__(self):
        try:
            os.close(self.fd)
        except OSError:
            pass


class HandleHolder(Protocol):
    def release_handle(self) -> None:
        """Drop the holder's reference to its handle (it reopens on next use)."""


class OpenFiles:
    """The least-recently-used set of holders whose file is open."""

    __slots__ = ("capacity", "_lru")

    def __init__(self, capacity: int = DEFAULT_OPEN_FILES):
        self.capacity = max(capacity, 1)
        self._lru: OrderedDict[HandleHolder, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._lru)

    def use(self, holder: HandleHolder) -> None:
        """The holder's file is being used: it becomes the most recent; the least recent
        ones beyond the capacity let their files go."""
        lru = self._lru
        try:
            lru.move_to_end(holder)  # the usual case: one dict operation
            return
        except KeyError:
            pass
        lru[holder] = None
        while len(lru) > self.capacity:
            lru.popitem(last=False)[0].release_handle()

    def forget(self, holder: HandleHolder) -> None:
        self._lru.pop(holder, None)


class LogDir:
    """What the partitions of one data dir share: the open-file set and whether the dir is
    usable. After OFFLINE_AFTER_FAILURES failed writes in a row it is offline, as Kafka marks
    a failed log dir: its partitions answer KAFKA_STORAGE_ERROR until the broker restarts."""

    def __init__(self, path: str = "", open_files_max: int = DEFAULT_OPEN_FILES):
        self.path = path
        self.files = OpenFiles(open_files_max)
        self.offline = False
        self.failures = 0

    def write_failed(self, name: str, exc: OSError) -> None:
        self.failures += 1
        log.error("%s: write failed (%s), %d in a row", name, exc, self.failures)
        if self.failures >= OFFLINE_AFTER_FAILURES and not self.offline:
            self.offline = True
            log.error("log dir %s is offline after %d failed writes: its partitions answer "
                      "KAFKA_STORAGE_ERROR until the broker is restarted", self.path or ".",
                      self.failures)
