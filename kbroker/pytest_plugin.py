"""The pytest plugin installed with kbroker (entry point `pytest11`): real brokers as fixtures.

- `kbroker`: one embedded broker for the whole session (`.bootstrap`, `.http`,
  `.create_topic(name, partitions=1, **configs)`, `.records(topic)`).
- `kbroker_fresh`: a broker of its own for one test, for tests that need an empty cluster.

Both run in a thread of the test process (kbroker.testing.embedded_broker) and start in
milliseconds. kbroker is imported only when a fixture is used, so the plugin costs other test
suites nothing.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def kbroker(tmp_path_factory):
    """A broker shared by every test of the session."""
    from kbroker.testing import embedded_broker

    with embedded_broker(data_dir=tmp_path_factory.mktemp("kbroker")) as broker:
        yield broker


@pytest.fixture
def kbroker_fresh(tmp_path_factory):
    """A broker of this test's own, stopped when the test ends."""
    from kbroker.testing import embedded_broker

    with embedded_broker(data_dir=tmp_path_factory.mktemp("kbroker-fresh")) as broker:
        yield broker
