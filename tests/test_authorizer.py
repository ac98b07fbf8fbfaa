"""The ACL authorizer's rules (kbroker/security/authorizer.py), without a broker."""

import pytest

from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.security.authorizer import AclBinding, AclFilter, Authorizer, Permission
from kbroker.security.authorizer import (
    Operation as Op,
)
from kbroker.security.authorizer import (
    PatternType as P,
)
from kbroker.security.authorizer import (
    ResourceType as R,
)

ALLOW, DENY = Permission.ALLOW, Permission.DENY


def acl(name, op, permission=ALLOW, principal="User:alice", host="*", rtype=R.TOPIC, pattern=P.LITERAL):
    return AclBinding(rtype, name, pattern, principal, host, op, permission)


def authorizer(*acls, allow_if_no_acl=False, super_users=("User:admin",)):
    auth = Authorizer(list(super_users), allow_if_no_acl)
    for binding in acls:
        auth.create(binding)
    return auth


def test_super_users_and_the_no_acl_rule():
    auth = authorizer()
    assert auth.authorize("User:admin", "1.2.3.4", Op.WRITE, R.TOPIC, "t")
    assert not auth.authorize("User:alice", "1.2.3.4", Op.WRITE, R.TOPIC, "t")
    assert authorizer(allow_if_no_acl=True).authorize("User:alice", "h", Op.WRITE, R.TOPIC, "t")
    # Once any ACL names the resource, the no-ACL rule no longer applies, whoever it is for.
    auth = authorizer(acl("t", Op.READ, principal="User:bob"), allow_if_no_acl=True)
    assert not auth.authorize("User:alice", "h", Op.READ, R.TOPIC, "t")
    assert auth.authorize("User:alice", "h", Op.READ, R.TOPIC, "other")


def test_literal_wildcard_and_prefixed_patterns():
    auth = authorizer(acl("orders", Op.READ), acl("*", Op.WRITE), acl("logs-", Op.DELETE, pattern=P.PREFIXED))
    assert auth.authorize("User:alice", "h", Op.READ, R.TOPIC, "orders")
    assert not auth.authorize("User:alice", "h", Op.READ, R.TOPIC, "orders2")
    assert auth.authorize("User:alice", "h", Op.WRITE, R.TOPIC, "anything")
    assert auth.authorize("User:alice", "h", Op.DELETE, R.TOPIC, "logs-app")
    assert not auth.authorize("User:alice", "h", Op.DELETE, R.TOPIC, "log")
    assert not auth.authorize("User:alice", "h", Op.READ, R.GROUP, "orders")


def test_deny_wins_and_principal_host_wildcards():
    auth = authorizer(acl("t", Op.ALL, principal="User:*"), acl("t", Op.WRITE, DENY, host="10.0.0.9"))
    assert auth.authorize("User:carol", "10.0.0.1", Op.WRITE, R.TOPIC, "t")
    assert not auth.authorize("User:alice", "10.0.0.9", Op.WRITE, R.TOPIC, "t")
    assert auth.authorize("User:alice", "10.0.0.9", Op.READ, R.TOPIC, "t")  # the DENY names WRITE only


def test_implied_operations():
    auth = authorizer(acl("t", Op.WRITE), acl("t", Op.ALTER_CONFIGS))
    assert auth.authorize("User:alice", "h", Op.DESCRIBE, R.TOPIC, "t")
    assert auth.authorize("User:alice", "h", Op.DESCRIBE_CONFIGS, R.TOPIC, "t")
    assert not auth.authorize("User:alice", "h", Op.READ, R.TOPIC, "t")
    # A DENY of READ does not deny DESCRIBE, which WRITE still implies.
    auth.create(acl("t", Op.READ, DENY))
    assert auth.authorize("User:alice", "h", Op.DESCRIBE, R.TOPIC, "t")


def test_authorize_by_resource_type():
    auth = authorizer(acl("t", Op.WRITE))
    assert auth.authorize_any("User:alice", "h", Op.WRITE, R.TOPIC)
    assert not auth.authorize_any("User:bob", "h", Op.WRITE, R.TOPIC)
    auth.create(acl("t", Op.WRITE, DENY))
    assert not auth.authorize_any("User:alice", "h", Op.WRITE, R.TOPIC)
    assert not authorizer().authorize_any("User:alice", "h", Op.WRITE, R.TOPIC)
    assert authorizer(allow_if_no_acl=True).authorize_any("User:alice", "h", Op.WRITE, R.TOPIC)
    # As Kafka: a literal DENY cancels only the literal ALLOW of its name, a PREFIXED DENY every
    # ALLOW it covers; READ does not count for WRITE (nothing implied).
    auth = authorizer(acl("app", Op.WRITE, pattern=P.PREFIXED), acl("app", Op.WRITE, DENY))
    assert auth.authorize_any("User:alice", "h", Op.WRITE, R.TOPIC)
    auth.create(acl("ap", Op.WRITE, DENY, pattern=P.PREFIXED))
    assert not auth.authorize_any("User:alice", "h", Op.WRITE, R.TOPIC)
    assert not authorizer(acl("t", Op.READ)).authorize_any("User:alice", "h", Op.WRITE, R.TOPIC)
    # The no-ACL rule applies to Kafka's probe resource `hardcode` even when others have ACLs.
    auth = authorizer(acl("t", Op.READ, principal="User:bob"), allow_if_no_acl=True)
    assert auth.authorize_any("User:alice", "h", Op.WRITE, R.TOPIC)


def test_filters_describe_and_delete():
    a, b, c = acl("t", Op.READ), acl("t-", Op.WRITE, pattern=P.PREFIXED), acl("g", Op.READ, rtype=R.GROUP)
    auth = authorizer(a, b, c)
    everything = AclFilter(R.ANY, None, P.ANY, None, None, Op.ANY, Permission.ANY)
    assert auth.describe(everything) == [a, b, c]
    match = AclFilter(R.TOPIC, "t-x", P.MATCH, None, None, Op.ANY, Permission.ANY)
    assert auth.describe(match) == [b]
    literal = AclFilter(R.TOPIC, "t", P.LITERAL, "User:alice", None, Op.READ, Permission.ANY)
    assert auth.delete(literal) == [a]
    assert auth.acls == [b, c]


@pytest.mark.parametrize("binding,message", [
    (acl("t", Op.ANY), "Invalid operation ANY"),
    (acl("t", Op.READ, pattern=P.MATCH), "Invalid patternType MATCH"),
    (acl("", Op.READ), "Resource name should not be empty"),
    (acl("t", Op.READ, principal="alice"), "Could not parse principal"),
    (acl("c", Op.ALTER, rtype=R.CLUSTER), "The only valid name for the CLUSTER resource is kafka-cluster"),
])
def test_invalid_bindings_are_refused(binding, message):
    with pytest.raises(KafkaError) as raised:
        authorizer(binding)
    assert raised.value.code == ErrorCode.INVALID_REQUEST and message in raised.value.message


def test_bindings_survive_a_round_trip_through_text():
    auth = authorizer(acl("t", Op.READ), acl("p-", Op.WRITE, DENY, pattern=P.PREFIXED))
    assert Authorizer.loads(auth.dumps()) == auth.acls
