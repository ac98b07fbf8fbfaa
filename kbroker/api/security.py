"""SaslHandshake and SaslAuthenticate: authenticating connections on a SASL_PLAINTEXT listener."""

from __future__ import annotations

import logging

from kbroker.api.registry import serves
from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.messages import SaslAuthenticateResponse, SaslHandshakeResponse
from kbroker.sasl import AuthenticationFailed

log = logging.getLogger("kbroker.sasl")


@serves("SaslHandshake", 1, 1)
async def handle_sasl_handshake(ctx, request) -> SaslHandshakeResponse:
    users = ctx.broker.sasl_users
    connection = ctx.connection
    if users is None or connection.authenticated:
        # Kafka's answer on a listener without SASL, or after authentication.
        return SaslHandshakeResponse(error_code=ErrorCode.ILLEGAL_SASL_STATE, mechanisms=[])
    exchange = users.start(request.mechanism)
    if exchange is None:
        connection.close_after_response = True
        return SaslHandshakeResponse(error_code=ErrorCode.UNSUPPORTED_SASL_MECHANISM,
                                     mechanisms=users.mechanisms)
    connection.sasl = exchange
    return SaslHandshakeResponse(error_code=ErrorCode.NONE, mechanisms=users.mechanisms)


@serves("SaslAuthenticate", 0, 2)
async def handle_sasl_authenticate(ctx, request) -> SaslAuthenticateResponse:
    connection = ctx.connection
    exchange = connection.sasl
    if exchange is None or connection.authenticated:
        connection.close_after_response = True
        return SaslAuthenticateResponse(error_code=ErrorCode.ILLEGAL_SASL_STATE,
                                        error_message="Unexpected SaslAuthenticate request",
                                        auth_bytes=b"")
    try:
        token = exchange.step(bytes(request.auth_bytes))
    except AuthenticationFailed as exc:
        log.info("connection %s: SASL %s authentication failed: %s", connection.peer,
                 exchange.name, exc)
        connection.close_after_response = True
        return SaslAuthenticateResponse(
            error_code=ErrorCode.SASL_AUTHENTICATION_FAILED,
            error_message=f"Authentication failed during authentication due to invalid "
                          f"credentials with SASL mechanism {exchange.name}",
            auth_bytes=b"")
    if exchange.done:
        connection.authenticated = True
        connection.principal = exchange.user
    return SaslAuthenticateResponse(error_code=ErrorCode.NONE, error_message=None,
                                    auth_bytes=token, session_lifetime_ms=0)
