"""Fake Cohere v2 Chat API for tests: a real HTTP server on 127.0.0.1 speaking the wire format.

It is not an LLM. Answers are derived from the request so that tests can predict them:

* plain text: ``Echo: <text of the last user message>``;
* a tool call when ``tools`` are given, ``tool_choice`` is not ``NONE`` and either it is
  ``REQUIRED`` or the last user text names a tool or says "weather"/"tool": a ``tool_plan``
  (``I will use the <name> tool.``) and one ``tool_calls`` entry whose arguments fill the
  schema's required properties (strings get the question, numbers 1, booleans true, enums their
  first value), ``finish_reason`` ``TOOL_CALL``;
* after ``tool`` messages at the end of the conversation: ``The tool said: <contents>``;
* ``response_format`` ``json_object``: ``{"echo": <question>}``, or the schema's required
  properties filled as for tool arguments.

``max_tokens`` truncates the answer by words (``MAX_TOKENS``), ``stop_sequences`` cut it before
the earliest match (``STOP_SEQUENCE``). Token counts are whitespace word counts: billed input over
every message's text, billed output over the answer (a tool call counts one token per four
characters of its arguments). ``usage.tokens`` adds ``TEMPLATE_TOKENS`` to the input, as Cohere's
prompt template does, so tests can tell the two counts apart.

Requests are validated the way Cohere validates them (400 with Cohere's error JSON,
``{"id": ..., "message": ...}``): required fields, roles, content blocks, tool-call pairing,
parameter ranges and unknown fields. Every request is recorded; failures can be injected:
whole HTTP errors (:meth:`FakeCohere.fail_next`), streams that end in ``ERROR``
(:meth:`FakeCohere.break_next_stream`), streams cut short (``truncate_streams``) and stalls
(``delay_s``, ``stream_delay_s``).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
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

__all__ = ["TEMPLATE_TOKENS", "FakeCohere", "FakeCohereThread", "RecordedRequest"]

TEMPLATE_TOKENS = 3  # what usage.tokens adds to the billed input (Cohere's prompt template)
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
_DEFAULT_MESSAGES: dict[int, str] = {
    400: "invalid request",
    401: "invalid api token",
    402: "Please add a payment method to continue.",
    403: "Forbidden",
    404: "Not Found",
    413: "request entity too large",
    422: "unprocessable entity",
    429: "You are using a Trial key, which is limited to 20 API calls / minute.",
    499: "request cancelled",
    500: "internal server error",
    503: "service unavailable",
}
_FIELDS = frozenset(
    {
        "model",
        "messages",
        "tools",
        "strict_tools",
        "documents",
        "citation_options",
        "response_format",
        "safety_mode",
        "max_tokens",
        "stop_sequences",
        "temperature",
        "seed",
        "frequency_penalty",
        "presence_penalty",
        "k",
        "p",
        "logprobs",
        "tool_choice",
        "thinking",
        "priority",
        "stream",
    }
)
_ROLES = ("user", "assistant", "system", "tool")
_MESSAGE_FIELDS = {
    "user": frozenset({"role", "content"}),
    "system": frozenset({"role", "content"}),
    "assistant": frozenset({"role", "content", "tool_calls", "tool_plan", "citations"}),
    "tool": frozenset({"role", "content", "tool_call_id"}),
}
_TOOL_HINT_RE = re.compile(r"\b(weather|tool)\b", re.IGNORECASE)
_WORD_RE = re.compile(r"\s*\S+")
_JSON_PIECE_CHARS = 8
_JSON = "application/json"


@dataclass(slots=True, frozen=True)
class _StreamBreak:
    after_events: int
    error: str | None  # None: the stream just ends, no message-end


class _BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(slots=True)
class _Request:
    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    tool_choice: str | None
    max_tokens: int | None
    stop_sequences: list[str]
    response_format: dict[str, Any] | None
    stream: bool


@dataclass(slots=True)
class _Answer:
    text: str
    tool_plan: str
    tool_calls: list[dict[str, Any]]
    finish_reason: str
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


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return " ".join(
        b["text"]
        for b in content
        if isinstance(b, dict) and b.get("type") == "text" and "text" in b
    )


def _input_tokens(messages: list[dict[str, Any]]) -> int:
    total = 0
    for message in messages:
        total += _count_words(_text_of(message.get("content")))
        total += _count_words(message.get("tool_plan") or "")
        for call in message.get("tool_calls") or []:
            total += _count_words(call["function"].get("arguments") or "")
    return total


# -- validation ------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_blocks(content: Any, where: str, allowed: tuple[str, ...]) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _BadRequest(f"invalid request: {where} must be a string or a list of content blocks")
    for j, block in enumerate(content):
        at = f"{where}[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in allowed:
            raise _BadRequest(
                f"invalid request: {at}.type must be one of {', '.join(allowed)}, got {kind!r}"
            )
        if kind == "text" and not isinstance(block.get("text"), str):
            raise _BadRequest(f"invalid request: {at}.text must be a string")
        if kind == "thinking" and not isinstance(block.get("thinking"), str):
            raise _BadRequest(f"invalid request: {at}.thinking must be a string")
        if kind == "image_url":
            image = block.get("image_url")
            url = image.get("url") if isinstance(image, dict) else None
            if not isinstance(url, str) or not url.startswith(("http://", "https://", "data:")):
                raise _BadRequest(f"invalid request: {at}.image_url.url must be a URL or data URI")
            detail = image.get("detail")  # type: ignore[union-attr]
            if detail is not None and detail not in ("auto", "low", "high"):
                raise _BadRequest(f"invalid request: {at}.image_url.detail must be auto|low|high")


def _check_tool_calls(calls: Any, where: str) -> list[str]:
    if not isinstance(calls, list):
        raise _BadRequest(f"invalid request: {where} must be a list")
    ids = []
    for j, call in enumerate(calls):
        at = f"{where}[{j}]"
        if not isinstance(call, dict) or not isinstance(call.get("id"), str) or not call["id"]:
            raise _BadRequest(f"invalid request: {at}.id is required")
        if call.get("type", "function") != "function":
            raise _BadRequest(f"invalid request: {at}.type must be 'function'")
        function = call.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _BadRequest(f"invalid request: {at}.function.name is required")
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            raise _BadRequest(f"invalid request: {at}.function.arguments must be a string")
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            raise _BadRequest(f"invalid request: {at}.function.arguments must be a JSON object")
        ids.append(call["id"])
    return ids


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    if messages is None:
        raise _BadRequest("invalid request: messages is required")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("invalid request: messages must be a non-empty list")
    pending: set[str] = set()  # tool calls not answered yet
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _BadRequest(f"invalid request: {where} must be an object")
        role = message.get("role")
        if role not in _ROLES:
            raise _BadRequest(
                f"invalid request: {where}.role must be one of user, assistant, system, tool; "
                f"got {role!r}"
            )
        for key in message:
            if key not in _MESSAGE_FIELDS[role]:
                raise _BadRequest(
                    f"invalid request: unknown field: parameter {where}.{key} is not a valid field"
                )
        content = message.get("content")
        if role in ("user", "system", "tool") and content is None:
            raise _BadRequest(f"invalid request: {where}.content is required")
        if role == "user":
            _check_blocks(content, f"{where}.content", ("text", "image_url"))
            if not _text_of(content).strip() and not isinstance(content, list):
                raise _BadRequest("invalid request: message must be at least 1 token long")
        elif role == "system":
            _check_blocks(content, f"{where}.content", ("text",))
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise _BadRequest(f"invalid request: {where}.tool_call_id is required")
            if call_id not in pending:
                raise _BadRequest(
                    f"invalid request: {where}.tool_call_id {call_id!r} does not match a tool "
                    "call of a previous assistant message"
                )
            pending.discard(call_id)
            _check_blocks(content, f"{where}.content", ("text", "document"))
        else:
            if content is not None:
                _check_blocks(content, f"{where}.content", ("text", "thinking"))
            plan = message.get("tool_plan")
            if plan is not None and not isinstance(plan, str):
                raise _BadRequest(f"invalid request: {where}.tool_plan must be a string")
            calls = message.get("tool_calls")
            if calls is not None:
                pending |= set(_check_tool_calls(calls, f"{where}.tool_calls"))
            elif content is None:
                raise _BadRequest(
                    f"invalid request: {where} must have content or tool_calls (assistant)"
                )
    system_at = [i for i, m in enumerate(messages) if m["role"] == "system"]
    if system_at and system_at != list(range(len(system_at))):
        raise _BadRequest("system turn must be the first in the list")
    return messages


def _check_tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _BadRequest("invalid request: tools must be a list")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise _BadRequest(f"invalid request: {where}.type must be 'function'")
        for key in tool:
            if key not in ("type", "function"):
                raise _BadRequest(
                    f"invalid request: unknown field: parameter {where}.{key} is not a valid field"
                )
        function = tool.get("function")
        if not isinstance(function, dict):
            raise _BadRequest(f"invalid request: {where}.function is required")
        name = function.get("name")
        if not isinstance(name, str) or not re.match(r"^[a-zA-Z0-9_-]{1,64}$", name):
            raise _BadRequest(f"invalid request: {where}.function.name is invalid: {name!r}")
        for key in function:
            if key not in ("name", "description", "parameters"):
                raise _BadRequest(
                    "invalid request: unknown field: parameter "
                    f"{where}.function.{key} is not a valid field"
                )
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise _BadRequest(f"invalid request: {where}.function.parameters must be an object")
        if name in names:
            raise _BadRequest(f"invalid request: duplicate tool name {name!r}")
        names.add(name)
    return tools


def _check_range(payload: dict[str, Any], name: str, lo: float, hi: float) -> None:
    value = payload.get(name)
    if value is None:
        return
    if not _is_number(value) or not lo <= value <= hi:
        raise _BadRequest(f"invalid request: {name} must be between {lo} and {hi} inclusive.")


def _parse(payload: dict[str, Any]) -> _Request:
    for key in payload:
        if key not in _FIELDS:
            raise _BadRequest(
                f"invalid request: unknown field: parameter {key} is not a valid field"
            )
    model = payload.get("model")
    if model is None:
        raise _BadRequest("invalid request: a model parameter is required for this endpoint.")
    if not isinstance(model, str) or not model:
        raise _BadRequest("invalid request: model must be a string")
    messages = _check_messages(payload.get("messages"))
    tools = _check_tools(payload.get("tools"))
    choice = payload.get("tool_choice")
    if choice is not None:
        if choice not in ("REQUIRED", "NONE"):
            raise _BadRequest("invalid request: tool_choice must be one of REQUIRED, NONE")
        if not tools:
            raise _BadRequest("invalid request: tool_choice requires tools to be specified")
    _check_range(payload, "temperature", 0, 1.0)
    _check_range(payload, "p", 0.01, 0.99)
    _check_range(payload, "frequency_penalty", 0, 1.0)
    _check_range(payload, "presence_penalty", 0, 1.0)
    k = payload.get("k")
    if k is not None and (not _is_int(k) or not 0 <= k <= 500):
        raise _BadRequest("invalid request: k must be between 0 and 500 inclusive.")
    max_tokens = payload.get("max_tokens")
    if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
        raise _BadRequest("invalid request: max_tokens must be a positive integer")
    seed = payload.get("seed")
    if seed is not None and not _is_int(seed):
        raise _BadRequest("invalid request: seed must be an integer")
    stops = payload.get("stop_sequences") or []
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise _BadRequest("invalid request: stop_sequences must be a list of non-empty strings")
    if len(stops) > 5:
        raise _BadRequest("invalid request: stop_sequences can contain at most 5 items")
    for name in ("stream", "logprobs", "strict_tools"):
        if payload.get(name) is not None and not isinstance(payload[name], bool):
            raise _BadRequest(f"invalid request: {name} must be a boolean")
    safety = payload.get("safety_mode")
    if safety is not None and safety not in ("CONTEXTUAL", "STRICT", "OFF"):
        raise _BadRequest("invalid request: safety_mode must be one of CONTEXTUAL, STRICT, OFF")
    response_format = payload.get("response_format")
    if response_format is not None:
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if kind not in ("text", "json_object"):
            raise _BadRequest("invalid request: response_format.type must be text or json_object")
        schema = response_format.get("json_schema")
        if schema is not None and (kind == "text" or not isinstance(schema, dict)):
            raise _BadRequest("invalid request: json_schema needs type json_object and an object")
        if tools and kind == "json_object":
            raise _BadRequest("invalid request: response_format is not supported with tools.")
        if kind == "text":
            response_format = None
    return _Request(
        model=model,
        messages=messages,
        tools=tools,
        tool_choice=choice,
        max_tokens=max_tokens,
        stop_sequences=stops,
        response_format=response_format,
        stream=payload.get("stream") is True,
    )


# -- answers -------------------------------------------------------------------------------


def _pick_tool(request: _Request, question: str) -> dict[str, Any] | None:
    if not request.tools or request.tool_choice == "NONE":
        return None
    functions = [t["function"] for t in request.tools]
    lowered = question.lower()
    named = next((f for f in functions if f["name"].lower() in lowered), None)
    if named is not None:
        return named
    if request.tool_choice == "REQUIRED" or _TOOL_HINT_RE.search(question):
        return functions[0]
    return None


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    best = min((at for at in (text.find(s) for s in stops) if at >= 0), default=-1)
    return (text, False) if best < 0 else (text[:best], True)


def _json_pieces(text: str) -> list[str]:
    pieces = [text[i : i + _JSON_PIECE_CHARS] for i in range(0, len(text), _JSON_PIECE_CHARS)]
    return pieces or [text]


def _sse_frame(data: Mapping[str, Any]) -> bytes:
    # Cohere names each event twice: the `event:` line and the JSON `type`.
    return b"event: " + str(data["type"]).encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _endpoint(method: str, path: str) -> str | None:
    # Suffix matching lets base URLs with a prefix (http://host/cohere/v2/chat) work unchanged.
    if path.endswith("/v2/chat"):
        return "chat" if method == "POST" else "method"
    return None


class FakeCohere(FakeServer):
    """Cohere v2 Chat API on aiohttp's low-level server (no router, no access log).

    Attributes that tests may change at any time (also from another thread): ``delay_s``,
    ``stream_delay_s``, ``truncate_streams`` (end the next N streams after two events, with no
    ``message-end``), ``record``, ``models`` (if not None, other models get 404) and
    ``max_body_bytes``.

    ``url`` is the base URL without ``/v2`` (what the ``cohere`` SDK takes as ``base_url``).
    :meth:`fail_next` answers with Cohere's error JSON unless given a body.
    """

    def __init__(
        self,
        *,
        name: str = "cohere",
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
        self, count: int = 1, *, after_events: int = 3, error: str | None = "internal error"
    ) -> None:
        """End the next ``count`` streams after ``after_events`` events.

        With an ``error`` the stream ends with a ``message-end`` whose ``finish_reason`` is
        ``ERROR`` (how Cohere reports a generation failing mid-stream); with ``None`` it just
        stops. Streams with fewer events are not cut.
        """
        brk = _StreamBreak(after_events, error)
        self._push(self._breaks, [brk] * count)

    # -- plumbing --------------------------------------------------------------------------

    def _headers(self, trace_id: str, content_type: str = _JSON) -> dict[str, str]:
        return {
            "Content-Type": content_type,
            "x-debug-trace-id": trace_id,
            "x-fake-upstream": self.name,
        }

    def _json(self, trace_id: str, payload: Any, status: int = 200) -> web.Response:
        return web.Response(
            status=status, body=orjson.dumps(payload), headers=self._headers(trace_id)
        )

    def _error(self, trace_id: str, status: int, message: str) -> web.Response:
        return self._json(trace_id, {"id": trace_id, "message": message}, status)

    def _uuid(self, seq: int, kind: str) -> str:
        digest = hashlib.blake2b(f"{self._tag}/{kind}/{seq}".encode(), digest_size=16).digest()
        return str(uuid.UUID(bytes=digest))

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body, too_large = await read_body(request, self.max_body_bytes)
        seq = next(self._seq)
        trace_id = self._uuid(seq, "trace")
        method, path = request.method, request.path
        self._record(request, body)
        if self.delay_s > 0:
            await asyncio.sleep(self.delay_s)
        endpoint = _endpoint(method, path)
        if endpoint is None:
            return self._error(trace_id, 404, f"Not Found: {path}")
        if endpoint == "method":
            return self._error(trace_id, 405, "Method Not Allowed")
        if too_large:
            return self._error(trace_id, 413, _DEFAULT_MESSAGES[413])
        failure: Failure | None = self._take(self._failures)
        if failure is not None:
            return self._failure_response(trace_id, failure)
        if self.api_key is not None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return self._error(trace_id, 401, "no api key supplied")
            if token.strip() != self.api_key:
                return self._error(trace_id, 401, "invalid api token")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return self._error(trace_id, 400, "invalid request: could not parse the body as JSON")
        if not isinstance(payload, dict):
            return self._error(trace_id, 400, "invalid request: the body must be a JSON object")
        try:
            parsed = _parse(payload)
            if self.models is not None and parsed.model not in self.models:
                raise _BadRequest(
                    f"model '{parsed.model}' not found, make sure the correct model ID was used "
                    "and that you have access to the model.",
                    404,
                )
        except _BadRequest as exc:
            return self._error(trace_id, exc.status, exc.message)
        billed_input = _input_tokens(parsed.messages)
        answer = self._answer(parsed, seq)
        message: dict[str, Any] = {"role": "assistant"}
        if answer.tool_calls:
            message["tool_plan"] = answer.tool_plan
            message["tool_calls"] = answer.tool_calls
        else:
            message["content"] = [{"type": "text", "text": answer.text}]
        response = {
            "id": self._uuid(seq, "message"),
            "message": message,
            "finish_reason": answer.finish_reason,
            "usage": {
                "billed_units": {
                    "input_tokens": billed_input,
                    "output_tokens": answer.output_tokens,
                },
                "tokens": {
                    "input_tokens": billed_input + TEMPLATE_TOKENS,
                    "output_tokens": answer.output_tokens,
                },
            },
        }
        if parsed.stream:
            return await self._sse(request, trace_id, self._events(response))
        return self._json(trace_id, response)

    def _failure_response(self, trace_id: str, failure: Failure) -> web.Response:
        status = failure.status
        if failure.body is None:
            message = _DEFAULT_MESSAGES.get(status, f"Request failed with status {status}")
            response = self._error(
                trace_id, status, f"{message} (simulated failure in fake {self.name!r})"
            )
        else:
            response = web.Response(
                status=status, body=failure.body, headers=self._headers(trace_id)
            )
        if failure.headers:
            response.headers.update(failure.headers)
        return response

    # -- answers ---------------------------------------------------------------------------

    def _answer(self, request: _Request, seq: int) -> _Answer:
        messages = request.messages
        results: list[str] = []
        for message in reversed(messages):
            if message["role"] != "tool":
                break
            results.insert(0, _text_of(message["content"]).strip())
        user = next((m for m in reversed(messages) if m["role"] == "user"), None)
        question = _text_of(user["content"]).strip() if user is not None else ""
        tool = None
        if results:
            text = f"The tool said: {' | '.join(results)}"
        else:
            tool = _pick_tool(request, question)
            if tool is not None:
                text = f"I will use the {tool['name']} tool."
            elif request.response_format is not None:
                schema = request.response_format.get("json_schema")
                filled = schema_args.tool_input(schema, question) if schema else {"echo": question}
                text = orjson.dumps(filled).decode()
            else:
                text = f"Echo: {question}".strip()
        finish = "COMPLETE"
        text, stopped = _cut_at_stop(text, request.stop_sequences)
        if stopped:
            finish, tool = "STOP_SEQUENCE", None
        arguments = (
            orjson.dumps(schema_args.tool_input(tool.get("parameters"), question)).decode()
            if tool
            else ""
        )
        tool_tokens = max(1, len(arguments) // 4) if tool else 0
        budget = request.max_tokens
        if budget is not None and _count_words(text) + tool_tokens > budget:
            text = "".join(_split_words(text)[:budget])
            finish, tool, tool_tokens = "MAX_TOKENS", None, 0
        calls = []
        if tool is not None:
            call_id = f"{tool['name']}_{self._tag}{seq:06d}"
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": tool["name"], "arguments": arguments},
                }
            )
            finish = "TOOL_CALL"
        output = _count_words(text) + tool_tokens
        return _Answer(text, text if calls else "", calls, finish, output)

    @staticmethod
    def _events(response: dict[str, Any]) -> Iterator[dict[str, Any]]:
        message = response["message"]
        opening = {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": []}
        opening["citations"] = []
        yield {"id": response["id"], "type": "message-start", "delta": {"message": opening}}
        if message.get("tool_plan"):
            for piece in _split_words(message["tool_plan"]):
                yield {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": piece}}}
        for index, call in enumerate(message.get("tool_calls") or []):
            start = {
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            yield {
                "type": "tool-call-start",
                "index": index,
                "delta": {"message": {"tool_calls": start}},
            }
            for piece in _json_pieces(call["function"]["arguments"]):
                yield {
                    "type": "tool-call-delta",
                    "index": index,
                    "delta": {"message": {"tool_calls": {"function": {"arguments": piece}}}},
                }
            yield {"type": "tool-call-end", "index": index}
        for index, block in enumerate(message.get("content") or []):
            yield {
                "type": "content-start",
                "index": index,
                "delta": {"message": {"content": {"type": "text", "text": ""}}},
            }
            for piece in _split_words(block["text"]):
                yield {
                    "type": "content-delta",
                    "index": index,
                    "delta": {"message": {"content": {"text": piece}}},
                }
            yield {"type": "content-end", "index": index}
        yield {
            "type": "message-end",
            "delta": {"finish_reason": response["finish_reason"], "usage": response["usage"]},
        }

    async def _sse(
        self, request: web.BaseRequest, trace_id: str, events: Iterator[dict[str, Any]]
    ) -> web.StreamResponse:
        headers = self._headers(trace_id, "text/event-stream")
        headers["Cache-Control"] = "no-cache"
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        brk: _StreamBreak | None = self._take(self._breaks)
        if brk is None and self.truncate_streams > 0:
            self.truncate_streams -= 1
            brk = _StreamBreak(2, None)
        try:
            # One write per event, with a pause between: each leaves on its own, as from a model.
            for number, event in enumerate(events):
                if number:
                    await asyncio.sleep(self.stream_delay_s)
                if brk is not None and number == brk.after_events:
                    if brk.error is not None:
                        end = {
                            "type": "message-end",
                            "delta": {"error": brk.error, "finish_reason": "ERROR"},
                        }
                        await response.write(_sse_frame(end))
                    await response.write_eof()
                    return response
                await response.write(_sse_frame(event))
            await response.write_eof()
        except ConnectionResetError:
            pass  # The client went away mid-stream; there is nobody left to tell.
        return response


class FakeCohereThread(ServerThread[FakeCohere]):
    """Runs a :class:`FakeCohere` on its own event loop in a daemon thread.

    For synchronous tests. Keyword arguments go to :class:`FakeCohere`, except
    ``loop_factory``. ``start()`` / ``with`` return the running fake.
    """

    fake_class = FakeCohere
    thread_prefix = "fake-cohere"
