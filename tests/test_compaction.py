"""Log compaction on the log layer: what the cleaner keeps, transactions, producer state, crash safety.

The cleaner is driven by hand here (next_job, clean, finish) with a fixed clock; the end-to-end
tests with real clients are in test_compaction_clients.py.
"""

from __future__ import annotations

import os

import pytest

from kbroker.log import LogConfig, LogManager
from kbroker.log.cleaner import STAGING_DIR, SWAP_ORDER, SWAP_SUFFIX, LogCleaner
from kbroker.log.segment import LOG_SUFFIX, file_prefix
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.records import GZIP, Record, build_batch, iter_records

NOW = 1_700_000_000_000
DAY = 24 * 3600 * 1000
KEYS = 1_000_000  # the key map holds every key of these small logs


def open_logs(path, **overrides):
    logs = LogManager(path, LogConfig())
    if "c" not in logs.topics:
        logs.create_topic("c", 1, {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01",
                                   **overrides})
    return logs, logs.partition("c", 0)


def append(log, *pairs, now=NOW, **batch_options):
    records = [Record(timestamp=now, key=key, value=value) for key, value in pairs]
    return log.append_produce(build_batch(records, **batch_options), now)


def contents(log) -> list[tuple]:
    """(offset, key, value) of every data record, ("marker", offset) of every control batch."""
    out = []
    for header, batch in log.stored_batches():
        if header.is_control:
            out.append(("marker", header.base_offset))
        else:
            out.extend((header.base_offset + r.offset_delta, r.key, r.value) for r in iter_records(batch))
    return out


def clean(cleaner: LogCleaner, now=NOW) -> None:
    job = cleaner.next_job(now)
    assert job is not None, "expected the log to need cleaning"
    job.clean(cleaner.key_capacity)
    cleaner.finish(job, now)


def test_keeps_latest_value_per_key_with_offsets(tmp_path):
    logs, log = open_logs(tmp_path)
    append(log, (b"a", b"1"), (b"b", b"1"))
    append(log, (b"a", b"2"), (b"c", b"1"))
    log.roll(NOW)
    append(log, (b"b", b"2"), (b"a", b"3"))
    log.roll(NOW)
    append(log, (b"a", b"active"))  # the active segment is never cleaned and supersedes nothing
    cleaner = LogCleaner(logs, KEYS)
    clean(cleaner)
    assert contents(log) == [(3, b"c", b"1"), (4, b"b", b"2"), (5, b"a", b"3"), (6, b"a", b"active")]
    assert log.log_start_offset == 0 and log.log_end_offset == 7
    assert len(log.segments) == 2  # the closed segments were merged into one
    assert cleaner.next_job(NOW) is None  # nothing dirty left
    # Reads, lookups and a restart see the compacted log.
    assert log.read(0, 1 << 20).records.size > 0
    logs.close()
    logs, log = open_logs(tmp_path)
    assert contents(log)[0] == (3, b"c", b"1")
    assert LogCleaner(logs, KEYS).next_job(NOW) is None  # the first dirty offset was checkpointed


def _log_with_many_keys(path):
    logs, log = open_logs(path)
    for value in (b"1", b"2"):
        append(log, *[(b"k%d" % i, value) for i in range(3)])
        append(log, *[(b"k%d" % i, value) for i in range(3, 6)])
        log.roll(NOW)
    append(log, *[(b"k%d" % i, b"1") for i in range(6, 10)], (b"k0", b"3"))
    log.roll(NOW)
    append(log, (b"k9", b"active"))
    return logs, log


def test_a_full_key_map_compacts_in_several_passes(tmp_path):
    """With room for 4 keys, 10 keys take several passes, each resuming where the map filled,
    and end where one pass with room for every key ends."""
    reference_logs, reference = _log_with_many_keys(tmp_path / "reference")
    clean(LogCleaner(reference_logs, KEYS))
    logs, log = _log_with_many_keys(tmp_path / "bounded")
    cleaner = LogCleaner(logs, 4)
    resumed_at = []
    while (job := cleaner.next_job(NOW)) is not None and len(resumed_at) < 20:
        job.clean(cleaner.key_capacity)
        resumed_at.append(job.next_dirty)
        cleaner.finish(job, NOW)
    assert len(resumed_at) > 2 and all(a < b for a, b in zip(resumed_at, resumed_at[1:]))
    assert contents(log) == contents(reference)
    # The active segment's k9 supersedes nothing: the k9 before it stays.
    assert [key for _, key, _ in contents(log)] == [b"k%d" % i for i in (1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 9)]


