"""OpenAI Chat Completions ⇄ Anthropic Messages: requests, whole answers, usage, errors.

The agent's pivot is the OpenAI chat format: a client request is brought to it, then to
the provider's schema; the answer takes the reverse path. When the client and the
provider speak the same schema nothing is translated (full fidelity).
"""

from __future__ import annotations

from typing import Any

import orjson

from edge_agent.api.anthropic import error_type_for
from edge_agent.api.errors import ApiError
from edge_agent.translate.common import (
    OPENAI_ONLY,
    call_arguments,
    chat_usage,
    count,
    dumps,
    error_parts,
    image_url_of,
    openai_error,
    refuse_unsupported,
    requested_max_tokens,
    stop_sequences,
    str_or_empty,
    text_of,
    tool_function,
    tool_parameters,
    untranslatable,
)
from edge_agent.translate.stream import completion

#: Output budget when an OpenAI client names none: Anthropic requires one.
DEFAULT_MAX_TOKENS = 4096


FINISH_FROM_ANTHROPIC = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


STOP_FROM_OPENAI = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


# Those the Messages API has no counterpart for.
_NOT_IN_MESSAGES = (*OPENAI_ONLY, "frequency_penalty", "presence_penalty", "response_format")


# Anthropic fields with no OpenAI chat counterpart that change the answer.
_ANTHROPIC_ONLY = {
    "top_k": lambda v: v is not None,
    "thinking": lambda v: v is not None and v.get("type") != "disabled",
    "container": lambda v: v is not None,
    "mcp_servers": lambda v: bool(v),
}


def _to_a(field: str, why: str = "") -> ApiError:
    return untranslatable(field, "OpenAI", "Anthropic", why)


def _to_o(field: str, why: str = "") -> ApiError:
    return untranslatable(field, "Anthropic", "OpenAI", why)


def _text_of_openai(content: Any, path: str) -> str:
    return text_of(content, path, _to_a)


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

    max_tokens = requested_max_tokens(body)
    out["max_tokens"] = max_tokens if isinstance(max_tokens, int) else DEFAULT_MAX_TOKENS
    temperature = body.get("temperature")
    if temperature is not None:
        if temperature > 1:
            raise _to_a("temperature", "Anthropic accepts 0 to 1")
        out["temperature"] = temperature
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    stop = stop_sequences(body)
    if stop is not None:
        out["stop_sequences"] = stop
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
    function = tool_function(tool, path, _to_a)
    out: dict[str, Any] = {"name": function.get("name"), "input_schema": tool_parameters(function)}
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
                                "arguments": dumps(block["input"]),
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
    return chat_usage(prompt, completion, cached)


def anthropic_usage(usage: dict[str, Any] | None) -> dict[str, int]:
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
                        "arguments": dumps(block.get("input")),
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
    finish = FINISH_FROM_ANTHROPIC.get(str_or_empty(body.get("stop_reason")))
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
        "stop_reason": STOP_FROM_OPENAI.get(str_or_empty(choice.get("finish_reason"))),
        "stop_sequence": None,
        "usage": anthropic_usage(body.get("usage")),
    }


def error_to_openai(status: int, body: bytes) -> bytes:
    """A provider's Anthropic-shaped error as OpenAI's envelope (status unchanged)."""
    message, kind = error_parts(body, anthropic=True)
    return openai_error(message, kind or "api_error")


def error_to_anthropic(status: int, body: bytes) -> bytes:
    message, _ = error_parts(body, anthropic=False)
    return orjson.dumps(
        {"type": "error", "error": {"type": error_type_for(status), "message": message}}
    )
