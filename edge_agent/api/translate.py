"""OpenAI Chat Completions ⇄ Anthropic Messages, both ways, JSON and streams (sans-IO).

The agent's pivot is the OpenAI chat format: a client request is brought to it, then to
the provider's schema; the answer takes the reverse path. When the client and the
provider speak the same schema nothing is translated (full fidelity).

Rule: what one side can express and the other cannot is refused with a 400 naming the
field (`Untranslatable`), never dropped — a silently ignored `n`, `logprobs` or
`cache_control` would change what the client gets without telling it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from edge_agent.api.anthropic import error_type_for
from edge_agent.api.errors import ApiError
from edge_agent.api.sse import SSEParser, encode_event

#: Output budget when an OpenAI client names none: Anthropic requires one.
DEFAULT_MAX_TOKENS = 4096

_FINISH_FROM_ANTHROPIC = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_STOP_FROM_OPENAI = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# OpenAI chat fields that change the answer, and whether a request uses each. A provider
# schema without a counterpart for one names it (`refuse_unsupported`): the request is
# refused with a 400 naming the field rather than answered as if it were not there.
_USES: dict[str, Callable[[Any], bool]] = {
    "n": lambda v: v not in (None, 1),
    "logprobs": lambda v: bool(v),
    "top_logprobs": lambda v: v is not None,
    "frequency_penalty": lambda v: v not in (None, 0),
    "presence_penalty": lambda v: v not in (None, 0),
    "logit_bias": lambda v: bool(v),
    "audio": lambda v: v is not None,
    "modalities": lambda v: v not in (None, ["text"]),
    "prediction": lambda v: v is not None,
    "functions": lambda v: v is not None,
    "function_call": lambda v: v is not None,
    "web_search_options": lambda v: v is not None,
    "reasoning_effort": lambda v: v is not None,
    "verbosity": lambda v: v is not None,
    "parallel_tool_calls": lambda v: v is False,
    "response_format": lambda v: not (isinstance(v, dict) and v.get("type") == "text"),
}


def refuse_unsupported(
    body: dict[str, Any], fields: tuple[str, ...], refuse: Callable[[str], ApiError]
) -> None:
    """Raise `refuse(field)` for the first of `fields` the request uses."""
    for field in fields:
        value = body.get(field)
        if value is not None and _USES[field](value):
            raise refuse(field)


# Those the Messages API has no counterpart for.
_NOT_IN_MESSAGES = (
    "n",
    "logprobs",
    "top_logprobs",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "audio",
    "modalities",
    "prediction",
    "functions",
    "function_call",
    "web_search_options",
    "response_format",
)
# Anthropic fields with no OpenAI chat counterpart that change the answer.
_ANTHROPIC_ONLY = {
    "top_k": lambda v: v is not None,
    "thinking": lambda v: v is not None and v.get("type") != "disabled",
    "container": lambda v: v is not None,
    "mcp_servers": lambda v: bool(v),
}


def untranslatable(field: str, source: str, target: str, why: str = "") -> ApiError:
    detail = f" ({why})" if why else ""
    return ApiError(
        400,
        f"'{field}' cannot be translated from the {source} API to this model's provider, "
        f"which speaks the {target} API{detail}. Remove it, or ask for a model served by "
        f"a {source}-type provider.",
        param=field,
        code="untranslatable_parameter",
    )


def _to_a(field: str, why: str = "") -> ApiError:
    return untranslatable(field, "OpenAI", "Anthropic", why)


def _to_o(field: str, why: str = "") -> ApiError:
    return untranslatable(field, "Anthropic", "OpenAI", why)


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


# =========================================================================== requests
# ---- OpenAI chat → Anthropic messages ------------------------------------------------


def _text_of_openai(content: Any, path: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for i, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            raise _to_a(f"{path}[{i}]", "only text parts are allowed here")
        parts.append(str(part.get("text", "")))
    return "\n".join(parts)


def _image_block(url: str, path: str) -> dict[str, Any]:
    if url.startswith("data:"):
        head, sep, data = url.partition(",")
        media = head[5:].split(";")[0]
        if not sep or ";base64" not in head or not media:
            raise _to_a(path, "image data URLs must be base64-encoded")
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise _to_a(path, "an image URL must be https:// or a data: URL")


def _user_blocks(content: Any, path: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks: list[dict[str, Any]] = []
    for i, part in enumerate(content or []):
        where = f"{path}[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "image_url":
            url = image_url_of(part, where, _to_a)
            blocks.append(_image_block(url, f"{where}.image_url.url"))
        else:
            raise _to_a(where, f"content part type {kind!r} has no Anthropic counterpart")
    return blocks


Refuse = Callable[[str, str], ApiError]


def call_arguments(function: dict[str, Any], where: str, refuse: Refuse) -> dict[str, Any]:
    """An OpenAI tool call's arguments as the object every other schema wants."""
    try:
        arguments = orjson.loads(function.get("arguments") or "{}")
    except orjson.JSONDecodeError:
        raise refuse(f"{where}.function.arguments", "the arguments are not valid JSON") from None
    if not isinstance(arguments, dict):
        raise refuse(f"{where}.function.arguments", "the arguments must be a JSON object")
    return arguments


