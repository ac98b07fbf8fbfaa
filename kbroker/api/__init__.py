"""API handlers, one module per API family; importing this package registers them all."""

from kbroker.api import fetch, groups, metadata, offsets, produce, transactions, versions  # noqa: F401
