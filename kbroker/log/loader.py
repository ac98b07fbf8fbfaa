"""Opening a partition directory: which segments there are, how far they can be trusted, and
the producer state they imply (Kafka's LogLoader).

Recovery, as Kafka does it:
- after a clean shutdown (`recovery_point` None) nothing is scanned: index files are loaded
  and the log end offset is read from the last indexed batch on. A corrupt batch stays where
  it is and a consumer gets a corrupt-record error at that batch only;
- after an unclean shutdown every segment from the one holding the recovery point (the
  offset up to which data was fsynced) is scanned with CRC checks, and the log is cut at the
  first torn or corrupt batch, later segments dropped. Segments below the recovery point are
  rescanned only when their index files are missing or inconsistent;
- whatever is cut is logged at WARNING with offsets and byte counts.
Producer state comes from the newest usable snapshot plus a header scan of the rest.
"""

from __future__ import annotations

import logging
import os
from bisect import bisect_right
from typing import NamedTuple

from kbroker.log.cleaner import STAGING_DIR, SWAP_SUFFIX, complete_interrupted_cleaning
from kbroker.log.files import read_if_exists, unlink_quietly
from kbroker.log.handles import OpenFiles
from kbroker.log.index import AbortedTxn
from kbroker.log.markers import CONTROL_ABORT, CONTROL_COMMIT, parse_marker
from kbroker.log.producer_state import ProducerStateManager, list_snapshots
from kbroker.log.segment import DELETED_SUFFIX, LOG_SUFFIX, SEGMENT_SUFFIXES, LogSegment
from kbroker.protocol.errors import KafkaError
from kbroker.protocol.records import NO_COMPRESSION, BatchHeader

log = logging.getLogger("kbroker.log")

LOG_START_FILE = "log-start-offset"


class LoadedLog(NamedTuple):
    segments: list[LogSegment]
    log_start_offset: int
    log_end_offset: int
    producer_state: ProducerStateManager
    snapshot_offset: int  # of the producer-state snapshot on disk (-1: none)


def load(directory: str, name: str, index_interval: int, recovery_point: int | None,
         files: OpenFiles) -> LoadedLog:
    """Open (creating if needed) and recover a partition directory; `name` is for log lines."""
    os.makedirs(directory, exist_ok=True)
    names = os.listdir(directory)  # once: a start may open thousands of partitions
    if STAGING_DIR in names or any(name.endswith(SWAP_SUFFIX) for name in names):
        complete_interrupted_cleaning(directory)
        names = os.listdir(directory)
    bases = []
    for entry in names:
        if entry.endswith(DELETED_SUFFIX) or entry.endswith(".tmp"):
            os.unlink(os.path.join(directory, entry))
        elif entry.endswith(LOG_SUFFIX) and entry[:-len(LOG_SUFFIX)].isdigit():
            bases.append(int(entry[:-len(LOG_SUFFIX)]))
    bases.sort()
    log_start = read_log_start(directory)
    if not bases:
        segments = [LogSegment.create(directory, log_start or 0, index_interval, files)]
    else:
        segments = [LogSegment(directory, base, index_interval, files) for base in bases]
    _remove_orphan_indexes(directory, names, {segment.base_offset for segment in segments})
    end, lost_txn_from = _recover_segments(segments, name, recovery_point)
    log_start = min(max(segments[0].base_offset, log_start or 0), end)
    state, snapshot_offset = _load_producer_state(list_snapshots(directory, names), segments,
                                                  log_start, end, lost_txn_from)
    return LoadedLog(segments, log_start, end, state, snapshot_offset)