def image_url_of(part: dict[str, Any], where: str, refuse: Refuse) -> str:
    """The URL of an OpenAI image_url content part (an object, or a bare string)."""
    image = part.get("image_url") or {}
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise refuse(f"{where}.image_url.url", "expected a URL string")
    return url


def _tool_use_blocks(calls: Any, path: str) -> list[dict[str, Any]]:
    blocks = []
    for i, call in enumerate(calls or []):
        function = call.get("function") or {}
        arguments = call_arguments(function, f"{path}[{i}]", _to_a)
        blocks.append(
            {
                "type": "tool_use",
                "id": str(call.get("id", "")),
                "name": str(function.get("name", "")),
                "input": arguments,
            }
        )
    return blocks


def chat_to_messages(body: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat request as an Anthropic Messages request (for `model`)."""
    refuse_unsupported(body, _NOT_IN_MESSAGES, _to_a)
    out: dict[str, Any] = {"model": model}
    system: list[str] = []
    messages: list[dict[str, Any]] = []

    def append(role: str, blocks: list[dict[str, Any]]) -> None:
        # Anthropic wants alternating turns: consecutive same-role turns are merged, and
        # tool results (OpenAI's "tool" role) become a user turn.
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    for i, message in enumerate(body.get("messages") or []):
        path = f"messages[{i}]"
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system.append(_text_of_openai(content, f"{path}.content"))
        elif role == "user":
            append("user", _user_blocks(content, f"{path}.content"))
        elif role == "assistant":
            blocks: list[dict[str, Any]] = []
            text = _text_of_openai(content, f"{path}.content") if content is not None else ""
            if text:
                blocks.append({"type": "text", "text": text})
            blocks += _tool_use_blocks(message.get("tool_calls"), f"{path}.tool_calls")
            if message.get("function_call"):
                raise _to_a(f"{path}.function_call", "use tool_calls")
            if not blocks:
                blocks.append({"type": "text", "text": ""})
            append("assistant", blocks)
        elif role == "tool":
            append(
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": str(message.get("tool_call_id", "")),
                        "content": _text_of_openai(content, f"{path}.content"),
                    }
                ],
            )
        else:
            raise _to_a(f"{path}.role", f"role {role!r} has no Anthropic counterpart")
    if system:
        out["system"] = "\n\n".join(system)
    out["messages"] = messages

    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    out["max_tokens"] = max_tokens if isinstance(max_tokens, int) else DEFAULT_MAX_TOKENS
    temperature = body.get("temperature")
    if temperature is not None:
        if temperature > 1:
            raise _to_a("temperature", "Anthropic accepts 0 to 1")
        out["temperature"] = temperature
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("stream") is True:
        out["stream"] = True
    user = body.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    tools = body.get("tools")
    if tools:
        out["tools"] = [_tool_to_anthropic(t, f"tools[{i}]") for i, t in enumerate(tools)]
    choice = body.get("tool_choice")
    parallel = body.get("parallel_tool_calls")
    if choice is not None or parallel is False:
        out_choice = _choice_to_anthropic(choice)
        if parallel is False and out_choice["type"] != "none":
            out_choice["disable_parallel_tool_use"] = True
        out["tool_choice"] = out_choice
    return out


def _tool_to_anthropic(tool: Any, path: str) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise _to_a(path, "only function tools translate")
    function = tool.get("function") or {}
    out: dict[str, Any] = {
        "name": function.get("name"),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        out["description"] = function["description"]
    return out


def _choice_to_anthropic(choice: Any) -> dict[str, Any]:
    if choice is None or choice == "auto":
        return {"type": "auto"}
    if choice == "none":
        return {"type": "none"}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    raise _to_a("tool_choice")


# ---- Anthropic messages → OpenAI chat ------------------------------------------------


def _no_cache_control(block: dict[str, Any], path: str) -> None:
    if "cache_control" in block:
        raise _to_o(f"{path}.cache_control", "the provider has no prompt-caching breakpoints")


def _image_url(block: dict[str, Any], path: str) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif source.get("type") == "url":
        url = str(source.get("url"))
    else:
        raise _to_o(f"{path}.source", f"image source type {source.get('type')!r}")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result_text(content: Any, path: str) -> str:
    if isinstance(content, str) or content is None:
        return content or ""
    texts = []
    for i, block in enumerate(content):
        if block.get("type") != "text":
            raise _to_o(f"{path}[{i}]", "only text tool results translate")
        _no_cache_control(block, f"{path}[{i}]")
        texts.append(str(block.get("text", "")))
    return "\n".join(texts)


def messages_to_chat(body: dict[str, Any], model: str) -> dict[str, Any]:
    """An Anthropic Messages request as an OpenAI chat request (for `model`)."""
    for field, present in _ANTHROPIC_ONLY.items():
        value = body.get(field)
        if value is not None and present(value):
            raise _to_o(field)
    out: dict[str, Any] = {"model": model}
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if isinstance(system, str):
        messages.append({"role": "system", "content": system})
    elif isinstance(system, list):
        for i, block in enumerate(system):
            _no_cache_control(block, f"system[{i}]")
        text = "\n\n".join(str(b.get("text", "")) for b in system)
        messages.append({"role": "system", "content": text})

    for i, message in enumerate(body["messages"]):
        path = f"messages[{i}].content"
        role = message["role"]
        content = message["content"]
        if isinstance(content, str):
            messages.append({"role": role, "content": content})
            continue
        if role == "user":
            parts: list[dict[str, Any]] = []
            for j, block in enumerate(content):
                where = f"{path}[{j}]"
                _no_cache_control(block, where)
                kind = block["type"]
                if kind == "tool_result":
                    if block.get("is_error"):
                        text = "Error: " + _tool_result_text(block.get("content"), where)
                    else:
                        text = _tool_result_text(block.get("content"), f"{where}.content")
                    # OpenAI wants tool results as their own messages, before the user's text.
                    messages.append(
                        {"role": "tool", "tool_call_id": block["tool_use_id"], "content": text}
                    )
                elif kind == "text":
                    parts.append({"type": "text", "text": block["text"]})
                elif kind == "image":
                    parts.append(_image_url(block, where))
                else:
                    raise _to_o(where, f"content block type {kind!r}")
            if parts:
                simple = all(p["type"] == "text" for p in parts)
                text_only = "\n".join(p["text"] for p in parts) if simple else None
                messages.append({"role": "user", "content": text_only if simple else parts})
        else:
            texts: list[str] = []
            calls: list[dict[str, Any]] = []
            for j, block in enumerate(content):
                where = f"{path}[{j}]"
                _no_cache_control(block, where)
                kind = block["type"]
                if kind == "text":
                    texts.append(block["text"])
                elif kind == "tool_use":
                    calls.append(
                        {
                            "id": block["id"],
                            "type": "function",
                            "function": {
                                "name": block["name"],
                                "arguments": _dumps(block["input"]),
                            },
                        }
                    )
                else:
                    raise _to_o(where, f"content block type {kind!r}")
            msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
            if calls:
                msg["tool_calls"] = calls
            messages.append(msg)
    out["messages"] = messages
    out["max_tokens"] = body["max_tokens"]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop_sequences"):
        out["stop"] = body["stop_sequences"]
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}  # Anthropic streams always report it
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    tools = body.get("tools")
    if tools:
        out["tools"] = [_tool_to_openai(t, f"tools[{i}]") for i, t in enumerate(tools)]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "auto":
            out["tool_choice"] = "auto"
        elif kind == "any":
            out["tool_choice"] = "required"
        elif kind == "none":
            out["tool_choice"] = "none"
        elif kind == "tool":
            out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        else:
            raise _to_o("tool_choice.type")
        if choice.get("disable_parallel_tool_use") is True and tools:
            out["parallel_tool_calls"] = False
    return out


def _tool_to_openai(tool: Any, path: str) -> dict[str, Any]:
    kind = tool.get("type")
    if kind not in (None, "custom"):
        raise _to_o(path, f"server tool {kind!r} runs only on Anthropic's side")
    _no_cache_control(tool, path)
    function: dict[str, Any] = {
        "name": tool["name"],
        "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
    }
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


# =========================================================================== responses


def openai_usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """Anthropic usage → OpenAI usage (input counts every prompt token, cached included)."""
    if not isinstance(usage, dict):
        return None
    cached = count(usage.get("cache_read_input_tokens"))
    base = count(usage.get("input_tokens"))
    written = count(usage.get("cache_creation_input_tokens"))
    completion = count(usage.get("output_tokens"))
    if None in (cached, base, written, completion):
        return None  # a provider's malformed usage is unknown usage, never a crash
    assert cached is not None and base is not None and written is not None
    assert completion is not None
    prompt = base + cached + written
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out


def count(value: object) -> int | None:
    """A token count as providers send it: absent/null is 0; anything but a sane
    non-negative integer is None (unknown)."""
    if value is None:
        return 0
    if type(value) is not int or not 0 <= value < 1 << 53:
        return None
    return value


def _anthropic_usage(usage: dict[str, Any] | None) -> dict[str, int]:
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    cached = count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    prompt = count(usage.get("prompt_tokens")) or 0
    cached = min(cached or 0, prompt)
    return {
        "input_tokens": prompt - cached,
        "output_tokens": count(usage.get("completion_tokens")) or 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def message_to_completion(body: dict[str, Any], model: str) -> dict[str, Any]:
    """An Anthropic Messages response as an OpenAI chat completion."""
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in body.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": _dumps(block.get("input")),
                    },
                }
            )
        elif kind == "thinking":
            thinking.append(str(block.get("thinking", "")))
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["reasoning_content"] = "".join(thinking)  # the field vLLM/DeepSeek use
    # Unknown or missing stop reason (pause_turn too): not a finished answer, never cached.
    finish = _FINISH_FROM_ANTHROPIC.get(_str(body.get("stop_reason")))
    usage = openai_usage(body.get("usage"))
    return completion(f"chatcmpl-{body.get('id', '')}", model, message, finish, usage)


def completion_to_message(body: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat completion as an Anthropic Messages response."""
    choices = body.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            arguments = None
        if not isinstance(arguments, dict):
            # A provider's malformed arguments: keep them visible rather than invent input.
            arguments = {"_raw_arguments": function.get("arguments")}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": arguments,
            }
        )
    raw_id = str(body.get("id", ""))
    return {
        "id": raw_id if raw_id.startswith("msg_") else f"msg_{raw_id}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _STOP_FROM_OPENAI.get(_str(choice.get("finish_reason"))),
        "stop_sequence": None,
        "usage": _anthropic_usage(body.get("usage")),
    }


