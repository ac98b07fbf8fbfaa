"""Partition logs on disk: segments, sparse indexes, recovery, producer state, retention."""

from kbroker.log.config import TOPIC_SETTINGS_BY_NAME, LogConfig
from kbroker.log.local import ReadResult
from kbroker.log.manager import LogManager, TopicInfo, validate_topic_name
from kbroker.log.partition import LEADER_EPOCH, AppendResult, PartitionLog
from kbroker.protocol.region import FileRegion

__all__ = [
    "LEADER_EPOCH", "TOPIC_SETTINGS_BY_NAME", "AppendResult", "FileRegion", "LogConfig", "LogManager", "PartitionLog",
    "ReadResult", "TopicInfo", "validate_topic_name",
]
