"""DescribeClientQuotas and AlterClientQuotas: client quotas stored and described as Kafka does
(kbroker/quotas.py has the rules); the request quota applied to every response (the byte rates
are recorded by Produce and Fetch; kbroker/throttling.py has the rules)."""

from __future__ import annotations

import ipaddress

import trio

from kbroker.api.authorization import allowed_cluster
from kbroker.api.context import RequestContext
from kbroker.api.registry import serves
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.messages import (
    AlterClientQuotasRequest, AlterClientQuotasResponse, ApiVersionsResponse,
    DescribeClientQuotasRequest, DescribeClientQuotasResponse, SaslAuthenticateResponse,
    SaslHandshakeResponse,
)
from kbroker.quotas import IP
from kbroker.security.authorizer import Operation
from kbroker.throttling import MutationQuota, quota_user


async def _resolvable(names: set[str]) -> set[str]:
    """The ip entity names that are IP addresses or resolve, as Kafka's InetAddress.getByName."""
    found = set()
    for name in names:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            try:
                await trio.socket.getaddrinfo(name, None)
            except OSError:
                continue
        found.add(name)
    return found


@serves("AlterClientQuotas", 0, 1)
async def handle_alter_client_quotas(
        ctx: RequestContext, request: AlterClientQuotasRequest) -> AlterClientQuotasResponse:
    Response = AlterClientQuotasResponse
    if not allowed_cluster(ctx, Operation.ALTER_CONFIGS):
        return Response(throttle_time_ms=0, entries=[
            Response.EntryData(error_code=ErrorCode.CLUSTER_AUTHORIZATION_FAILED, error_message=None,
                               entity=[Response.EntityData(entity_type=part.entity_type,
                                                           entity_name=part.entity_name)
                                       for part in entry.entity])
            for entry in request.entries])
    alterations = [
        ([(part.entity_type, part.entity_name) for part in entry.entity],
         [(op.key, None if op.remove else op.value) for op in entry.ops])
        for entry in request.entries]
    ip_names = {name for pairs, _ in alterations for entity_type, name in pairs
                if entity_type == IP and name}
    quotas = ctx.broker.quotas
    before = quotas.quotas
    results = quotas.alter(alterations, await _resolvable(ip_names), request.validate_only)
    if quotas.quotas is not before:
        ctx.broker.metadata_offset.advance()
    return Response(throttle_time_ms=0, entries=[
        Response.EntryData(
            error_code=ErrorCode.NONE if error is None else error.code,
            error_message=None if error is None else error.message,
            entity=[Response.EntityData(entity_type=entity_type, entity_name=name)
                    for entity_type, name in entity])
        for entity, error in results])


@serves("DescribeClientQuotas", 0, 1)
async def handle_describe_client_quotas(
        ctx: RequestContext, request: DescribeClientQuotasRequest) -> DescribeClientQuotasResponse:
    Response = DescribeClientQuotasResponse
    components = [(part.entity_type, part.match_type, part.match) for part in request.components]
    if not allowed_cluster(ctx, Operation.DESCRIBE_CONFIGS):
        return Response(throttle_time_ms=0, error_code=ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
                        error_message=None, entries=None)
    try:
        matching = ctx.broker.quotas.describe(components, request.strict)
    except KafkaError as exc:
        return Response(throttle_time_ms=0, error_code=exc.code, error_message=exc.message,
                        entries=None)
    return Response(throttle_time_ms=0, error_code=ErrorCode.NONE, error_message=None, entries=[
        Response.EntryData(
            entity=[Response.EntityData(entity_type=entity_type, entity_name=name)
                    for entity_type, name in entity],
            values=[Response.ValueData(key=key, value=value) for key, value in values.items()])
        for entity, values in matching])


def mutation_quota(ctx: RequestContext, strict_since: int) -> MutationQuota:
    """The request's controller_mutation_rate (KIP-599), strict from version `strict_since` on
    (rules M1-M4 of kbroker/throttling.py)."""
    return ctx.broker.throttles.mutation.for_request(
        quota_user(ctx.session.principal), ctx.client_id, ctx.api_version >= strict_since)


def mutation_throttle_ms(ctx: RequestContext, quota: MutationQuota) -> int:
    """The throttle_time_ms of the response; the connection is muted as long."""
    ctx.throttle_ms = max(ctx.throttle_ms, quota.throttle_ms(ctx.broker.clock.now_ms()))
    return ctx.throttle_ms


# Kafka's request quota leaves out what a client needs before it can be throttled at all.
_NOT_THROTTLED = (ApiVersionsResponse, SaslHandshakeResponse, SaslAuthenticateResponse)


def apply_request_quota(ctx: RequestContext, response, handle_seconds: float) -> None:
    """Record the time a request took against the client's request_percentage quota (rule Q6 of
    kbroker/throttling.py); a response then carries the longest throttle time of its request."""
    if isinstance(response, _NOT_THROTTLED):
        return
    throttle_ms = ctx.broker.throttles.request.record(
        quota_user(ctx.session.principal), ctx.client_id, (handle_seconds - ctx.waited_seconds) * 100,
        ctx.broker.clock.now_ms())
    ctx.throttle_ms = max(ctx.throttle_ms, throttle_ms)
    if ctx.throttle_ms and response is not None and hasattr(response, "throttle_time_ms"):
        response.throttle_time_ms = ctx.throttle_ms
