"""Unit tests of the fetch session rules (KIP-227), with no broker."""

import pytest

from kbroker.fetch_sessions import FetchPosition, FetchSessionCache
from kbroker.protocol.errors import ErrorCode, KafkaError


def _position(partition: int, offset: int = 0) -> FetchPosition:
    return FetchPosition("t", None, partition, offset, 1024)


def test_initial_epoch_opens_a_session_with_the_requested_partitions():
    cache = FetchSessionCache(10)
    session, positions, incremental = cache.resolve(0, 0, [_position(0), _position(1)], [])
    assert session is not None and session.session_id > 0 and session.epoch == 1
    assert [p.partition for p in positions] == [0, 1]
    assert incremental is False


def test_incremental_request_updates_adds_and_forgets():
    cache = FetchSessionCache(10)
    session, _, _ = cache.resolve(0, 0, [_position(0), _position(1)], [])
    _, positions, incremental = cache.resolve(
        session.session_id, 1, [_position(1, offset=7), _position(2)], [("t", 0)])
    assert incremental is True
    assert sorted((p.partition, p.fetch_offset) for p in positions) == [(1, 7), (2, 0)]
    assert session.epoch == 2


def test_unknown_session_and_wrong_epoch_are_kafka_errors():
    cache = FetchSessionCache(10)
    with pytest.raises(KafkaError) as unknown:
        cache.resolve(99, 1, [], [])
    assert unknown.value.code == ErrorCode.FETCH_SESSION_ID_NOT_FOUND
    session, _, _ = cache.resolve(0, 0, [_position(0)], [])
    with pytest.raises(KafkaError) as wrong_epoch:
        cache.resolve(session.session_id, 5, [], [])
    assert wrong_epoch.value.code == ErrorCode.INVALID_FETCH_SESSION_EPOCH


def test_final_epoch_closes_the_session_and_fetches_without_one():
    cache = FetchSessionCache(10)
    session, _, _ = cache.resolve(0, 0, [_position(0)], [])
    closed, positions, incremental = cache.resolve(session.session_id, -1, [_position(3)], [])
    assert closed is None and [p.partition for p in positions] == [3] and not incremental
    with pytest.raises(KafkaError):
        cache.resolve(session.session_id, 1, [], [])


def test_full_cache_evicts_the_least_recently_used_session():
    cache = FetchSessionCache(2)
    first, _, _ = cache.resolve(0, 0, [_position(0)], [])
    second, _, _ = cache.resolve(0, 0, [_position(0)], [])
    cache.resolve(first.session_id, 1, [], [])  # first is now the most recently used
    cache.resolve(0, 0, [_position(0)], [])
    with pytest.raises(KafkaError):
        cache.resolve(second.session_id, 1, [], [])
    cache.resolve(first.session_id, 2, [], [])


def test_news_tracks_what_the_last_response_said():
    position = _position(0)
    assert position.has_news(5, 5, 0)
    position.remember_sent(5, 5, 0)
    assert not position.has_news(5, 5, 0)
    assert position.has_news(6, 6, 0)
