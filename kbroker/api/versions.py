"""ApiVersions: tells clients which APIs and versions this broker serves, from the registry."""

from __future__ import annotations

import re

from kbroker.api.context import RequestContext
from kbroker.api.registry import ApiVersions, api_versions, serves
from kbroker.features import supported_features
from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.messages import API_KEYS, ApiVersionsRequest, ApiVersionsResponse

_API_VERSIONS_KEY = API_KEYS["ApiVersions"]
# Kafka accepts client software names and versions of this shape (KIP-511).
_SOFTWARE_TEXT = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?")


def _advertised(ranges: dict[int, tuple[int, int]]) -> list:
    return [ApiVersionsResponse.ApiVersion(api_key=key, min_version=low, max_version=high)
            for key, (low, high) in sorted(ranges.items())]


def unsupported_version_response(served: ApiVersions) -> ApiVersionsResponse:
    """The v0 answer to an ApiVersions request newer than we serve: our own range only."""
    return ApiVersionsResponse(
        error_code=ErrorCode.UNSUPPORTED_VERSION,
        api_keys=_advertised({_API_VERSIONS_KEY: served.advertised[_API_VERSIONS_KEY]}),
    )


@serves("ApiVersions", 0, 5)
async def handle_api_versions(ctx: RequestContext,
                              request: ApiVersionsRequest) -> ApiVersionsResponse:
    """From v5 a client may name the cluster and node it expects (KIP-1242): both or neither,
    and a mismatch answers REBOOTSTRAP_REQUIRED so that it looks for its cluster again."""
    if ctx.api_version >= 5 and (request.cluster_id is None) != (request.node_id == -1):
        return ApiVersionsResponse(error_code=ErrorCode.INVALID_REQUEST)
    if ctx.api_version >= 3:
        name, version = request.client_software_name, request.client_software_version
        if not (_SOFTWARE_TEXT.fullmatch(name) and _SOFTWARE_TEXT.fullmatch(version)):
            return ApiVersionsResponse(error_code=ErrorCode.INVALID_REQUEST)
    if ctx.api_version >= 5 and request.cluster_id is not None and (
            request.cluster_id != ctx.broker.identity.cluster_id
            or request.node_id != ctx.node_id):
        return ApiVersionsResponse(error_code=ErrorCode.REBOOTSTRAP_REQUIRED)
    if ctx.api_version >= 3:
        ctx.session.client_software = f"{name} {version}"
    broker = ctx.broker
    if broker.release is not None and not broker.release.has_features:
        return ApiVersionsResponse(error_code=ErrorCode.NONE,
                                   api_keys=_advertised(api_versions(broker.release).advertised))
    return ApiVersionsResponse(
        error_code=ErrorCode.NONE, api_keys=_advertised(api_versions(broker.release).advertised),
        supported_features=[
            ApiVersionsResponse.SupportedFeatureKey(
                name=feature.name, min_version=feature.min_level, max_version=feature.max_level)
            for feature in supported_features()],
        finalized_features_epoch=broker.metadata_offset.value,
        finalized_features=[
            ApiVersionsResponse.FinalizedFeatureKey(name=name, min_version_level=level,
                                                    max_version_level=level)
            for name, level in broker.features.finalized().items()])