# =========================================================================== errors


def error_to_openai(status: int, body: bytes) -> bytes:
    """A provider's Anthropic-shaped error as OpenAI's envelope (status unchanged)."""
    message, kind = _error_parts(body, anthropic=True)
    return openai_error(message, kind or "api_error")


def error_to_anthropic(status: int, body: bytes) -> bytes:
    message, _ = _error_parts(body, anthropic=False)
    return orjson.dumps(
        {"type": "error", "error": {"type": error_type_for(status), "message": message}}
    )


def error_message(body: bytes) -> str:
    """What a provider's error answer says, in any shape, as one bounded line."""
    return _error_parts(body, anthropic=False)[0]


def _error_parts(body: bytes, *, anthropic: bool) -> tuple[str, str | None]:
    try:
        parsed = orjson.loads(body)
        error = parsed.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            kind = error.get("type")
            return error["message"], kind if isinstance(kind, str) else None
        # Other JSON shapes servers use: {"detail": "..."} (FastAPI), {"message": "..."},
        # {"error": "..."}.
        for key in ("detail", "message", "error"):
            value = parsed.get(key)
            if isinstance(value, str) and value.strip():
                return f"The provider answered: {_clip(value)}", None
    except (orjson.JSONDecodeError, AttributeError):
        pass
    text = _clip(body[:2000].decode("utf-8", "replace"))
    return f"The provider answered: {text}" if text else "The provider answered an error.", None