def test_tombstones_go_after_delete_retention(tmp_path):
    logs, log = open_logs(tmp_path, **{"delete.retention.ms": "1000"})
    append(log, (b"a", b"1"), (b"b", b"1"))
    append(log, (b"a", None))
    log.roll(NOW)
    append(log, (b"c", b"1"))
    cleaner = LogCleaner(logs, KEYS)
    clean(cleaner, NOW)
    assert contents(log) == [(1, b"b", b"1"), (2, b"a", None), (3, b"c", b"1")]
    assert cleaner.next_job(NOW + 999) is None  # kept until its delete horizon
    clean(cleaner, NOW + 1000)
    assert contents(log) == [(1, b"b", b"1"), (3, b"c", b"1")]


def test_lags_and_dirty_ratio_decide_when(tmp_path):
    logs, log = open_logs(tmp_path, **{"min.cleanable.dirty.ratio": "0.9",
                                       "min.compaction.lag.ms": "60000"})
    append(log, (b"a", b"1"), now=NOW)
    append(log, (b"a", b"2"), now=NOW)
    log.roll(NOW)
    append(log, (b"a", b"3"), now=NOW)
    cleaner = LogCleaner(logs, KEYS)
    assert cleaner.next_job(NOW + 1000) is None  # younger than min.compaction.lag.ms
    clean(cleaner, NOW + 60001)
    assert [r[2] for r in contents(log)] == [b"2", b"3"]
    append(log, (b"a", b"4"), now=NOW + 60001)
    log.roll(NOW + 60001)
    append(log, (b"z", b"z"), now=NOW + 60001)
    assert cleaner.next_job(NOW + 200000) is None  # the dirty share is below 0.9
    logs.alter_topic_configs("c", {"cleanup.policy": "compact", "max.compaction.lag.ms": "100000"})
    clean(cleaner, NOW + 200000)  # overdue: cleaned whatever the ratio
    assert [r[2] for r in contents(log)] == [b"4", b"z"]


def test_rewritten_batches_keep_codec_and_producer_state(tmp_path):
    logs, log = open_logs(tmp_path)
    append(log, (b"a", b"1"), (b"b", b"1"), compression=GZIP, producer_id=7, producer_epoch=0,
           base_sequence=0)
    append(log, (b"a", b"2"), (b"b", b"2"), producer_id=7, producer_epoch=0, base_sequence=2)
    log.roll(NOW)
    append(log, (b"x", b"x"))
    clean(LogCleaner(logs, KEYS))
    headers = [header for header, _ in log.stored_batches()]
    # Everything of the first batch is superseded, but the second is the producer's last one.
    assert contents(log) == [(2, b"a", b"2"), (3, b"b", b"2"), (4, b"x", b"x")]
    assert (headers[0].producer_id, headers[0].base_sequence, headers[0].base_offset) == (7, 2, 2)
    # The idempotent producer carries on where it was, also after a restart.
    logs.close()
    logs, log = open_logs(tmp_path)
    result = append(log, (b"a", b"3"), producer_id=7, producer_epoch=0, base_sequence=4)
    assert result.base_offset == 5 and not result.duplicate


def test_superseded_batches_of_a_live_producer_become_empty(tmp_path):
    logs, log = open_logs(tmp_path)
    append(log, (b"a", b"1"), producer_id=9, producer_epoch=0, base_sequence=0, compression=GZIP)
    append(log, (b"a", b"2"))
    log.roll(NOW)
    append(log, (b"x", b"x"))
    clean(LogCleaner(logs, KEYS))
    header = next(header for header, _ in log.stored_batches())
    # Producer 9's only (last) batch stays, emptied: its sequence and offsets survive.
    assert (header.records_count, header.producer_id, header.base_sequence, header.last_offset,
            header.compression) == (0, 9, 0, 0, 0)
    assert contents(log) == [(1, b"a", b"2"), (2, b"x", b"x")]


