"""SaslHandshake and SaslAuthenticate on SASL_PLAINTEXT and SASL_SSL listeners, re-authentication
included (KIP-368); SCRAM credentials managed at
runtime (DescribeUserScramCredentials, AlterUserScramCredentials); the ACL APIs."""

from __future__ import annotations

import logging
import time

import trio

from kbroker.api.authorization import allowed_cluster
from kbroker.api.context import RequestContext
from kbroker.api.registry import serves
from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.messages import (
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, CreateAclsRequest,
    CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse, DescribeAclsRequest,
    DescribeAclsResponse, DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
)
from kbroker.sasl import AuthenticationFailed, Mechanism
from kbroker.security.authorizer import AclBinding, AclFilter, Operation, PatternType, Permission, ResourceType

log = logging.getLogger("kbroker.sasl")
CLUSTER_AUTHORIZATION_MESSAGE = "Cluster authorization failed."  # Kafka's default (Errors.java)


@serves("SaslHandshake", 0, 1)
async def handle_sasl_handshake(ctx: RequestContext,
                                request: SaslHandshakeRequest) -> SaslHandshakeResponse:
    session = ctx.session
    users = ctx.broker.sasl_users.get(session.listener)
    if users is None or (session.authenticated and session.sasl_version < 1):
        # Kafka's answer on a listener without SASL, or after an authentication that cannot be
        # renewed (KIP-368 needs SaslAuthenticate v1).
        return SaslHandshakeResponse(error_code=ErrorCode.ILLEGAL_SASL_STATE, mechanisms=[])
    exchange = users.start(request.mechanism)
    if exchange is None or (session.authenticated and request.mechanism != session.sasl_mechanism):
        ctx.close_after_response = True
        return SaslHandshakeResponse(error_code=ErrorCode.UNSUPPORTED_SASL_MECHANISM,
                                     mechanisms=users.mechanisms)
    session.sasl = exchange
    session.sasl_raw_tokens = ctx.api_version == 0
    return SaslHandshakeResponse(error_code=ErrorCode.NONE, mechanisms=users.mechanisms)


async def exchange_raw_token(ctx: RequestContext, token: bytes) -> bytes | None:
    """The next bare token of a client that sent SaslHandshake v0 (Kafka serves it, and clients
    such as librdkafka 2.0 need it in range even though they then use SaslAuthenticate): the
    SaslAuthenticate v0 rules without the framing. None when authentication failed: the
    connection is then closed, as Kafka does."""
    response = await handle_sasl_authenticate(ctx, SaslAuthenticateRequest(auth_bytes=token))
    if response.error_code != ErrorCode.NONE:
        return None
    ctx.session.sasl_raw_tokens = not ctx.session.authenticated
    return bytes(response.auth_bytes)


@serves("SaslAuthenticate", 0, 2)
async def handle_sasl_authenticate(ctx: RequestContext,
                                   request: SaslAuthenticateRequest) -> SaslAuthenticateResponse:
    session = ctx.session
    exchange = session.sasl
    if exchange is None or exchange.done:
        ctx.close_after_response = True
        return SaslAuthenticateResponse(error_code=ErrorCode.ILLEGAL_SASL_STATE,
                                        error_message="Unexpected SaslAuthenticate request",
                                        auth_bytes=b"")
    reauthenticating = session.authenticated
    try:
        token = exchange.step(bytes(request.auth_bytes))
        if exchange.done and reauthenticating and f"User:{exchange.user}" != session.principal:
            raise AuthenticationFailed("principal changed", client_message=(
                f"Cannot change principals during re-authentication from {session.principal}: "
                f"User:{exchange.user}"))
    except AuthenticationFailed as exc:
        log.info("connection %s: SASL %s %s failed: %s", session.peer, exchange.name,
                 "re-authentication" if reauthenticating else "authentication", exc)
        ctx.close_after_response = True
        # Kafka's connection.failed.authentication.delay.ms: slows down password guessing.
        await trio.sleep(ctx.broker.config["connection.failed.authentication.delay.ms"] / 1000)
        return SaslAuthenticateResponse(
            error_code=ErrorCode.SASL_AUTHENTICATION_FAILED,
            error_message=exc.client_message or (
                f"Authentication failed during "
                f"{'re-authentication' if reauthenticating else 'authentication'} due to invalid "
                f"credentials with SASL mechanism {exchange.name}"),
            auth_bytes=b"")
    lifetime_ms = 0
    if exchange.done:
        lifetime_ms = _session_lifetime_ms(ctx, exchange)
        session.authenticated, session.principal = True, f"User:{exchange.user}"
        session.sasl_mechanism, session.sasl_version = exchange.name, ctx.api_version
        session.session_expires = time.monotonic() + lifetime_ms / 1000 if lifetime_ms else None
    return SaslAuthenticateResponse(error_code=ErrorCode.NONE, error_message=None,
                                    auth_bytes=token, session_lifetime_ms=lifetime_ms)


