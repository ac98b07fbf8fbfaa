"""Kafka's ACL authorizer as a plain state machine: the ACL bindings and the decision rules.

No sockets, no files: the broker loads and saves the bindings (`AclStore`), handlers ask
`Authorizer.authorize`. The numbers are Kafka's wire codes (AclOperation, ResourceType,
PatternType, AclPermissionType).

Rules (as Kafka's StandardAuthorizer applies them):
 A1. A super user (`super.users`, e.g. `User:admin;User:ops`) may do everything.
 A2. The ACLs that apply to a resource are the LITERAL ones naming it, the LITERAL ones named
     `*` (every resource of the type), and the PREFIXED ones whose name begins the resource's.
 A3. An ACL applies to a request when its principal is the caller's or `User:*`, and its host
     is the caller's address or `*`.
 A4. A DENY for the operation or for ALL wins over every ALLOW.
 A5. An ALLOW for the operation or for ALL allows it; DESCRIBE is also allowed by READ, WRITE,
     DELETE or ALTER, and DESCRIBE_CONFIGS by ALTER_CONFIGS.
 A6. When no ACL at all applies to the resource (rule A2, whoever the principal),
     `allow.everyone.if.no.acl.found` decides (false by default); otherwise what A4/A5 did not
     allow is denied.
 A7. "May the caller do OP on some resource of this type?" (Kafka's authorizeByResourceType,
     used for idempotent producers) is yes when OP is authorized (A1-A6) on a resource named
     `hardcode` (so for super users, and by `allow.everyone.if.no.acl.found` when no ACL names
     that); otherwise no when the caller's DENY for OP (or ALL, nothing implied) names `*`, yes
     when an ALLOW names `*`, and yes when an ALLOW names a literal name no literal DENY names,
     or any pattern no PREFIXED DENY covers (a prefix of it or itself).
 A8. CreateAcls refuses UNKNOWN/ANY codes, a pattern type other than LITERAL/PREFIXED, an empty
     resource name, a principal that is not `Type:name`, and a CLUSTER resource not named
     `kafka-cluster` (INVALID_REQUEST, with Kafka's messages).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import IntEnum

from kbroker.protocol.errors import ErrorCode, KafkaError


class Operation(IntEnum):
    UNKNOWN = 0
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12
    CREATE_TOKENS = 13
    DESCRIBE_TOKENS = 14
    TWO_PHASE_COMMIT = 15


class ResourceType(IntEnum):
    UNKNOWN = 0
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5
    DELEGATION_TOKEN = 6
    USER = 7


class PatternType(IntEnum):
    UNKNOWN = 0
    ANY = 1
    MATCH = 2
    LITERAL = 3
    PREFIXED = 4


class Permission(IntEnum):
    UNKNOWN = 0
    ANY = 1
    DENY = 2
    ALLOW = 3


CLUSTER_NAME = "kafka-cluster"
WILDCARD = "*"
WILDCARD_PRINCIPAL = "User:*"
# Kafka's authorizeByResourceType first authorizes a resource of this name, so that super users
# and allow.everyone.if.no.acl.found allow it whatever the ACLs of the type.
_PROBE_NAME = "hardcode"
_IMPLIED_BY = {
    Operation.DESCRIBE: {Operation.DESCRIBE, Operation.READ, Operation.WRITE, Operation.DELETE,
                         Operation.ALTER},
    Operation.DESCRIBE_CONFIGS: {Operation.DESCRIBE_CONFIGS, Operation.ALTER_CONFIGS},
}


@dataclass(frozen=True, slots=True)
class AclBinding:
    """One ACL: who (principal, host) may or may not (permission) do what (operation) where."""

    resource_type: ResourceType
    resource_name: str
    pattern_type: PatternType
    principal: str
    host: str
    operation: Operation
    permission: Permission

    def applies_to_resource(self, resource_type: ResourceType, name: str) -> bool:  # rule A2
        if self.resource_type != resource_type:
            return False
        if self.pattern_type == PatternType.LITERAL:
            return self.resource_name in (name, WILDCARD)
        return name.startswith(self.resource_name)

    def applies_to_caller(self, principal: str, host: str) -> bool:  # rule A3
        return self.principal in (principal, WILDCARD_PRINCIPAL) and self.host in (host, WILDCARD)

    def allows(self, operation: Operation) -> bool:  # rule A5
        return self.operation == Operation.ALL or self.operation in _IMPLIED_BY.get(operation, {operation})

    def denies(self, operation: Operation) -> bool:  # rule A4
        return self.operation in (Operation.ALL, operation)


@dataclass(frozen=True, slots=True)
class AclFilter:
    """What DescribeAcls and DeleteAcls select: None or ANY matches everything in that field."""

    resource_type: ResourceType
    resource_name: str | None
    pattern_type: PatternType
    principal: str | None
    host: str | None
    operation: Operation
    permission: Permission

    def matches(self, acl: AclBinding) -> bool:
        if self.resource_type not in (ResourceType.ANY, acl.resource_type):
            return False
        if not self._matches_pattern(acl):
            return False
        return ((self.principal is None or self.principal == acl.principal)
                and (self.host is None or self.host == acl.host)
                and self.operation in (Operation.ANY, acl.operation)
                and self.permission in (Permission.ANY, acl.permission))

    def _matches_pattern(self, acl: AclBinding) -> bool:
        if self.pattern_type == PatternType.MATCH:
            # Every ACL that would apply to a resource of this exact name.
            if self.resource_name is None:
                return True
            return acl.applies_to_resource(acl.resource_type, self.resource_name)
        if self.pattern_type not in (PatternType.ANY, acl.pattern_type):
            return False
        return self.resource_name is None or self.resource_name == acl.resource_name


def validate_binding(acl: AclBinding) -> None:
    """Rule A8: raise KafkaError(INVALID_REQUEST) for a binding Kafka would refuse to create."""
    def invalid(message: str) -> KafkaError:
        return KafkaError(ErrorCode.INVALID_REQUEST, message)

    if acl.resource_type in (ResourceType.UNKNOWN, ResourceType.ANY):
        raise invalid("Invalid resourceType " + acl.resource_type.name)
    if acl.pattern_type not in (PatternType.LITERAL, PatternType.PREFIXED):
        raise invalid("Invalid patternType " + acl.pattern_type.name)
    if acl.operation in (Operation.UNKNOWN, Operation.ANY):
        raise invalid("Invalid operation " + acl.operation.name)
    if acl.permission in (Permission.UNKNOWN, Permission.ANY):
        raise invalid("Invalid permissionType " + acl.permission.name)
    if not acl.resource_name:
        raise invalid("Resource name should not be empty")
    kind, _, name = acl.principal.partition(":")
    if not kind or not name:
        raise invalid(f"Could not parse principal from `{acl.principal}` (no colon is present "
                      "separating the principal type from the principal name)")
    if acl.resource_type == ResourceType.CLUSTER and acl.resource_name != CLUSTER_NAME:
        raise invalid("The only valid name for the CLUSTER resource is " + CLUSTER_NAME)


class Authorizer:
    """The ACL bindings of a broker and the decisions made from them (rules at the top)."""

    def __init__(self, super_users: list[str], allow_if_no_acl: bool, acls: list[AclBinding] | None = None):
        self.super_users = frozenset(super_users)
        self.allow_if_no_acl = allow_if_no_acl
        self._acls: dict[AclBinding, None] = dict.fromkeys(acls or ())  # ordered set

    @property
    def acls(self) -> list[AclBinding]:
        return list(self._acls)

    def authorize(self, principal: str, host: str, operation: Operation,
                  resource_type: ResourceType, name: str) -> bool:
        if principal in self.super_users:  # rule A1
            return True
        found = allowed = False
        for acl in self._acls:
            if not acl.applies_to_resource(resource_type, name):
                continue
            found = True
            if not acl.applies_to_caller(principal, host):
                continue
            if acl.permission == Permission.DENY and acl.denies(operation):
                return False
            if acl.permission == Permission.ALLOW and acl.allows(operation):
                allowed = True
        return allowed if found else self.allow_if_no_acl  # rule A6

    def authorize_any(self, principal: str, host: str, operation: Operation,
                      resource_type: ResourceType) -> bool:
        """Rule A7: may the caller do `operation` on at least one resource of the type?"""
        if self.authorize(principal, host, operation, resource_type, _PROBE_NAME):
            return True
        allowed: dict[PatternType, set[str]] = {PatternType.LITERAL: set(), PatternType.PREFIXED: set()}
        denied: dict[PatternType, set[str]] = {PatternType.LITERAL: set(), PatternType.PREFIXED: set()}
        for acl in self._acls:
            # The operation itself or ALL counts here, nothing implied.
            if acl.resource_type == resource_type and acl.applies_to_caller(principal, host) \
                    and acl.denies(operation):
                (denied if acl.permission == Permission.DENY else allowed)[acl.pattern_type].add(
                    acl.resource_name)
        if WILDCARD in denied[PatternType.LITERAL]:
            return False
        if WILDCARD in allowed[PatternType.LITERAL]:
            return True
        for pattern_type, names in allowed.items():
            for name in names:
                if pattern_type == PatternType.LITERAL and name in denied[PatternType.LITERAL]:
                    continue
                if not any(name[:end] in denied[PatternType.PREFIXED] for end in range(1, len(name) + 1)):
                    return True
        return False

    def create(self, acl: AclBinding) -> None:
        """Add a binding (rule A8 checked); adding one that exists changes nothing, as in Kafka."""
        validate_binding(acl)
        self._acls[acl] = None

    def delete(self, acl_filter: AclFilter) -> list[AclBinding]:
        """Remove and return every binding the filter matches."""
        gone = [acl for acl in self._acls if acl_filter.matches(acl)]
        for acl in gone:
            del self._acls[acl]
        return gone

    def describe(self, acl_filter: AclFilter) -> list[AclBinding]:
        return [acl for acl in self._acls if acl_filter.matches(acl)]

    def dumps(self) -> str:
        return json.dumps([{key: (value.name if isinstance(value, IntEnum) else value)
                            for key, value in asdict(acl).items()} for acl in self._acls], indent=1)

    @staticmethod
    def loads(text: str) -> list[AclBinding]:
        return [AclBinding(ResourceType[item["resource_type"]], item["resource_name"],
                           PatternType[item["pattern_type"]], item["principal"], item["host"],
                           Operation[item["operation"]], Permission[item["permission"]])
                for item in json.loads(text)]
