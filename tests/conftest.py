"""Fixtures: a real kbroker on a loopback port, shared by the tests of one module."""

from __future__ import annotations

import itertools
import os

import pytest

from kbroker.testing import BrokerProcess, running_broker

_names = itertools.count()
collect_ignore = ["plugin_project"]  # a user's project, run by test_pytest_plugin.py


@pytest.fixture(scope="module")
def broker(tmp_path_factory) -> BrokerProcess:
    """A broker with default settings and auto-created topics."""
    with running_broker(data_dir=tmp_path_factory.mktemp("broker")) as started:
        yield started


@pytest.fixture
def topic_name(request) -> str:
    """A topic name unique to this test."""
    base = request.node.name.replace("[", "-").replace("]", "").replace("/", "-")[:80]
    return f"t-{os.getpid()}-{next(_names)}-{base}"


@pytest.fixture
def client(broker):
    """A raw wire connection to the module's broker."""
    from tests.wire import WireClient

    with WireClient(broker.bootstrap) as wire:
        yield wire


@pytest.fixture
def txn_id(request) -> str:
    """A transactional id unique to this test."""
    return f"txn-{os.getpid()}-{next(_names)}-{request.node.name}"
