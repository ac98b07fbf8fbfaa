"""Cluster features (KIP-584) and the metadata quorum: ApiVersions' supported and finalized
features, UpdateFeatures with Kafka's rules, DescribeQuorum as a single-node KRaft quorum answers,
driven by kafka-python's admin client and the wire client."""

from __future__ import annotations

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import InvalidUpdateVersionError

from kbroker.features import FEATURES, SAFE_DOWNGRADE, UNSAFE_DOWNGRADE, UPGRADE, FinalizedFeatures
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.messages import DescribeQuorumRequest, UpdateFeaturesRequest
from kbroker.testing import running_broker
from tests.wire import WireClient

Update = UpdateFeaturesRequest.FeatureUpdateKey
Quorum = DescribeQuorumRequest


@pytest.fixture
def admin(broker):
    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    yield client
    client.close()


def test_api_versions_lists_supported_and_finalized_features(broker, admin):
    features = admin.describe_features()
    assert features["metadata.version"]["supported"] == (7, 29)
    assert features["metadata.version"]["finalized"] == (29, 29)
    assert features["eligible.leader.replicas.version"]["finalized"] == (1, 1)
    advertised = {name for name, feature in FEATURES.items() if feature.max_level > 0}
    assert set(features) == advertised


def test_update_features_applies_and_refuses_as_kafka(tmp_path):
    with running_broker(data_dir=tmp_path) as started:
        admin = KafkaAdminClient(bootstrap_servers=started.bootstrap)
        before = admin.describe_features()["metadata.version"]["finalized_epoch"]
        assert admin.update_features({"metadata.version": ("SAFE_DOWNGRADE", 24)}) == {
            "metadata.version": "OK"}
        after = admin.describe_features()
        assert after["metadata.version"]["finalized"] == (24, 24)
        assert after["metadata.version"]["finalized_epoch"] > before
        with pytest.raises(InvalidUpdateVersionError, match="Refusing to perform the requested downgrade"):
            admin.update_features({"metadata.version": ("SAFE_DOWNGRADE", 20)})
        with pytest.raises(InvalidUpdateVersionError, match="only supports versions 7-29"):
            admin.update_features({"metadata.version": 30})
        # level 0 removes a feature; it is then no longer finalized
        admin.update_features({"eligible.leader.replicas.version": ("SAFE_DOWNGRADE", 0)})
        admin.close()
    with running_broker(data_dir=tmp_path) as restarted:  # kept across restarts
        admin = KafkaAdminClient(bootstrap_servers=restarted.bootstrap)
        features = admin.describe_features()
        assert features["metadata.version"]["finalized"] == (24, 24)
        assert features["eligible.leader.replicas.version"].get("finalized") is None
        admin.close()


def test_update_features_v0_and_v1_answer_per_feature(broker):
    with WireClient(broker.bootstrap) as client:
        update = Update(feature="metadata.version", max_version_level=30)
        response = client.request("UpdateFeatures", 1, feature_updates=[update], validate_only=True)
        assert response.error_code == ErrorCode.INVALID_UPDATE_VERSION
        assert [(r.feature, r.error_code, r.error_message) for r in response.results] == [
            ("metadata.version", ErrorCode.INVALID_UPDATE_VERSION, "Invalid update version 30 for "
             "feature metadata.version. Local controller 1 only supports versions 7-29")]
        downgrade = Update(feature="metadata.version", max_version_level=28, allow_downgrade=True)
        response = client.request("UpdateFeatures", 0, feature_updates=[downgrade])
        assert response.error_code == ErrorCode.NONE  # v0: AllowDowngrade is a safe downgrade
        response = client.request("UpdateFeatures", 2, feature_updates=[
            Update(feature="no.such.version", max_version_level=1)])
        assert response.error_code == ErrorCode.INVALID_UPDATE_VERSION and response.results == []
        assert response.error_message == ("Invalid update version 1 for feature no.such.version. "
                                          "Local controller 1 does not support this feature.")


def test_feature_rules(tmp_path):
    features = FinalizedFeatures(tmp_path, node_id=1)
    with pytest.raises(KafkaError, match="without setting the upgrade type"):
        features.update({"metadata.version": (28, UPGRADE)}, validate_only=False)
    with pytest.raises(KafkaError, match="Unsafe metadata downgrade is not supported"):
        features.update({"metadata.version": (7, UNSAFE_DOWNGRADE)}, False)
    with pytest.raises(KafkaError, match="does not support this feature"):
        features.update({"no.such.version": (1, UPGRADE)}, False)
    # a feature's dependencies hold among the levels after the whole request
    features.update({"eligible.leader.replicas.version": (0, SAFE_DOWNGRADE),
                     "metadata.version": (23, SAFE_DOWNGRADE)}, False)
    with pytest.raises(KafkaError, match="Can't downgrade to a newer version"):
        features.update({"eligible.leader.replicas.version": (1, SAFE_DOWNGRADE)}, False)
    with pytest.raises(KafkaError, match="depends on metadata.version level 24"):
        features.update({"eligible.leader.replicas.version": (1, UPGRADE)}, False)
    features.update({"eligible.leader.replicas.version": (1, UPGRADE),
                     "metadata.version": (24, UPGRADE)}, validate_only=True)
    assert features.level("metadata.version") == 23  # validate_only changed nothing
    assert FinalizedFeatures(tmp_path, node_id=1).levels() == features.levels()


def test_describe_quorum_single_voter(tmp_path, topic_name):
    with running_broker(data_dir=tmp_path) as started:
        admin = KafkaAdminClient(bootstrap_servers=started.bootstrap)
        first = admin.describe_metadata_quorum()
        admin.create_topics([NewTopic(topic_name, 1, 1)])
        second = admin.describe_metadata_quorum()
        admin.close()
    (partition,) = first["topics"][0]["partitions"]
    assert partition["leader_id"] == 1
    assert [voter["replica_id"] for voter in partition["current_voters"]] == [1]
    assert partition["observers"] == []
    assert second["topics"][0]["partitions"][0]["high_watermark"] > partition["high_watermark"]
    # a restart elects this node anew: the leader epoch grows
    with running_broker(data_dir=tmp_path) as restarted, WireClient(restarted.bootstrap) as client:
        topics = [Quorum.TopicData(topic_name="__cluster_metadata",
                                   partitions=[Quorum.PartitionData(partition_index=0)])]
        response = client.request("DescribeQuorum", 2, topics=topics)
        again = response.topics[0].partitions[0]
        assert again.leader_epoch == partition["leader_epoch"] + 1
        assert [node.node_id for node in response.nodes] == [1]
        other = [Quorum.TopicData(topic_name="orders",
                                  partitions=[Quorum.PartitionData(partition_index=0)])]
        response = client.request("DescribeQuorum", 2, topics=other)
        assert response.topics[0].partitions[0].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
