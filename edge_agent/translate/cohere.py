"""OpenAI chat ⇄ the Cohere v2 chat API (the codec of providers/cohere.py): requests, whole
answers, usage, errors and streams, sans-IO."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from edge_agent.api.errors import ApiError
from edge_agent.api.sse import encode_event
from edge_agent.providers.base import Codec
from edge_agent.translate.common import (
    OPENAI_ONLY,
    chat_usage,
    openai_error,
    plain_error_message,
    refuse_unsupported,
    requested_max_tokens,
    stop_sequences,
    text_of,
    tool_function,
    tool_parameters,
    untranslatable,
)
from edge_agent.translate.stream import (
    ChatChunkWriter,
    completion,
    event_object,
    tool_call_arguments,
    tool_call_start,
)

log = logging.getLogger("edge_agent.providers.cohere")

_FINISH_FROM_COHERE = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
}
# Cohere ends these generations early without an OpenAI way to say so.
_FAILED_FINISH = frozenset({"ERROR", "TIMEOUT"})
# OpenAI chat fields with no Cohere v2 counterpart that change the answer.
_OPENAI_ONLY = (*OPENAI_ONLY, "reasoning_effort")
_WHY = {
    "logprobs": "Cohere reports token ids, not the token text OpenAI's logprobs carry",
    "top_logprobs": "Cohere reports no alternative tokens",
    "reasoning_effort": "Cohere's thinking takes a token budget, not an effort level",
}
_P_MIN, _P_MAX = 0.01, 0.99  # Cohere's documented range for `p`
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def _refuse(field: str, why: str = "") -> ApiError:
    return untranslatable(field, "OpenAI", "Cohere v2 chat", why)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


# =========================================================================== requests


def _text_of(content: Any, path: str) -> str:
    """Text parts (or a string) as one string: for roles whose Cohere content is text."""
    return text_of(content, path, _refuse)


def _user_content(content: Any, path: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _refuse(path, "expected a string or a list of content parts")
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        where = f"{path}[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "image_url":
            # v2 takes OpenAI's image part as it is: an https URL or a base64 data URI.
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str) or not url.startswith(("http://", "https://", "data:")):
                raise _refuse(f"{where}.image_url.url", "expected an http(s) URL or a data URI")
            out: dict[str, Any] = {"url": url}
            detail = image.get("detail") if isinstance(image, dict) else None
            if detail is not None:
                if detail not in ("auto", "low", "high"):
                    raise _refuse(f"{where}.image_url.detail", "Cohere takes auto, low or high")
                out["detail"] = detail
            parts.append({"type": "image_url", "image_url": out})
        else:
            raise _refuse(where, f"content part type {kind!r} has no Cohere counterpart")
    return parts


def _tool_calls(calls: Any, path: str) -> list[dict[str, Any]]:
    if not isinstance(calls, list):
        raise _refuse(path, "expected a list of tool calls")
    out = []
    for i, call in enumerate(calls):
        where = f"{path}[{i}]"
        if not isinstance(call, dict) or call.get("type", "function") != "function":
            raise _refuse(where, "only function tool calls translate")
        function = call.get("function") or {}
        arguments = function.get("arguments")
        if not isinstance(arguments, str) or not arguments:
            arguments = "{}"
        out.append(
            {
                "id": str(call.get("id", "")),
                "type": "function",
                "function": {"name": str(function.get("name", "")), "arguments": arguments},
            }
        )
    return out


def _tool(tool: Any, path: str) -> dict[str, Any]:
    function = tool_function(tool, path, _refuse)
    out: dict[str, Any] = {"name": function.get("name")}
    if function.get("description"):
        out["description"] = function["description"]
    out["parameters"] = tool_parameters(function)
    return {"type": "function", "function": out}


def _tool_choice(choice: Any, tools: list[Any]) -> str | None:
    """Cohere's tool_choice ("REQUIRED"/"NONE"), or None to leave it to the model."""
    if choice is None or choice == "auto":
        return None
    if choice == "none":
        return "NONE"
    if choice == "required":
        return "REQUIRED"
    if isinstance(choice, dict) and choice.get("type") == "function":
        wanted = (choice.get("function") or {}).get("name")
        names = [(t.get("function") or {}).get("name") for t in tools if isinstance(t, dict)]
        if names == [wanted]:
            return "REQUIRED"  # the only tool: forcing "a tool" forces this one
        raise _refuse(
            "tool_choice",
            "Cohere can require a tool call but not name the tool; offer only that tool",
        )
    raise _refuse("tool_choice")


def _strict_tools(tools: list[Any]) -> bool | None:
    """Cohere's request-wide `strict_tools` from OpenAI's per-function `strict`."""
    flags = [bool((t.get("function") or {}).get("strict")) for t in tools if isinstance(t, dict)]
    if not any(flags):
        return None
    if not all(flags):
        raise _refuse("tools", "Cohere's strict mode applies to all tools or none")
    return True