def test_transactions(tmp_path):
    logs, log = open_logs(tmp_path, **{"delete.retention.ms": "1000"})
    txn = {"producer_epoch": 0, "transactional": True}
    append(log, (b"a", b"aborted"), producer_id=1, base_sequence=0, **txn)
    append(log, (b"b", b"committed"), producer_id=2, base_sequence=0, **txn)
    log.append_control(1, 0, False, 0, NOW)  # offset 2: ABORT
    log.append_control(2, 0, True, 0, NOW)   # offset 3: COMMIT
    append(log, (b"c", b"plain"))
    log.roll(NOW)
    append(log, (b"z", b"z"))
    cleaner = LogCleaner(logs, KEYS)
    clean(cleaner, NOW)
    # Aborted data goes (producer 1's last batch stays, emptied, while producer 1 is known); its
    # ABORT marker stays, in the txn index, while data of its transaction was seen; the COMMIT
    # marker stays while committed data is left.
    assert contents(log) == [(1, b"b", b"committed"), ("marker", 2), ("marker", 3), (4, b"c", b"plain"),
                             (5, b"z", b"z")]
    assert log.aborted_transactions(0, 5) == [(1, 0)]
    log.producer_state.remove_expired(NOW + DAY, 1)  # the producers expire
    for offset, round_time in ((6, NOW + 1), (7, NOW + 2)):
        log.roll(round_time)
        append(log, (b"y", b"%d" % offset), now=round_time)
        clean(cleaner, round_time)
    # The emptied batch went, then the marker of the transaction with no data left got a horizon.
    assert ("marker", 2) in contents(log) and log.aborted_transactions(0, 8) == []
    clean(cleaner, NOW + 2000)  # past that horizon: the ABORT marker goes
    assert contents(log) == [(1, b"b", b"committed"), ("marker", 3), (4, b"c", b"plain"), (5, b"z", b"z"),
                             (6, b"y", b"6"), (7, b"y", b"7")]


def test_open_transactions_stop_the_cleaner_at_the_last_stable_offset(tmp_path):
    logs, log = open_logs(tmp_path)
    append(log, (b"a", b"1"))
    append(log, (b"a", b"2"))
    log.roll(NOW)
    append(log, (b"a", b"open"), producer_id=3, producer_epoch=0, base_sequence=0, transactional=True)
    log.roll(NOW)
    append(log, (b"a", b"3"))
    log.roll(NOW)
    append(log, (b"x", b"x"))
    clean(LogCleaner(logs, KEYS))
    assert [r[2] for r in contents(log)] == [b"2", b"open", b"3", b"x"]


def test_swap_is_abandoned_when_the_log_changed(tmp_path):
    logs, log = open_logs(tmp_path, **{"cleanup.policy": "compact,delete"})
    append(log, (b"a", b"1"))
    log.roll(NOW)
    append(log, (b"a", b"2"))
    log.roll(NOW)
    append(log, (b"x", b"x"))
    cleaner = LogCleaner(logs, KEYS)
    job = cleaner.next_job(NOW)
    job.clean(cleaner.key_capacity)
    log.delete_records_before(1, NOW)  # drops the first segment meanwhile
    cleaner.finish(job, NOW)
    assert contents(log) == [(1, b"a", b"2"), (2, b"x", b"x")]
    assert not [name for name in os.listdir(log.directory) if name.endswith(SWAP_SUFFIX)]
    assert not os.path.exists(os.path.join(log.directory, STAGING_DIR))
    clean(cleaner)  # the next round cleans what is there now


def test_a_failed_cleaning_leaves_the_log_alone(tmp_path):
    logs, log = open_logs(tmp_path)
    append(log, (b"a", b"1"))
    append(log, (b"a", b"2"))
    log.roll(NOW)
    append(log, (b"x", b"x"))
    before = [(segment.base_offset, segment.size) for segment in log.segments]
    with open(log.segments[0].prefix + LOG_SUFFIX, "r+b") as f:  # garble a record, not a header
        f.seek(62)
        f.write(b"\xff" * 8)
    cleaner = LogCleaner(logs, KEYS)
    job = cleaner.next_job(NOW)
    with pytest.raises(KafkaError):
        job.clean(cleaner.key_capacity)
    cleaner.give_up(job)
    assert cleaner.next_job(NOW) is None  # left alone until the next start, as Kafka does
    assert [name for name in os.listdir(log.directory) if "swap" in name or name == STAGING_DIR] == []
    assert [(segment.base_offset, segment.size) for segment in log.segments] == before


