"""ACL checks of the admin APIs no installed client reaches easily, on the wire: a user without
ACLs gets Kafka's CLUSTER_AUTHORIZATION_FAILED, the super user is served."""

from __future__ import annotations

import pytest

from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.messages import CreateAclsRequest
from kbroker.testing import running_broker
from tests.test_acls_clients import BROKER_ARGS
from tests.wire import WireClient


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory):
    with running_broker(*BROKER_ARGS, data_dir=tmp_path_factory.mktemp("acls-wire")) as started:
        yield started


def _client(broker, user: str) -> WireClient:
    client = WireClient(broker.bootstrap)
    client.request("SaslHandshake", 1, mechanism="PLAIN")
    assert client.request("SaslAuthenticate", 2,
                          auth_bytes=f"\0{user}\0{user}-secret".encode()).error_code == 0
    return client


@pytest.mark.parametrize("user, expected", [("alice", ErrorCode.CLUSTER_AUTHORIZATION_FAILED),
                                            ("admin", ErrorCode.NONE)])
def test_cluster_resource_apis(acl_broker, user, expected):
    with _client(acl_broker, user) as client:
        assert client.request("DescribeLogDirs", 4, topics=None).error_code == expected
        assert client.request("ListPartitionReassignments", 0, timeout_ms=1000,
                              topics=None).error_code == expected
        assert client.request("DescribeUserScramCredentials", 0, users=None).error_code == expected
        assert client.request("DescribeClientQuotas", 1, components=[],
                              strict=False).error_code == expected
        assert client.request("UpdateFeatures", 1, timeout_ms=1000, feature_updates=[],
                              validate_only=True).error_code == expected


def test_idempotent_producer_needs_idempotent_write_or_write_on_some_topic(tmp_path):
    """Kafka's InitProducerId without a transactional id: CLUSTER IDEMPOTENT_WRITE, or WRITE on
    at least one topic (authorizeByResourceType), else CLUSTER_AUTHORIZATION_FAILED."""
    with running_broker(*BROKER_ARGS, data_dir=tmp_path) as broker:
        def init_producer_id() -> int:
            with _client(broker, "alice") as client:
                return client.request("InitProducerId", 4, transactional_id=None,
                                      transaction_timeout_ms=60000, producer_id=-1,
                                      producer_epoch=-1).error_code
        assert init_producer_id() == ErrorCode.CLUSTER_AUTHORIZATION_FAILED
        with _client(broker, "admin") as admin:
            creation = CreateAclsRequest.AclCreation(
                resource_type=2, resource_name="any-", resource_pattern_type=4,
                principal="User:alice", host="*", operation=4, permission_type=3)  # PREFIXED WRITE
            assert admin.request("CreateAcls", 3, creations=[creation]).results[0].error_code == 0
        assert init_producer_id() == ErrorCode.NONE
