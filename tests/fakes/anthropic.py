"""Fake Anthropic Messages API for tests: a real HTTP server on 127.0.0.1 speaking the wire format.

It is not an LLM. Answers are derived from the request so that tests can predict them:

* plain text: ``Echo: <text of the last user message>``;
* a tool call when ``tools`` are given, ``tool_choice`` is not ``none`` and either the choice is
  ``any``/``tool`` or the last user text names a tool or says "weather"/"tool": a short text block
  then a ``tool_use`` block whose input fills the schema's required properties (strings get the
  question, numbers 1, booleans true, enums their first value);
* after ``tool_result`` blocks in the last user turn: ``The tool said: <result text>``;
* with ``thinking`` enabled, a ``thinking`` block (with a signature) comes first.

``max_tokens`` truncates the answer by words (``stop_reason`` ``max_tokens``), ``stop_sequences``
cut it before the earliest match (``stop_reason`` ``stop_sequence``). Token counts are whitespace
word counts: ``input_tokens`` over system + messages (tool inputs as their JSON text), output over
the answer (a tool call's input counts one token per four JSON characters). Consistent, not
realistic.

Requests are validated the way Anthropic validates them (400 ``invalid_request_error`` bodies in
Anthropic's error shape, with ``request_id``), so a gateway that builds a wrong body fails here
instead of in production. Every request is recorded, and failures can be injected: whole HTTP
errors (:meth:`FakeAnthropic.fail_next`), ``error`` events in the middle of a stream
(:meth:`FakeAnthropic.break_next_stream`) and stalls (``delay_s``, ``stream_delay_s``).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from edge_agent.demo.runner import (
    Failure,
    FakeServer,
    RecordedRequest,
    ServerThread,
    read_body,
)
from tests.fakes import arguments as schema_args

__all__ = [
    "ANTHROPIC_VERSIONS",
    "ERROR_TYPES",
    "FakeAnthropic",
    "FakeAnthropicThread",
    "RecordedRequest",
    "error_type_for",
]

ANTHROPIC_VERSIONS = frozenset({"2023-06-01", "2023-01-01"})
# Anthropic's documented HTTP status -> error.type mapping.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_DEFAULT_MESSAGES: dict[int, str] = {
    400: "Invalid request",
    401: "invalid x-api-key",
    403: "Your API key does not have permission to use the specified resource.",
    404: "Not found",
    413: "Request exceeds the maximum allowed number of bytes.",
    429: "Number of requests has exceeded your rate limit",
    500: "Internal server error",
    529: "Overloaded",
}
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024

_MESSAGE_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
        "service_tier",
        "container",
        "mcp_servers",
        "context_management",
        "output_config",
        "output_format",
    }
)
_COUNT_TOKENS_FIELDS = frozenset(
    {
        "model",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "thinking",
        "mcp_servers",
        "context_management",
        "output_config",
        "output_format",
    }
)
_BLOCK_TYPES = (
    "text",
    "image",
    "document",
    "search_result",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
    "server_tool_use",
    "web_search_tool_result",
)
_TOOL_RESULT_BLOCK_TYPES = ("text", "image", "document", "search_result")
_IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_TOOL_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
_TOOL_USE_ID_RE = re.compile(r"^[a-zA-Z0-9_-]+$")
_SERVER_TOOL_TYPE_RE = re.compile(r"^[a-z_]+_\d{8}$")  # e.g. web_search_20250305
_TOOL_HINT_RE = re.compile(r"\b(weather|tool)\b", re.IGNORECASE)
_WORD_RE = re.compile(r"\s*\S+")
_JSON_PIECE_CHARS = 8
_JSON = "application/json"


def error_type_for(status: int) -> str:
    """Anthropic's ``error.type`` for an HTTP status (other 4xx: invalid_request, 5xx: api)."""
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


@dataclass(slots=True, frozen=True)
class _StreamBreak:
    after_events: int
    error_type: str | None  # None: the stream just ends, no error event
    message: str