def _session_lifetime_ms(ctx: RequestContext, exchange: Mechanism) -> int:
    """KIP-368, as Kafka computes it: connections.max.reauth.ms (per listener and mechanism),
    shortened to the credential's expiration (an OAUTHBEARER token's exp); 0: no limit."""
    broker = ctx.broker
    listener = next(listener for listener in broker.config.listeners() if listener.name == ctx.session.listener)
    max_reauth_ms = broker.config.for_listener(listener, "connections.max.reauth.ms", exchange.name)
    limits = [max_reauth_ms] if max_reauth_ms > 0 else []
    if exchange.expires_ms is not None:
        limits.append(max(exchange.expires_ms - broker.clock.now_ms(), 1))
    return min(limits, default=0)


# SCRAM credentials (KIP-554): CLUSTER DESCRIBE / ALTER, so without an authorizer every principal
# may describe and alter them, as in Kafka; the rules and messages are Kafka's (see kbroker.sasl.ScramStore).

@serves("DescribeUserScramCredentials", 0, 0)
async def handle_describe_user_scram_credentials(
        ctx: RequestContext,
        request: DescribeUserScramCredentialsRequest) -> DescribeUserScramCredentialsResponse:
    if not allowed_cluster(ctx, Operation.DESCRIBE):
        return DescribeUserScramCredentialsResponse(
            error_code=ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
            error_message=CLUSTER_AUTHORIZATION_MESSAGE, results=[])
    names = None if request.users is None else [user.name for user in request.users]
    Result = DescribeUserScramCredentialsResponse.DescribeUserScramCredentialsResult
    Info = DescribeUserScramCredentialsResponse.CredentialInfo
    return DescribeUserScramCredentialsResponse(error_code=ErrorCode.NONE, error_message=None, results=[
        Result(user=user, error_code=error, error_message=message,
               credential_infos=[Info(mechanism=mechanism, iterations=iterations)
                                 for mechanism, iterations in infos])
        for user, error, message, infos in ctx.broker.scram.store.describe(names)])


@serves("AlterUserScramCredentials", 0, 0)
async def handle_alter_user_scram_credentials(
        ctx: RequestContext,
        request: AlterUserScramCredentialsRequest) -> AlterUserScramCredentialsResponse:
    Result = AlterUserScramCredentialsResponse.AlterUserScramCredentialsResult
    if not allowed_cluster(ctx, Operation.ALTER):
        users = dict.fromkeys([*(d.name for d in request.deletions), *(u.name for u in request.upsertions)])
        return AlterUserScramCredentialsResponse(results=[
            Result(user=user, error_code=ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
                   error_message=CLUSTER_AUTHORIZATION_MESSAGE) for user in users])
    results = ctx.broker.scram.alter(
        [(deletion.name, deletion.mechanism) for deletion in request.deletions],
        [(upsertion.name, upsertion.mechanism, upsertion.iterations, bytes(upsertion.salt),
          bytes(upsertion.salted_password)) for upsertion in request.upsertions])
    return AlterUserScramCredentialsResponse(results=[
        Result(user=user, error_code=error, error_message=message) for user, error, message in results])


# The ACL APIs. Without an authorizer (Kafka's authorizer.class.name is empty by default) every
# operation is allowed and they answer SECURITY_DISABLED, as Kafka then does, so admin tools get
# Kafka's error rather than an unsupported version.
_NO_AUTHORIZER = "No Authorizer is configured."


def _code(kind, value: int):
    """An ACL enum from its wire code; codes Kafka does not know are UNKNOWN."""
    try:
        return kind(value)
    except ValueError:
        return kind.UNKNOWN


def _acl_filter(entry) -> AclFilter | None:
    """The filter of a DescribeAcls request or DeleteAcls entry; None when it has UNKNOWN parts,
    which Kafka refuses."""
    acl_filter = AclFilter(
        _code(ResourceType, entry.resource_type_filter), entry.resource_name_filter,
        _code(PatternType, entry.pattern_type_filter), entry.principal_filter, entry.host_filter,
        _code(Operation, entry.operation), _code(Permission, entry.permission_type))
    codes = (acl_filter.resource_type, acl_filter.pattern_type, acl_filter.operation, acl_filter.permission)
    if any(code.name == "UNKNOWN" for code in codes):
        return None
    return acl_filter