def test_keyless_records_rejected_on_compacted_topics(tmp_path):
    _, log = open_logs(tmp_path)
    with pytest.raises(KafkaError) as caught:
        append(log, (None, b"v"))
    assert caught.value.code == ErrorCode.INVALID_RECORD


# -- crash safety --------------------------------------------------------------------------------

def _prepared(tmp_path):
    """A log whose cleaning has been written (staged as .swap files) but not swapped in."""
    logs, log = open_logs(tmp_path)
    for round_ in range(3):
        append(log, *[(b"k%d" % k, b"%d-%d" % (round_, k)) for k in range(5)])
        log.roll(NOW)
    append(log, (b"k0", b"active"))
    expected_after = [(10, b"k0", b"2-0"), (11, b"k1", b"2-1"), (12, b"k2", b"2-2"), (13, b"k3", b"2-3"),
                      (14, b"k4", b"2-4"), (15, b"k0", b"active")]
    before = contents(log)
    cleaner = LogCleaner(logs, KEYS)
    job = cleaner.next_job(NOW)
    job.clean(cleaner.key_capacity)
    for source in job.sources:
        os.close(source.fd)
    return logs, log, before, expected_after


def _crash_and_reopen(logs, tmp_path):
    for log in logs.logs():  # a kill -9: no clean close, no snapshot, fds just vanish
        for segment in log.segments:
            segment.close()
    return open_logs(tmp_path)


@pytest.mark.parametrize("renamed", range(len(SWAP_ORDER) + 1))
def test_crash_while_staging_loses_nothing(tmp_path, renamed):
    """Killed while the cleaned files move from staging to .swap: the old data stays."""
    logs, log, before, _ = _prepared(tmp_path)
    base = file_prefix(log.directory, 0)
    swapped = SWAP_ORDER[:renamed] if renamed < len(SWAP_ORDER) else SWAP_ORDER
    for suffix in SWAP_ORDER:  # put back what the job staged beyond the crash point
        if suffix not in swapped:
            os.rename(base + suffix + SWAP_SUFFIX, file_prefix(os.path.join(log.directory, STAGING_DIR), 0)
                      + suffix)
    logs, log = _crash_and_reopen(logs, tmp_path)
    expected = contents(log)
    if LOG_SUFFIX in swapped:  # the .log.swap made it: the cleaned segment is installed
        assert [r for r in expected if r[0] >= 10] == [r for r in before if r[0] >= 10][-6:]
        assert len(expected) == 6
    else:
        assert expected == before
    assert not [name for name in os.listdir(log.directory) if name.endswith(SWAP_SUFFIX)]
    assert not os.path.exists(os.path.join(log.directory, STAGING_DIR))


@pytest.mark.parametrize("step", range(6))
def test_crash_during_swap_completes_it_on_open(tmp_path, step):
    """Killed part way through the swap's renames: the next open finishes the swap."""
    logs, log, _, expected_after = _prepared(tmp_path)
    old = [segment for segment in log.segments[:-1]]
    actions = [lambda s=s: s.rename_deleted() for s in old]
    base = file_prefix(log.directory, 0)
    actions += [lambda suffix=suffix: os.replace(base + suffix + SWAP_SUFFIX, base + suffix)
                for suffix in SWAP_ORDER]
    for action in actions[:step * len(actions) // 5]:
        action()
    logs, log = _crash_and_reopen(logs, tmp_path)
    assert contents(log) == expected_after
    assert log.log_end_offset == 16
    result = append(log, (b"k9", b"after"))
    assert result.base_offset == 16


def test_staging_left_by_a_crash_is_removed(tmp_path):
    logs, log, before, _ = _prepared(tmp_path)
    for name in os.listdir(log.directory):  # as if killed before anything reached .swap
        if name.endswith(SWAP_SUFFIX):
            os.unlink(os.path.join(log.directory, name))
    logs, log = _crash_and_reopen(logs, tmp_path)
    assert contents(log) == before
    assert LogCleaner(logs, KEYS).next_job(NOW) is not None  # and it is cleaned again later
