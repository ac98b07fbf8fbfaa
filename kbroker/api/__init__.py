"""API handlers, one module per API family; importing this package registers them all."""

from kbroker.api import (  # noqa: F401
    admin, configs, consumer_groups, features, fetch, groups, metadata, offsets, produce, quorum,
    quotas, replicas, security, share, share_admin, telemetry, transactions, versions,
)
