"""SaslHandshake and SaslAuthenticate on SASL_PLAINTEXT and SASL_SSL listeners, re-authentication
included (KIP-368); SCRAM credentials managed at
runtime (DescribeUserScramCredentials, AlterUserScramCredentials); the ACL APIs, without an authorizer."""

from __future__ import annotations

import logging
import time

import trio

from kbroker.api.context import RequestContext
from kbroker.api.registry import serves
from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.messages import (
    AlterUserScramCredentialsRequest,
    AlterUserScramCredentialsResponse,
    CreateAclsRequest,
    CreateAclsResponse,
    DeleteAclsRequest,
    DeleteAclsResponse,
    DescribeAclsRequest,
    DescribeAclsResponse,
    DescribeUserScramCredentialsRequest,
    DescribeUserScramCredentialsResponse,
    SaslAuthenticateRequest,
    SaslAuthenticateResponse,
    SaslHandshakeRequest,
    SaslHandshakeResponse,
)
from kbroker.sasl import AuthenticationFailed, Mechanism

log = logging.getLogger("kbroker.sasl")


@serves("SaslHandshake", 1, 1)
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
    return SaslHandshakeResponse(error_code=ErrorCode.NONE, mechanisms=users.mechanisms)


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


# SCRAM credentials (KIP-554). Without an authorizer every principal may describe and alter them,
# as in Kafka; the rules and messages are Kafka's (see kbroker.sasl.ScramStore).

@serves("DescribeUserScramCredentials", 0, 0)
async def handle_describe_user_scram_credentials(
        ctx: RequestContext,
        request: DescribeUserScramCredentialsRequest) -> DescribeUserScramCredentialsResponse:
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
    results = ctx.broker.scram.alter(
        [(deletion.name, deletion.mechanism) for deletion in request.deletions],
        [(upsertion.name, upsertion.mechanism, upsertion.iterations, bytes(upsertion.salt),
          bytes(upsertion.salted_password)) for upsertion in request.upsertions])
    Result = AlterUserScramCredentialsResponse.AlterUserScramCredentialsResult
    return AlterUserScramCredentialsResponse(results=[
        Result(user=user, error_code=error, error_message=message) for user, error, message in results])


# No authorizer is configured (Kafka's authorizer.class.name is empty by default): every
# operation is allowed, and the ACL APIs answer SECURITY_DISABLED as Kafka then does, so admin
# tools get Kafka's error rather than an unsupported version.
_NO_AUTHORIZER = "No Authorizer is configured."


@serves("DescribeAcls", 1, 3)
async def handle_describe_acls(ctx: RequestContext,
                               request: DescribeAclsRequest) -> DescribeAclsResponse:
    return DescribeAclsResponse(error_code=ErrorCode.SECURITY_DISABLED,
                                error_message="No Authorizer is configured on the broker",
                                resources=[])


@serves("CreateAcls", 1, 3)
async def handle_create_acls(ctx: RequestContext, request: CreateAclsRequest) -> CreateAclsResponse:
    return CreateAclsResponse(results=[
        CreateAclsResponse.AclCreationResult(error_code=ErrorCode.SECURITY_DISABLED,
                                             error_message=_NO_AUTHORIZER)
        for _ in request.creations])


@serves("DeleteAcls", 1, 3)
async def handle_delete_acls(ctx: RequestContext, request: DeleteAclsRequest) -> DeleteAclsResponse:
    return DeleteAclsResponse(filter_results=[
        DeleteAclsResponse.DeleteAclsFilterResult(error_code=ErrorCode.SECURITY_DISABLED,
                                                  error_message=_NO_AUTHORIZER, matching_acls=[])
        for _ in request.filters])
