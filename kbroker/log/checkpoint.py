"""Kafka's offset checkpoint files, one per log dir (`recovery-point-offset-checkpoint`):

    0                      version
    2                      number of entries
    orders 0 1200          topic, partition, offset
    orders 1 977

and the clean-shutdown marker `.kafka_cleanshutdown`, written last by a clean shutdown and
removed at start, so that its presence says every log was closed and fsynced.
"""

from __future__ import annotations

import logging
import os

from kbroker.log.files import read_if_exists

log = logging.getLogger("kbroker.log")

RECOVERY_POINT_FILE = "recovery-point-offset-checkpoint"
CLEAN_SHUTDOWN_FILE = ".kafka_cleanshutdown"
VERSION = 0


def format_offsets(offsets: dict[tuple[str, int], int]) -> bytes:
    lines = [str(VERSION), str(len(offsets))]
    lines += [f"{topic} {partition} {offset}" for (topic, partition), offset in offsets.items()]
    return ("\n".join(lines) + "\n").encode()


def read_offsets(path: str) -> dict[tuple[str, int], int]:
    """The entries of a checkpoint file; empty (with a warning) when it is missing or damaged,
    which makes recovery scan more, never less."""
    data = read_if_exists(path)
    if data is None:
        return {}
    try:
        lines = data.decode().splitlines()
        if int(lines[0]) != VERSION or int(lines[1]) != len(lines) - 2:
            raise ValueError("bad header")
        offsets = {}
        for line in lines[2:]:
            topic, partition, offset = line.split(" ")
            offsets[(topic, int(partition))] = int(offset)
        return offsets
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        log.warning("ignoring damaged %s (%s): every partition is recovered from its start", path, exc)
        return {}


def take_clean_shutdown_marker(data_dir: str) -> bool:
    """True when the last shutdown was clean; removes the marker, so a crash from now on is not."""
    path = os.path.join(data_dir, CLEAN_SHUTDOWN_FILE)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
