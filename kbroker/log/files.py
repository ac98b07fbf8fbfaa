"""Small file helpers shared by the log layer."""

from __future__ import annotations

import os
from typing import TypeVar

T = TypeVar("T")


def write_file(path: str, data: bytes) -> None:
    """Replace a file's contents in place (for files that can always be rebuilt, like indexes)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def write_atomically(path: str, data: bytes) -> None:
    """Temp file, fsync, rename, fsync of the directory: readers see old or new, never torn."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_replacing(path: str, data: bytes) -> tuple[str, str]:
    """Temp file and rename, without waiting for the disk: returns the paths (the file and its
    directory) a flush job is to fsync later, off the event loop. A crash before that leaves the
    old file, the new one or a torn one, so only checked or rebuildable files are written so."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path, os.path.dirname(path) or "."


def read_if_exists(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def split_due(pending: list[tuple[int, T]], now_ms: int) -> tuple[list[tuple[int, T]], list[T]]:
    """(entries still waiting, items whose due time has come) of (due_ms, item) pairs."""
    waiting = [entry for entry in pending if entry[0] > now_ms]
    return waiting, [item for due, item in pending if due <= now_ms]
