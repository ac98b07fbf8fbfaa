"""InitProducerId and, later, the transactional APIs."""

from __future__ import annotations

from kbroker.api.registry import serves
from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.messages import InitProducerIdResponse


@serves("InitProducerId", 0, 4)
async def handle_init_producer_id(ctx, request) -> InitProducerIdResponse:
    if request.transactional_id is None:
        # An idempotent producer always gets a fresh id with epoch 0, as Kafka does, even
        # when it names its previous id (KIP-360 epoch bumps apply to transactional ids).
        return InitProducerIdResponse(
            throttle_time_ms=0, error_code=ErrorCode.NONE,
            producer_id=ctx.broker.producer_ids.allocate(), producer_epoch=0,
        )
    # No transaction coordinator runs yet: a transactional producer is told to retry later.
    return InitProducerIdResponse(throttle_time_ms=0, error_code=ErrorCode.COORDINATOR_NOT_AVAILABLE)
