"""UpdateFeatures: finalizing cluster feature levels (KIP-584), as Kafka's controller does.

The request is applied all or nothing (kbroker/features.py has the rules). Versions 0-1 answer
a result per feature, every one carrying the request's outcome; version 2 answers the top-level
error only, as Kafka 4 does.
"""

from __future__ import annotations

from kbroker.api.authorization import allowed_cluster
from kbroker.api.context import RequestContext
from kbroker.api.registry import serves
from kbroker.features import SAFE_DOWNGRADE, UPGRADE
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.messages import UpdateFeaturesRequest, UpdateFeaturesResponse
from kbroker.security.authorizer import Operation


@serves("UpdateFeatures", 0, 2)
async def handle_update_features(ctx: RequestContext,
                                 request: UpdateFeaturesRequest) -> UpdateFeaturesResponse:
    updates: dict[str, tuple[int, int]] = {}  # a feature named twice: the last one counts
    for update in request.feature_updates:
        if ctx.api_version == 0:
            upgrade_type = SAFE_DOWNGRADE if update.allow_downgrade else UPGRADE
        else:
            upgrade_type = update.upgrade_type
        updates[update.feature] = (update.max_version_level, upgrade_type)
    error = None
    try:
        if not allowed_cluster(ctx, Operation.ALTER):
            raise KafkaError(ErrorCode.CLUSTER_AUTHORIZATION_FAILED, "Cluster authorization failed.")
        ctx.broker.features.update(updates, request.validate_only)
    except KafkaError as exc:
        error = exc
    else:
        if updates and not request.validate_only:
            ctx.broker.metadata_offset.advance(len(updates))
            ctx.broker.on_features_finalized()
    code = ErrorCode.NONE if error is None else error.code
    message = None if error is None else error.message
    results = [] if ctx.api_version >= 2 else [
        UpdateFeaturesResponse.UpdatableFeatureResult(feature=name, error_code=code,
                                                      error_message=message)
        for name in updates]
    return UpdateFeaturesResponse(throttle_time_ms=0, error_code=code, error_message=message,
                                  results=results)