class _BadRequest(Exception):
    """A 4xx answer raised from deep inside validation to keep the handlers flat."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(slots=True)
class _Request:
    model: str
    messages: list[dict[str, Any]]
    system: Any
    max_tokens: int
    stop_sequences: list[str]
    tools: list[dict[str, Any]]
    tool_choice: dict[str, Any] | None
    thinking: bool
    stream: bool


@dataclass(slots=True)
class _Answer:
    content: list[dict[str, Any]]
    stop_reason: str
    stop_sequence: str | None
    output_tokens: int


# -- text helpers ----------------------------------------------------------------------------


def _count_words(text: str) -> int:
    return len(text.split())


def _split_words(text: str) -> list[str]:
    # Pieces keep their leading whitespace, as model tokens do, so "".join() restores the text.
    pieces = _WORD_RE.findall(text)
    rest = len(text) - sum(map(len, pieces))
    if rest:
        pieces.append(text[-rest:])
    return pieces


def _blocks_of(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return content if isinstance(content, list) else []


def _text_of(content: Any) -> str:
    """Text of a message's (or tool result's) content: its text blocks, space-joined."""
    return " ".join(
        b["text"] for b in _blocks_of(content) if b.get("type") == "text" and "text" in b
    )


def _tokens_of_block(block: dict[str, Any]) -> int:
    kind = block.get("type")
    if kind == "text":
        return _count_words(block["text"])
    if kind == "thinking":
        return _count_words(block["thinking"])
    if kind == "tool_use":
        return _count_words(orjson.dumps(block.get("input", {})).decode())
    if kind == "tool_result":
        return _count_words(_text_of(block.get("content", "")))
    return 0


def _input_tokens(system: Any, messages: list[dict[str, Any]]) -> int:
    total = _count_words(_text_of(system)) if system is not None else 0
    for message in messages:
        total += sum(_tokens_of_block(b) for b in _blocks_of(message["content"]))
    return total


# -- validation ------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_cache_control(value: Any, where: str) -> None:
    if value is None:
        return
    if not isinstance(value, dict) or value.get("type") != "ephemeral":
        raise _BadRequest(f"{where}.type: Input should be 'ephemeral'")
    ttl = value.get("ttl")
    if ttl is not None and ttl not in ("5m", "1h"):
        raise _BadRequest(f"{where}.ttl: Input should be '5m' or '1h'")


def _check_text_block(block: dict[str, Any], where: str) -> None:
    text = block.get("text")
    if not isinstance(text, str):
        raise _BadRequest(f"{where}.text: Input should be a valid string")
    if not text:
        raise _BadRequest(f"{where}: text content blocks must be non-empty")


def _check_image_block(block: dict[str, Any], where: str) -> None:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _BadRequest(f"{where}.source: Field required")
    kind = source.get("type")
    if kind == "base64":
        media_type = source.get("media_type")
        if media_type not in _IMAGE_MEDIA_TYPES:
            expected = ", ".join(f"'{m}'" for m in _IMAGE_MEDIA_TYPES)
            raise _BadRequest(f"{where}.source.base64.media_type: Input should be {expected}")
        if not isinstance(source.get("data"), str) or not source["data"]:
            raise _BadRequest(f"{where}.source.base64.data: Field required")
    elif kind == "url":
        if not isinstance(source.get("url"), str) or not source["url"]:
            raise _BadRequest(f"{where}.source.url.url: Field required")
    elif kind == "file":
        if not isinstance(source.get("file_id"), str):
            raise _BadRequest(f"{where}.source.file.file_id: Field required")
    else:
        raise _BadRequest(
            f"{where}.source: Input tag '{kind}' found using 'type' does not match any of the "
            "expected tags: 'base64', 'url', 'file'"
        )


def _check_block(
    block: Any, where: str, role: str, allowed: tuple[str, ...] = _BLOCK_TYPES
) -> dict[str, Any]:
    if not isinstance(block, dict):
        raise _BadRequest(f"{where}: Input should be a valid dictionary or object")
    kind = block.get("type")
    if kind is None:
        raise _BadRequest(f"{where}.type: Field required")
    if kind not in allowed:
        expected = ", ".join(f"'{t}'" for t in allowed)
        raise _BadRequest(
            f"{where}: Input tag '{kind}' found using 'type' does not match any of the "
            f"expected tags: {expected}"
        )
    _check_cache_control(block.get("cache_control"), f"{where}.cache_control")
    if kind == "text":
        _check_text_block(block, where)
    elif kind == "image":
        _check_image_block(block, where)
    elif kind == "document":
        if not isinstance(block.get("source"), dict):
            raise _BadRequest(f"{where}.source: Field required")
    elif kind == "tool_use":
        if role != "assistant":
            raise _BadRequest(f"{where}: tool_use blocks are only allowed in assistant messages")
        tool_id = block.get("id")
        if not isinstance(tool_id, str) or not _TOOL_USE_ID_RE.match(tool_id):
            raise _BadRequest(f"{where}.id: String should match pattern '^[a-zA-Z0-9_-]+$'")
        if not isinstance(block.get("name"), str) or not block["name"]:
            raise _BadRequest(f"{where}.name: Field required")
        if not isinstance(block.get("input"), dict):
            raise _BadRequest(f"{where}.input: Input should be a valid dictionary")
    elif kind == "tool_result":
        if role != "user":
            raise _BadRequest(f"{where}: tool_result blocks are only allowed in user messages")
        if not isinstance(block.get("tool_use_id"), str):
            raise _BadRequest(f"{where}.tool_use_id: Field required")
        content = block.get("content")
        if isinstance(content, list):
            for i, part in enumerate(content):
                _check_block(part, f"{where}.content.{i}", role, _TOOL_RESULT_BLOCK_TYPES)
        elif content is not None and not isinstance(content, str):
            raise _BadRequest(f"{where}.content: Input should be a valid string or list")
        if "is_error" in block and not isinstance(block["is_error"], bool):
            raise _BadRequest(f"{where}.is_error: Input should be a valid boolean")
    elif kind == "thinking":
        if not isinstance(block.get("thinking"), str):
            raise _BadRequest(f"{where}.thinking: Field required")
        if not isinstance(block.get("signature"), str):
            raise _BadRequest(f"{where}.signature: Field required")
    elif kind == "redacted_thinking" and not isinstance(block.get("data"), str):
        raise _BadRequest(f"{where}.data: Field required")
    return block


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    if messages is None:
        raise _BadRequest("messages: Field required")
    if not isinstance(messages, list):
        raise _BadRequest("messages: Input should be a valid list")
    if not messages:
        raise _BadRequest("messages: at least one message is required")
    last = len(messages) - 1
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise _BadRequest(f"{where}: Input should be a valid dictionary")
        role = message.get("role")
        if role == "system":
            raise _BadRequest(
                f'{where}.role: Unexpected role "system". The Messages API accepts a top-level '
                '`system` parameter, not "system" as an input message role.'
            )
        if role not in ("user", "assistant"):
            raise _BadRequest(f"{where}.role: Input should be 'user' or 'assistant'")
        for key in message:
            if key not in ("role", "content"):
                raise _BadRequest(f"{where}.{key}: Extra inputs are not permitted")
        if "content" not in message:
            raise _BadRequest(f"{where}.content: Field required")
        content = message["content"]
        if isinstance(content, list):
            for j, block in enumerate(content):
                _check_block(block, f"{where}.content.{j}", role)
        elif not isinstance(content, str):
            raise _BadRequest(
                f"{where}.content: Input should be a valid string or a list of content blocks"
            )
        if not content and not (i == last and role == "assistant"):
            raise _BadRequest(
                f"{where}: all messages must have non-empty content except for the optional "
                "final assistant message"
            )
    if messages[0]["role"] != "user":
        raise _BadRequest('messages: first message must use the "user" role')
    final = messages[-1]
    if final["role"] == "assistant":
        blocks = _blocks_of(final["content"])
        if (
            blocks
            and blocks[-1].get("type") == "text"
            and blocks[-1]["text"] != (blocks[-1]["text"].rstrip())
        ):
            raise _BadRequest(
                "messages: final assistant content cannot end with trailing whitespace"
            )
    _check_tool_pairing(messages)
    return messages


def _tool_use_ids(message: dict[str, Any] | None) -> list[str]:
    if message is None or message["role"] != "assistant":
        return []
    return [b["id"] for b in _blocks_of(message["content"]) if b.get("type") == "tool_use"]


def _check_tool_pairing(messages: list[dict[str, Any]]) -> None:
    for i, message in enumerate(messages):
        if message["role"] == "user":
            previous = set(_tool_use_ids(messages[i - 1] if i else None))
            for j, block in enumerate(_blocks_of(message["content"])):
                if block.get("type") == "tool_result" and block["tool_use_id"] not in previous:
                    raise _BadRequest(
                        f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                        f"`tool_result` blocks: {block['tool_use_id']}. Each `tool_result` block "
                        "must have a corresponding `tool_use` block in the previous message."
                    )
            continue
        uses = _tool_use_ids(message)
        if not uses:
            continue
        following = messages[i + 1] if i + 1 < len(messages) else None
        answered = {
            b.get("tool_use_id")
            for b in (_blocks_of(following["content"]) if following else [])
            if following["role"] == "user" and b.get("type") == "tool_result"
        }
        missing = [u for u in uses if u not in answered]
        if missing:
            raise _BadRequest(
                f"messages.{i + 1 if following else i}: `tool_use` ids were found without "
                f"`tool_result` blocks immediately after: {', '.join(missing)}. Each `tool_use` "
                "block must have a corresponding `tool_result` block in the next message."
            )


def _check_system(system: Any) -> Any:
    if system is None or isinstance(system, str):
        return system
    if not isinstance(system, list):
        raise _BadRequest("system: Input should be a valid string or a list of text blocks")
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _BadRequest(f"system.{i}.type: Input should be 'text'")
        _check_text_block(block, f"system.{i}")
        _check_cache_control(block.get("cache_control"), f"system.{i}.cache_control")
    return system


def _check_tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _BadRequest("tools: Input should be a valid list")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        where = f"tools.{i}"
        if not isinstance(tool, dict):
            raise _BadRequest(f"{where}: Input should be a valid dictionary")
        kind = tool.get("type")
        name = tool.get("name")
        if kind is None or kind == "custom":
            if not isinstance(name, str):
                raise _BadRequest(f"{where}.custom.name: Field required")
            if not _TOOL_NAME_RE.match(name):
                raise _BadRequest(
                    f"{where}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
                )
            schema = tool.get("input_schema")
            if schema is None:
                raise _BadRequest(f"{where}.custom.input_schema: Field required")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                raise _BadRequest(f"{where}.custom.input_schema.type: Input should be 'object'")
            description = tool.get("description")
            if description is not None and not isinstance(description, str):
                raise _BadRequest(f"{where}.custom.description: Input should be a valid string")
        elif isinstance(kind, str) and _SERVER_TOOL_TYPE_RE.match(kind):
            if not isinstance(name, str) or not name:
                raise _BadRequest(f"{where}.{kind}.name: Field required")
        else:
            raise _BadRequest(
                f"{where}: Input tag '{kind}' found using 'type' does not match any of the "
                "expected tags"
            )
        _check_cache_control(tool.get("cache_control"), f"{where}.cache_control")
        if name in names:
            raise _BadRequest("tools: Tool names must be unique.")
        names.add(name)
    return tools


def _check_tool_choice(choice: Any, tools: list[dict[str, Any]]) -> dict[str, Any] | None:
    if choice is None:
        return None
    if not isinstance(choice, dict):
        raise _BadRequest("tool_choice: Input should be a valid dictionary")
    kind = choice.get("type")
    if kind not in ("auto", "any", "tool", "none"):
        raise _BadRequest(
            f"tool_choice: Input tag '{kind}' found using 'type' does not match any of the "
            "expected tags: 'auto', 'any', 'tool', 'none'"
        )
    parallel = choice.get("disable_parallel_tool_use")
    if parallel is not None and not isinstance(parallel, bool):
        raise _BadRequest(
            f"tool_choice.{kind}.disable_parallel_tool_use: Input should be a valid boolean"
        )
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str):
            raise _BadRequest("tool_choice.tool.name: Field required")
        if tools and name not in {t.get("name") for t in tools}:
            raise _BadRequest(f"tool_choice.tool.name: Tool '{name}' not found in provided tools")
    if kind != "none" and not tools:
        raise _BadRequest("tool_choice may only be specified while providing tools.")
    return choice


def _check_thinking(thinking: Any, max_tokens: int | None) -> bool:
    """Whether extended thinking is on."""
    if thinking is None:
        return False
    if not isinstance(thinking, dict):
        raise _BadRequest("thinking: Input should be a valid dictionary")
    kind = thinking.get("type")
    if kind in ("disabled", "adaptive"):
        return kind == "adaptive"
    if kind != "enabled":
        raise _BadRequest(
            f"thinking: Input tag '{kind}' found using 'type' does not match any of the expected "
            "tags: 'enabled', 'disabled', 'adaptive'"
        )
    budget = thinking.get("budget_tokens")
    if not _is_int(budget):
        raise _BadRequest("thinking.enabled.budget_tokens: Field required")
    if budget < 1024:
        raise _BadRequest(
            "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
        )
    if max_tokens is not None and max_tokens <= budget:
        raise _BadRequest("`max_tokens` must be greater than `thinking.budget_tokens`")
    return True


def _check_unit_interval(payload: dict[str, Any], name: str) -> None:
    value = payload.get(name)
    if value is None:
        return
    if not _is_number(value):
        raise _BadRequest(f"{name}: Input should be a valid number")
    if not 0 <= value <= 1:
        raise _BadRequest(f"{name}: range: 0..1")


def _parse(payload: dict[str, Any], *, count_tokens: bool) -> _Request:
    allowed = _COUNT_TOKENS_FIELDS if count_tokens else _MESSAGE_FIELDS
    for key in payload:
        if key not in allowed:
            raise _BadRequest(f"{key}: Extra inputs are not permitted")
    model = payload.get("model")
    if model is None:
        raise _BadRequest("model: Field required")
    if not isinstance(model, str) or not model:
        raise _BadRequest("model: Input should be a valid string")
    max_tokens: int | None = None
    if not count_tokens:
        max_tokens = payload.get("max_tokens")
        if max_tokens is None:
            raise _BadRequest("max_tokens: Field required")
        if not _is_int(max_tokens):
            raise _BadRequest("max_tokens: Input should be a valid integer")
        if max_tokens < 1:
            raise _BadRequest("max_tokens: Input should be greater than or equal to 1")
    messages = _check_messages(payload.get("messages"))
    system = _check_system(payload.get("system"))
    for name in ("temperature", "top_p"):
        _check_unit_interval(payload, name)
    top_k = payload.get("top_k")
    if top_k is not None and (not _is_int(top_k) or top_k < 0):
        raise _BadRequest("top_k: Input should be greater than or equal to 0")
    stops = payload.get("stop_sequences")
    if stops is None:
        stops = []
    elif not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise _BadRequest("stop_sequences: Input should be a valid list of strings")
    elif any(not s.strip() for s in stops):
        raise _BadRequest("stop_sequences: each stop sequence must contain non-whitespace")
    metadata = payload.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise _BadRequest("metadata: Input should be a valid dictionary")
        for key, value in metadata.items():
            if key != "user_id":
                raise _BadRequest(f"metadata.{key}: Extra inputs are not permitted")
            if value is not None and (not isinstance(value, str) or len(value) > 256):
                raise _BadRequest("metadata.user_id: String should have at most 256 characters")
    stream = payload.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _BadRequest("stream: Input should be a valid boolean")
    tools = _check_tools(payload.get("tools"))
    tool_choice = _check_tool_choice(payload.get("tool_choice"), tools)
    thinking = _check_thinking(payload.get("thinking"), max_tokens)
    temperature = payload.get("temperature")
    if thinking and temperature is not None and temperature != 1:
        raise _BadRequest("`temperature` may only be set to 1 when thinking is enabled.")
    return _Request(
        model=model,
        messages=messages,
        system=system,
        max_tokens=max_tokens or 0,
        stop_sequences=stops,
        tools=tools,
        tool_choice=tool_choice,
        thinking=thinking,
        stream=stream is True,
    )


# -- answers -------------------------------------------------------------------------------


def _pick_tool(request: _Request, question: str) -> dict[str, Any] | None:
    tools = [t for t in request.tools if "input_schema" in t]  # server tools run server-side
    if not tools:
        return None
    kind = (request.tool_choice or {"type": "auto"})["type"]
    if kind == "none":
        return None
    if kind == "tool":
        wanted = request.tool_choice["name"]  # type: ignore[index]
        return next((t for t in tools if t["name"] == wanted), None)
    lowered = question.lower()
    named = next((t for t in tools if t["name"].lower() in lowered), None)
    if named is not None:
        return named
    if kind == "any" or _TOOL_HINT_RE.search(question):
        return tools[0]
    return None


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, str | None]:
    best: tuple[int, str] | None = None
    for stop in stops:
        at = text.find(stop)
        if at >= 0 and (best is None or at < best[0]):
            best = (at, stop)
    if best is None:
        return text, None
    return text[: best[0]], best[1]


def _json_pieces(text: str) -> list[str]:
    pieces = [text[i : i + _JSON_PIECE_CHARS] for i in range(0, len(text), _JSON_PIECE_CHARS)]
    return pieces or [text]


def _sse_frame(event: str, data: Mapping[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _endpoint(method: str, path: str) -> str | None:
    # Suffix matching lets base URLs with a prefix (http://host/anthropic/v1/...) work unchanged.
    if path.endswith("/v1/messages/count_tokens"):
        return "count_tokens" if method == "POST" else "method"
    if path.endswith("/v1/messages"):
        return "messages" if method == "POST" else "method"
    return None


class FakeAnthropic(FakeServer):
    """Anthropic Messages API on aiohttp's low-level server (no router, no access log).

    Attributes that tests may change at any time (also from another thread): ``delay_s`` (sleep
    before answering), ``stream_delay_s`` (sleep between SSE events), ``truncate_streams`` (end
    the next N streams after two events, with no error and no ``message_stop``), ``record``,
    ``models`` (if not None, other models get 404 ``not_found_error``) and ``max_body_bytes``.

    ``url`` is the base URL without ``/v1`` (what the ``anthropic`` SDK takes as ``base_url``).
    :meth:`fail_next` answers with Anthropic's error JSON (the ``error.type`` for the status)
    unless given a body.
    """

    def __init__(
        self,
        *,
        name: str = "anthropic",
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        record: bool = True,
        models: list[str] | None = None,
    ) -> None:
        super().__init__(name=name, host=host, port=port, record=record)
        self.api_key = api_key
        self.models = models
        # A small pause between events so that each one leaves in its own TCP segment.
        self.stream_delay_s: float = 0.001
        self.max_body_bytes = DEFAULT_MAX_BODY_BYTES
        self._tag = hashlib.blake2b(name.encode(), digest_size=4).hexdigest()

    # -- test controls ---------------------------------------------------------------------

    def break_next_stream(
        self,
        count: int = 1,
        *,
        after_events: int = 4,
        error_type: str | None = "overloaded_error",
        message: str = "Overloaded",
    ) -> None:
        """End the next ``count`` streams after ``after_events`` events with an ``error`` event.

        With ``error_type=None`` the stream just stops (no error event, no ``message_stop``).
        Streams that have fewer events than ``after_events`` are not cut.
        """
        brk = _StreamBreak(after_events, error_type, message)
        self._push(self._breaks, [brk] * count)

    # -- plumbing --------------------------------------------------------------------------

    def _headers(self, request_id: str, content_type: str = _JSON) -> dict[str, str]:
        return {
            "Content-Type": content_type,
            "request-id": request_id,
            "x-fake-upstream": self.name,
        }

    def _json(self, request_id: str, payload: Any, status: int = 200) -> web.Response:
        return web.Response(
            status=status, body=orjson.dumps(payload), headers=self._headers(request_id)
        )

    def _error(
        self, request_id: str, status: int, message: str, type_: str | None = None
    ) -> web.Response:
        body = {
            "type": "error",
            "error": {"type": type_ or error_type_for(status), "message": message},
            "request_id": request_id,
        }
        return self._json(request_id, body, status)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body, too_large = await read_body(request, self.max_body_bytes)
        seq = next(self._seq)
        request_id = f"req_01{self._tag}{seq:014d}"
        method, path = request.method, request.path
        self._record(request, body)
        if self.delay_s > 0:
            await asyncio.sleep(self.delay_s)
        endpoint = _endpoint(method, path)
        if endpoint is None:
            return self._error(request_id, 404, "Not Found")
        if endpoint == "method":
            return self._error(request_id, 405, "Method Not Allowed")
        if too_large:
            return self._error(request_id, 413, _DEFAULT_MESSAGES[413])
        failure: Failure | None = self._take(self._failures)
        if failure is not None:
            return self._failure_response(request_id, failure)
        if self.api_key is not None:
            given = request.headers.get("x-api-key")
            if not given:
                return self._error(request_id, 401, "x-api-key header is required")
            if given != self.api_key:
                return self._error(request_id, 401, "invalid x-api-key")
        version = request.headers.get("anthropic-version")
        if not version:
            return self._error(request_id, 400, "anthropic-version: header is required")
        if version not in ANTHROPIC_VERSIONS:
            return self._error(request_id, 400, f"anthropic-version: invalid version {version!r}")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return self._error(request_id, 400, "There was an error parsing the body as JSON")
        if not isinstance(payload, dict):
            return self._error(request_id, 400, "Input should be a valid dictionary")
        try:
            parsed = _parse(payload, count_tokens=endpoint == "count_tokens")
            if self.models is not None and parsed.model not in self.models:
                raise _BadRequest(f"model: {parsed.model}", 404)
        except _BadRequest as exc:
            return self._error(request_id, exc.status, exc.message)
        input_tokens = _input_tokens(parsed.system, parsed.messages)
        if endpoint == "count_tokens":
            return self._json(request_id, {"input_tokens": input_tokens})
        answer = self._answer(parsed, seq)
        message = {
            "id": f"msg_01{self._tag}{seq:014d}",
            "type": "message",
            "role": "assistant",
            "model": parsed.model,
            "content": answer.content,
            "stop_reason": answer.stop_reason,
            "stop_sequence": answer.stop_sequence,
            "usage": {
                "input_tokens": input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": answer.output_tokens,
            },
        }
        if parsed.stream:
            return await self._sse(request, request_id, self._events(message))
        return self._json(request_id, message)

    def _failure_response(self, request_id: str, failure: Failure) -> web.Response:
        status = failure.status
        if failure.body is None:
            message = _DEFAULT_MESSAGES.get(status, f"Request failed with status {status}")
            response = self._error(
                request_id, status, f"{message} (simulated failure in fake {self.name!r})"
            )
        else:
            response = web.Response(
                status=status, body=failure.body, headers=self._headers(request_id)
            )
        if failure.headers:
            response.headers.update(failure.headers)
        return response

    # -- answers ---------------------------------------------------------------------------

    def _answer(self, request: _Request, seq: int) -> _Answer:
        user = next(m for m in reversed(request.messages) if m["role"] == "user")
        blocks = _blocks_of(user["content"])
        question = _text_of(user["content"]).strip()
        results = [b for b in blocks if b.get("type") == "tool_result"]
        content: list[dict[str, Any]] = []
        budget = request.max_tokens
        if request.thinking:
            thought = f"The user wrote: {question}" if question else "The user sent no text."
            signature = hashlib.blake2b(thought.encode(), digest_size=24).hexdigest()
            content.append({"type": "thinking", "thinking": thought, "signature": signature})
            budget -= _count_words(thought)
        tool = None
        if results:
            said = " | ".join(_text_of(r.get("content", "")).strip() for r in results)
            text = f"The tool said: {said}"
        else:
            tool = _pick_tool(request, question)
            text = f"I'll use the {tool['name']} tool." if tool else f"Echo: {question}".strip()
        stop_reason = "end_turn"
        text, stop_sequence = _cut_at_stop(text, request.stop_sequences)
        if stop_sequence is not None:
            stop_reason = "stop_sequence"
            tool = None
        tool_input = ""
        if tool is not None:
            tool_input = orjson.dumps(
                schema_args.tool_input(tool["input_schema"], question)
            ).decode()
        tool_tokens = max(1, len(tool_input) // 4) if tool is not None else 0
        if _count_words(text) + tool_tokens > budget:
            text = "".join(_split_words(text)[: max(0, budget)])
            stop_reason, stop_sequence, tool = "max_tokens", None, None
            tool_tokens = 0
        if text:
            content.append({"type": "text", "text": text})
        if tool is not None:
            content.append(
                {
                    "type": "tool_use",
                    "id": f"toolu_01{self._tag}{seq:014d}",
                    "name": tool["name"],
                    "input": orjson.loads(tool_input),
                }
            )
            stop_reason = "tool_use"
        output = sum(_tokens_of_block(b) for b in content if b["type"] != "tool_use")
        return _Answer(content, stop_reason, stop_sequence, output + tool_tokens)

    @staticmethod
    def _events(message: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        usage = message["usage"]
        start = dict(message, content=[], stop_reason=None, stop_sequence=None)
        start["usage"] = dict(usage, output_tokens=1)
        yield "message_start", {"type": "message_start", "message": start}
        yield "ping", {"type": "ping"}
        for index, block in enumerate(message["content"]):
            kind = block["type"]
            deltas: list[dict[str, Any]]
            if kind == "text":
                opening: dict[str, Any] = {"type": "text", "text": ""}
                deltas = [{"type": "text_delta", "text": p} for p in _split_words(block["text"])]
            elif kind == "thinking":
                opening = {"type": "thinking", "thinking": "", "signature": ""}
                deltas = [
                    {"type": "thinking_delta", "thinking": p}
                    for p in _split_words(block["thinking"])
                ]
                deltas.append({"type": "signature_delta", "signature": block["signature"]})
            else:
                opening = {
                    "type": "tool_use",
                    "id": block["id"],
                    "name": block["name"],
                    "input": {},
                }
                arguments = orjson.dumps(block["input"]).decode()
                deltas = [{"type": "input_json_delta", "partial_json": ""}]
                deltas += [
                    {"type": "input_json_delta", "partial_json": p} for p in _json_pieces(arguments)
                ]
            yield (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opening},
            )
            for delta in deltas:
                yield (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            yield "content_block_stop", {"type": "content_block_stop", "index": index}
        yield (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": message["stop_reason"],
                    "stop_sequence": message["stop_sequence"],
                },
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
        yield "message_stop", {"type": "message_stop"}

    async def _sse(
        self,
        request: web.BaseRequest,
        request_id: str,
        events: Iterator[tuple[str, dict[str, Any]]],
    ) -> web.StreamResponse:
        headers = self._headers(request_id, "text/event-stream; charset=utf-8")
        headers["Cache-Control"] = "no-cache"
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        brk: _StreamBreak | None = self._take(self._breaks)
        if brk is None and self.truncate_streams > 0:
            self.truncate_streams -= 1
            brk = _StreamBreak(2, None, "")
        try:
            # One write per event, with a pause between: each leaves on its own, as from a model.
            for number, (name, data) in enumerate(events):
                if number:
                    await asyncio.sleep(self.stream_delay_s)
                if brk is not None and number == brk.after_events:
                    if brk.error_type is not None:
                        error = {"type": brk.error_type, "message": brk.message}
                        await response.write(_sse_frame("error", {"type": "error", "error": error}))
                    await response.write_eof()
                    return response
                await response.write(_sse_frame(name, data))
            await response.write_eof()
        except ConnectionResetError:
            pass  # The client went away mid-stream; there is nobody left to tell.
        return response


class FakeAnthropicThread(ServerThread[FakeAnthropic]):
    """Runs a :class:`FakeAnthropic` on its own event loop in a daemon thread.

    For synchronous tests. Keyword arguments go to :class:`FakeAnthropic`, except
    ``loop_factory``. ``start()`` / ``with`` return the running fake.
    """

    fake_class = FakeAnthropic
    thread_prefix = "fake-anthropic"
