"""Fake Amazon Bedrock Runtime (Converse API) for tests: a real HTTP server on 127.0.0.1.

It speaks Bedrock's wire format: ``POST /model/{modelId}/converse`` answers JSON and
``POST /model/{modelId}/converse-stream`` answers ``application/vnd.amazon.eventstream``
frames (prelude, string headers, JSON payload, two CRC32s), written one frame at a time.
Errors are Bedrock's: a ``{"message": ...}`` body with the exception name in the
``x-amzn-errortype`` header. The official AWS SDK (botocore) can talk to it.

It is not an LLM; answers are derived from the request so tests can predict them:

* plain text: ``Echo: <text of the last user message>``;
* a ``toolUse`` when ``toolConfig`` is given and the choice is ``any``/``tool``, or the last
  user text names a tool or says "weather"/"tool": a short text block, then the tool call
  whose input fills the schema's required properties (strings get the question, numbers 1,
  booleans true, enums their first value);
* after ``toolResult`` blocks in the last user turn: ``The tool said: <result text>``.

``maxTokens`` truncates by words (``max_tokens``), ``stopSequences`` cut before the
earliest match (``stop_sequence``). Token counts are whitespace word counts.

Authentication, when configured: a Bedrock API key (``Authorization: Bearer``) and/or IAM
credentials, whose SigV4 signature is recomputed from the received method, raw path,
headers and body. Validation follows Bedrock's (``ValidationException``), and is stricter
in one way: unknown top-level request fields are refused, so that a gateway leaking
OpenAI fields (``model``, ``stream``) fails here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import re
import struct
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web

from edge_agent.demo.runner import (
    Failure,
    FakeServer,
    RecordedRequest,
    ServerThread,
    read_body,
)
from edge_agent.providers.bedrock import BedrockAdapter
from tests.fakes import arguments as schema_args

__all__ = [
    "ERROR_TYPES",
    "EVENT_STREAM",
    "FakeBedrock",
    "FakeBedrockThread",
    "RecordedRequest",
    "encode_frame",
]

EVENT_STREAM = "application/vnd.amazon.eventstream"
_JSON = "application/json"
# The exception name Bedrock puts in x-amzn-errortype for each status it uses.
ERROR_TYPES: dict[int, str] = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
_DEFAULT_MESSAGES: dict[int, str] = {
    400: "Malformed input request, please reformat your input and try again.",
    403: "You don't have access to the model with the specified model ID.",
    404: "The provided model identifier is invalid.",
    408: "Model has timed out in processing the request.",
    424: "The model failed to process the request.",
    429: "Too many requests, please wait before trying again.",
    500: "The system encountered an unexpected error during processing. Try your request again.",
    503: "Bedrock is unable to process your request.",
}
_ERRORTYPE_SUFFIX = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
_BAD_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service "
    "documentation for details."
)
_BAD_TOKEN = "The security token included in the request is invalid."
_REQUEST_FIELDS = frozenset(
    {
        "messages",
        "system",
        "inferenceConfig",
        "toolConfig",
        "guardrailConfig",
        "additionalModelRequestFields",
        "additionalModelResponseFieldPaths",
        "promptVariables",
        "requestMetadata",
        "performanceConfig",
        "serviceTier",
    }
)
_BLOCK_KINDS = frozenset(
    {"text", "image", "document", "video", "toolUse", "toolResult", "guardContent", "cachePoint"}
)
_IMAGE_FORMATS = frozenset({"png", "jpeg", "gif", "webp"})
_TOOL_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_TOOL_USE_ID_RE = re.compile(r"^[a-zA-Z0-9_.:-]{1,64}$")
_PATH_RE = re.compile(r"^(?P<prefix>.*)/model/(?P<model>[^/]+)/(?P<op>converse|converse-stream)$")
_TOOL_HINT_RE = re.compile(r"\b(weather|tool)\b", re.IGNORECASE)
_WORD_RE = re.compile(r"\s*\S+")
_JSON_PIECE_CHARS = 8
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024


def encode_frame(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (total and headers lengths, CRC32), string-typed
    headers, payload, and the CRC32 of everything before it."""
    raw_headers = bytearray()
    for name, value in headers.items():
        key, data = name.encode(), value.encode()
        # name length (1 byte), name, type 7 = string, value length (2 bytes), value
        raw_headers += struct.pack(">B", len(key)) + key + b"\x07"
        raw_headers += struct.pack(">H", len(data)) + data
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw_headers))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + bytes(raw_headers) + payload
    return message + struct.pack(">I", zlib.crc32(message))


