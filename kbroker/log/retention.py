"""Which leading segments retention may delete (Kafka's UnifiedLog.deleteOldSegments rules).

Only whole segments go, oldest first; an empty active segment is never deleted, a non-empty
one is (the log rolls first). Compaction is done by kbroker/log/cleaner.py.
"""

from __future__ import annotations

import os


def _leading(log, predicate) -> int:
    """How many segments from the start satisfy predicate(segment, next segment or None)."""
    segments = log.segments
    count = 0
    for i, segment in enumerate(segments):
        following = segments[i + 1] if i + 1 < len(segments) else None
        if following is None and segment.size == 0:
            break
        if not predicate(segment, following):
            break
        count += 1
    return count


def below_log_start(log) -> int:
    """Segments entirely below the log start offset (DeleteRecords moved it past them)."""
    start = log.log_start_offset
    return _leading(log, lambda seg, nxt: (nxt.base_offset if nxt else log.log_end_offset) <= start)


def _largest_timestamp(segment) -> int:
    if segment.max_timestamp >= 0:
        return segment.max_timestamp
    return os.stat(segment.path).st_mtime_ns // 1_000_000


def deletable_segments(log, now_ms: int) -> int:
    """Segments to delete now: below log start, plus retention.ms/.bytes for delete policy."""
    count = below_log_start(log)
    config = log.config
    if not config.delete:
        return count
    if config.retention_ms >= 0:
        count = max(count, _leading(
            log, lambda seg, nxt: now_ms - _largest_timestamp(seg) > config.retention_ms))
    if config.retention_bytes >= 0:
        excess = log.size_bytes - config.retention_bytes

        def over_size(seg, nxt) -> bool:
            nonlocal excess
            if excess - seg.size < 0:
                return False
            excess -= seg.size
            return True

        count = max(count, _leading(log, over_size))
    return count