_UNKNOWN_FILTER = "The filter contains UNKNOWN elements"


@serves("DescribeAcls", 1, 3, oldest=0)
async def handle_describe_acls(ctx: RequestContext,
                               request: DescribeAclsRequest) -> DescribeAclsResponse:
    acls = ctx.broker.acls

    def failed(error: ErrorCode, message: str | None) -> DescribeAclsResponse:
        return DescribeAclsResponse(error_code=error, error_message=message, resources=[])
    if acls is None:
        return failed(ErrorCode.SECURITY_DISABLED, "No Authorizer is configured on the broker")
    if not allowed_cluster(ctx, Operation.DESCRIBE):
        return failed(ErrorCode.CLUSTER_AUTHORIZATION_FAILED, CLUSTER_AUTHORIZATION_MESSAGE)
    acl_filter = _acl_filter(request)
    if acl_filter is None:
        return failed(ErrorCode.INVALID_REQUEST, _UNKNOWN_FILTER)
    by_resource: dict[tuple, list] = {}
    for acl in acls.authorizer.describe(acl_filter):
        by_resource.setdefault((acl.resource_type, acl.resource_name, acl.pattern_type), []).append(
            DescribeAclsResponse.AclDescription(principal=acl.principal, host=acl.host,
                                                operation=acl.operation,
                                                permission_type=acl.permission))
    return DescribeAclsResponse(error_code=ErrorCode.NONE, error_message=None, resources=[
        DescribeAclsResponse.DescribeAclsResource(resource_type=rtype, resource_name=name,
                                                  pattern_type=pattern, acls=descriptions)
        for (rtype, name, pattern), descriptions in by_resource.items()])


@serves("CreateAcls", 1, 3, oldest=0)
async def handle_create_acls(ctx: RequestContext, request: CreateAclsRequest) -> CreateAclsResponse:
    Result = CreateAclsResponse.AclCreationResult
    acls = ctx.broker.acls
    if acls is None:
        return CreateAclsResponse(results=[
            Result(error_code=ErrorCode.SECURITY_DISABLED, error_message=_NO_AUTHORIZER)
            for _ in request.creations])
    if not allowed_cluster(ctx, Operation.ALTER):
        return CreateAclsResponse(results=[
            Result(error_code=ErrorCode.CLUSTER_AUTHORIZATION_FAILED, error_message=None)
            for _ in request.creations])
    errors = acls.create([
        AclBinding(_code(ResourceType, creation.resource_type), creation.resource_name,
                   _code(PatternType, creation.resource_pattern_type), creation.principal,
                   creation.host, _code(Operation, creation.operation),
                   _code(Permission, creation.permission_type))
        for creation in request.creations])
    return CreateAclsResponse(results=[
        Result(error_code=ErrorCode.NONE, error_message=None) if error is None
        else Result(error_code=error.code, error_message=error.message) for error in errors])


@serves("DeleteAcls", 1, 3, oldest=0)
async def handle_delete_acls(ctx: RequestContext, request: DeleteAclsRequest) -> DeleteAclsResponse:
    FilterResult = DeleteAclsResponse.DeleteAclsFilterResult
    acls = ctx.broker.acls
    if acls is None or not allowed_cluster(ctx, Operation.ALTER):
        error, message = ((ErrorCode.SECURITY_DISABLED, _NO_AUTHORIZER) if acls is None
                          else (ErrorCode.CLUSTER_AUTHORIZATION_FAILED, None))
        return DeleteAclsResponse(filter_results=[
            FilterResult(error_code=error, error_message=message, matching_acls=[])
            for _ in request.filters])
    filters = [_acl_filter(entry) for entry in request.filters]
    removed = iter(acls.delete([acl_filter for acl_filter in filters if acl_filter is not None]))
    Matching = DeleteAclsResponse.DeleteAclsMatchingAcl
    return DeleteAclsResponse(filter_results=[
        FilterResult(error_code=ErrorCode.INVALID_REQUEST, error_message=_UNKNOWN_FILTER,
                     matching_acls=[]) if acl_filter is None
        else FilterResult(error_code=ErrorCode.NONE, error_message=None, matching_acls=[
            Matching(error_code=ErrorCode.NONE, error_message=None, resource_type=acl.resource_type,
                     resource_name=acl.resource_name, pattern_type=acl.pattern_type,
                     principal=acl.principal, host=acl.host, operation=acl.operation,
                     permission_type=acl.permission)
            for acl in next(removed)])
        for acl_filter in filters])