def _clip(text: str) -> str:
    # One line, bounded: a provider's HTML error page must not flood the client's error.
    text = " ".join(text.split())
    return text if len(text) <= 500 else text[:497] + "..."


# =========================================================================== streams


class StreamTranslator:
    """Provider stream bytes in, client SSE bytes out, chunk by chunk (no buffering).

    Subclasses implement `_event` for SSE sources, or override `feed` for others.
    """

    def __init__(self) -> None:
        self._parser = SSEParser()
        self.usage: dict[str, Any] | None = None  # OpenAI-shaped, once the stream told it
        self.finished = False  # the stream reached its proper end

    def feed(self, chunk: bytes) -> bytes:
        out = bytearray()
        for event in self._parser.feed(chunk):
            out += self._event(event.event, event.data)
        return bytes(out)

    def finish(self) -> bytes:
        """Bytes owed at the end of the provider's stream (for schemas that end a stream
        by closing it rather than with a final event)."""
        return b""

    def _event(self, name: str | None, data: str) -> bytes:
        raise NotImplementedError


class ChatChunkWriter(StreamTranslator):
    """What every provider-stream → OpenAI translator writes: chat.completion.chunk events,
    then, at the proper end, the usage chunk (when the client asked for it) and [DONE]."""

    def __init__(
        self,
        model: str,
        include_usage: bool,
        now: Callable[[], float] = time.time,
        chunk_id: str = "chatcmpl-",
    ) -> None:
        super().__init__()
        self._model = model
        self._include_usage = include_usage
        self._created = int(now())
        self._id = chunk_id

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        return encode_event(orjson.dumps(body))

    def _end(self) -> bytes:
        """The stream's proper end: marks it finished (so it may be cached)."""
        self.finished = True
        out = b""
        if self._include_usage and self.usage is not None:
            body = {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "choices": [],
                "usage": self.usage,
            }
            out = encode_event(orjson.dumps(body))
        return out + encode_event("[DONE]")


