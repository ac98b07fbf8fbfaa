"""Fixture factories for test modules whose brokers need their own settings."""

from __future__ import annotations

import pytest

from kbroker.testing import running_broker


def broker_fixtures(*args: str, name: str):
    """(broker, restartable_broker): one broker shared by the module, and a fresh one per test
    (for tests that stop, kill or restart it), both started with `args`."""

    @pytest.fixture(scope="module")
    def broker(tmp_path_factory):
        with running_broker(*args, data_dir=tmp_path_factory.mktemp(name)) as started:
            yield started

    @pytest.fixture
    def restartable_broker(tmp_path):
        with running_broker(*args, data_dir=tmp_path) as started:
            yield started

    return broker, restartable_broker
