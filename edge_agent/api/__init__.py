"""Client-facing wire formats: OpenAI JSON requests/responses, SSE streams, API errors."""

from edge_agent.api.errors import (
    ApiError,
    invalid_request,
    method_not_allowed,
    model_not_found,
    payload_too_large,
    service_unavailable,
    unknown_endpoint,
)
from edge_agent.api.openai import (
    ENDPOINT_BY_PATH,
    Endpoint,
    ParsedRequest,
    is_complete_response,
    models_list,
    parse_request,
)
from edge_agent.api.sse import (
    SSEEvent,
    SSEParser,
    StreamAssembler,
    encode_event,
    replay_stream,
)

__all__ = [
    "ENDPOINT_BY_PATH",
    "ApiError",
    "Endpoint",
    "ParsedRequest",
    "SSEEvent",
    "SSEParser",
    "StreamAssembler",
    "encode_event",
    "invalid_request",
    "is_complete_response",
    "method_not_allowed",
    "model_not_found",
    "models_list",
    "parse_request",
    "payload_too_large",
    "replay_stream",
    "service_unavailable",
    "unknown_endpoint",
]