def completion(
    chunk_id: str,
    model: str,
    message: dict[str, Any],
    finish_reason: str | None,
    usage: dict[str, Any] | None,
) -> dict[str, Any]:
    """An OpenAI chat.completion with one choice (every provider answer ends as one)."""
    out: dict[str, Any] = {
        "id": chunk_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}
        ],
    }
    if usage is not None:
        out["usage"] = usage
    return out


def openai_error(message: str, kind: str, code: str | None = None) -> bytes:
    """OpenAI's error envelope."""
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})


class MessagesStreamToChat(ChatChunkWriter):
    """Anthropic Messages events → OpenAI chat.completion.chunk events."""

    def __init__(self, model: str, include_usage: bool, now: Callable[[], float] = time.time):
        super().__init__(model, include_usage, now)
        self._tool_index: dict[int, int] = {}  # Anthropic block index → OpenAI tool index
        self._input: dict[str, Any] = {}
        self._finish: str | None = None

    def _event(self, name: str | None, data: str) -> bytes:
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return b""
        if not isinstance(event, dict):
            return b""
        kind = event.get("type") or name
        if kind == "message_start":
            message = event.get("message") or {}
            self._id = f"chatcmpl-{message.get('id', '')}"
            self._input = message.get("usage") or {}
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self._tool_index[event.get("index", 0)] = len(self._tool_index)
                call = {
                    "index": index,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }
                return self._chunk({"tool_calls": [call]})
            if block.get("type") == "text" and block.get("text"):
                return self._chunk({"content": block["text"]})
            return b""
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                return self._chunk({"content": delta.get("text", "")})
            if dtype == "input_json_delta":
                index = self._tool_index.get(event.get("index", 0), 0)
                call = {"index": index, "function": {"arguments": delta.get("partial_json", "")}}
                return self._chunk({"tool_calls": [call]})
            if dtype == "thinking_delta":
                return self._chunk({"reasoning_content": delta.get("thinking", "")})
            return b""
        if kind == "message_delta":
            delta = event.get("delta") or {}
            self._finish = _FINISH_FROM_ANTHROPIC.get(_str(delta.get("stop_reason")), "stop")
            usage = {**self._input, **(event.get("usage") or {})}
            self.usage = openai_usage(usage)
            return self._chunk({}, self._finish)
        if kind == "message_stop":
            return self._end()
        if kind == "error":
            error = event.get("error") or {}
            body = {
                "error": {
                    "message": error.get("message", "The provider's stream failed."),
                    "type": error.get("type", "api_error"),
                    "param": None,
                    "code": None,
                }
            }
            return encode_event(orjson.dumps(body))
        return b""  # ping and future event types


