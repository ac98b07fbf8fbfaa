"""A small Kafka client on kbroker's own protocol layer, for the command line tools and tests.

It needs no client library and works against any Kafka-compatible cluster: `Cluster` keeps one
connection per broker, opened from the bootstrap's metadata; `admin`, `producer` and `consumer`
build on it. Broker error codes surface as `KafkaError(ErrorCode.X, message)`, transport
problems as `ClientError`.
"""

from kbroker.client.cluster import Cluster, run_sync
from kbroker.client.connection import ClientError, Connection

__all__ = ["ClientError", "Cluster", "Connection", "run_sync"]
