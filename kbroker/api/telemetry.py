"""GetTelemetrySubscriptions and PushTelemetry (KIP-714): clients learn which metrics to push
and push them; kbroker keeps the latest of each client (kbroker/telemetry.py has the rules)."""

from __future__ import annotations

from kbroker.api.context import RequestContext
from kbroker.api.registry import serves
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.messages import (
    GetTelemetrySubscriptionsRequest, GetTelemetrySubscriptionsResponse, PushTelemetryRequest,
    PushTelemetryResponse,
)
from kbroker.telemetry import ACCEPTED_COMPRESSION


def _selectors(ctx) -> dict[str, str]:
    """What a subscription's `match` can select this client by."""
    software_name, _, software_version = (ctx.session.client_software or "").partition(" ")
    address, _, port = ctx.session.peer.rpartition(":")
    return {"client_id": ctx.client_id or "", "client_software_name": software_name,
            "client_software_version": software_version, "client_source_address": address,
            "client_source_port": port}


@serves("GetTelemetrySubscriptions", 0, 0)
async def handle_get_telemetry_subscriptions(
        ctx: RequestContext,
        request: GetTelemetrySubscriptionsRequest) -> GetTelemetrySubscriptionsResponse:
    broker = ctx.broker
    try:
        instance_id, instance = broker.telemetry.get_subscriptions(
            request.client_instance_id, _selectors(ctx), broker.clock.now_ms())
    except KafkaError as exc:
        return GetTelemetrySubscriptionsResponse(throttle_time_ms=0, error_code=exc.code)
    return GetTelemetrySubscriptionsResponse(
        throttle_time_ms=0, error_code=ErrorCode.NONE, client_instance_id=instance_id,
        subscription_id=instance.subscription_id, accepted_compression_types=ACCEPTED_COMPRESSION,
        push_interval_ms=instance.push_interval_ms, telemetry_max_bytes=broker.telemetry.max_bytes,
        delta_temporality=True, requested_metrics=instance.metrics)


@serves("PushTelemetry", 0, 0)
async def handle_push_telemetry(ctx: RequestContext,
                                request: PushTelemetryRequest) -> PushTelemetryResponse:
    broker = ctx.broker
    try:
        broker.telemetry.push(request.client_instance_id, request.subscription_id,
                              request.terminating, request.compression_type, bytes(request.metrics),
                              _selectors(ctx), broker.clock.now_ms())
    except KafkaError as exc:
        return PushTelemetryResponse(throttle_time_ms=0, error_code=exc.code)
    return PushTelemetryResponse(throttle_time_ms=0, error_code=ErrorCode.NONE)