def _event_frame(name: str, data: Mapping[str, Any]) -> bytes:
    # Bedrock pads every payload with a "p" field (hides lengths); clients ignore it.
    body = {**data, "p": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"[: 4 + len(name) % 16]}
    headers = {":event-type": name, ":content-type": _JSON, ":message-type": "event"}
    return encode_frame(headers, orjson.dumps(body))


def _exception_frame(name: str, message: str) -> bytes:
    headers = {":exception-type": name, ":content-type": _JSON, ":message-type": "exception"}
    return encode_frame(headers, orjson.dumps({"message": message}))


@dataclass(slots=True, frozen=True)
class _StreamBreak:
    after_events: int
    exception: str | None  # None: the stream just ends, no exception frame
    message: str


class _Refusal(Exception):
    """An error answer raised from deep inside validation to keep the handlers flat."""

    def __init__(self, message: str, status: int = 400, kind: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.kind = kind or ERROR_TYPES.get(status, "ValidationException")


@dataclass(slots=True)
class _Request:
    model: str
    messages: list[dict[str, Any]]
    system: list[dict[str, Any]]
    max_tokens: int | None
    stop_sequences: list[str]
    tools: list[dict[str, Any]]  # the toolSpec objects
    tool_choice: dict[str, Any] | None


# -- text helpers ----------------------------------------------------------------------------


def _count_words(text: str) -> int:
    return len(text.split())


def _split_words(text: str) -> list[str]:
    # Pieces keep their leading whitespace, so "".join() gives the text back.
    pieces = _WORD_RE.findall(text)
    tail = text[sum(map(len, pieces)) :]
    return [*pieces, tail] if tail else pieces


def _texts(blocks: list[dict[str, Any]]) -> str:
    return " ".join(b["text"] for b in blocks if isinstance(b.get("text"), str))


def _result_text(result: dict[str, Any]) -> str:
    parts = []
    for item in result.get("content") or []:
        if isinstance(item.get("text"), str):
            parts.append(item["text"])
        elif "json" in item:
            parts.append(orjson.dumps(item["json"]).decode())
    return " ".join(parts)


def _block_tokens(block: dict[str, Any]) -> int:
    if isinstance(block.get("text"), str):
        return _count_words(block["text"])
    if "toolUse" in block:
        return _count_words(orjson.dumps(block["toolUse"].get("input", {})).decode())
    if "toolResult" in block:
        return _count_words(_result_text(block["toolResult"]))
    return 0


# -- validation ------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _one_key(value: Any, where: str, allowed: frozenset[str]) -> str:
    # Converse unions: exactly one member set.
    if not isinstance(value, dict) or len(value) != 1:
        raise _Refusal(f"{where} must set exactly one member.")
    (key,) = value
    if key not in allowed:
        raise _Refusal(f"{where}: unsupported member {key!r}.")
    return key


def _check_text(text: Any, where: str) -> None:
    if not isinstance(text, str):
        raise _Refusal(f"{where}.text must be a string.")
    if not text.strip():
        raise _Refusal(
            f"The text field in the ContentBlock object at {where} is blank. "
            "Add text to the text field, and try again."
        )


def _check_image(image: Any, where: str) -> None:
    if not isinstance(image, dict) or image.get("format") not in _IMAGE_FORMATS:
        raise _Refusal(f"{where}.image.format must be one of png, jpeg, gif, webp.")
    source = image.get("source")
    data = source.get("bytes") if isinstance(source, dict) else None
    try:
        base64.b64decode(data if isinstance(data, str) else "", validate=True)
    except (binascii.Error, ValueError):
        data = None
    if not data:
        raise _Refusal(f"{where}.image.source.bytes must be base64-encoded image bytes.")


def _check_block(block: Any, where: str, role: str) -> None:
    kind = _one_key(block, where, _BLOCK_KINDS)
    value = block[kind]
    if kind == "text":
        _check_text(value, where)
    elif kind == "image":
        _check_image(value, where)
    elif kind == "toolUse":
        if role != "assistant":
            raise _Refusal(f"{where}: toolUse blocks may only appear in assistant messages.")
        if not isinstance(value, dict) or not _TOOL_USE_ID_RE.match(str(value.get("toolUseId"))):
            raise _Refusal(f"{where}.toolUse.toolUseId is missing or invalid.")
        if not _TOOL_NAME_RE.match(str(value.get("name"))):
            raise _Refusal(f"{where}.toolUse.name is missing or invalid.")
        if "input" not in value:
            raise _Refusal(f"{where}.toolUse.input is required.")
    elif kind == "toolResult":
        if role != "user":
            raise _Refusal(f"{where}: toolResult blocks may only appear in user messages.")
        if not isinstance(value, dict) or not _TOOL_USE_ID_RE.match(str(value.get("toolUseId"))):
            raise _Refusal(f"{where}.toolResult.toolUseId is missing or invalid.")
        content = value.get("content")
        if not isinstance(content, list):
            raise _Refusal(f"{where}.toolResult.content must be a list.")
        for j, item in enumerate(content):
            item_where = f"{where}.toolResult.content.{j}"
            item_kind = _one_key(item, item_where, frozenset({"text", "json", "image", "document"}))
            if item_kind == "text":
                _check_text(item["text"], item_where)
        if value.get("status") not in (None, "success", "error"):
            raise _Refusal(f"{where}.toolResult.status must be success or error.")


def _ids(message: dict[str, Any] | None, kind: str) -> list[str]:
    if message is None:
        return []
    return [b[kind]["toolUseId"] for b in message["content"] if kind in b]


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise _Refusal("The messages field is required and must hold at least one message.")
    previous: str | None = None
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise _Refusal(f"{where} must be an object.")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise _Refusal(
                f"Value at '{where}.member.role' failed to satisfy constraint: Member must "
                "satisfy enum value set: [user, assistant]"
            )
        if i == 0 and role != "user":
            raise _Refusal(
                "A conversation must start with a user message. Try again with a "
                "conversation that starts with a user message."
            )
        if role == previous:
            raise _Refusal(
                "A conversation must alternate between user and assistant roles. Make sure "
                "the conversation alternates between user and assistant roles and try again."
            )
        previous = role
        content = message.get("content")
        if not isinstance(content, list) or not content:
            raise _Refusal(f"{where}.content must hold at least one content block.")
        for j, block in enumerate(content):
            _check_block(block, f"{where}.content.{j}", role)
    # Every tool use is answered in the next user turn, and nothing else is.
    for i, message in enumerate(messages):
        before = messages[i - 1] if i else None
        results = _ids(message, "toolResult")
        if results and set(results) - set(_ids(before, "toolUse")):
            raise _Refusal(
                f"The toolResult blocks at messages.{i}.content do not match the toolUse "
                f"blocks in messages.{i - 1}.content."
            )
        uses = _ids(message, "toolUse")
        after = messages[i + 1] if i + 1 < len(messages) else None
        if uses and after is not None and set(uses) - set(_ids(after, "toolResult")):
            missing = ", ".join(sorted(set(uses) - set(_ids(after, "toolResult"))))
            raise _Refusal(
                f"Expected toolResult blocks at messages.{i + 1}.content for the following "
                f"Ids: {missing}"
            )
    return messages


def _check_system(system: Any) -> list[dict[str, Any]]:
    if system is None:
        return []
    if not isinstance(system, list):
        raise _Refusal("system must be a list of system content blocks.")
    for i, block in enumerate(system):
        kind = _one_key(block, f"system.{i}", frozenset({"text", "guardContent", "cachePoint"}))
        if kind == "text":
            _check_text(block["text"], f"system.{i}")
    return system


def _check_inference(config: Any) -> tuple[int | None, list[str]]:
    if config is None:
        return None, []
    if not isinstance(config, dict) or set(config) - {
        "maxTokens",
        "temperature",
        "topP",
        "stopSequences",
    }:
        raise _Refusal("inferenceConfig takes maxTokens, temperature, topP, stopSequences.")
    max_tokens = config.get("maxTokens")
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise _Refusal("inferenceConfig.maxTokens must be an integer of at least 1.")
    for name in ("temperature", "topP"):
        value = config.get(name)
        if value is not None and (not _is_number(value) or not 0 <= value <= 1):
            raise _Refusal(f"inferenceConfig.{name} must be a number from 0 to 1.")
    stops = config.get("stopSequences") or []
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise _Refusal("inferenceConfig.stopSequences must be a list of non-empty strings.")
    return max_tokens, stops


def _check_tools(config: Any) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    if config is None:
        return [], None
    if not isinstance(config, dict) or set(config) - {"tools", "toolChoice"}:
        raise _Refusal("toolConfig takes tools and toolChoice.")
    tools = config.get("tools")
    if not isinstance(tools, list) or not tools:
        raise _Refusal("toolConfig.tools must hold at least one tool.")
    specs: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        where = f"toolConfig.tools.{i}"
        if _one_key(tool, where, frozenset({"toolSpec", "cachePoint"})) == "cachePoint":
            continue
        spec = tool["toolSpec"]
        if not isinstance(spec, dict) or set(spec) - {"name", "description", "inputSchema"}:
            raise _Refusal(f"{where}.toolSpec takes name, description, inputSchema.")
        if not _TOOL_NAME_RE.match(str(spec.get("name"))):
            raise _Refusal(f"{where}.toolSpec.name must match [a-zA-Z0-9_-]{{1,64}}.")
        if "description" in spec and not (
            isinstance(spec["description"], str) and spec["description"]
        ):
            raise _Refusal(f"{where}.toolSpec.description must be a non-empty string.")
        schema = spec.get("inputSchema")
        if not isinstance(schema, dict) or not isinstance(schema.get("json"), dict):
            raise _Refusal(f"{where}.toolSpec.inputSchema.json must be a JSON schema object.")
        specs.append(spec)
    if len({s["name"] for s in specs}) != len(specs):
        raise _Refusal("toolConfig.tools: tool names must be unique.")
    choice = config.get("toolChoice")
    if choice is not None:
        kind = _one_key(choice, "toolConfig.toolChoice", frozenset({"auto", "any", "tool"}))
        if kind == "tool":
            name = (choice["tool"] or {}).get("name") if isinstance(choice["tool"], dict) else None
            if name not in {s["name"] for s in specs}:
                raise _Refusal(f"toolConfig.toolChoice.tool.name {name!r} is not a tool.")
    return specs, choice


def _parse(payload: dict[str, Any], model: str) -> _Request:
    extra = sorted(set(payload) - _REQUEST_FIELDS)
    if extra:
        raise _Refusal(f"Malformed input request: extraneous key [{extra[0]}] is not permitted.")
    messages = _check_messages(payload.get("messages"))
    system = _check_system(payload.get("system"))
    max_tokens, stops = _check_inference(payload.get("inferenceConfig"))
    tools, choice = _check_tools(payload.get("toolConfig"))
    uses_tools = any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"])
    if uses_tools and payload.get("toolConfig") is None:
        raise _Refusal(
            "The toolConfig field must be defined when using toolUse and toolResult content blocks."
        )
    return _Request(model, messages, system, max_tokens, stops, tools, choice)


# -- answers ---------------------------------------------------------------------------------


def _pick_tool(request: _Request, question: str) -> dict[str, Any] | None:
    if not request.tools:
        return None
    choice = request.tool_choice or {"auto": {}}
    if "tool" in choice:
        return next(t for t in request.tools if t["name"] == choice["tool"]["name"])
    lowered = question.lower()
    named = next((t for t in request.tools if t["name"].lower() in lowered), None)
    if named is not None:
        return named
    if "any" in choice or _TOOL_HINT_RE.search(question):
        return request.tools[0]
    return None


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    cuts = [text.find(s) for s in stops if s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


class FakeBedrock(FakeServer):
    """Bedrock Runtime's Converse API on aiohttp's low-level server.

    Attributes tests may change at any time: ``delay_s`` (sleep before answering),
    ``stream_delay_s`` (sleep between frames), ``truncate_streams`` (end the next N streams
    after two frames, with no exception), ``record``, ``models`` (if not None, others get
    404 ``ResourceNotFoundException``) and ``max_body_bytes``. ``url`` is the endpoint URL
    (what botocore takes as ``endpoint_url``).
    """

    def __init__(
        self,
        *,
        name: str = "bedrock",
        api_key: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        region: str = "us-east-1",
        host: str = "127.0.0.1",
        port: int = 0,
        record: bool = True,
        models: list[str] | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        if (access_key_id is None) != (secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key go together")
        super().__init__(name=name, host=host, port=port, record=record)
        self.api_key = api_key
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.session_token = session_token
        self.region = region
        self.models = models
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.stream_delay_s: float = 0.001  # each frame leaves in its own TCP segment
        self.max_body_bytes = DEFAULT_MAX_BODY_BYTES

    # -- test controls -----------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        body: bytes | str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        error_type: str | None = None,
    ) -> None:
        """Answer the next ``count`` API requests with ``status``.

        The default body is Bedrock's ``{"message": ...}`` with ``x-amzn-errortype`` set to
        ``error_type`` or the exception Bedrock uses for the status; a mapping is sent as
        JSON, bytes/str as they are. ``headers`` are added to the answer.
        """
        self._push(self._failures, [Failure.build(status, body, headers, error_type)] * count)

    def break_next_stream(
        self,
        count: int = 1,
        *,
        after_events: int = 3,
        exception: str | None = "throttlingException",
        message: str = "Too many tokens, please wait before trying again.",
    ) -> None:
        """End the next ``count`` streams after ``after_events`` frames with an exception
        frame (``exception=None``: the stream just stops, no exception, no messageStop)."""
        brk = _StreamBreak(after_events, exception, message)
        self._push(self._breaks, [brk] * count)

    # -- plumbing ----------------------------------------------------------------------------

    @staticmethod
    def _headers(request_id: str, content_type: str = _JSON) -> dict[str, str]:
        return {"Content-Type": content_type, "x-amzn-RequestId": request_id}

    def _json(self, request_id: str, payload: Any, status: int = 200) -> web.Response:
        return web.Response(
            status=status, body=orjson.dumps(payload), headers=self._headers(request_id)
        )

    def _error(
        self, request_id: str, status: int, message: str, kind: str | None = None
    ) -> web.Response:
        response = self._json(request_id, {"message": message}, status)
        error_type = kind or ERROR_TYPES.get(status, "InternalServerException")
        response.headers["x-amzn-errortype"] = error_type + _ERRORTYPE_SUFFIX
        return response

    def _auth_problem(self, request: web.BaseRequest, body: bytes) -> tuple[str, str] | None:
        """(exception, message) when the request is not authenticated as configured."""
        if self.api_key is None and self.access_key_id is None:
            return None
        given = request.headers.get("authorization", "")
        if not given:
            return "MissingAuthenticationTokenException", "Missing Authentication Token"
        scheme, _, credential = given.partition(" ")
        if scheme.lower() == "bearer":
            if self.api_key is not None and credential == self.api_key:
                return None
            return "UnrecognizedClientException", "Invalid API Key format or unknown API key."
        if self.access_key_id is None or self.secret_access_key is None:
            return "UnrecognizedClientException", _BAD_TOKEN
        problem = BedrockAdapter.verify_sigv4(
            request.method,
            request.raw_path,
            dict(request.headers),
            body,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            region=self.region,
            session_token=self.session_token,
            now=self.clock(),
        )
        if problem is None:
            return None
        if problem == "unknown access key" or "security-token" in problem:
            return "UnrecognizedClientException", _BAD_TOKEN
        return "InvalidSignatureException", f"{_BAD_SIGNATURE} ({problem})"

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body, too_large = await read_body(request, self.max_body_bytes)
        seq = next(self._seq)
        request_id = str(uuid.UUID(int=seq))
        method, path = request.method, request.raw_path.partition("?")[0]
        self._record(request, body, path)
        if self.delay_s > 0:
            await asyncio.sleep(self.delay_s)
        match = _PATH_RE.match(path)
        if match is None:
            return self._error(request_id, 404, "Not Found", "UnknownOperationException")
        if method != "POST":
            return self._error(request_id, 405, "Method Not Allowed", "UnknownOperationException")
        if too_large:
            return self._error(request_id, 413, "Request body too large", "ValidationException")
        failure: Failure | None = self._take(self._failures)
        if failure is not None:
            return self._failure_response(request_id, failure)
        problem = self._auth_problem(request, body)
        if problem is not None:
            return self._error(request_id, 403, problem[1], problem[0])
        model = unquote(match["model"])
        if self.models is not None and model not in self.models:
            return self._error(request_id, 404, _DEFAULT_MESSAGES[404])
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            message = "Unable to parse the request body as JSON."
            return self._error(request_id, 400, message, "SerializationException")
        if not isinstance(payload, dict):
            message = "The request body must be a JSON object."
            return self._error(request_id, 400, message, "SerializationException")
        try:
            parsed = _parse(payload, model)
        except _Refusal as exc:
            return self._error(request_id, exc.status, exc.message, exc.kind)
        output = self._answer(parsed, seq)
        if match["op"] == "converse-stream":
            return await self._stream(request, request_id, self._events(output))
        return self._json(request_id, output)

    def _failure_response(self, request_id: str, failure: Failure) -> web.Response:
        status = failure.status
        if failure.body is None:
            message = _DEFAULT_MESSAGES.get(status, f"Request failed with status {status}")
            response = self._error(request_id, status, message, failure.error_type)
        else:
            response = web.Response(
                status=status, body=failure.body, headers=self._headers(request_id)
            )
            kind = failure.error_type or ERROR_TYPES.get(status, "InternalServerException")
            response.headers["x-amzn-errortype"] = kind + _ERRORTYPE_SUFFIX
        if failure.headers:
            response.headers.update(failure.headers)
        return response

    # -- answers -----------------------------------------------------------------------------

    def _answer(self, request: _Request, seq: int) -> dict[str, Any]:
        user = next(m for m in reversed(request.messages) if m["role"] == "user")
        question = _texts(user["content"]).strip()
        results = [b["toolResult"] for b in user["content"] if "toolResult" in b]
        tool = None
        if results:
            text = "The tool said: " + " | ".join(_result_text(r).strip() for r in results)
        else:
            tool = _pick_tool(request, question)
            text = f"I'll use the {tool['name']} tool." if tool else f"Echo: {question}".strip()
        stop_reason = "end_turn"
        text, cut = _cut_at_stop(text, request.stop_sequences)
        if cut:
            stop_reason, tool = "stop_sequence", None
        tool_input = schema_args.tool_input(tool["inputSchema"]["json"], question) if tool else None
        tool_tokens = max(1, len(orjson.dumps(tool_input)) // 4) if tool else 0
        budget = request.max_tokens
        if budget is not None and _count_words(text) + tool_tokens > budget:
            text = "".join(_split_words(text)[:budget])
            stop_reason, tool, tool_tokens = "max_tokens", None, 0
        content: list[dict[str, Any]] = []
        if text:
            content.append({"text": text})
        if tool is not None:
            use = {"toolUseId": f"tooluse_{seq:022d}", "name": tool["name"], "input": tool_input}
            content.append({"toolUse": use})
            stop_reason = "tool_use"
        input_tokens = sum(_count_words(b["text"]) for b in request.system if "text" in b)
        input_tokens += sum(_block_tokens(b) for m in request.messages for b in m["content"])
        output_tokens = _count_words(text) + tool_tokens
        return {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop_reason,
            "usage": {
                "inputTokens": input_tokens,
                "outputTokens": output_tokens,
                "totalTokens": input_tokens + output_tokens,
            },
            "metrics": {"latencyMs": 7},
        }

    @staticmethod
    def _events(output: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        # Bedrock's order: no contentBlockStart for text, one for each toolUse.
        yield "messageStart", {"role": "assistant"}
        for index, block in enumerate(output["output"]["message"]["content"]):
            if "text" in block:
                for piece in _split_words(block["text"]):
                    yield (
                        "contentBlockDelta",
                        {"contentBlockIndex": index, "delta": {"text": piece}},
                    )
            else:
                use = block["toolUse"]
                start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
                yield "contentBlockStart", {"contentBlockIndex": index, "start": start}
                arguments = orjson.dumps(use["input"]).decode()
                for i in range(0, len(arguments), _JSON_PIECE_CHARS):
                    piece = arguments[i : i + _JSON_PIECE_CHARS]
                    delta = {"toolUse": {"input": piece}}
                    yield "contentBlockDelta", {"contentBlockIndex": index, "delta": delta}
            yield "contentBlockStop", {"contentBlockIndex": index}
        yield "messageStop", {"stopReason": output["stopReason"]}
        yield "metadata", {"usage": output["usage"], "metrics": output["metrics"]}

    async def _stream(
        self,
        request: web.BaseRequest,
        request_id: str,
        events: Iterator[tuple[str, dict[str, Any]]],
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers=self._headers(request_id, EVENT_STREAM))
        await response.prepare(request)
        brk: _StreamBreak | None = self._take(self._breaks)
        if brk is None and self.truncate_streams > 0:
            self.truncate_streams -= 1
            brk = _StreamBreak(2, None, "")
        try:
            for number, (name, data) in enumerate(events):
                if number:
                    await asyncio.sleep(self.stream_delay_s)
                if brk is not None and number == brk.after_events:
                    if brk.exception is not None:
                        await response.write(_exception_frame(brk.exception, brk.message))
                    break
                await response.write(_event_frame(name, data))
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away mid-stream; nobody is left to tell
        return response


class FakeBedrockThread(ServerThread[FakeBedrock]):
    """Runs a :class:`FakeBedrock` on its own event loop in a daemon thread.

    For synchronous tests. Keyword arguments go to :class:`FakeBedrock`, except
    ``loop_factory``. ``start()`` / ``with`` return the running fake.
    """

    fake_class = FakeBedrock
    thread_prefix = "fake-bedrock"