class ChatStreamToMessages(StreamTranslator):
    """OpenAI chat.completion.chunk events → Anthropic Messages events."""

    def __init__(self, model: str) -> None:
        super().__init__()
        self._model = model
        self._started = False
        self._block = -1  # index of the open Anthropic block, -1 when none
        self._block_kind: str | None = None
        self._tools: dict[int, int] = {}  # OpenAI tool index → Anthropic block index
        self._stop: str | None = None
        self._sent_stop = False

    @staticmethod
    def _ev(name: str, body: dict[str, Any]) -> bytes:
        return encode_event(orjson.dumps({"type": name, **body}), name)

    def _start(self, chunk_id: str) -> bytes:
        self._started = True
        message = {
            "id": chunk_id if chunk_id.startswith("msg_") else f"msg_{chunk_id}",
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return self._ev("message_start", {"message": message})

    def _close_block(self) -> bytes:
        if self._block_kind is None:
            return b""
        self._block_kind = None
        return self._ev("content_block_stop", {"index": self._block})

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self._block += 1
        self._block_kind = kind
        return out + self._ev("content_block_start", {"index": self._block, "content_block": block})

    def _event(self, name: str | None, data: str) -> bytes:
        if data.strip() == "[DONE]":
            return self._end()
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return b""
        if not isinstance(chunk, dict):
            return b""
        if isinstance(chunk.get("error"), dict):
            error = chunk["error"]
            body = {"error": {"type": "api_error", "message": str(error.get("message", ""))}}
            return self._ev("error", body)
        out = bytearray()
        if not self._started:
            out += self._start(str(chunk.get("id", "")))
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self._block_kind != "text":
                    out += self._open("text", {"type": "text", "text": ""})
                out += self._ev(
                    "content_block_delta",
                    {"index": self._block, "delta": {"type": "text_delta", "text": text}},
                )
            for call in delta.get("tool_calls") or []:
                index = call.get("index", 0)
                function = call.get("function") or {}
                if index not in self._tools:
                    block = {
                        "type": "tool_use",
                        "id": call.get("id"),
                        "name": function.get("name"),
                        "input": {},
                    }
                    out += self._open("tool_use", block)
                    self._tools[index] = self._block
                args = function.get("arguments")
                if args:
                    if self._tools[index] != self._block:
                        # Anthropic blocks cannot interleave; OpenAI never sends it.
                        continue
                    out += self._ev(
                        "content_block_delta",
                        {
                            "index": self._block,
                            "delta": {"type": "input_json_delta", "partial_json": args},
                        },
                    )
            if choice.get("finish_reason"):
                self._stop = _STOP_FROM_OPENAI.get(_str(choice["finish_reason"]), "end_turn")
        return bytes(out)

    def _end(self) -> bytes:
        if self._sent_stop:
            return b""
        self._sent_stop = True
        self.finished = True
        out = bytearray()
        if not self._started:
            out += self._start("")
        out += self._close_block()
        usage = _anthropic_usage(self.usage)
        out += self._ev(
            "message_delta",
            {
                "delta": {"stop_reason": self._stop or "end_turn", "stop_sequence": None},
                "usage": {
                    "output_tokens": usage["output_tokens"],
                    "input_tokens": usage["input_tokens"],
                },
            },
        )
        out += self._ev("message_stop", {})
        return bytes(out)


class Chain(StreamTranslator):
    """Two translators in a row: provider → OpenAI chunks → the client's schema."""

    def __init__(self, first: StreamTranslator, second: StreamTranslator) -> None:
        super().__init__()
        self.first, self.second = first, second

    def feed(self, chunk: bytes) -> bytes:
        out = self.second.feed(self.first.feed(chunk))
        self._sync()
        return out

    def finish(self) -> bytes:
        out = self.second.feed(self.first.finish()) + self.second.finish()
        self._sync()
        return out

    def _sync(self) -> None:
        self.usage = self.first.usage  # OpenAI-shaped: the pivot's
        self.finished = self.second.finished