def _response_format(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    kind = value.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise _refuse("response_format.json_schema.schema", "a JSON schema object is needed")
        return {"type": "json_object", "json_schema": schema}
    raise _refuse("response_format.type", f"format {kind!r} has no Cohere counterpart")


def _unit(body: dict[str, Any], field: str) -> float | None:
    """A sampling parameter Cohere takes only within 0..1 (OpenAI allows more)."""
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
        raise _refuse(field, "Cohere accepts 0 to 1")
    return value


def chat_to_cohere(body: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat request as a Cohere v2 chat request (for `model`)."""
    refuse_unsupported(body, _OPENAI_ONLY, lambda field: _refuse(field, _WHY.get(field, "")))
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for i, message in enumerate(body.get("messages") or []):
        path = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _refuse(path, "expected a message object")
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system.append(_text_of(content, f"{path}.content"))
        elif role == "user":
            messages.append({"role": "user", "content": _user_content(content, f"{path}.content")})
        elif role == "assistant":
            if message.get("function_call"):
                raise _refuse(f"{path}.function_call", "use tool_calls")
            if message.get("audio") is not None:
                raise _refuse(f"{path}.audio")
            text = _text_of(content, f"{path}.content")
            out: dict[str, Any] = {"role": "assistant"}
            calls = message.get("tool_calls")
            if calls:
                out["tool_calls"] = _tool_calls(calls, f"{path}.tool_calls")
                if text:
                    out["tool_plan"] = text
            else:
                out["content"] = text
            messages.append(out)
        elif role == "tool":
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": str(message.get("tool_call_id", "")),
                    "content": _text_of(content, f"{path}.content"),
                }
            )
        else:
            raise _refuse(f"{path}.role", f"role {role!r} has no Cohere counterpart")
    if system:
        messages.insert(0, {"role": "system", "content": "\n\n".join(system)})

    out_body: dict[str, Any] = {"model": model, "messages": messages}
    max_tokens = requested_max_tokens(body)
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        out_body["max_tokens"] = max_tokens
    for field in ("temperature", "frequency_penalty", "presence_penalty"):
        value = _unit(body, field)
        if value is not None:
            out_body[field] = value
    top_p = body.get("top_p")
    if isinstance(top_p, int | float) and not isinstance(top_p, bool):
        out_body["p"] = min(max(float(top_p), _P_MIN), _P_MAX)
    stop = stop_sequences(body)
    if stop is not None:
        out_body["stop_sequences"] = stop
    if body.get("seed") is not None:
        out_body["seed"] = body["seed"]
    response_format = _response_format(body.get("response_format"))
    if response_format is not None:
        out_body["response_format"] = response_format
    tools = body.get("tools") or []
    if tools:
        out_body["tools"] = [_tool(t, f"tools[{i}]") for i, t in enumerate(tools)]
        if _strict_tools(tools):
            out_body["strict_tools"] = True
        choice = _tool_choice(body.get("tool_choice"), tools)
        if choice is not None:
            out_body["tool_choice"] = choice
        if body.get("parallel_tool_calls") is False and choice != "NONE":
            raise _refuse("parallel_tool_calls", "Cohere cannot be limited to one tool call")
    elif body.get("tool_choice") not in (None, "auto", "none"):
        raise _refuse("tool_choice", "no tools are given")
    if body.get("stream") is True:
        out_body["stream"] = True
    return out_body


# =========================================================================== answers


def openai_usage(usage: Any) -> dict[str, Any] | None:
    """Cohere usage → OpenAI usage: `tokens` (what the model processed), else `billed_units`."""
    if not isinstance(usage, dict):
        return None
    counts = usage.get("tokens")
    if not isinstance(counts, dict) or counts.get("input_tokens") is None:
        counts = usage.get("billed_units")
    if not isinstance(counts, dict):
        return None
    try:
        prompt = int(counts.get("input_tokens") or 0)
        completion = int(counts.get("output_tokens") or 0)
        cached = int(usage.get("cached_tokens") or 0)
    except (TypeError, ValueError):
        return None
    return chat_usage(prompt, completion, cached)


def _finish(reason: Any, where: str) -> str:
    if reason in _FAILED_FINISH:
        log.warning("Cohere ended a %s with finish_reason %s; reported as 'stop'", where, reason)
    return _FINISH_FROM_COHERE.get(reason, "stop") if isinstance(reason, str) else "stop"


def cohere_to_completion(body: dict[str, Any], model: str) -> dict[str, Any]:
    """A Cohere v2 chat response as an OpenAI chat completion."""
    raw = body.get("message")
    message = raw if isinstance(raw, dict) else {}
    texts: list[str] = []
    thinking: list[str] = []
    for part in message.get("content") or []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            texts.append(str(part.get("text", "")))
        elif part.get("type") == "thinking":
            thinking.append(str(part.get("thinking", "")))
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        arguments = function.get("arguments")
        calls.append(
            {
                "id": call.get("id"),
                "type": "function",
                "function": {
                    "name": function.get("name"),
                    # Cohere sends a JSON string; tolerate an object from look-alike servers.
                    "arguments": arguments if isinstance(arguments, str) else _dumps(arguments),
                },
            }
        )
    text = "".join(texts)
    plan = message.get("tool_plan")
    if not text and calls and isinstance(plan, str) and plan:
        text = plan
    out_message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        out_message["tool_calls"] = calls
    if thinking:
        out_message["reasoning_content"] = "".join(thinking)  # as translate/anthropic.py does
    finish = _finish(body.get("finish_reason"), "response")
    usage = openai_usage(body.get("usage"))
    return completion(f"chatcmpl-{body.get('id', '')}", model, out_message, finish, usage)


# =========================================================================== errors


def error_to_openai(status: int, body: bytes) -> bytes:
    """Cohere's error JSON ({"message": ...}, often with "id") in OpenAI's envelope."""
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return openai_error(plain_error_message(body), kind)


# =========================================================================== streams


def _index(event: dict[str, Any]) -> int:
    index = event.get("index")
    return index if isinstance(index, int) else 0


class CohereStreamToChat(ChatChunkWriter):
    """Cohere v2 chat stream events → OpenAI chat.completion.chunk events."""

    def __init__(self, model: str, include_usage: bool, now: Callable[[], float] = time.time):
        super().__init__(model, include_usage, now)
        self._started = False
        self._tool_index: dict[int, int] = {}  # Cohere tool-call index → OpenAI tool index
        self._ended = False

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return self._chunk({"role": "assistant", "content": ""})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return self._start() + self._chunk(delta)

    def _event(self, name: str | None, data: str) -> bytes:
        if self._ended:
            return b""
        event = event_object(data)
        if event is None:
            return b""
        kind = event.get("type") or name
        raw = event.get("delta")
        delta: dict[str, Any] = raw if isinstance(raw, dict) else {}
        inner = delta.get("message")
        message: dict[str, Any] = inner if isinstance(inner, dict) else {}
        if kind == "message-start":
            if event.get("id"):
                self._id = f"chatcmpl-{event['id']}"
            return self._start()
        if kind in ("content-start", "content-delta"):
            content = message.get("content")
            if not isinstance(content, dict):
                return b""
            if isinstance(content.get("text"), str) and content["text"]:
                return self._delta({"content": content["text"]})
            if isinstance(content.get("thinking"), str) and content["thinking"]:
                return self._delta({"reasoning_content": content["thinking"]})
            return b""
        if kind == "tool-plan-delta":
            plan = message.get("tool_plan")
            return self._delta({"content": plan}) if isinstance(plan, str) and plan else b""
        if kind == "tool-call-start":
            call = message.get("tool_calls")
            if not isinstance(call, dict):
                return b""
            index = self._tool_index.setdefault(_index(event), len(self._tool_index))
            function = call.get("function") or {}
            arguments = function.get("arguments")
            return self._delta(
                tool_call_start(
                    index,
                    call.get("id"),
                    function.get("name"),
                    arguments if isinstance(arguments, str) else "",
                )
            )
        if kind == "tool-call-delta":
            call = message.get("tool_calls")
            function = call.get("function") if isinstance(call, dict) else None
            arguments = function.get("arguments") if isinstance(function, dict) else None
            if not isinstance(arguments, str) or not arguments:
                return b""
            index = self._tool_index.get(_index(event), 0)
            return self._delta(tool_call_arguments(index, arguments))
        if kind == "message-end":
            return self._message_end(delta)
        return b""  # content-end, tool-call-end, citations, debug and future event types

    def _message_end(self, delta: dict[str, Any]) -> bytes:
        self._ended = True
        self.usage = openai_usage(delta.get("usage"))
        reason = delta.get("finish_reason")
        out = bytearray(self._start())
        if reason in _FAILED_FINISH:
            # No OpenAI finish reason says "failed": an error event, and no [DONE], so the
            # client and the cache both see an incomplete answer.
            log.warning("Cohere ended a stream with finish_reason %s", reason)
            error = delta.get("error")
            text = error if isinstance(error, str) and error else f"generation ended: {reason}"
            body = {
                "error": {
                    "message": f"The provider's stream failed: {text}",
                    "type": "api_error",
                    "param": None,
                    "code": str(reason).lower(),
                }
            }
            return bytes(out + encode_event(orjson.dumps(body)))
        out += self._chunk({}, _FINISH_FROM_COHERE.get(str(reason), "stop"))
        return bytes(out + self._end())


# =========================================================================== adapter


#: Cohere v2 chat ⇄ OpenAI chat.
CODEC = Codec(
    request_from_chat=chat_to_cohere,
    response_to_chat=cohere_to_completion,
    stream_to_chat=CohereStreamToChat,
    error_to_chat=error_to_openai,
)
