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


# --------------------------------------------------------------------------- streams


def is_complete_message(body: Any) -> bool:
    """A whole Messages answer that may be cached: a message that stopped on purpose."""
    return (
        isinstance(body, dict)
        and body.get("type") == "message"
        and isinstance(body.get("content"), list)
        and body.get("stop_reason") in ("end_turn", "stop_sequence", "max_tokens", "tool_use")
    )


class MessagesAssembler:
    """Rebuilds the Message a Messages event stream delivers (for the cache).

    `result()` is None unless the stream ended properly (message_stop) with every block
    well-formed: a cut or failed stream must never be stored as if it were whole.
    """

    __slots__ = ("_blocks", "_broken", "_json", "_message", "_parser", "_stopped")

    def __init__(self) -> None:
        from edge_agent.api.sse import SSEParser  # sse imports nothing of ours: no cycle

        self._parser = SSEParser()
        self._message: dict[str, Any] | None = None
        self._blocks: dict[int, dict[str, Any]] = {}
        self._json: dict[int, list[str]] = {}  # partial tool input per block
        self._stopped = False
        self._broken = False

    def feed(self, chunk: bytes) -> None:
        for event in self._parser.feed(chunk):
            try:
                data = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                self._broken = True
                continue
            if isinstance(data, dict):
                self._event(data)

    def _event(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "message_start" and isinstance(data.get("message"), dict):
            self._message = dict(data["message"])
        elif kind == "content_block_start" and isinstance(data.get("content_block"), dict):
            self._blocks[data.get("index", 0)] = dict(data["content_block"])
        elif kind == "content_block_delta":
            block = self._blocks.get(data.get("index", 0))
            delta = data.get("delta") or {}
            if block is None:
                self._broken = True
                return
            dtype = delta.get("type")
            if dtype == "text_delta":
                block["text"] = block.get("text", "") + delta.get("text", "")
            elif dtype == "input_json_delta":
                self._json.setdefault(data.get("index", 0), []).append(
                    delta.get("partial_json", "")
                )
            elif dtype == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
            elif dtype == "signature_delta":
                block["signature"] = delta.get("signature", "")
            else:
                self._broken = True  # a delta kind we would not replay faithfully
        elif kind == "message_delta" and self._message is not None:
            self._message.update(data.get("delta") or {})
            usage = {**(self._message.get("usage") or {}), **(data.get("usage") or {})}
            self._message["usage"] = usage
        elif kind == "message_stop":
            self._stopped = True
        elif kind == "error":
            self._broken = True

    def result(self) -> dict[str, Any] | None:
        if self._broken or not self._stopped or self._message is None:
            return None
        content = []
        for index in sorted(self._blocks):
            block = self._blocks[index]
            if index in self._json:
                raw = "".join(self._json[index]) or "{}"
                try:
                    block["input"] = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    return None
            content.append(block)
        message = {**self._message, "content": content}
        return message if is_complete_message(message) else None


def replay_stream(message: dict[str, Any]) -> bytes:
    """A cached Message as the event stream the Messages API would have sent."""
    from edge_agent.api.sse import encode_event

    def event(name: str, body: dict[str, Any]) -> bytes:
        return encode_event(orjson.dumps({"type": name, **body}), name)

    if not is_complete_message(message):
        raise ValueError("not a complete Message")
    usage = dict(message.get("usage") or {})
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {**usage, "output_tokens": 0}
    out = [event("message_start", {"message": start})]
    for index, block in enumerate(message["content"]):
        kind = block.get("type")
        if kind == "text":
            out.append(
                event(
                    "content_block_start", {"index": index, "content_block": {**block, "text": ""}}
                )
            )
            delta = {"type": "text_delta", "text": block.get("text", "")}
        elif kind == "tool_use":
            empty = {**block, "input": {}}
            out.append(event("content_block_start", {"index": index, "content_block": empty}))
            partial = orjson.dumps(block.get("input", {})).decode()
            delta = {"type": "input_json_delta", "partial_json": partial}
        elif kind == "thinking":
            empty = {**block, "thinking": "", "signature": ""}
            out.append(event("content_block_start", {"index": index, "content_block": empty}))
            out.append(
                event(
                    "content_block_delta",
                    {
                        "index": index,
                        "delta": {"type": "thinking_delta", "thinking": block.get("thinking", "")},
                    },
                )
            )
            delta = {"type": "signature_delta", "signature": block.get("signature", "")}
        else:
            raise ValueError(f"cannot replay a {kind!r} block")
        out.append(event("content_block_delta", {"index": index, "delta": delta}))
        out.append(event("content_block_stop", {"index": index}))
    stop = {"stop_reason": message["stop_reason"], "stop_sequence": message.get("stop_sequence")}
    out.append(
        event(
            "message_delta",
            {"delta": stop, "usage": {"output_tokens": usage.get("output_tokens", 0)}},
        )
    )
    out.append(event("message_stop", {}))
    return b"".join(out)
