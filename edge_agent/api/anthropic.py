"""Anthropic Messages wire format (`POST /v1/messages`): request checks and error bodies.

Like `api/openai.py`, validation checks what the agent relies on and the types Anthropic
documents, so a client learns of a malformed request from the gateway with Anthropic's
own error shape (`{"type": "error", "error": {"type", "message"}}`) — the shape the
official SDK turns into its exception classes.
"""

from __future__ import annotations

from typing import Any

import orjson

from edge_agent.api.errors import ApiError, invalid_request
from edge_agent.api.openai import Endpoint, ParsedRequest, load_object

#: The API version the agent speaks to Anthropic-type providers.
ANTHROPIC_VERSION = "2023-06-01"

# Anthropic's error type for each status (https://docs.anthropic.com/en/api/errors).
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_ROLES = ("user", "assistant")
_USER_BLOCKS = frozenset({"text", "image", "document", "tool_result", "search_result"})
_ASSISTANT_BLOCKS = frozenset(
    {
        "text",
        "tool_use",
        "thinking",
        "redacted_thinking",
        "server_tool_use",
        "web_search_tool_result",
    }
)


def error_type_for(status: int) -> str:
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def error_body(exc: ApiError) -> bytes:
    """An agent-made error in Anthropic's envelope."""
    return orjson.dumps(
        {"type": "error", "error": {"type": error_type_for(exc.status), "message": exc.message}}
    )


def _bad(path: str, message: str) -> ApiError:
    return invalid_request(f"{path}: {message}", path, "invalid_request")


def _check_blocks(path: str, content: Any, allowed: frozenset[str]) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _bad(path, "expected a string or an array of content blocks")
    for i, block in enumerate(content):
        where = f"{path}.{i}"
        if not isinstance(block, dict):
            raise _bad(where, "expected a content block object")
        kind = block.get("type")
        if not isinstance(kind, str):
            raise _bad(f"{where}.type", "Field required")
        if kind not in allowed:
            raise _bad(
                f"{where}.type",
                f"Input tag '{kind}' is not allowed here; expected one of {sorted(allowed)}",
            )
        if kind == "text" and not isinstance(block.get("text"), str):
            raise _bad(f"{where}.text", "Field required (a string)")
        if kind == "tool_use" and not (
            isinstance(block.get("id"), str)
            and isinstance(block.get("name"), str)
            and isinstance(block.get("input"), dict)
        ):
            raise _bad(where, "a tool_use block needs string 'id' and 'name' and an object 'input'")
        if kind == "tool_result" and not isinstance(block.get("tool_use_id"), str):
            raise _bad(f"{where}.tool_use_id", "Field required (a string)")


def _check_number(body: dict[str, Any], key: str, lo: float, hi: float) -> None:
    value = body.get(key)
    if value is None:
        return
    if type(value) not in (int, float) or not lo <= value <= hi:
        raise _bad(key, f"expected a number from {lo} to {hi}")


def parse_request(raw: bytes) -> ParsedRequest:
    """Parse and check a Messages request; raises ApiError (400) and nothing else."""
    body = load_object(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", "Field required (a non-empty string)")
    max_tokens = body.get("max_tokens")
    if type(max_tokens) is not int or max_tokens < 1:
        raise _bad("max_tokens", "Field required (an integer >= 1)")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", "Field required (a non-empty array of messages)")
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise _bad(where, "expected a message object")
        role = message.get("role")
        if role not in _ROLES:
            raise _bad(f"{where}.role", f"expected 'user' or 'assistant', got {role!r}")
        if "content" not in message:
            raise _bad(f"{where}.content", "Field required")
        allowed = _USER_BLOCKS if role == "user" else _ASSISTANT_BLOCKS
        _check_blocks(f"{where}.content", message["content"], allowed)
    system = body.get("system")
    if system is not None:
        _check_blocks("system", system, frozenset({"text"}))
    stream = body.get("stream")
    if stream is not None and type(stream) is not bool:
        raise _bad("stream", "expected a boolean")
    _check_number(body, "temperature", 0.0, 1.0)
    _check_number(body, "top_p", 0.0, 1.0)
    stops = body.get("stop_sequences")
    if stops is not None and not (
        isinstance(stops, list) and all(isinstance(s, str) for s in stops)
    ):
        raise _bad("stop_sequences", "expected an array of strings")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _bad("tools", "expected an array of tools")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise _bad(f"tools.{i}.name", "Field required (a string)")
    temperature = body.get("temperature")
    return ParsedRequest(
        endpoint=Endpoint.MESSAGES,
        body=body,
        model=model,
        stream=stream is True,
        include_usage=True,  # a Messages stream always reports usage
        temperature=None if temperature is None else float(temperature),
        n=1,
    )
