"""One log segment: `<base offset>.log` plus its offset, time and transaction indexes."""

from __future__ import annotations

import errno
import os
from typing import Iterator

from kbroker.log.handles import FileHandle, OpenFiles
from kbroker.log.index import TxnIndex, offset_index, time_index
from kbroker.protocol.errors import KafkaError
from kbroker.protocol.records import HEADER_SIZE, BatchHeader, batch_headers, compute_crc

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
TXN_INDEX_SUFFIX = ".txnindex"
DELETED_SUFFIX = ".deleted"
SEGMENT_SUFFIXES = (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX)
HEADERS_CHUNK = 16 * 1024  # read-ahead of a header walk: some index intervals (4096 bytes)
BATCHES_CHUNK = 1 << 20  # read-ahead of a walk that needs whole batches (recovery, cleaning)


def file_prefix(directory: str, offset: int) -> str:
    """Kafka names segment files by base offset, 20 digits zero padded."""
    return os.path.join(directory, f"{offset:020d}")


class LogSegment:
    """Batches [base_offset, next segment's base) stored contiguously in one file.

    Index entries follow Kafka's LogSegment.append: once more than index.interval.bytes were
    appended since the last entry, the next batch gets an offset index entry (its last offset,
    its position) and the time index gets (max timestamp so far, its offset) if that grew.

    The files are opened on demand through the log dir's bounded set of open files
    (kbroker.log.handles); `handle()` gives a FileHandle that stays valid while it is held.
    """

    __slots__ = (
        "base_offset", "prefix", "path", "size", "index", "time_index", "txn_index",
        "max_timestamp", "offset_of_max_timestamp", "first_batch_timestamp",
        "bytes_since_index", "index_interval", "_files", "_handle",
    )

    def __init__(self, directory: str, base_offset: int, index_interval: int, files: OpenFiles,
                 create: bool = False):
        self.base_offset = base_offset
        self.index_interval = index_interval
        self.prefix = file_prefix(directory, base_offset)
        self.path = self.prefix + LOG_SUFFIX
        self._files = files
        self._handle: FileHandle | None = None
        if create:
            self._handle = FileHandle.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
            files.use(self)
            self.size = os.fstat(self._handle.fd).st_size
        else:
            self.size = os.stat(self.path).st_size
        self.index = offset_index(self.prefix + INDEX_SUFFIX, files)
        self.time_index = time_index(self.prefix + TIME_INDEX_SUFFIX, files)
        self.txn_index = TxnIndex(self.prefix + TXN_INDEX_SUFFIX)
        self.max_timestamp = -1
        self.offset_of_max_timestamp = base_offset
        self.first_batch_timestamp: int | None = None
        self.bytes_since_index = 0

    @classmethod
    def create(cls, directory: str, base_offset: int, index_interval: int,
               files: OpenFiles) -> LogSegment:
        segment = cls(directory, base_offset, index_interval, files, create=True)
        segment.index.reset()
        segment.time_index.reset()
        segment.txn_index.rewrite([])
        return segment

    def handle(self) -> FileHandle:
        """The log file (opened again if the open-file set let it go); hold the handle, not
        its fd, across anything that may open other files."""
        handle = self._handle
        if handle is None:
            handle = self._handle = FileHandle.open(self.path, os.O_RDWR | os.O_APPEND)
        self._files.use(self)
        return handle

    @property
    def fd(self) -> int:
        """The log file's fd, for a call that uses it at once."""
        return self.handle().fd

    def release_handle(self) -> None:
        self._handle = None

    # -- appending ---------------------------------------------------------------------------

    def append(self, parts: list, size: int, last_offset: int, max_timestamp: int) -> None:
        """Write one batch given as buffers (patched base offset first) and index it."""
        position = self.size
        fd = self.handle().fd
        try:
            written = os.writev(fd, parts)
            if written != size:  # a short write to a regular file means the disk is full
                raise OSError(errno.ENOSPC, f"short write: {written} of {size} bytes", self.path)
            self._track(position, size, last_offset, max_timestamp)
        except OSError:  # nothing of the batch stays: the log never holds it twice
            _truncate_quietly(fd, position)
            raise
        self.size = position + size
        if self.first_batch_timestamp is None:
            self.first_batch_timestamp = max_timestamp

    def _track(self, position: int, size: int, last_offset: int, max_timestamp: int,
               persist: bool = True) -> None:
        """Index a batch written at position; on OSError nothing of it stays tracked."""
        previous = self.max_timestamp, self.offset_of_max_timestamp
        if max_timestamp > self.max_timestamp:
            self.max_timestamp = max_timestamp
            self.offset_of_max_timestamp = last_offset
        if self.bytes_since_index > self.index_interval:
            counts = len(self.index), len(self.time_index)
            try:
                self.index.append(last_offset - self.base_offset, position, persist)
                self._index_max_timestamp(persist)
            except OSError:
                self.index.truncate(counts[0])
                self.time_index.truncate(counts[1])
                self.max_timestamp, self.offset_of_max_timestamp = previous
                raise
            self.bytes_since_index = 0
        self.bytes_since_index += size

    def _index_max_timestamp(self, persist: bool = True) -> None:
        times = self.time_index.keys
        if self.max_timestamp > (times[-1] if times else -1):
            self.time_index.append(self.max_timestamp, self.offset_of_max_timestamp - self.base_offset,
                                   persist)

    def seal(self) -> None:
        """The segment stops being active: index its final max timestamp, release index fds."""
        self._index_max_timestamp()
        self.index.close()
        self.time_index.close()

    # -- reading -----------------------------------------------------------------------------

    def headers(self, position: int = 0, end: int | None = None) -> Iterator[tuple[int, BatchHeader]]:
        """Walk batch headers from position (a batch start).

        Reads ahead a chunk at a time while batches are small, so that a walk over small
        batches (a tailing consumer's, from an index entry on) costs one pread, not one each.
        """
        end = self.size if end is None else end
        handle = self.handle()
        read = HEADERS_CHUNK
        while position + HEADER_SIZE <= end:
            chunk = os.pread(handle.fd, min(read, end - position), position)
            at = -1
            for at, header in batch_headers(chunk):
                yield position + at, header
            if at < 0:
                raise OSError(f"{self.prefix}{LOG_SUFFIX} ends inside a batch header at {position}")
            position += at + header.size
            read = HEADERS_CHUNK if header.size < HEADERS_CHUNK else HEADER_SIZE

    def position_of(self, offset: int) -> tuple[int, BatchHeader] | None:
        """(position, header) of the first batch whose last offset >= offset, if any here."""
        slot = self.index.floor(offset - self.base_offset)
        start = self.index.values[slot] if slot >= 0 else 0
        for position, header in self.headers(start):
            if header.last_offset >= offset:
                return position, header
        return None

    def read_batch(self, position: int, header: BatchHeader) -> bytes:
        return os.pread(self.fd, header.size, position)

    # -- recovery ----------------------------------------------------------------------------

    def valid_batches(self, verify_crc: bool) -> Iterator[tuple[int, BatchHeader]]:
        """Walk batches while they are structurally sound (and their CRC matches if verify_crc).

        The walk ends at the first torn, oversized or corrupt batch.
        """
        handle = self.handle()
        try:
            for position, header, batch in read_batches(handle.fd, 0, self.size):
                if header.magic != 2 or (verify_crc and compute_crc(batch) != header.crc):
                    return
                yield position, header
        except KafkaError:  # a batch length too small to go on from
            return

    def rebuild_indexes(self, verify_crc: bool) -> int:
        """Re-derive indexes and timestamps from the data and cut any invalid tail.

        Returns the offset after the last valid batch (the base offset when there is none).
        """
        self.index.reset()
        self.time_index.reset()
        self.max_timestamp = -1
        self.offset_of_max_timestamp = self.base_offset
        self.first_batch_timestamp = None
        self.bytes_since_index = 0
        valid_end = 0
        next_offset = self.base_offset
        for position, header in self.valid_batches(verify_crc):
            if self.first_batch_timestamp is None:
                self.first_batch_timestamp = header.max_timestamp
            next_offset = header.last_offset + 1
            self._track(position, header.size, header.last_offset, header.max_timestamp, persist=False)
            valid_end = position + header.size
        self.index.save()
        self.time_index.save()
        if valid_end != self.size:
            os.truncate(self.path, valid_end)
            self.size = valid_end
        return next_offset

    def load_indexes(self, next_offset: int | None) -> int | None:
        """Load the index files; returns the offset after the segment's last batch, or None when
        an index is missing or inconsistent.

        `next_offset` is the next segment's base offset; for the last segment (None) it is
        found by walking the batches after the last index entry, and None is returned when
        they do not end exactly at the end of the file.
        """
        if not (self.index.load() and self.time_index.load()):
            return None
        index, times = self.index, self.time_index
        if next_offset is None:
            next_offset = self._walk_tail()
            if next_offset is None:
                return None
        rel_limit = next_offset - self.base_offset
        if index.keys and (index.keys[0] < 0 or index.keys[-1] >= rel_limit
                           or index.values[-1] >= self.size):
            return None
        if times.keys and (times.values[0] < 0 or times.values[-1] >= rel_limit):
            return None
        if times.keys and times.keys[-1] > self.max_timestamp:
            self.max_timestamp = times.keys[-1]
            self.offset_of_max_timestamp = self.base_offset + times.values[-1]
        if self.size:
            self.first_batch_timestamp = BatchHeader.parse(os.pread(self.fd, HEADER_SIZE, 0)).max_timestamp
        return next_offset

    def _walk_tail(self) -> int | None:
        """The offset after the last batch, walking headers from the last index entry; None
        when the walk does not end exactly at the end of the file."""
        start = self.index.values[-1] if self.index.keys else 0
        next_offset, end = self.base_offset, start
        try:
            for position, header in self.headers(start):
                end = position + header.size
                next_offset = header.last_offset + 1
                if header.max_timestamp > self.max_timestamp:
                    self.max_timestamp = header.max_timestamp
                    self.offset_of_max_timestamp = header.last_offset
        except (KafkaError, OSError):
            return None
        if end != self.size or (start and next_offset == self.base_offset):
            return None
        self.bytes_since_index = end - start
        return next_offset

    # -- lifecycle ---------------------------------------------------------------------------

    def sync_handles(self) -> list[FileHandle]:
        """Handles of the files a flush fsyncs: the log and its offset and time indexes."""
        return [self.handle(), FileHandle.open(self.index.path, os.O_RDONLY | os.O_CREAT),
                FileHandle.open(self.time_index.path, os.O_RDONLY | os.O_CREAT)]

    def close(self) -> None:
        """Let the files go (a FileRegion or flush job still holding a handle keeps it open)."""
        self.index.close()
        self.time_index.close()
        self._files.forget(self)
        self._handle = None

    def rename_deleted(self) -> None:
        """Kafka's async delete: files get `.deleted` now; reads in flight hold their handles."""
        self.close()
        self.path = self.prefix + LOG_SUFFIX + DELETED_SUFFIX
        for suffix in SEGMENT_SUFFIXES:
            try:
                os.rename(self.prefix + suffix, self.prefix + suffix + DELETED_SUFFIX)
            except FileNotFoundError:
                pass

    def unlink_deleted(self) -> None:
        for suffix in SEGMENT_SUFFIXES:
            try:
                os.unlink(self.prefix + suffix + DELETED_SUFFIX)
            except FileNotFoundError:
                pass
        self.close()


def read_batches(fd: int, position: int, end: int) -> Iterator[tuple[int, BatchHeader, memoryview]]:
    """(position, header, bytes) of each whole batch stored in [position, end) of a file.

    Reads large chunks; a batch larger than a chunk is read on its own. The walk ends quietly
    at a batch that runs past `end` (a torn tail); recovery and cleaning decide what that means.
    """
    while position + HEADER_SIZE <= end:
        chunk = memoryview(os.pread(fd, min(BATCHES_CHUNK, end - position), position))
        used = 0
        for at, header in batch_headers(chunk):
            if at + header.size > len(chunk):
                break
            yield position + at, header, chunk[at:at + header.size]
            used = at + header.size
        if used == 0:  # one batch larger than the chunk, or a torn one
            if len(chunk) < HEADER_SIZE:
                return
            header = BatchHeader.parse(chunk)
            if position + header.size > end:
                return
            batch = os.pread(fd, header.size, position)
            if len(batch) < header.size:
                return
            yield position, header, memoryview(batch)
            used = header.size
        position += used


def _truncate_quietly(fd: int, size: int) -> None:
    """Undo a failed append's partial write, if the disk lets us."""
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass
