"""Fake OpenAI-compatible upstream: the DEMO provider and the test/benchmark stand-in.

It is not an LLM. Every answer is derived from the request so that callers can tell answers
(and upstreams) apart: ``[<label>] <name>:<model> answer to: <last user message>``.

It speaks OpenAI's wire format (JSON bodies, SSE streams, error objects) closely enough for the
official ``openai`` SDK, records every request it receives, and can be told to fail or stall.

Usage counts are whitespace word counts (token lists count one per token); tool-call arguments
count one token per four characters. They are consistent, not realistic.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import itertools
import math
import re
import signal
import struct
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from aiohttp import web

from edge_agent.demo.runner import Failure, FakeServer, RecordedRequest, ServerThread

__all__ = ["DEFAULT_MODELS", "FakeOpenAI", "FakeOpenAIThread", "RecordedRequest", "main"]

DEFAULT_MODELS: tuple[str, ...] = (
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-3.5-turbo-instruct",
    "text-embedding-3-small",
)
DEFAULT_EMBEDDING_DIMENSIONS = 8
MAX_CHOICES = 128
MAX_EMBEDDING_DIMENSIONS = 4096
_QUESTION_CHARS = 200
_ARGUMENT_PIECE_CHARS = 8
# Fixed "created" for /v1/models so that listings are byte-for-byte stable.
_MODELS_CREATED = 1_700_000_000
_WORD_RE = re.compile(r"\s*\S+")
_JSON = "application/json"


class _BadRequest(Exception):
    """A 400 answer; raised from deep inside payload parsing to keep handlers flat."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


def _error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


def _count_words(text: str) -> int:
    return len(text.split())


def _split_words(text: str) -> list[str]:
    # Pieces keep their leading whitespace, as model tokens do, so "".join() restores the text.
    pieces = _WORD_RE.findall(text)
    rest = len(text) - sum(map(len, pieces))
    if rest:
        pieces.append(text[-rest:])
    return pieces or [text]


def _text_of(content: Any) -> str:
    """Text of a message's content: a string, or a list of parts of which text parts count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def _require_model(payload: dict[str, Any]) -> str:
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise _BadRequest("you must provide a model parameter")
    return model


def _choice_count(payload: dict[str, Any]) -> int:
    n = payload.get("n")
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CHOICES:
        raise _BadRequest(f"Invalid 'n': expected an integer from 1 to {MAX_CHOICES}.", "n")
    return n


def _stream_settings(payload: dict[str, Any]) -> tuple[bool, bool]:
    """(stream, include_usage), refusing stream_options without stream as OpenAI does."""
    stream = payload.get("stream") is True
    options = payload.get("stream_options")
    if options is None:
        return stream, False
    if not stream:
        raise _BadRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
    if not isinstance(options, dict):
        raise _BadRequest(
            "Invalid type for 'stream_options': expected an object.", "stream_options"
        )
    return True, options.get("include_usage") is True


def _placeholder(schema: Any, question: str) -> Any:
    """A deterministic value that fits a JSON-schema property well enough for demos and tests."""
    if not isinstance(schema, dict):
        return None
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "string":
        return question[:50] or "demo"
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return {}
    return None


def _tool_arguments(parameters: Any, question: str) -> dict[str, Any]:
    if not isinstance(parameters, dict):
        return {}
    properties = parameters.get("properties")
    if not isinstance(properties, dict):
        return {}
    required = parameters.get("required")
    names = [n for n in required if n in properties] if isinstance(required, list) else properties
    return {name: _placeholder(properties[name], question) for name in names}


def _pick_tool(payload: dict[str, Any], question: str) -> tuple[str, str] | None:
    """(function name, JSON arguments) when this request should be answered by a tool call."""
    tools = payload.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    functions = [
        tool["function"]
        for tool in tools
        if isinstance(tool, dict)
        and isinstance(tool.get("function"), dict)
        and isinstance(tool["function"].get("name"), str)
    ]
    if not functions:
        return None
    choice = payload.get("tool_choice")
    if isinstance(choice, dict):
        named = choice.get("function")
        wanted = named.get("name") if isinstance(named, dict) else None
        function = next((f for f in functions if f["name"] == wanted), functions[0])
    elif choice == "required" or (choice != "none" and "CALL_TOOL" in question):
        function = functions[0]
    else:
        return None
    arguments = _tool_arguments(function.get("parameters"), question)
    return function["name"], orjson.dumps(arguments).decode()


def _prompt_texts(prompt: Any) -> list[str]:
    """The /v1/completions prompt forms: str, [str], [int] (one prompt) or [[int]]."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return list(prompt)
        if all(isinstance(t, int) for t in prompt):
            return [" ".join(map(str, prompt))]
        if all(isinstance(p, list) and all(isinstance(t, int) for t in p) for p in prompt):
            return [" ".join(map(str, p)) for p in prompt]
    raise _BadRequest(
        "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"
    )


def _embedding_inputs(value: Any) -> list[tuple[bytes, int]]:
    """(hash key, token count) per input: str, [str], [int] (one input) or [[int]]."""
    if isinstance(value, str):
        return [(value.encode(), _count_words(value))]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return [(v.encode(), _count_words(v)) for v in value]
        if all(isinstance(t, int) for t in value):
            return [(orjson.dumps(value), len(value))]
        if all(isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value):
            return [(orjson.dumps(v), len(v)) for v in value]
    raise _BadRequest("Missing required parameter: 'input'.", "input", "missing_required_parameter")


def _embedding(key: bytes, dimensions: int) -> bytes:
    """A unit vector as packed float32 LE, so the float and base64 forms agree bit for bit."""
    raw = struct.unpack(f"<{dimensions}I", hashlib.shake_128(key).digest(4 * dimensions))
    vector = [r / 2147483647.5 - 1.0 for r in raw]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return struct.pack(f"<{dimensions}f", *(v / norm for v in vector))


def _default_failure_body(status: int, who: str) -> bytes:
    suffix = f"(simulated failure injected into {who})"
    if status == 429:
        return _error_body(
            f"Rate limit reached for requests {suffix}.", "requests", None, "rate_limit_exceeded"
        )
    if status == 401:
        return _error_body(
            f"Incorrect API key provided {suffix}.",
            "invalid_request_error",
            None,
            "invalid_api_key",
        )
    if status >= 500:
        return _error_body(
            f"The server had an error while processing your request {suffix}.", "server_error"
        )
    return _error_body(f"Request failed with status {status} {suffix}.", "invalid_request_error")


def _mask_key(key: str) -> str:
    return key[:3] + "*" * 8 + key[-4:] if len(key) > 8 else "*" * len(key)


_AZURE_PATH = re.compile(r"^/openai/deployments/[^/]+/(chat/completions|completions|embeddings)$")


def _azure_endpoint(method: str, path: str) -> str | None:
    # Azure OpenAI: /openai/deployments/{deployment}/{operation}?api-version=...
    match = _AZURE_PATH.match(path) if method == "POST" else None
    if match is None:
        return None
    return {"chat/completions": "chat", "completions": "completions"}.get(
        match.group(1), "embeddings"
    )


def _endpoint(method: str, path: str) -> str | None:
    # Matching on the suffix lets base URLs such as http://host/openai/v1 work unchanged.
    if method == "POST":
        if path.endswith("/v1/chat/completions"):
            return "chat"
        if path.endswith("/v1/completions"):
            return "completions"
        if path.endswith("/v1/embeddings"):
            return "embeddings"
    elif method == "GET":
        if path.endswith("/v1/models"):
            return "models"
        at = path.find("/v1/models/")
        if at >= 0 and len(path) > at + len("/v1/models/"):
            return "model"
    return None


class FakeOpenAI(FakeServer):
    """OpenAI-compatible HTTP server on aiohttp's low-level server (no router, no access log).

    Attributes that tests may change at any time (also from another thread):
    ``delay_s`` (sleep before answering), ``stream_delay_s`` (sleep between SSE events),
    ``truncate_streams`` (end the next N streams after two events, without ``[DONE]``),
    ``record`` (keep :attr:`requests`; turn off for long-running demos and benchmarks),
    ``model_ids`` (what ``GET /v1/models`` lists). :meth:`fail_next` answers with OpenAI's
    error JSON by default.
    """

    def __init__(
        self,
        *,
        name: str = "demo",
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        label: str = "demo upstream",
        record: bool = True,
        azure: bool = False,
    ) -> None:
        super().__init__(name=name, host=host, port=port, record=record)
        # Azure OpenAI's wire format: deployment paths, `api-version`, `api-key` header.
        self.azure = azure
        self.api_key = api_key
        self.label = label
        self.model_ids: list[str] = list(DEFAULT_MODELS)
        tag = hashlib.blake2b(name.encode(), digest_size=5).hexdigest()
        self._id_tag = tag[:6]
        self._fingerprint = f"fp_{tag}"
        self._json_headers = {"Content-Type": _JSON, "x-demo-upstream": name}
        self._sse_headers = {
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "x-demo-upstream": name,
        }

    def _describe(self) -> str:
        return f"{self.label} {self.name!r}"

    # -- request handling ------------------------------------------------------------------

    def _json(self, payload: Any, status: int = 200) -> web.Response:
        return web.Response(status=status, body=orjson.dumps(payload), headers=self._json_headers)

    def _error(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> web.Response:
        return web.Response(
            status=status,
            body=_error_body(message, type_, param, code),
            headers=self._json_headers,
        )

    def _failure_response(self, failure: Failure) -> web.Response:
        headers = dict(self._json_headers)
        if failure.headers:
            headers.update(failure.headers)
        body = failure.body
        if body is None:
            body = _default_failure_body(failure.status, self._describe())
        return web.Response(status=failure.status, body=body, headers=headers)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        # Read the whole body first: answering early would break keep-alive for load generators.
        body = await request.read()
        method = request.method
        path = request.path
        self._record(request, body)
        if self.delay_s > 0:
            await asyncio.sleep(self.delay_s)
        endpoint = _azure_endpoint(method, path) if self.azure else _endpoint(method, path)
        if endpoint is None:
            return self._error(404, f"Invalid URL ({method} {path})")
        if self.azure and "api-version" not in request.query:
            return self._error(404, "Resource not found (the api-version query is required)")
        if self._failures:
            failure: Failure | None = self._take(self._failures)
            if failure is not None:
                return self._failure_response(failure)
        if self.api_key is not None:
            given = request.headers.get("Authorization", "")
            if self.azure:
                given = f"Bearer {request.headers.get('api-key', '')}"
            if given != f"Bearer {self.api_key}":
                key = given.removeprefix("Bearer ").strip()
                return self._error(
                    401,
                    f"Incorrect API key provided: {_mask_key(key) if key else '(none)'}. "
                    f"This {self.label} ({self.name!r}) only accepts the key it was started with.",
                    code="invalid_api_key",
                )
        try:
            if endpoint == "models":
                return self._json(
                    {"object": "list", "data": [self._model(m) for m in self.model_ids]}
                )
            if endpoint == "model":
                model_id = path[path.find("/v1/models/") + len("/v1/models/") :]
                if model_id not in self.model_ids:
                    return self._error(
                        404,
                        f"The model '{model_id}' does not exist",
                        param="model",
                        code="model_not_found",
                    )
                return self._json(self._model(model_id))
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError:
                return self._error(
                    400,
                    "We could not parse the JSON body of your request. The API expects a JSON "
                    "payload, but what was sent was not valid JSON.",
                )
            if not isinstance(payload, dict):
                return self._error(400, "Invalid type for request body: expected a JSON object.")
            if endpoint == "chat":
                return await self._chat(request, payload)
            if endpoint == "completions":
                return await self._completions(request, payload)
            return self._embeddings(payload)
        except _BadRequest as exc:
            return self._error(400, exc.message, param=exc.param, code=exc.code)

    def _model(self, model_id: str) -> dict[str, Any]:
        return {
            "id": model_id,
            "object": "model",
            "created": _MODELS_CREATED,
            "owned_by": self.name,
        }

    def _answer(self, model: str, question: str) -> str:
        return f"[{self.label}] {self.name}:{model} answer to: {question[:_QUESTION_CHARS]}"

    async def _sse(
        self, request: web.BaseRequest, events: Iterator[dict[str, Any]]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers=self._sse_headers)
        await response.prepare(request)
        delay = self.stream_delay_s
        truncate = self.truncate_streams > 0
        if truncate:
            self.truncate_streams -= 1
        try:
            # One write per event: each goes to the socket on its own, like a real token stream.
            for number, event in enumerate(events):
                if delay > 0 and number:
                    await asyncio.sleep(delay)
                if truncate and number == 2:
                    await response.write_eof()  # a stream cut short: no finish, no [DONE]
                    return response
                await response.write(b"data: " + orjson.dumps(event) + b"\n\n")
            if delay > 0:
                await asyncio.sleep(delay)
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionResetError:
            pass  # The client went away mid-stream; there is nobody left to tell.
        return response

    # -- /v1/chat/completions --------------------------------------------------------------

    async def _chat(self, request: web.BaseRequest, payload: dict[str, Any]) -> web.StreamResponse:
        model = _require_model(payload)
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _BadRequest(
                "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
            )
        n = _choice_count(payload)
        stream, include_usage = _stream_settings(payload)
        question = _last_user_text(messages)
        prompt_tokens = sum(
            _count_words(_text_of(m.get("content"))) for m in messages if isinstance(m, dict)
        )
        seq = next(self._seq)
        base = {
            "id": f"chatcmpl-{self._id_tag}{seq:08d}",
            "object": "chat.completion.chunk" if stream else "chat.completion",
            "created": int(time.time()),
            "model": model,
        }
        tool = _pick_tool(payload, question)
        content: str | None = None
        calls: list[dict[str, Any]] | None = None
        if tool is None:
            content = self._answer(model, question)
            finish = "stop"
            completion_tokens = n * _count_words(content)
        else:
            function_name, arguments = tool
            finish = "tool_calls"
            calls = [
                {
                    "id": f"call_{self._id_tag}{seq:08d}{i:03d}",
                    "type": "function",
                    "function": {"name": function_name, "arguments": arguments},
                }
                for i in range(n)
            ]
            completion_tokens = n * max(1, len(arguments) // 4)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        if stream:
            base["service_tier"] = "default"
            base["system_fingerprint"] = self._fingerprint
            events = self._chat_events(base, n, content, calls, finish, usage, include_usage)
            return await self._sse(request, events)
        choices = []
        for i in range(n):
            message: dict[str, Any] = {
                "role": "assistant",
                "content": content,
                "refusal": None,
                "annotations": [],
            }
            if calls is not None:
                message["tool_calls"] = [calls[i]]
            choices.append(
                {"index": i, "message": message, "logprobs": None, "finish_reason": finish}
            )
        base["choices"] = choices
        base["usage"] = usage
        base["service_tier"] = "default"
        base["system_fingerprint"] = self._fingerprint
        return self._json(base)

    @staticmethod
    def _chat_events(
        base: dict[str, Any],
        n: int,
        content: str | None,
        calls: list[dict[str, Any]] | None,
        finish: str,
        usage: dict[str, Any],
        include_usage: bool,
    ) -> Iterator[dict[str, Any]]:
        def chunk(index: int, delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
            event = dict(base)
            event["choices"] = [
                {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
            ]
            if include_usage:
                event["usage"] = None  # OpenAI marks every chunk but the last this way.
            return event

        if calls is None:
            text = content or ""
            for i in range(n):
                yield chunk(i, {"role": "assistant", "content": "", "refusal": None})
            for piece in _split_words(text):
                for i in range(n):
                    yield chunk(i, {"content": piece})
        else:
            arguments = calls[0]["function"]["arguments"]
            for i in range(n):
                call = calls[i]
                opening = {
                    "index": 0,
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["function"]["name"], "arguments": ""},
                }
                yield chunk(
                    i,
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [opening],
                        "refusal": None,
                    },
                )
            for start in range(0, len(arguments), _ARGUMENT_PIECE_CHARS):
                piece = arguments[start : start + _ARGUMENT_PIECE_CHARS]
                for i in range(n):
                    yield chunk(i, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        for i in range(n):
            yield chunk(i, {}, finish)
        if include_usage:
            event = dict(base)
            event["choices"] = []
            event["usage"] = usage
            yield event

    # -- /v1/completions -------------------------------------------------------------------

    async def _completions(
        self, request: web.BaseRequest, payload: dict[str, Any]
    ) -> web.StreamResponse:
        model = _require_model(payload)
        prompts = _prompt_texts(payload.get("prompt"))
        n = _choice_count(payload)
        stream, include_usage = _stream_settings(payload)
        echo = payload.get("echo") is True
        texts = []
        for prompt in prompts:
            answer = self._answer(model, prompt)
            texts.extend(itertools.repeat(prompt + answer if echo else answer, n))
        prompt_tokens = sum(_count_words(p) for p in prompts)
        completion_tokens = sum(_count_words(t) for t in texts)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        base = {
            "id": f"cmpl-{self._id_tag}{next(self._seq):08d}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": self._fingerprint,
        }
        if stream:
            return await self._sse(
                request, self._completion_events(base, texts, usage, include_usage)
            )
        base["choices"] = [
            {"text": text, "index": i, "logprobs": None, "finish_reason": "stop"}
            for i, text in enumerate(texts)
        ]
        base["usage"] = usage
        return self._json(base)

    @staticmethod
    def _completion_events(
        base: dict[str, Any], texts: list[str], usage: dict[str, Any], include_usage: bool
    ) -> Iterator[dict[str, Any]]:
        def chunk(index: int, text: str, reason: str | None = None) -> dict[str, Any]:
            event = dict(base)
            event["choices"] = [
                {"text": text, "index": index, "logprobs": None, "finish_reason": reason}
            ]
            if include_usage:
                event["usage"] = None
            return event

        split = [_split_words(text) for text in texts]
        for position in range(max(map(len, split))):
            for index, pieces in enumerate(split):
                if position < len(pieces):
                    yield chunk(index, pieces[position])
        for index in range(len(texts)):
            yield chunk(index, "", "stop")
        if include_usage:
            event = dict(base)
            event["choices"] = []
            event["usage"] = usage
            yield event

    # -- /v1/embeddings --------------------------------------------------------------------

    def _embeddings(self, payload: dict[str, Any]) -> web.Response:
        model = _require_model(payload)
        inputs = _embedding_inputs(payload.get("input"))
        encoding = payload.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise _BadRequest(
                "Invalid value for 'encoding_format': expected 'float' or 'base64'.",
                "encoding_format",
            )
        dimensions = payload.get("dimensions")
        if dimensions is None:
            dimensions = DEFAULT_EMBEDDING_DIMENSIONS
        elif (
            isinstance(dimensions, bool)
            or not isinstance(dimensions, int)
            or not 1 <= dimensions <= MAX_EMBEDDING_DIMENSIONS
        ):
            raise _BadRequest(
                f"Invalid 'dimensions': expected an integer from 1 to {MAX_EMBEDDING_DIMENSIONS}.",
                "dimensions",
            )
        data = []
        for index, (key, _tokens) in enumerate(inputs):
            packed = _embedding(key, dimensions)
            vector: Any
            if encoding == "base64":
                vector = base64.b64encode(packed).decode()
            else:
                vector = list(struct.unpack(f"<{dimensions}f", packed))
            data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens = sum(t for _key, t in inputs)
        return self._json(
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


class FakeOpenAIThread(ServerThread[FakeOpenAI]):
    """Runs a :class:`FakeOpenAI` on its own event loop in a daemon thread.

    For synchronous tests and the CLI. Keyword arguments go to :class:`FakeOpenAI`, except
    ``loop_factory`` (e.g. ``uvloop.new_event_loop`` for benchmarks).
    """

    fake_class = FakeOpenAI
    thread_prefix = "fake-openai"


# -- standalone ----------------------------------------------------------------------------


async def _serve(fake: FakeOpenAI) -> None:
    # SIGTERM is handled before the banner goes out: whoever waits for it may stop us at once.
    stopping = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await fake.start()
    try:
        print(
            f"DEMO upstream {fake.name!r}: a fake OpenAI-compatible API with canned answers "
            f"(not a real LLM), listening on {fake.url}/v1",
            flush=True,
        )
        await stopping.wait()
    finally:
        await fake.stop()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop  # optional: a faster loop for benchmark runs
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edge_agent.demo.upstream",
        description="DEMO upstream: a fake OpenAI-compatible API with canned answers "
        "(not a real LLM), for trying the gateway offline and for tests.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8091, help="port, 0 for any (default: %(default)s)"
    )
    parser.add_argument(
        "--name", default="demo", help="name shown in answers (default: %(default)s)"
    )
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    parser.add_argument("--label", default="demo upstream", help="label shown in answers")
    args = parser.parse_args(argv)
    # Nobody reads the recorded requests of a standalone server; recording would only grow.
    fake = FakeOpenAI(
        name=args.name,
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        label=args.label,
        record=False,
    )
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_serve(fake))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