def _recover_segments(segments: list[LogSegment], name: str,
                      recovery_point: int | None) -> tuple[int, int]:
    """Load or rebuild every segment, cutting what fails; returns (log end offset, the lowest
    offset whose txn index was lost or the log end offset)."""
    lost_txn_from = None
    end = segments[0].base_offset
    i = 0
    while i < len(segments):
        segment = segments[i]
        is_last = i == len(segments) - 1
        next_base = None if is_last else segments[i + 1].base_offset
        if not segment.txn_index.load() and lost_txn_from is None:
            lost_txn_from = segment.base_offset
        below_recovery_point = recovery_point is None or (
            next_base is not None and next_base <= recovery_point)
        if below_recovery_point:
            loaded_end = segment.load_indexes(next_base)
            if loaded_end is not None:
                end = loaded_end
                i += 1
                continue
        size = segment.size
        end = segment.rebuild_indexes(verify_crc=True)
        if segment.size != size:
            log.warning("%s: truncated segment %d at offset %d: %d bytes (position %d on) hold a torn "
                        "or corrupt batch", name, segment.base_offset, end, size - segment.size,
                        segment.size)
            if not is_last:
                _drop_segments(segments[i + 1:], name, end)
                del segments[i + 1:]
        i += 1
    for segment in segments:
        kept = [t for t in segment.txn_index.entries if t.last_offset < end]
        if len(kept) != len(segment.txn_index.entries) or not os.path.exists(segment.txn_index.path):
            segment.txn_index.rewrite(kept)
    return end, end if lost_txn_from is None else lost_txn_from


def _drop_segments(dropped: list[LogSegment], name: str, end: int) -> None:
    log.warning("%s: deleted %d segments after the cut at offset %d: base offsets %s, %d bytes",
                name, len(dropped), end, [segment.base_offset for segment in dropped],
                sum(segment.size for segment in dropped))
    for segment in dropped:
        segment.close()
        for suffix in SEGMENT_SUFFIXES:
            unlink_quietly(segment.prefix + suffix)


def _load_producer_state(snapshots: list[tuple[int, str]], segments: list[LogSegment], log_start: int,
                         end: int, replay_limit: int) -> tuple[ProducerStateManager, int]:
    """Newest snapshot at or below both the log end offset and replay_limit, then replay the
    rest; returns the state and the snapshot's offset (-1: none)."""
    state, start, snapshot_offset = ProducerStateManager(), log_start, -1
    for offset, path in reversed(snapshots):
        if offset <= min(end, replay_limit):
            snapshot = ProducerStateManager.read_snapshot(path)
            if snapshot is not None:
                state, start = snapshot, offset
                snapshot_offset = offset
                break
    for offset, path in snapshots:
        if offset != snapshot_offset:
            unlink_quietly(path)
    replay(segments, state, max(start, segments[0].base_offset), end)
    return state, snapshot_offset


def replay(segments: list[LogSegment], state: ProducerStateManager, from_offset: int, end: int) -> None:
    """Re-apply batches >= from_offset to producer state; regenerate their txn index entries."""
    if from_offset >= end:
        return
    first = max(bisect_right([segment.base_offset for segment in segments], from_offset) - 1, 0)
    for segment in segments[first:]:
        segment.txn_index.rewrite([t for t in segment.txn_index.entries if t.last_offset < from_offset])
    for segment in segments[first:]:
        for position, header in segment.headers():
            if header.last_offset < from_offset:
                continue
            if header.is_control:
                apply_marker(state, segment, header, segment.read_batch(position, header))
            elif header.producer_id >= 0:
                state.record_data_batch(header, header.base_offset)


def apply_marker(state: ProducerStateManager, segment: LogSegment, header: BatchHeader, batch) -> None:
    """A COMMIT/ABORT marker ends its producer's transaction; an abort goes to the txn index."""
    if header.records_count < 1 or header.compression != NO_COMPRESSION:
        return
    try:
        control_type, coordinator_epoch = parse_marker(batch)
    except (ValueError, KafkaError):
        return
    if control_type not in (CONTROL_ABORT, CONTROL_COMMIT):
        return
    completed = state.record_marker(header.producer_id, header.producer_epoch, coordinator_epoch,
                                    control_type, header.base_offset, header.max_timestamp)
    if completed is not None and completed.aborted:
        others = state.first_unstable_offset()
        lso = completed.last_offset + 1 if others is None else others
        segment.txn_index.append(AbortedTxn(completed.producer_id, completed.first_offset,
                                            completed.last_offset, lso))


def read_log_start(directory: str) -> int | None:
    data = read_if_exists(os.path.join(directory, LOG_START_FILE))
    return int(data) if data and data.strip().isdigit() else None


def _remove_orphan_indexes(directory: str, names: list[str], bases: set[int]) -> None:
    for name in names:
        stem, dot, suffix = name.partition(".")
        if dot and "." + suffix in SEGMENT_SUFFIXES[1:] and stem.isdigit() and int(stem) not in bases:
            os.unlink(os.path.join(directory, name))
